// kata-ts-jailer: starts a VMM (QEMU) inside a jail, in the spirit of Firecracker's jailer, then execs
// it (same pid: the caller's child stays the VMM, and the caller can kill it or wait for it).
//
//   kata-ts-jailer [--root DIR] [--bind SRC]... [--bind-ro SRC]... [--link PATH]... [--dev PATH]...
//                  [--proc] [--uid N --gid N] [--cap N]... [--pdeathsig [--parent PID]] -- PROGRAM ARGS...
//
// --root DIR: a private mount namespace (every mount a slave of the caller's: the caller's later mounts
//   still arrive, nothing made here goes back) whose root is a fresh read-only tmpfs mounted on DIR (an
//   empty directory; the mount exists only in the new namespace) holding only:
//   --bind SRC / --bind-ro SRC: SRC bind-mounted (recursively) at the same path, read-only for --bind-ro;
//   --link PATH: the symlink PATH recreated (merged-/usr hosts: /lib -> usr/lib);
//   --dev PATH: a device node bound at the same path (/dev/kvm, /dev/urandom, /dev/net/tun, /dev/null);
//   --proc: a read-only procfs at /proc showing only process directories (subset=pid: no /proc/sys, no
//   /proc/sysrq-trigger) of the jail's own uid (hidepid=invisible): QEMU's 9p server changes modes and
//   times through /proc/self/fd/N.
//   The process then pivots into it and detaches the old root: no path leads back to the host's tree.
// --uid/--gid: switch to that uid/gid (no supplementary groups), keeping only the --cap capabilities
//   (numbers) as permitted, effective, inheritable and ambient (so they survive exec); every other
//   capability leaves the bounding set.
// --pdeathsig: SIGKILL when the parent dies; set after the uid change, which would clear it.
// --parent PID: the process that spawned us (through nsenter, which execs): if it is no longer our
//   parent once the signal is set, it died before it could be delivered, and we exit instead of
//   running orphaned (the parent read at our own start is already init's or a subreaper's then).
// Always: PR_SET_NO_NEW_PRIVS (ambient capabilities still pass the exec).
// Errors: one line on stderr ("kata-ts-jailer: <step>: <errno text>"), exit 125, nothing half-made
// outside the new namespace (which dies with this process).
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_ITEMS 64

struct bind {
  const char *src;
  int ro;
  int dev;
  int link;
};

static void die(const char *step, const char *arg) {
  fprintf(stderr, "kata-ts-jailer: %s%s%s: %s\n", step, arg ? " " : "", arg ? arg : "", strerror(errno));
  exit(125);
}

static void usage(const char *why) {
  fprintf(stderr, "kata-ts-jailer: %s\n", why);
  exit(125);
}

// mkdir -p of path's components (the last one too when `last`).
static void mkdirs(char *path, int last) {
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(path, 0755) < 0 && errno != EEXIST) die("mkdir", path);
    *p = '/';
  }
  if (last && mkdir(path, 0755) < 0 && errno != EEXIST) die("mkdir", path);
}

static void place(const char *root, const struct bind *b) {
  char target[4096];
  if (b->src[0] != '/') usage("bind sources must be absolute paths");
  if (snprintf(target, sizeof target, "%s%s", root, b->src) >= (int)sizeof target) usage("path too long");
  struct stat st;
  if (lstat(b->src, &st) < 0) die("stat", b->src);
  if (b->link) {
    char dest[4096];
    ssize_t n = readlink(b->src, dest, sizeof dest - 1);
    if (n < 0) die("readlink", b->src);
    dest[n] = '\0';
    mkdirs(target, 0);
    if (symlink(dest, target) < 0 && errno != EEXIST) die("symlink", target);
    return;
  }
  if (stat(b->src, &st) < 0) die("stat", b->src);
  if (S_ISDIR(st.st_mode)) {
    mkdirs(target, 1);
  } else {
    mkdirs(target, 0);
    int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) die("create", target);
    close(fd);
  }
  if (mount(b->src, target, NULL, MS_BIND | (b->dev ? 0 : MS_REC), NULL) < 0) die("bind", b->src);
  // Device nodes keep their mount's flags; everything else is nosuid (and nodev: no device node a guest
  // could create in the share opens a host device), read-only where asked.
  unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (b->dev ? 0 : MS_NODEV) | (b->ro ? MS_RDONLY : 0);
  if (!b->dev && mount(NULL, target, NULL, flags, NULL) < 0) die("remount", target);
}

static void enter_root(const char *root, struct bind *binds, int n, int proc) {
  if (unshare(CLONE_NEWNS) < 0) die("unshare", "CLONE_NEWNS");
  // Slave, not private: mounts the caller makes later (container rootfses in the share) still arrive.
  if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) die("make-rslave", "/");
  if (mount("kata-ts-jail", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") < 0)
    die("mount tmpfs", root);
  for (int i = 0; i < n; i++) place(root, &binds[i]);
  if (proc) {
    char target[4096];
    snprintf(target, sizeof target, "%s/proc", root);
    mkdirs(target, 1);
    if (mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
              "subset=pid,hidepid=invisible") < 0)
      die("mount proc", target);
  }
  if (chdir(root) < 0) die("chdir", root);
  // pivot_root(".", "."): the old root ends up under the new one, then is detached from it.
  if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root", root);
  if (umount2(".", MNT_DETACH) < 0) die("detach old root", NULL);
  if (chdir("/") < 0) die("chdir", "/");
  if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
    die("remount read-only", "/");
}

static void set_caps(unsigned long long keep) {
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof d);
  for (int i = 0; i < 2; i++) {
    unsigned int bits = (unsigned int)(keep >> (32 * i));
    d[i].permitted = d[i].effective = d[i].inheritable = bits;
  }
  if (syscall(SYS_capset, &h, d) < 0) die("capset", NULL);
  for (int c = 0; c < 64; c++)
    if ((keep >> c) & 1)
      if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0) die("ambient capability", NULL);
}

static void drop_privileges(uid_t uid, gid_t gid, unsigned long long keep) {
  // The bounding set first: dropping from it needs CAP_SETPCAP, which goes with the uid change.
  for (int c = 0; c < 64; c++) {
    if ((keep >> c) & 1) continue;
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) die("drop bounding capability", NULL);
  }
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) die("keepcaps", NULL);
  if (setgroups(0, NULL) < 0) die("setgroups", NULL);
  if (setresgid(gid, gid, gid) < 0) die("setresgid", NULL);
  if (setresuid(uid, uid, uid) < 0) die("setresuid", NULL);
  set_caps(keep);
  if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) die("keepcaps", NULL);
}

int main(int argc, char **argv) {
  static struct bind binds[MAX_ITEMS];
  int nb = 0, pdeath = 0, proc = 0;
  const char *root = NULL;
  long uid = -1, gid = -1, expected = 0;
  unsigned long long keep = 0;
  pid_t parent = getppid();
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--")) {
      i++;
      break;
    }
    if (!strcmp(a, "--pdeathsig")) {
      pdeath = 1;
      continue;
    }
    if (!strcmp(a, "--proc")) {
      proc = 1;
      continue;
    }
    if (i + 1 >= argc) usage("an option needs a value");
    const char *v = argv[++i];
    if (!strcmp(a, "--root")) {
      root = v;
    } else if (!strcmp(a, "--parent")) {
      expected = strtol(v, NULL, 10);
      if (expected <= 0) usage("bad parent pid");
    } else if (!strcmp(a, "--uid")) {
      uid = strtol(v, NULL, 10);
    } else if (!strcmp(a, "--gid")) {
      gid = strtol(v, NULL, 10);
    } else if (!strcmp(a, "--cap")) {
      long c = strtol(v, NULL, 10);
      if (c < 0 || c > 63) usage("bad capability number");
      keep |= 1ULL << c;
    } else if (!strcmp(a, "--bind") || !strcmp(a, "--bind-ro") || !strcmp(a, "--dev") ||
               !strcmp(a, "--link")) {
      if (nb >= MAX_ITEMS) usage("too many binds");
      binds[nb++] = (struct bind){v, strcmp(a, "--bind") != 0, !strcmp(a, "--dev"), !strcmp(a, "--link")};
    } else {
      usage("unknown option");
    }
  }
  if (i >= argc) usage("no program given");
  if ((uid < 0) != (gid < 0)) usage("--uid and --gid go together");
  if (root) enter_root(root, binds, nb, proc);
  if (uid >= 0) drop_privileges((uid_t)uid, (gid_t)gid, keep);
  if (pdeath) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die("pdeathsig", NULL);
    // The parent may have died before the prctl: then nobody would ever kill us.
    if (getppid() != (expected > 0 ? (pid_t)expected : parent)) {
      errno = ESRCH;
      die("parent exited", NULL);
    }
  }
  // Nothing QEMU could exec (were spawn not denied) gains privileges: no set-id bits, no file caps.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs", NULL);
  execv(argv[i], &argv[i]);
  die("exec", argv[i]);
}
