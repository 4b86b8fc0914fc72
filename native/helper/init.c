/*
 * The container process, from clone to execve. Phase-2 records are executed in the order TypeScript
 * sent them ("immediate" ops: mounts, devices, pivot, console, hostname, sysctl, ...); the ones that
 * describe the final process (caps, user, seccomp, env, args, cwd) are collected and applied by
 * finalize() when "go" arrives, in runc's order:
 *   nnp → seccomp (if no nnp) → bounding set → chdir (as root) → stdio owner → keepcaps+setgroups/setgid/
 *   setuid → capset/ambient → chdir (if refused as root) → close-on-exec every fd but 0-2 and preserved
 *   ones → look up the executable → seccomp (with nnp) → "ready" → block on the exec fifo (create) →
 *   startContainer hooks (filtered, as in runc 1.1) → execve.
 * Mount destinations are resolved inside the rootfs (openat2 RESOLVE_IN_ROOT) and mounted through
 * /proc/self/fd/N, so a symlink planted in the image cannot redirect a mount to the host (CVE-2021-30465).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <linux/magic.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"

extern int fail_exit_code;

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* ---- what finalize() needs ---- */
static int rootfd = -1;      /* O_PATH of the rootfs bind mount, before pivot */
static char *rootfs_path;    /* host path of the rootfs */
static int fifo_fd = -1;     /* O_PATH of the exec fifo */
int console_sock = -1;
int console_relayed;
static dev_t console_slave_rdev;    /* the terminal made for the container (fix_stdio_owner) */
static int want_nnp;
static int have_caps;
static unsigned long long caps[5]; /* bounding effective permitted inheritable ambient */
static int have_user;
static uid_t uid;
static gid_t gid;
static gid_t *gids;
static int ngids = -1;
static char *cwd;
static char **envv;
static int nenv;
static char **args;
static int nargs;
static int preserve;
static struct seccomp_plan *seccomp;
static struct record start_hooks[64];
static int nstart_hooks;

static void push(char ***arr, int *n, const char *s) {
  *arr = realloc(*arr, sizeof(char *) * ((size_t)*n + 2));
  if (!*arr) fail("out of memory");
  (*arr)[(*n)++] = strdup(s);
  (*arr)[*n] = NULL;
}

/* ---- paths inside the rootfs ---- */

static int open_in_root(const char *path, int flags) {
  struct open_how how;
  memset(&how, 0, sizeof(how));
  how.flags = (unsigned long long)flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  const char *p = path;
  while (*p == '/') p++;
  if (!*p) p = ".";
  int fd;
  do fd = (int)syscall(SYS_openat2, rootfd, p, &how, sizeof(how));
  while (fd < 0 && errno == EAGAIN);
  return fd;
}

/*
 * Walks path inside the rootfs the way the kernel would with the rootfs as "/": symlinks are read and
 * followed lexically (absolute targets restart at the rootfs, ".." stops at it), missing directories are
 * made when `create` (all components, or all but the last when `last_file`). `out` receives the resolved
 * path relative to the rootfs. The final open still goes through openat2(RESOLVE_IN_ROOT), so a race with
 * the container's own files cannot take it outside.
 */
static void walk_in_root(const char *path, int create, int last_file, char *out, size_t outlen) {
  char rest[PATH_MAX * 2], cur[PATH_MAX] = "";
  int links = 0;
  if (strlen(path) >= PATH_MAX) fail("path too long: %s", path);
  strcpy(rest, path);
  while (rest[0]) {
    char *p = rest;
    while (*p == '/') p++;
    char *slash = strchr(p, '/');
    char comp[NAME_MAX + 1];
    size_t clen = slash ? (size_t)(slash - p) : strlen(p);
    if (clen > NAME_MAX) fail("path component too long in %s", path);
    memcpy(comp, p, clen);
    comp[clen] = '\0';
    memmove(rest, p + clen, strlen(p + clen) + 1);
    int is_last = 1;
    for (char *q = rest; *q; q++)
      if (*q != '/') {
        is_last = 0;
        break;
      }
    if (!comp[0] || strcmp(comp, ".") == 0) continue;
    if (strcmp(comp, "..") == 0) {
      char *s = strrchr(cur, '/');
      if (s) *s = '\0';
      else cur[0] = '\0';
      continue;
    }
    int pfd = open_in_root(cur[0] ? cur : "/", O_PATH | O_DIRECTORY);
    if (pfd < 0) fail("resolve %s in the rootfs: %s", path, strerror(errno));
    struct stat st;
    char next[PATH_MAX];
    if (snprintf(next, sizeof(next), "%s/%s", cur, comp) >= (int)sizeof(next)) fail("path too long: %s", path);
    if (fstatat(pfd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno != ENOENT) fail("stat %s: %s", next, strerror(errno));
      if (create && !(is_last && last_file)) {
        if (mkdirat(pfd, comp, 0755) < 0 && errno != EEXIST) fail("mkdir %s: %s", next, strerror(errno));
      } else if (!is_last || !last_file) {
        /* not creating: the rest cannot exist; report it as it is */
      }
      strcpy(cur, next);
    } else if (S_ISLNK(st.st_mode)) {
      if (++links > 40) fail("resolve %s: too many levels of symbolic links", path);
      char target[PATH_MAX];
      ssize_t n = readlinkat(pfd, comp, target, sizeof(target) - 1);
      if (n < 0) fail("readlink %s: %s", next, strerror(errno));
      target[n] = '\0';
      char joined[PATH_MAX * 2];
      snprintf(joined, sizeof(joined), "%s/%s", target, rest);
      if (strlen(joined) >= sizeof(rest)) fail("path too long: %s", path);
      strcpy(rest, joined);
      if (target[0] == '/') cur[0] = '\0';
    } else {
      if (!S_ISDIR(st.st_mode) && !is_last) fail("%s: not a directory", next);
      strcpy(cur, next);
    }
    close(pfd);
  }
  if (strlen(cur) + 2 > outlen) fail("path too long: %s", path);
  snprintf(out, outlen, "%s", cur[0] ? cur : "/");
}

static void mkdir_all_in_root(const char *path, mode_t mode) {
  char resolved[PATH_MAX];
  (void)mode;
  walk_in_root(path, 1, 0, resolved, sizeof(resolved));
}

static int parent_in_root(const char *path, const char **name) {
  static char resolved[PATH_MAX];
  walk_in_root(path, 1, 1, resolved, sizeof(resolved));
  char *slash = strrchr(resolved, '/');
  *name = slash + 1;
  if (slash == resolved) return open_in_root("/", O_PATH | O_DIRECTORY);
  *slash = '\0';
  int fd = open_in_root(resolved, O_PATH | O_DIRECTORY);
  *slash = '/';
  return fd;
}

static const char *fdpath(int fd);

/* Makes dest (a dir or an empty file) inside the rootfs and returns an O_PATH fd to it. */
static int make_dest(const char *dest, int file) {
  if (!file) {
    mkdir_all_in_root(dest, 0755);
    int fd = open_in_root(dest, O_PATH | O_DIRECTORY);
    if (fd < 0) fail("mount destination %s: %s", dest, strerror(errno));
    return fd;
  }
  const char *name;
  int pfd = parent_in_root(dest, &name);
  if (pfd < 0) fail("mount destination %s: %s", dest, strerror(errno));
  int dfd = open(fdpath(pfd), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) fail("mount destination %s: %s", dest, strerror(errno));
  int nf = openat(dfd, name, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (nf < 0 && errno != EEXIST && errno != EISDIR) fail("create %s: %s", dest, strerror(errno));
  if (nf >= 0) close(nf);
  close(dfd);
  close(pfd);
  int fd = open_in_root(dest, O_PATH);
  if (fd < 0) fail("mount destination %s: %s", dest, strerror(errno));
  return fd;
}

static const char *fdpath(int fd) {
  static char buf[64];
  snprintf(buf, sizeof(buf), "/proc/self/fd/%d", fd);
  return buf;
}

/* mount SRC DEST TYPE FLAGS PROPFLAGS DATA KIND(dir|file) */
static void op_mount(struct record *r) {
  if (r->argc != 8) fail("helper: bad mount record");
  const char *src = r->argv[1], *dest = r->argv[2], *type = r->argv[3], *data = r->argv[6];
  unsigned long flags = (unsigned long)parse_u64(r->argv[4], "mount flags");
  unsigned long prop = (unsigned long)parse_u64(r->argv[5], "propagation flags");
  if (!(flags & MS_BIND) && (strcmp(type, "proc") == 0 || strcmp(type, "sysfs") == 0)) {
    /*
     * As runc: procfs and sysfs go on an ordinary directory only. A symlink there is the mount
     * redirection of CVE-2019-19921 (a container image or a shared volume swaps /proc for a link so
     * the container's procfs lands where the attacker wants it, and AppArmor/masks miss it).
     */
    int lfd = open_in_root(dest, O_PATH | O_NOFOLLOW);
    struct stat st;
    if (lfd >= 0 && fstat(lfd, &st) == 0 && !S_ISDIR(st.st_mode))
      fail("error mounting \"%s\" to rootfs at \"%s\": filesystem \"%s\" must be mounted on ordinary directory", src,
           dest, type);
    if (lfd < 0 && errno != ENOENT) fail("mount destination %s: %s", dest, strerror(errno));
    if (lfd >= 0) close(lfd);
  }
  int fd = make_dest(dest, strcmp(r->argv[7], "file") == 0);
  if (flags & MS_BIND) {
    if (mount(src, fdpath(fd), "", MS_BIND | (flags & MS_REC), NULL) < 0)
      fail("mount %s to %s: %s", src, dest, strerror(errno));
    unsigned long extra = flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
    if (extra) {
      close(fd);
      fd = open_in_root(dest, O_PATH);
      if (fd < 0) fail("reopen %s: %s", dest, strerror(errno));
      /* Flags a user namespace locked on the source must be kept or the remount fails. */
      struct statvfs sv;
      unsigned long keep = 0;
      if (fstatvfs(fd, &sv) == 0)
        keep = sv.f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY | MS_NOATIME | MS_NODIRATIME | MS_RELATIME);
      if ((flags & MS_RDONLY) == 0) keep &= ~(unsigned long)MS_RDONLY;
      if (mount(NULL, fdpath(fd), NULL, MS_REMOUNT | MS_BIND | extra | keep, NULL) < 0)
        fail("remount %s: %s", dest, strerror(errno));
    }
  } else {
    if (mount(src, fdpath(fd), type, flags, *data ? data : NULL) < 0)
      fail("mount %s (%s) to %s: %s", src, type, dest, strerror(errno));
  }
  if (prop) {
    close(fd);
    fd = open_in_root(dest, O_PATH);
    if (fd < 0 || mount(NULL, fdpath(fd), NULL, prop, NULL) < 0)
      fail("set propagation of %s: %s", dest, strerror(errno));
  }
  close(fd);
}

/* keyring NAME: a fresh session keyring for the container (runc's "_ses.<id>"), user-searchable. */
static void op_keyring(const char *name) {
  long id = syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, name, 0, 0, 0);
  if (id < 0) {
    if (errno == ENOSYS || errno == EPERM) return; /* no keyrings here (or seccomp said no), as runc */
    fail("join session keyring %s: %s", name, strerror(errno));
  }
  char desc[512];
  long n = syscall(SYS_keyctl, 6 /* KEYCTL_DESCRIBE */, id, desc, sizeof(desc) - 1, 0);
  if (n < 0) fail("describe session keyring: %s", strerror(errno));
  desc[n < (long)sizeof(desc) ? n : (long)sizeof(desc) - 1] = '\0';
  /* "type;uid;gid;perm;description" */
  char *p = desc;
  for (int i = 0; i < 3 && p; i++) p = strchr(p, ';') ? strchr(p, ';') + 1 : NULL;
  if (!p) fail("describe session keyring: unexpected %s", desc);
  unsigned long perm = strtoul(p, NULL, 16) | 0x080000 /* KEY_USR_SEARCH */;
  if (syscall(SYS_keyctl, 5 /* KEYCTL_SETPERM */, id, perm, 0, 0) < 0)
    fail("set session keyring permissions: %s", strerror(errno));
}

/* setattr DEST SET CLEAR: runc's recursive mount options ("rro", ...) via mount_setattr(AT_RECURSIVE). */
static void op_setattr(struct record *r) {
  if (r->argc != 4) fail("helper: bad setattr record");
  struct {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
  } attr = {parse_u64(r->argv[2], "mount attributes"), parse_u64(r->argv[3], "mount attributes"), 0, 0};
  int fd = open_in_root(r->argv[1], O_PATH);
  if (fd < 0) fail("setattr %s: %s", r->argv[1], strerror(errno));
  if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
    fail("set recursive mount options on %s: %s", r->argv[1], strerror(errno));
  close(fd);
}

/* device PATH TYPE MAJOR MINOR MODE UID GID BIND */
static void op_device(struct record *r) {
  if (r->argc != 9) fail("helper: bad device record");
  const char *path = r->argv[1];
  char type = r->argv[2][0];
  unsigned maj = (unsigned)parse_u64(r->argv[3], "major"), min = (unsigned)parse_u64(r->argv[4], "minor");
  mode_t mode = (mode_t)parse_u64(r->argv[5], "mode");
  uid_t duid = (uid_t)parse_u64(r->argv[6], "uid");
  gid_t dgid = (gid_t)parse_u64(r->argv[7], "gid");
  if (strcmp(r->argv[8], "1") == 0) {
    int fd = make_dest(path, 1);
    if (mount(path, fdpath(fd), "", MS_BIND, NULL) < 0) fail("bind device %s: %s", path, strerror(errno));
    close(fd);
    return;
  }
  mode_t kind = type == 'b' ? S_IFBLK : type == 'p' ? S_IFIFO : S_IFCHR;
  const char *name;
  int pfd = parent_in_root(path, &name);
  if (pfd < 0) fail("device %s: %s", path, strerror(errno));
  int dfd = open(fdpath(pfd), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) fail("device %s: %s", path, strerror(errno));
  unlinkat(dfd, name, 0);
  if (mknodat(dfd, name, kind | (mode & 07777), makedev(maj, min)) < 0)
    fail("mknod %s: %s", path, strerror(errno));
  if (fchownat(dfd, name, duid, dgid, AT_SYMLINK_NOFOLLOW) < 0) fail("chown %s: %s", path, strerror(errno));
  /* mknod honours the umask; the spec's mode is exact */
  if (fchmodat(dfd, name, mode & 07777, 0) < 0) fail("chmod %s: %s", path, strerror(errno));
  close(dfd);
  close(pfd);
}

/* symlink TARGET LINKPATH (an existing entry is left alone, as runc does for /dev links) */
static void op_symlink(struct record *r) {
  if (r->argc != 3) fail("helper: bad symlink record");
  const char *name;
  int pfd = parent_in_root(r->argv[2], &name);
  if (pfd < 0) fail("symlink %s: %s", r->argv[2], strerror(errno));
  int dfd = open(fdpath(pfd), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || (symlinkat(r->argv[1], dfd, name) < 0 && errno != EEXIST))
    fail("symlink %s -> %s: %s", r->argv[2], r->argv[1], strerror(errno));
  close(dfd);
  close(pfd);
}

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_mountinfo(char *s) {
  char *o = s;
  for (char *p = s; *p; p++) {
    if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' && p[3] <= '7') {
      *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
      p += 3;
    } else {
      *o++ = *p;
    }
  }
  *o = '\0';
}

/*
 * runc's rootfsParentMountPrivate: the mount the rootfs lies on (the longest mount point that is a prefix
 * of it) is made private if it is shared. pivot_root refuses a new root whose parent mount is shared
 * (EINVAL), which it is after rootfsPropagation "shared" whatever the caller's propagation was; and a
 * shared parent would propagate the rootfs bind mount to its peers.
 */
static void rootfs_parent_private(const char *rootfs) {
  char real[PATH_MAX];
  if (!realpath(rootfs, real)) fail("resolve rootfs %s: %s", rootfs, strerror(errno));
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) fail("open /proc/self/mountinfo: %s", strerror(errno));
  char *line = NULL, best[PATH_MAX] = "";
  size_t cap = 0, bestlen = 0;
  int best_shared = 0, found = 0;
  while (getline(&line, &cap, f) > 0) {
    /* id parent major:minor root mountpoint options [optional fields...] - fstype source superopts */
    char *save = NULL, *field = strtok_r(line, " \n", &save);
    char *mp = NULL;
    int shared = 0;
    for (int i = 0; field; i++, field = strtok_r(NULL, " \n", &save)) {
      if (i == 4) mp = field;
      if (i >= 6 && strcmp(field, "-") == 0) break;
      if (i >= 6 && strncmp(field, "shared:", 7) == 0) shared = 1;
    }
    if (!mp) continue;
    unescape_mountinfo(mp);
    size_t n = strlen(mp);
    int prefix = strcmp(mp, "/") == 0 || (strncmp(real, mp, n) == 0 && (real[n] == '/' || real[n] == '\0'));
    /* ">=": of two mounts on the same point, the later line is the one on top */
    if (prefix && n >= bestlen && n < sizeof(best)) {
      strcpy(best, mp);
      bestlen = n;
      best_shared = shared;
      found = 1;
    }
  }
  free(line);
  fclose(f);
  if (!found) fail("could not find the parent mount of %s", real);
  if (best_shared && mount("", best, "", MS_PRIVATE, NULL) < 0)
    fail("make the rootfs's parent mount %s private: %s", best, strerror(errno));
}

static void op_rootfs(struct record *r) {
  if (r->argc != 2) fail("helper: bad rootfs record");
  rootfs_path = strdup(r->argv[1]);
  rootfs_parent_private(rootfs_path);
  if (mount(rootfs_path, rootfs_path, "bind", MS_BIND | MS_REC, NULL) < 0)
    fail("bind rootfs %s: %s", rootfs_path, strerror(errno));
  rootfd = open(rootfs_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) fail("open rootfs %s: %s", rootfs_path, strerror(errno));
}

/*
 * runc's msMoveRoot, before the chroot of --no-pivot: the host's procfs and sysfs stay in the mount
 * namespace under a chroot, and the kernel lets a process that makes its own user namespace mount a
 * fresh procfs/sysfs if any full one is in its mount namespace (mount_too_revealing). So every full
 * (root "/") procfs/sysfs outside the rootfs is made rslave (the unmount must not reach the host) and
 * lazily unmounted; where the kernel refuses (a mount locked by our user namespace: EINVAL, or EPERM),
 * it is covered with a tmpfs, as runc does.
 */
static void hide_host_proc_sys(void) {
  char real[PATH_MAX];
  if (!realpath(rootfs_path, real)) fail("resolve rootfs %s: %s", rootfs_path, strerror(errno));
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) fail("open /proc/self/mountinfo: %s", strerror(errno));
  char **mps = NULL, *line = NULL;
  int n = 0;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    /* id parent major:minor root mountpoint options [optional fields...] - fstype source superopts */
    char *save = NULL, *field = strtok_r(line, " \n", &save), *root = NULL, *mp = NULL, *type = NULL;
    for (int i = 0, dash = 0; field; i++, field = strtok_r(NULL, " \n", &save)) {
      if (i == 3) root = field;
      if (i == 4) mp = field;
      if (dash) {
        type = field;
        break;
      }
      if (i >= 6 && strcmp(field, "-") == 0) dash = 1;
    }
    if (!root || !mp || !type || strcmp(root, "/") != 0) continue;
    if (strcmp(type, "proc") != 0 && strcmp(type, "sysfs") != 0) continue;
    unescape_mountinfo(mp);
    size_t len = strlen(real);
    if (strncmp(mp, real, len) == 0 && (mp[len] == '/' || mp[len] == '\0')) continue; /* the container's */
    push(&mps, &n, mp);
  }
  free(line);
  fclose(f);
  for (int i = 0; i < n; i++) {
    if (mount("", mps[i], "", MS_SLAVE | MS_REC, NULL) < 0) {
      if (errno == ENOENT) continue; /* under one detached before */
      fail("make %s rslave: %s", mps[i], strerror(errno));
    }
    if (umount2(mps[i], MNT_DETACH) < 0) {
      if (errno != EINVAL && errno != EPERM) fail("unmount %s: %s", mps[i], strerror(errno));
      if (mount("tmpfs", mps[i], "tmpfs", 0, NULL) < 0) fail("cover %s: %s", mps[i], strerror(errno));
    }
    free(mps[i]);
  }
  free(mps);
}

static void op_pivot(int no_pivot) {
  if (!rootfs_path) fail("helper: pivot without rootfs");
  if (no_pivot) {
    hide_host_proc_sys();
    if (chdir(rootfs_path) < 0) fail("chdir rootfs: %s", strerror(errno));
    if (mount(rootfs_path, "/", NULL, MS_MOVE, NULL) < 0) fail("move rootfs to /: %s", strerror(errno));
    if (chroot(".") < 0) fail("chroot: %s", strerror(errno));
  } else {
    int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    int newroot = open(rootfs_path, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (oldroot < 0 || newroot < 0) fail("pivot_root: open: %s", strerror(errno));
    if (fchdir(newroot) < 0) fail("pivot_root: chdir: %s", strerror(errno));
    if (syscall(SYS_pivot_root, ".", ".") < 0) fail("pivot_root %s: %s", rootfs_path, strerror(errno));
    if (fchdir(oldroot) < 0) fail("pivot_root: chdir old root: %s", strerror(errno));
    /* Make the old root a slave so the lazy unmount does not propagate to the host. */
    if (mount("", ".", "", MS_SLAVE | MS_REC, NULL) < 0) fail("pivot_root: make old root rslave: %s", strerror(errno));
    if (umount2(".", MNT_DETACH) < 0) fail("pivot_root: unmount old root: %s", strerror(errno));
    close(oldroot);
    close(newroot);
  }
  if (chdir("/") < 0) fail("chdir /: %s", strerror(errno));
  close(rootfd);
  rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

/*
 * The exec fifo's O_PATH, opened by the helper right after mkfifo with the caller's credentials: the
 * container may clone with another fsuid (see "clone" in main.c) that cannot reach the state directory.
 */
void preopen_fifo(const char *path) {
  fifo_fd = open(path, O_PATH | O_CLOEXEC);
  if (fifo_fd < 0) fail("open exec fifo %s: %s", path, strerror(errno));
}

void close_fifo(void) {
  if (fifo_fd >= 0) close(fifo_fd);
  fifo_fd = -1;
}

void console_connect(const char *path) { console_sock = unix_connect(path, "console socket"); }

/* console MOUNT_DEV_CONSOLE ROWS COLS: after pivot, so the pty belongs to the container's devpts. */
static void op_console(struct record *r) {
  if (r->argc != 4) fail("helper: bad console record");
  int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) fail("open /dev/ptmx: %s", strerror(errno));
  if (unlockpt(master) < 0) fail("unlockpt: %s", strerror(errno));
  char name[128];
  if (ptsname_r(master, name, sizeof(name)) != 0) fail("ptsname: %s", strerror(errno));
  int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) fail("open %s: %s", name, strerror(errno));
  unsigned rows = (unsigned)parse_u64(r->argv[2], "rows"), cols = (unsigned)parse_u64(r->argv[3], "cols");
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  /*
   * The size is set here, before the process runs: consoleSize, or, when the waiting helper relays the
   * pty to the caller's own terminal (our fd 0 until the dup2 below), that terminal's size, which is
   * what runc's relay ends up with too.
   */
  struct winsize term;
  if (console_relayed && isatty(0) && ioctl(0, TIOCGWINSZ, &term) == 0 && term.ws_row && term.ws_col) ws = term;
  if (ws.ws_row && ws.ws_col && ioctl(slave, TIOCSWINSZ, &ws) < 0) fail("set the console size: %s", strerror(errno));
  struct stat sst;
  if (fstat(slave, &sst) == 0) console_slave_rdev = sst.st_rdev;
  if (strcmp(r->argv[1], "1") == 0) {
    int fd = make_dest("/dev/console", 1);
    if (mount(name, fdpath(fd), "", MS_BIND, NULL) < 0) fail("bind %s to /dev/console: %s", name, strerror(errno));
    close(fd);
  }
  if (console_sock < 0) fail("helper: console without a console socket");
  if (send_fd(console_sock, master, "/dev/ptmx") < 0) fail("send the console to the console socket: %s", strerror(errno));
  close(console_sock);
  console_sock = -1;
  close(master);
  for (int i = 0; i < 3; i++)
    if (dup2(slave, i) < 0) fail("dup2 console: %s", strerror(errno));
  if (ioctl(0, TIOCSCTTY, 0) < 0) fail("set controlling terminal: %s", strerror(errno));
  close(slave);
}

static void op_mask(const char *path) {
  struct stat st;
  if (stat(path, &st) < 0) {
    if (errno == ENOENT) return;
    fail("masked path %s: %s", path, strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    if (mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL) < 0) fail("mask %s: %s", path, strerror(errno));
  } else if (mount("/dev/null", path, "", MS_BIND, NULL) < 0) {
    fail("mask %s: %s", path, strerror(errno));
  }
}

static unsigned long locked_flags(const char *path) {
  struct statvfs sv;
  if (statvfs(path, &sv) < 0) return 0;
  return sv.f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME);
}

static void op_readonly(const char *path) {
  if (mount(path, path, "", MS_BIND | MS_REC, NULL) < 0) {
    if (errno == ENOENT) return;
    fail("readonly path %s: %s", path, strerror(errno));
  }
  if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | locked_flags(path), NULL) < 0)
    fail("remount %s read-only: %s", path, strerror(errno));
}

static void write_file(const char *path, const char *value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail("open %s: %s", path, strerror(errno));
  size_t len = strlen(value);
  if (write(fd, value, len) != (ssize_t)len) fail("write %s: %s", path, strerror(errno));
  close(fd);
}

static void op_sysctl(const char *key, const char *value) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "/proc/sys/%s", key);
  for (char *p = path + 10; *p; p++)
    if (*p == '.') *p = '/';
  write_file(path, value);
}

/*
 * A new network namespace starts with its loopback interface down. runc brings it up ("loopback", the
 * only network its specconv gives a namespace it makes), so a workload can reach 127.0.0.1 without a
 * CNI plugin; a namespace joined by path is left as it is. A unix socket is enough for the interface
 * ioctls (the kernel answers them for any socket, in the socket's network namespace: ours by now).
 */
static void op_lo_up(void) {
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) fail("bring up the loopback interface: socket: %s", strerror(errno));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) fail("bring up the loopback interface: %s", strerror(errno));
  if (!(ifr.ifr_flags & IFF_UP)) {
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) fail("bring up the loopback interface: %s", strerror(errno));
  }
  close(s);
}

/* ---- the final process ---- */

static const char *env_get(const char *name) {
  size_t n = strlen(name);
  for (int i = 0; i < nenv; i++)
    if (strncmp(envv[i], name, n) == 0 && envv[i][n] == '=') return envv[i] + n + 1;
  return NULL;
}

static int is_executable_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Go spells errno strings in lower case ("no such file or directory"); engines match on those. */
static const char *gostrerror(int e) {
  static char buf[256];
  snprintf(buf, sizeof(buf), "%s", strerror(e));
  if (buf[0] >= 'A' && buf[0] <= 'Z') buf[0] = (char)(buf[0] - 'A' + 'a');
  return buf;
}

/* Go's exec.LookPath, with its error wording (engines map these strings to exit code 127). */
static char *look_path(const char *file) {
  fail_exit_code = 127;
  if (strchr(file, '/')) {
    struct stat st;
    if (stat(file, &st) < 0)
      fail("unable to start container process: exec: \"%s\": stat %s: %s", file, file, gostrerror(errno));
    if (S_ISDIR(st.st_mode) || access(file, X_OK) < 0)
      fail("unable to start container process: exec: \"%s\": permission denied", file);
    fail_exit_code = 1;
    return strdup(file);
  }
  const char *path = env_get("PATH");
  if (path) {
    char *copy = strdup(path), *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
      char full[PATH_MAX];
      snprintf(full, sizeof(full), "%s/%s", *dir ? dir : ".", file);
      if (is_executable_file(full)) {
        fail_exit_code = 1;
        return strdup(full);
      }
    }
    free(copy);
  }
  fail("unable to start container process: exec: \"%s\": executable file not found in $PATH", file);
}

static void apply_caps(void) {
  int last = CAP_LAST_CAP;
  FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
  if (f) {
    if (fscanf(f, "%d", &last) != 1) last = CAP_LAST_CAP;
    fclose(f);
  }
  /* bounding set first, while we still have CAP_SETPCAP */
  for (int c = 0; c <= last; c++)
    if (!(caps[0] & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
      fail("drop capability %d from the bounding set: %s", c, strerror(errno));
}

static void set_caps(void) {
  cap_t c = cap_init();
  if (!c) fail("cap_init: %s", strerror(errno));
  for (int i = 0; i < 64; i++) {
    cap_value_t v = i;
    if (caps[1] & (1ULL << i)) cap_set_flag(c, CAP_EFFECTIVE, 1, &v, CAP_SET);
    if (caps[2] & (1ULL << i)) cap_set_flag(c, CAP_PERMITTED, 1, &v, CAP_SET);
    if (caps[3] & (1ULL << i)) cap_set_flag(c, CAP_INHERITABLE, 1, &v, CAP_SET);
  }
  if (cap_set_proc(c) < 0) fail("apply capabilities: %s", strerror(errno));
  cap_free(c);
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  /* Like runc (gocapability), a cap that is not also permitted+inheritable is silently not raised. */
  for (int i = 0; i < 64; i++)
    if (caps[4] & (1ULL << i)) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, i, 0, 0);
}

/*
 * runc's fixStdioPermissions: a non-root process must be able to use its own terminal (and reopen its
 * stdio through /dev/stdout). The owner becomes the process's uid, the group is left as it is (devpts'
 * gid=5). Unlike runc, only what cannot be the caller's file is changed: the terminal made for the
 * container, pipes and sockets; a regular file or device the caller passed keeps its owner.
 */
static void fix_stdio_owner(void) {
  struct stat null;
  int have_null = stat("/dev/null", &null) == 0;
  for (int fd = 0; fd < 3; fd++) {
    struct stat st;
    struct statfs sf;
    if (fstat(fd, &st) < 0 || fstatfs(fd, &sf) < 0) continue;
    if (have_null && S_ISCHR(st.st_mode) && st.st_rdev == null.st_rdev) continue;
    int ours = (S_ISCHR(st.st_mode) && console_slave_rdev && st.st_rdev == console_slave_rdev) ||
               sf.f_type == PIPEFS_MAGIC || sf.f_type == SOCKFS_MAGIC;
    if (!ours || st.st_uid == uid) continue;
    /* EINVAL: the group is not mapped; EPERM: the owner is not; EROFS: read-only /dev. runc skips those. */
    if (fchown(fd, uid, st.st_gid) < 0 && errno != EINVAL && errno != EPERM && errno != EROFS)
      fail("chown stdio fd %d: %s", fd, strerror(errno));
  }
}

static void set_user(void) {
  if (ngids >= 0 && setgroups((size_t)ngids, gids) < 0) fail("setgroups: %s", strerror(errno));
  if (setresgid(gid, gid, gid) < 0) fail("setgid %u: %s", gid, strerror(errno));
  if (setresuid(uid, uid, uid) < 0) fail("setuid %u: %s", uid, strerror(errno));
}

static void die_like_go(int sig) {
  (void)sig;
  _exit(2);
}

static void finalize(void) __attribute__((noreturn));
static void finalize(void) {
  if (nargs == 0) fail("args must not be empty");
  if (want_nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail("set no_new_privs: %s", strerror(errno));
  if (seccomp && !want_nnp) plan_seccomp_load(seccomp);
  if (have_caps) {
    apply_caps();
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) fail("set keepcaps: %s", strerror(errno));
  }
  /*
   * runc changes directory before switching user (a cwd only root can reach still works) and, when that
   * was refused, again after it (a cwd only the user can reach, e.g. a volume chowned to it).
   */
  int chdir_later = 0;
  if (cwd && chdir(cwd) < 0) {
    if (errno != EACCES && errno != EPERM)
      fail("chdir to cwd (\"%s\") set in config.json failed: %s", cwd, gostrerror(errno));
    chdir_later = 1;
  }
  if (have_user) {
    fix_stdio_owner();
    set_user();
  }
  if (have_caps) {
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    set_caps();
  }
  if (chdir_later && chdir(cwd) < 0)
    fail("chdir to cwd (\"%s\") set in config.json failed: %s", cwd, gostrerror(errno));
  /* CVE-2024-21626: the working directory must be inside the container's root. */
  char here[PATH_MAX];
  if (!getcwd(here, sizeof(here)) || here[0] != '/')
    fail("current working directory is outside of container mount namespace root");
  /* Only 0-2 and the preserved fds survive execve; ours are already close-on-exec. */
  if (syscall(SYS_close_range, 3 + preserve, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
    for (int fd = 3 + preserve; fd < 1024; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  char *exe = look_path(args[0]);
  /*
   * With no_new_privs, as late as possible but, as in runc 1.1, before the exec fifo and the
   * startContainer hooks: those run filtered whatever noNewPrivileges says.
   */
  if (seccomp && want_nnp) plan_seccomp_load(seccomp);
  if (fifo_fd >= 0) {
    /*
     * runc's init is a Go program: while it waits on the fifo, SIGTERM/SIGINT/SIGHUP/... end it even
     * though it is the pid namespace's init (which ignores signals it has no handler for). Engines
     * rely on that (podman stop of a created container sends SIGTERM first), so catch them and exit
     * as Go does (status 2). execve resets caught signals, so the workload starts with defaults.
     */
    static const int fatal[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE};
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = die_like_go;
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) sigaction(fatal[i], &sa, NULL);
    char p[64];
    snprintf(p, sizeof(p), "/proc/self/fd/%d", fifo_fd);
    /*
     * The fifo is reopened through the container's /proc: without a proc mount there `start` could
     * never succeed, so `create` fails now (runc fails here too, on /proc/self/fd), not the init later.
     */
    struct stat fst;
    if (stat(p, &fst) < 0) fail("open exec fifo %s: %s (no /proc in the container?)", p, strerror(errno));
    if (send_msg(sync_fd, "ready", NULL) < 0) _exit(1);
    close(sync_fd);
    sync_fd = -1;
    int w = open(p, O_WRONLY | O_CLOEXEC); /* blocks until `start` opens the fifo for reading */
    if (w < 0) fail("open exec fifo: %s", strerror(errno));
    if (write(w, "0", 1) != 1) fail("write exec fifo: %s", strerror(errno));
    close(w);
    close(fifo_fd);
  }
  for (int i = 0; i < nstart_hooks; i++) run_hook("startContainer", i, &start_hooks[i], 1);
  execve(exe, args, envv ? envv : (char *[]){NULL});
  fail_exit_code = errno == ENOENT ? 127 : 126;
  fail("unable to start container process: exec: \"%s\": %s", args[0], gostrerror(errno));
}

/* ---- never mount in the caller's mount namespace ---- */

/* Mount namespaces (st_dev, st_ino of the nsfs file) the container must not mount in: the helper's own at
 * start and the one kata-ts says it runs in. A wrong join or a planning bug would otherwise make every
 * mount, and pivot_root, change the caller's (the host's) file system tree. */
static struct {
  unsigned long long dev, ino;
} forbidden_mntns[4];
static int nforbidden_mntns;

void note_forbidden_mntns(unsigned long long dev, unsigned long long ino) {
  if (nforbidden_mntns < (int)(sizeof(forbidden_mntns) / sizeof(forbidden_mntns[0]))) {
    forbidden_mntns[nforbidden_mntns].dev = dev;
    forbidden_mntns[nforbidden_mntns++].ino = ino;
  }
}

static void check_own_mntns(void) {
  static int checked;
  if (checked) return;
  struct stat st;
  if (stat("/proc/self/ns/mnt", &st) < 0) fail("container init: stat /proc/self/ns/mnt: %s", strerror(errno));
  if (nforbidden_mntns == 0) fail("helper: the caller's mount namespace is unknown; refusing to mount");
  for (int i = 0; i < nforbidden_mntns; i++)
    if (forbidden_mntns[i].dev == (unsigned long long)st.st_dev && forbidden_mntns[i].ino == (unsigned long long)st.st_ino)
      fail("container init: its mount namespace mnt:[%llu] is the one kata-ts runs in; refusing to mount in it",
           (unsigned long long)st.st_ino);
  checked = 1;
}

/* Records that mount, or change files or propagation, in the container's mount namespace. */
static int mounts_something(const char *op) {
  static const char *const ops[] = {"prop",  "rootfs", "mount",   "setattr", "mkdir",    "device",
                                    "symlink", "ptmx", "hook",    "pivot",   "chroot",   "console",
                                    "mask",  "readonly", "root-readonly", "sysctl", NULL};
  for (int i = 0; ops[i]; i++)
    if (strcmp(op, ops[i]) == 0) return 1;
  return 0;
}

void container_main(void) {
  struct record r;
  for (;;) {
    int got = read_record(sync_fd, &r);
    if (got < 0) fail("reading the plan: %s", strerror(errno));
    if (got == 0) _exit(1); /* the caller gave up: die quietly */
    const char *op = r.argv[0];
    int keep = 0;
    if (mounts_something(op)) check_own_mntns();
    if (strcmp(op, "go") == 0) {
      free_record(&r);
      finalize();
    } else if (strcmp(op, "setsid") == 0) {
      if (setsid() < 0) fail("setsid: %s", strerror(errno));
    } else if (strcmp(op, "become-root") == 0) {
      if (setresgid(0, 0, 0) < 0) fail("setgid 0 in the user namespace: %s", strerror(errno));
      if (setresuid(0, 0, 0) < 0) fail("setuid 0 in the user namespace: %s", strerror(errno));
    } else if (strcmp(op, "lo-up") == 0) {
      op_lo_up();
    } else if (strcmp(op, "unshare") == 0 && r.argc == 2) {
      if (unshare((int)parse_u64(r.argv[1], "unshare flags")) < 0) fail("unshare: %s", strerror(errno));
    } else if (strcmp(op, "prop") == 0 && r.argc == 2) {
      if (mount("", "/", "", (unsigned long)parse_u64(r.argv[1], "propagation"), NULL) < 0)
        fail("set rootfs propagation: %s", strerror(errno));
    } else if (strcmp(op, "rootfs") == 0) {
      op_rootfs(&r);
    } else if (strcmp(op, "mount") == 0) {
      op_mount(&r);
    } else if (strcmp(op, "keyring") == 0 && r.argc == 2) {
      op_keyring(r.argv[1]);
    } else if (strcmp(op, "setattr") == 0) {
      op_setattr(&r);
    } else if (strcmp(op, "mkdir") == 0 && r.argc == 3) {
      mkdir_all_in_root(r.argv[1], (mode_t)parse_u64(r.argv[2], "mode"));
    } else if (strcmp(op, "device") == 0) {
      op_device(&r);
    } else if (strcmp(op, "symlink") == 0) {
      op_symlink(&r);
    } else if (strcmp(op, "ptmx") == 0) {
      /* /dev/ptmx → the container's own devpts instance */
      int dfd = open_in_root("/dev", O_RDONLY | O_DIRECTORY);
      if (dfd < 0) fail("open /dev: %s", strerror(errno));
      if (unlinkat(dfd, "ptmx", 0) < 0 && errno != ENOENT) fail("remove /dev/ptmx: %s", strerror(errno));
      if (symlinkat("pts/ptmx", dfd, "ptmx") < 0) fail("symlink /dev/ptmx: %s", strerror(errno));
      close(dfd);
    } else if (strcmp(op, "hook") == 0 && r.argc >= 2) {
      if (strcmp(r.argv[1], "startContainer") == 0) {
        if (nstart_hooks >= 64) fail("too many startContainer hooks");
        start_hooks[nstart_hooks++] = r;
        keep = 1;
      } else {
        static int hook_index;
        run_hook(r.argv[1], hook_index++, &r, 1);
      }
    } else if (strcmp(op, "fifo") == 0 && r.argc == 2) {
      /* opened by the helper before clone (preopen_fifo) unless it came from elsewhere */
      if (fifo_fd < 0) fifo_fd = open(r.argv[1], O_PATH | O_CLOEXEC);
      if (fifo_fd < 0) fail("open exec fifo %s: %s", r.argv[1], strerror(errno));
    } else if (strcmp(op, "pivot") == 0) {
      op_pivot(0);
    } else if (strcmp(op, "chroot") == 0) {
      op_pivot(1);
    } else if (strcmp(op, "console") == 0) {
      op_console(&r);
    } else if (strcmp(op, "mask") == 0 && r.argc == 2) {
      op_mask(r.argv[1]);
    } else if (strcmp(op, "readonly") == 0 && r.argc == 2) {
      op_readonly(r.argv[1]);
    } else if (strcmp(op, "remount-ro") == 0 && r.argc == 3) {
      /*
       * A read-only /dev, once everything under it exists. Only this mount becomes read-only (a bind
       * remount): a superblock remount, as runc does, would also make the host's /dev read-only when
       * the spec mounts devtmpfs there.
       */
      unsigned long f = (unsigned long)parse_u64(r.argv[2], "mount flags") & ~(MS_BIND | MS_REC | MS_REMOUNT);
      if (mount(NULL, r.argv[1], NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | f | locked_flags(r.argv[1]), NULL) < 0)
        fail("remount %s read-only: %s", r.argv[1], strerror(errno));
    } else if (strcmp(op, "root-readonly") == 0) {
      if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | locked_flags("/"), NULL) < 0)
        fail("remount rootfs read-only: %s", strerror(errno));
    } else if (strcmp(op, "hostname") == 0 && r.argc == 2) {
      if (sethostname(r.argv[1], strlen(r.argv[1])) < 0) fail("sethostname: %s", strerror(errno));
    } else if (strcmp(op, "domainname") == 0 && r.argc == 2) {
      if (setdomainname(r.argv[1], strlen(r.argv[1])) < 0) fail("setdomainname: %s", strerror(errno));
    } else if (strcmp(op, "sysctl") == 0 && r.argc == 3) {
      op_sysctl(r.argv[1], r.argv[2]);
    } else if (strcmp(op, "rlimit") == 0 && r.argc == 4) {
      struct rlimit rl = {.rlim_cur = parse_u64(r.argv[2], "rlimit"), .rlim_max = parse_u64(r.argv[3], "rlimit")};
      int res = (int)parse_u64(r.argv[1], "rlimit type");
      if (setrlimit(res, &rl) < 0) fail("error setting rlimit type %d: %s", res, strerror(errno));
    } else if (strcmp(op, "oom") == 0 && r.argc == 2) {
      write_file("/proc/self/oom_score_adj", r.argv[1]);
    } else if (strcmp(op, "personality") == 0 && r.argc == 2) {
      if (personality((unsigned long)parse_u64(r.argv[1], "personality")) < 0)
        fail("personality: %s", strerror(errno));
    } else if (strcmp(op, "umask") == 0 && r.argc == 2) {
      umask((mode_t)parse_u64(r.argv[1], "umask"));
    } else if (strcmp(op, "caps") == 0 && r.argc == 6) {
      for (int i = 0; i < 5; i++) caps[i] = parse_u64(r.argv[i + 1], "capability mask");
      have_caps = 1;
    } else if (strcmp(op, "nnp") == 0) {
      want_nnp = 1;
    } else if (strcmp(op, "user") == 0 && r.argc >= 3) {
      uid = (uid_t)parse_u64(r.argv[1], "uid");
      gid = (gid_t)parse_u64(r.argv[2], "gid");
      ngids = r.argc - 3;
      gids = calloc((size_t)ngids + 1, sizeof(gid_t));
      for (int i = 0; i < ngids; i++) gids[i] = (gid_t)parse_u64(r.argv[3 + i], "gid");
      have_user = 1;
    } else if (strncmp(op, "seccomp-", 8) == 0) {
      if (!seccomp) seccomp = seccomp_new();
      seccomp_add(seccomp, &r);
    } else if (strcmp(op, "cwd") == 0 && r.argc == 2) {
      cwd = strdup(r.argv[1]);
    } else if (strcmp(op, "env") == 0 && r.argc == 2) {
      push(&envv, &nenv, r.argv[1]);
    } else if (strcmp(op, "arg") == 0 && r.argc == 2) {
      push(&args, &nargs, r.argv[1]);
    } else if (strcmp(op, "preserve") == 0 && r.argc == 2) {
      preserve = (int)parse_u64(r.argv[1], "preserve fds");
    } else {
      fail("helper: unknown or malformed record %s", op);
    }
    if (!keep) free_record(&r);
  }
}

/* ---- hooks that run inside the container's namespaces ---- */

/* hook KIND TIMEOUT PATH STATE NARGS ARG... ENV... */
void run_hook(const char *kind, int index, struct record *r, int first) {
  (void)first;
  if (r->argc < 7) fail("helper: bad hook record");
  int timeout = (int)parse_u64(r->argv[2], "hook timeout");
  const char *path = r->argv[3], *state = r->argv[4];
  int n = (int)parse_u64(r->argv[5], "hook argc");
  if (6 + n > r->argc) fail("helper: bad hook record");
  char **hargv = calloc((size_t)n + 2, sizeof(char *));
  for (int i = 0; i < n; i++) hargv[i] = r->argv[6 + i];
  if (n == 0) hargv[0] = (char *)path;
  int ne = r->argc - 6 - n;
  char **henv = calloc((size_t)ne + 1, sizeof(char *));
  for (int i = 0; i < ne; i++) henv[i] = r->argv[6 + n + i];
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) fail("%s hook: pipe: %s", kind, strerror(errno));
  pid_t pid = fork();
  if (pid < 0) fail("%s hook: fork: %s", kind, strerror(errno));
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execve(path, hargv, henv);
    dprintf(2, "exec %s: %s", path, strerror(errno));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  /* a hook that does not read its stdin must not kill us; the workload must not inherit SIG_IGN */
  struct sigaction ign, saved;
  memset(&ign, 0, sizeof(ign));
  ign.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ign, &saved);
  (void)!write(in[1], state, strlen(state));
  close(in[1]);
  sigaction(SIGPIPE, &saved, NULL);
  char outbuf[2048];
  size_t outlen = 0;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  int status = 0, done = 0;
  for (;;) {
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    int rc = poll(&p, 1, 50);
    if (rc > 0) {
      char tmp[512];
      ssize_t k = read(out[0], tmp, sizeof(tmp));
      if (k > 0) {
        size_t c = (size_t)k < sizeof(outbuf) - 1 - outlen ? (size_t)k : sizeof(outbuf) - 1 - outlen;
        memcpy(outbuf + outlen, tmp, c);
        outlen += c;
      } else if (k == 0) {
        close(out[0]);
        out[0] = -1;
      }
    }
    if (waitpid(pid, &status, WNOHANG) == pid) {
      done = 1;
      break;
    }
    if (out[0] < 0) {
      /* output closed: just wait, with the timeout */
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (timeout > 0 && now.tv_sec - start.tv_sec >= timeout) break;
  }
  if (out[0] >= 0) close(out[0]);
  outbuf[outlen] = '\0';
  for (char *p = outbuf; *p; p++)
    if (*p == '\n') *p = ' ';
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fail("error running %s hook #%d: hook ran past specified timeout of %d.0s", kind, index, timeout);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    free(hargv);
    free(henv);
    return;
  }
  if (WIFSIGNALED(status))
    fail("error running %s hook #%d: signal: %s, output: %s", kind, index, strsignal(WTERMSIG(status)), outbuf);
  fail("error running %s hook #%d: exit status %d, output: %s", kind, index, WEXITSTATUS(status), outbuf);
}
