// kata-ts-standin: the host process that stands in for one container process (init or exec) running
// inside a VM. Engines wait on the pid in --pid-file as if it were the container process, so this tiny
// program is that pid:
//   1. connects to the sandbox supervisor's unix socket and sends, in one message with SCM_RIGHTS,
//      "standin <container-id> <exec-id|-> <terminal 0|1>\n" plus its stdio fds (0, 1, 2; with a
//      terminal only fd 0, the host pty slave);
//   2. closes its own copies of the stdio pipes (only the supervisor relays them; EOF must follow the
//      workload, not us). With a terminal it keeps the slave: it is its controlling tty, so resizes by
//      the engine (on the master) arrive here as SIGWINCH;
//   3. forwards every catchable signal as "signal N\n" and SIGWINCH as "resize ROWS COLS\n";
//   4. exits as the supervisor says: "exit N\n" → exit(N); "kill N\n" → dies of signal N (the engine
//      then sees exactly what runc's init would have produced). Connection lost → exit 255.
// Tools that look at "the container's processes" through this pid join its mount namespace and read
// /proc there (podman top, via psgo): so the stand-in lives in a mount namespace of its own whose root
// is an empty read-only tmpfs (empty /proc and /dev), and they see no process rather than every
// process of the host.
// No allocation after start-up, no stdio library use after the hello: RSS stays near the libc minimum.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#define EXIT_SANDBOX_DIED 255

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig) {
  int saved = errno;
  unsigned char b = (unsigned char)sig;
  // A full pipe drops the signal: 64 KiB of pending signals means nobody reads them anyway.
  (void)!write(sig_pipe[1], &b, 1);
  errno = saved;
}

static void die(const char *what) {
  // stderr may already be the workload's: only before the hello do we print, and only then call this.
  dprintf(2, "kata-ts-standin: %s: %s\n", what, strerror(errno));
  _exit(EXIT_SANDBOX_DIED);
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static void set_cloexec(int fd) { fcntl(fd, F_SETFD, FD_CLOEXEC); }

// Dies of sig (as the workload did), falling back to 128+sig when the signal does not kill by default.
static void die_of_signal(int sig) {
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  signal(sig, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  raise(sig);
  _exit(128 + sig);
}

// Handles one line from the supervisor; returns only when the line does not end the process.
static void on_line(const char *line) {
  int n;
  if (sscanf(line, "exit %d", &n) == 1) _exit(n & 0xff);
  if (sscanf(line, "kill %d", &n) == 1 && n > 0 && n < 65) die_of_signal(n);
  // "ok" and unknown lines are ignored (forward compatibility).
}

// Best effort (without CAP_SYS_ADMIN it stays as it was); nothing here is visible outside this process.
// The namespace's root becomes an empty read-only tmpfs with empty /proc and /dev (what psgo reads), and
// the copy of the host's mounts is detached, so this long-lived process pins no host mount (as runc's
// init, which pivots away from them too). Needs nothing from the file system afterwards: the socket is
// connected and /dev/null is open by then.
static void hide_host_processes(void) {
  if (unshare(CLONE_NEWNS) < 0) return;
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return;
  if (mount("none", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=555") < 0) return;
  if (chdir("/proc") < 0) return;
  mkdir("proc", 0555);
  mkdir("dev", 0555);
  // pivot_root(".", "."): the old root ends up stacked on the new one and is detached right away.
  if (syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0) {
    (void)!chdir("/");
    return;
  }
  (void)!chdir("/");
  mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    dprintf(2, "usage: kata-ts-standin SOCKET CONTAINER-ID EXEC-ID|- TERMINAL(0|1)\n");
    return 2;
  }
  const char *sock_path = argv[1];
  int terminal = strcmp(argv[4], "1") == 0;

  // The signal pipe first, so no signal between here and the loop is lost.
  if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) die("pipe2");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigfillset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int s = 1; s < 65; s++) {
    if (s == SIGKILL || s == SIGSTOP || s == SIGCHLD || (s > 31 && s < SIGRTMIN)) continue;
    sigaction(s, &sa, NULL);
  }

  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) die("socket");
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(sock_path) >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    die(sock_path);
  }
  strcpy(addr.sun_path, sock_path);
  while (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
    if (errno != EINTR) die(sock_path);
  }

  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  hide_host_processes();

  if (terminal) {
    // The slave becomes our controlling tty (SIGWINCH on resize) and a transparent byte pipe: the
    // guest's own pty does echo and line editing.
    setsid();
    ioctl(0, TIOCSCTTY, 0);
    struct termios t;
    if (tcgetattr(0, &t) == 0) {
      cfmakeraw(&t);
      tcsetattr(0, TCSANOW, &t);
    }
  }

  char hello[512];
  int len = snprintf(hello, sizeof hello, "standin %s %s %d\n", argv[2], argv[3], terminal);
  if (len <= 0 || (size_t)len >= sizeof hello) {
    errno = ENAMETOOLONG;
    die("hello");
  }
  int fds[3] = {0, 1, 2};
  int nfds = terminal ? 1 : 3;
  struct iovec iov = {.iov_base = hello, .iov_len = (size_t)len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * 3)];
    struct cmsghdr align;
  } cm;
  memset(&cm, 0, sizeof cm);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                       .msg_controllen = CMSG_SPACE(sizeof(int) * nfds)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  ssize_t sent;
  do sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  if (sent < 0) die("send hello");
  if (sent < len && write_all(sock, hello + sent, (size_t)(len - sent)) < 0) die("send hello");

  // Our copies of the stdio go; /dev/null keeps fds 0-2 occupied so nothing else lands there.
  int keep_tty = terminal ? fcntl(0, F_DUPFD_CLOEXEC, 3) : -1;
  for (int fd = 0; fd < 3; fd++) {
    if (devnull >= 0) dup2(devnull, fd);
    else close(fd);
  }
  if (devnull > 2) close(devnull);
  if (keep_tty >= 0) set_cloexec(keep_tty);

  char in[256];
  size_t have = 0;
  for (;;) {
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(sock, &rd);
    FD_SET(sig_pipe[0], &rd);
    int maxfd = sock > sig_pipe[0] ? sock : sig_pipe[0];
    if (select(maxfd + 1, &rd, NULL, NULL, NULL) < 0) {
      if (errno == EINTR) continue;
      _exit(EXIT_SANDBOX_DIED);
    }
    if (FD_ISSET(sig_pipe[0], &rd)) {
      unsigned char sigs[64];
      ssize_t n = read(sig_pipe[0], sigs, sizeof sigs);
      for (ssize_t i = 0; i < n; i++) {
        char out[64];
        int l;
        struct winsize ws;
        if (sigs[i] == SIGWINCH && keep_tty >= 0 && ioctl(keep_tty, TIOCGWINSZ, &ws) == 0)
          l = snprintf(out, sizeof out, "resize %u %u\n", ws.ws_row, ws.ws_col);
        else
          l = snprintf(out, sizeof out, "signal %d\n", sigs[i]);
        if (write_all(sock, out, (size_t)l) < 0) _exit(EXIT_SANDBOX_DIED);
      }
    }
    if (FD_ISSET(sock, &rd)) {
      ssize_t n = recv(sock, in + have, sizeof in - 1 - have, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(EXIT_SANDBOX_DIED);
      have += (size_t)n;
      in[have] = 0;
      char *start = in, *nl;
      while ((nl = strchr(start, '\n')) != NULL) {
        *nl = 0;
        on_line(start);
        start = nl + 1;
      }
      have = strlen(start);
      memmove(in, start, have);
      if (have == sizeof in - 1) have = 0; // an over-long line: drop it
    }
  }
}
