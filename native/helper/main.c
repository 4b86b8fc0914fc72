/*
 * kata-ts-helper: the part of the container engine Node cannot do (fork/clone, setns, exec in place).
 * It executes a plan that TypeScript computed; it parses only length-prefixed string records.
 *
 *   kata-ts-helper SYNC_FD [spare]
 *
 * "spare": started ahead of need (the guest agent keeps one, docs/guest.md): after its re-exec it waits
 * for its stdio, 3 or 4 fds (0-2, and the console fd after the sync fd) passed over SYNC_FD with
 * SCM_RIGHTS, and then runs as above. EOF instead of fds: it was not needed, it exits. The byte that
 * carries the fds is "r" when the spare must first execute itself again (a VM template's spare, resumed
 * in a clone: a new address layout and stack canary from the clone's reseeded kernel).
 * Phase 1 (read here, before clone): "setns PATH TYPE"..., then "clone FLAGS MODE" (MODE = detach|wait).
 * After clone the parent sends "pid N" and either exits (detach: the container process was cloned with
 * CLONE_PARENT and is our caller's child) or stays to relay signals and exit with the workload's status
 * (wait). The child reads phase 2 (see init.c) once the caller has finished its side (maps, cgroups,
 * prestart hooks).
 *
 * CVE-2019-5736: before anything else the helper re-executes itself from a sealed memfd copy, so a
 * container process that gets hold of /proc/PID/exe can never write to the binary on the host.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <termios.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/nsfile.h"
#include "helper.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#define HELPER_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

extern char **environ;

/* True when /proc/self/exe is already our sealed memfd copy. */
static int is_sealed_copy(void) {
  int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  int seals = fcntl(fd, F_GET_SEALS);
  close(fd);
  return seals >= 0 && (seals & HELPER_SEALS) == HELPER_SEALS;
}

static void reexec_sealed(char **argv) {
  if (is_sealed_copy()) return;
  int src = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (src < 0) fail("helper: open /proc/self/exe: %s", strerror(errno));
  struct stat st;
  if (fstat(src, &st) < 0) fail("helper: stat /proc/self/exe: %s", strerror(errno));
  int mfd = memfd_create("kata-ts-helper", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mfd < 0) fail("helper: memfd_create: %s", strerror(errno));
  off_t left = st.st_size;
  while (left > 0) {
    ssize_t n = sendfile(mfd, src, NULL, (size_t)left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("helper: copying itself into a memfd: %s", n < 0 ? strerror(errno) : "short copy");
    left -= n;
  }
  close(src);
  if (fcntl(mfd, F_ADD_SEALS, HELPER_SEALS) < 0) fail("helper: sealing the memfd: %s", strerror(errno));
  fexecve(mfd, argv, environ);
  fail("helper: re-exec from the sealed memfd: %s", strerror(errno));
}

static const struct {
  const char *name;
  int flag;
} ns_types[] = {{"user", CLONE_NEWUSER}, {"ipc", CLONE_NEWIPC},    {"uts", CLONE_NEWUTS},
                {"network", CLONE_NEWNET}, {"pid", CLONE_NEWPID}, {"cgroup", CLONE_NEWCGROUP},
                {"mount", CLONE_NEWNS},   {"time", 0x00000080 /* CLONE_NEWTIME */}};

static int ns_type(const char *name) {
  for (size_t i = 0; i < sizeof(ns_types) / sizeof(ns_types[0]); i++)
    if (strcmp(ns_types[i].name, name) == 0) return ns_types[i].flag;
  fail("helper: unknown namespace type %s", name);
}

/* "network", for messages */
static const char *ns_name(int flag) {
  static char buf[32];
  for (size_t i = 0; i < sizeof(ns_types) / sizeof(ns_types[0]); i++)
    if (ns_types[i].flag == flag) return ns_types[i].name;
  snprintf(buf, sizeof(buf), "unknown (0x%x)", flag);
  return buf;
}

static pid_t relay_target;
static int tty_master = -1; /* foreground terminal: the pty master we relay */
static int chld_pipe[2] = {-1, -1};
static void relay(int sig) {
  if (sig == SIGWINCH && tty_master >= 0) {
    struct winsize ws;
    if (ioctl(0, TIOCGWINSZ, &ws) == 0) ioctl(tty_master, TIOCSWINSZ, &ws);
    return;
  }
  if (relay_target > 0) kill(relay_target, sig);
}
static void on_chld(int sig) {
  (void)sig;
  int e = errno;
  if (chld_pipe[1] >= 0) (void)!write(chld_pipe[1], "x", 1);
  errno = e;
}

/* Receives the pty master the container sends over the internal console socket. */
static int recv_master(int sock) {
  char data[64], cbuf[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof(int));
  return fd;
}

static int copy_once(int from, int to) {
  char buf[8192];
  ssize_t n = read(from, buf, sizeof(buf));
  if (n <= 0) return n < 0 && (errno == EINTR || errno == EAGAIN) ? 1 : 0;
  for (ssize_t off = 0; off < n;) {
    ssize_t w = write(to, buf + off, (size_t)(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return 0;
    off += w;
  }
  return 1;
}

/*
 * `run`/`exec` in the foreground with a terminal and no --console-socket (runc proxies the pty itself):
 * our stdin goes to the pty master, its output to our stdout, our terminal is raw meanwhile.
 */
static void relay_tty(pid_t child) {
  struct termios saved;
  int raw = isatty(0) && tcgetattr(0, &saved) == 0;
  if (raw) {
    struct termios t = saved;
    cfmakeraw(&t);
    tcsetattr(0, TCSANOW, &t);
    struct winsize ws;
    if (ioctl(0, TIOCGWINSZ, &ws) == 0) ioctl(tty_master, TIOCSWINSZ, &ws);
  }
  int in_open = 1;
  for (;;) {
    struct pollfd p[3] = {{.fd = tty_master, .events = POLLIN},
                          {.fd = in_open ? 0 : -1, .events = POLLIN},
                          {.fd = chld_pipe[0], .events = POLLIN}};
    if (poll(p, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[0].revents & POLLIN) {
      if (!copy_once(tty_master, 1)) break;
    } else if (p[0].revents & (POLLHUP | POLLERR)) {
      break;
    }
    if (p[1].revents & (POLLIN | POLLHUP)) {
      if (!copy_once(0, tty_master)) in_open = 0;
    }
    if (p[2].revents & POLLIN) {
      int st;
      if (waitpid(child, &st, WNOHANG | __WNOTHREAD) != 0) {
        /* drain what the workload wrote last, then report its status */
        while (poll(p, 1, 0) > 0 && (p[0].revents & POLLIN) && copy_once(tty_master, 1)) {
        }
        if (raw) tcsetattr(0, TCSANOW, &saved);
        if (WIFEXITED(st)) _exit(WEXITSTATUS(st));
        if (WIFSIGNALED(st)) _exit(128 + WTERMSIG(st));
        _exit(255);
      }
    }
  }
  if (raw) tcsetattr(0, TCSANOW, &saved);
}

/* The foreground parent: forward every catchable signal, exit like the workload did. */
static void wait_and_exit(pid_t child) __attribute__((noreturn));
static void wait_and_exit(pid_t child) {
  relay_target = child;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = relay;
  sa.sa_flags = SA_RESTART;
  for (int s = 1; s < NSIG; s++) {
    if (s == SIGKILL || s == SIGSTOP || s == SIGCHLD) continue;
    sigaction(s, &sa, NULL); /* fails harmlessly for the realtime signals glibc reserves */
  }
  sigset_t none;
  sigemptyset(&none);
  if (tty_master >= 0 && pipe2(chld_pipe, O_CLOEXEC | O_NONBLOCK) == 0) {
    struct sigaction sc;
    memset(&sc, 0, sizeof(sc));
    sc.sa_handler = on_chld;
    sc.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sc, NULL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    relay_tty(child);
  }
  sigprocmask(SIG_SETMASK, &none, NULL);
  for (;;) {
    int status;
    pid_t p = waitpid(child, &status, 0);
    if (p < 0 && errno == EINTR) continue;
    if (p < 0) _exit(255);
    if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) _exit(128 + WTERMSIG(status));
  }
}

static int relay_pair[2] = {-1, -1};

/* A spare's stdio: the fds come in one message, before any record; 0-2, then the console fd. The
 * message's byte: "r" to re-execute first. */
static char adopt_stdio(void) {
  char data[1], cbuf[CMSG_SPACE(4 * sizeof(int))];
  struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
  ssize_t n;
  do n = recvmsg(sync_fd, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n == 0) _exit(0); /* the agent dropped us (or went away) unused */
  if (n < 0) fail("helper: waiting for stdio: %s", strerror(errno));
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) fail("helper: spare got no stdio fds");
  int nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
  if (nfds < 3 || nfds > 4 || (msg.msg_flags & MSG_CTRUNC)) fail("helper: spare got %d stdio fds", nfds);
  int got[4], high[4];
  memcpy(got, CMSG_DATA(c), (size_t)nfds * sizeof(int));
  /* Out of the way first: a received fd may already sit on another's target number. */
  for (int i = 0; i < nfds; i++) {
    high[i] = fcntl(got[i], F_DUPFD_CLOEXEC, 64);
    if (high[i] < 0) fail("helper: spare stdio: %s", strerror(errno));
    close(got[i]);
  }
  for (int i = 0; i < nfds; i++) {
    int target = i < 3 ? i : sync_fd + 1;
    if (dup2(high[i], target) < 0) fail("helper: spare stdio to fd %d: %s", target, strerror(errno));
    close(high[i]);
  }
  return data[0];
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: kata-ts-helper SYNC_FD [spare] (run by kata-ts, not by hand)\n");
    return 2;
  }
  set_sync_fd((int)parse_u64(argv[1], "sync fd"));
  reexec_sealed(argv);
  /* Our caller's mount namespace, before any setns: the container init must never mount in it. */
  struct stat own_mnt;
  if (stat("/proc/self/ns/mnt", &own_mnt) < 0) fail("helper: stat /proc/self/ns/mnt: %s", strerror(errno));
  note_forbidden_mntns((unsigned long long)own_mnt.st_dev, (unsigned long long)own_mnt.st_ino);
  /* The caller (Node) may have left signals blocked or ignored; the workload must start clean. */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  for (int s = 1; s < NSIG; s++)
    if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
  if (argc > 2 && strcmp(argv[2], "spare") == 0 && adopt_stdio() == 'r') {
    /* the sealed copy again (no new copy: it is sealed), as a helper that has its stdio and sync fd */
    char *args[] = {argv[0], argv[1], NULL};
    execve("/proc/self/exe", args, environ);
    fail("helper: re-exec of a resumed spare: %s", strerror(errno));
  }

  unsigned long flags = 0;
  int wait_mode = 0, have_clone = 0, console_fd_given = 0;
  long long clone_fsuid = -1;
  struct record r;
  int pending_ns[16], pending_type[16];
  int npending = 0;
  while (!have_clone) {
    int got = read_record(sync_fd, &r);
    if (got < 0) fail("helper: reading the plan: %s", strerror(errno));
    if (got == 0) _exit(1); /* the caller went away: nothing to do */
    const char *op = r.argv[0];
    if (strcmp(op, "setns") == 0 && r.argc == 3) {
      /* Open them all first: /proc/PID/ns paths stop resolving once we left the caller's mount ns. */
      int fd = open_ns_file(r.argv[1]); /* never opens a fifo or device for real (it could block) */
      if (fd == -2) fail("linux.namespaces: %s is not a namespace (declared type %s)", r.argv[1], r.argv[2]);
      if (fd < 0) fail("open namespace %s: %s", r.argv[1], strerror(errno));
      if (npending >= 16) fail("helper: too many namespaces to join");
      /* TS checked the type; this check (and setns with the type) holds even if it did not. */
      int want = ns_type(r.argv[2]), got = ioctl(fd, KATA_NS_GET_NSTYPE);
      if (got < 0) fail("linux.namespaces: %s is not a namespace (declared type %s)", r.argv[1], r.argv[2]);
      if (got != want)
        fail("linux.namespaces: %s is of type %s, not the declared type %s", r.argv[1], ns_name(got), r.argv[2]);
      pending_ns[npending] = fd;
      pending_type[npending++] = want;
    } else if (strcmp(op, "forbid-mntns") == 0 && r.argc == 3) {
      /* kata-ts's own mount namespace (st_dev, st_ino), as it sees it: normally the same as ours */
      note_forbidden_mntns(parse_u64(r.argv[1], "device"), parse_u64(r.argv[2], "inode"));
    } else if (strcmp(op, "timens") == 0) {
      /* a new time namespace for the child: unshare, then set the offsets before anyone is in it */
      if (unshare(0x00000080 /* CLONE_NEWTIME */) < 0) fail("unshare time namespace: %s", strerror(errno));
      int fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
      if (fd < 0) fail("open /proc/self/timens_offsets: %s", strerror(errno));
      for (int i = 1; i < r.argc; i++) {
        size_t len = strlen(r.argv[i]);
        if (write(fd, r.argv[i], len) != (ssize_t)len) fail("write time offsets \"%s\": %s", r.argv[i], strerror(errno));
      }
      close(fd);
    } else if (strcmp(op, "mkfifo") == 0 && r.argc == 2) {
      /* the exec fifo: Node has no mkfifo */
      if (mkfifo(r.argv[1], 0622) < 0) fail("mkfifo %s: %s", r.argv[1], strerror(errno));
      /* exactly 0622, whatever the umask: the init may open it for writing after setuid */
      if (chmod(r.argv[1], 0622) < 0) fail("chmod %s: %s", r.argv[1], strerror(errno));
      preopen_fifo(r.argv[1]);
    } else if (strcmp(op, "console-connect") == 0 && r.argc == 2) {
      /* before setns: the socket path is the caller's, the container may not see it */
      console_connect(r.argv[1]);
    } else if (strcmp(op, "console-fd") == 0 && r.argc == 1) {
      /* the caller's own console socket (the guest agent), handed to us as the fd after the sync fd */
      console_sock = sync_fd + 1;
      if (fcntl(console_sock, F_SETFD, FD_CLOEXEC) < 0) fail("helper: console fd %d: %s", console_sock, strerror(errno));
      console_fd_given = 1;
    } else if (strcmp(op, "seccomp-connect") == 0 && r.argc == 2) {
      /* the seccomp listener (linux.seccomp.listenerPath), reached before any setns */
      seccomp_listener = unix_connect(r.argv[1], "seccomp listener");
    } else if (strcmp(op, "console-relay") == 0) {
      /* an internal console socket: the container sends its pty master to us (see relay_tty) */
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, relay_pair) < 0)
        fail("helper: console socketpair: %s", strerror(errno));
    } else if (strcmp(op, "clone") == 0 && (r.argc == 3 || r.argc == 4)) {
      flags = (unsigned long)parse_u64(r.argv[1], "clone flags");
      wait_mode = strcmp(r.argv[2], "wait") == 0;
      if (r.argc == 4) clone_fsuid = (long long)parse_u64(r.argv[3], "clone fsuid");
      have_clone = 1;
    } else {
      fail("helper: unexpected phase-1 record %s", op);
    }
    free_record(&r);
  }
  /* The order TS sent is the order to join (user first, mount last). */
  for (int i = 0; i < npending; i++) {
    /* With the type: the kernel refuses a namespace of another type (EINVAL). */
    if (setns(pending_ns[i], pending_type[i]) < 0) fail("setns %s: %s", ns_name(pending_type[i]), strerror(errno));
    close(pending_ns[i]);
  }
  unsigned long cflags = flags | SIGCHLD;
  if (!wait_mode) cflags |= CLONE_PARENT;
  /* clone FLAGS MODE FSUID: the namespaces (a new IPC one's mqueue root) are made with this fsuid */
  uid_t saved_fsuid = 0;
  if (clone_fsuid >= 0) {
    saved_fsuid = (uid_t)setfsuid((uid_t)clone_fsuid);
    if ((long long)setfsuid((uid_t)-1) != clone_fsuid) fail("setfsuid %lld: not permitted", clone_fsuid);
  }
  pid_t pid = (pid_t)syscall(SYS_clone, cflags, 0, NULL, NULL, 0);
  if (pid < 0) fail("clone: %s", strerror(errno));
  if (pid > 0 && clone_fsuid >= 0) setfsuid(saved_fsuid);
  if (pid > 0) close_fifo(); /* the container's copy is the one that counts */
  if (pid == 0) {
    in_child = 1;
    if (relay_pair[0] >= 0) {
      close(relay_pair[0]);
      console_sock = relay_pair[1];
      console_relayed = 1;
    }
    container_main();
  }
  if (relay_pair[1] >= 0) close(relay_pair[1]);
  /* the container sends the master; our copy would keep the caller from seeing EOF if it dies first */
  if (console_fd_given) close(console_sock);
  char buf[32];
  snprintf(buf, sizeof(buf), "%d", pid);
  if (send_msg(sync_fd, "pid", buf) < 0) {
    kill(pid, SIGKILL);
    _exit(1);
  }
  if (!wait_mode) _exit(0);
  close(sync_fd);
  if (relay_pair[0] >= 0) {
    tty_master = recv_master(relay_pair[0]);
    close(relay_pair[0]);
  }
  wait_and_exit(pid);
}
