// kata_native: the few system calls Node cannot make, exposed through Node-API (C only, no node-gyp).
//   flock, SCM_RIGHTS fd passing, pseudo-terminals, window size, child subreaper, fd utilities, and
//   loading/attaching cgroup v2 device filters (eBPF), and the type of a namespace file.
// Every call is synchronous. Failures throw an Error whose message is "<call>: <strerror>" and which
// carries `code` ("EAGAIN"), `errno` (negative, as Node's own errors) and `syscall`.
// Every fd this addon creates is O_CLOEXEC: libuv does not close stray fds in children it spawns, so a
// descriptor without the flag would leak into every process kata-ts starts.
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/uio.h>
#include <linux/random.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "../common/nsfile.h"

// SCM_MAX_FD in the kernel: the most descriptors one message can carry.
#define MAX_FDS_PER_MSG 253
#define MAX_RECV_BYTES (16 * 1024 * 1024)

// A pending JS exception makes every later napi call fail; helpers return NULL after throwing and the
// entry points pass that NULL straight back to Node.
#define CHECK(call)                                                                                        \
  do {                                                                                                     \
    if ((call) != napi_ok) return NULL;                                                                    \
  } while (0)

static void set_prop(napi_env env, napi_value obj, const char *key, napi_value v) {
  napi_set_named_property(env, obj, key, v);
}

static napi_value throw_code(napi_env env, const char *call, int err, const char *detail) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s: %s", call, detail ? detail : strerror(err));
  const char *name = strerrorname_np(err);
  napi_value m, c, e, n, s;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &c);
  napi_create_error(env, c, m, &e);
  napi_create_int32(env, -err, &n);
  set_prop(env, e, "errno", n);
  napi_create_string_utf8(env, call, NAPI_AUTO_LENGTH, &s);
  set_prop(env, e, "syscall", s);
  napi_throw(env, e);
  return NULL;
}

static napi_value throw_errno(napi_env env, const char *call, int err) {
  return throw_code(env, call, err, NULL);
}

static napi_value throw_type(napi_env env, const char *fn, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", fn, what);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

// Reads argument i as a non-negative int32; throws a TypeError and returns false otherwise.
static bool arg_int(napi_env env, napi_value *argv, size_t argc, size_t i, const char *fn, const char *name,
                    int32_t *out) {
  napi_valuetype t = napi_undefined;
  if (i < argc) napi_typeof(env, argv[i], &t);
  double d = -1;
  if (t == napi_number) napi_get_value_double(env, argv[i], &d);
  if (t != napi_number || d < 0 || d > 2147483647.0 || d != (double)(int32_t)d) {
    char what[128];
    snprintf(what, sizeof what, "%s must be a non-negative integer", name);
    throw_type(env, fn, what);
    return false;
  }
  *out = (int32_t)d;
  return true;
}

static bool arg_bool(napi_env env, napi_value *argv, size_t argc, size_t i, bool *out) {
  *out = false;
  if (i >= argc) return true;
  napi_valuetype t;
  napi_typeof(env, argv[i], &t);
  if (t == napi_undefined || t == napi_null) return true;
  napi_value b;
  if (napi_coerce_to_bool(env, argv[i], &b) != napi_ok) return false;
  return napi_get_value_bool(env, b, out) == napi_ok;
}

static napi_value make_int(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

static napi_value make_bool(napi_env env, bool v) {
  napi_value r;
  napi_get_boolean(env, v, &r);
  return r;
}

static napi_value make_undefined(napi_env env) {
  napi_value r;
  napi_get_undefined(env, &r);
  return r;
}

#define ARGS(n)                                                                                            \
  size_t argc = n;                                                                                         \
  napi_value argv[n];                                                                                      \
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL))

// flock(fd, "sh"|"ex"|"un", nonBlocking) → true, or false when nonBlocking and the lock is held elsewhere.
static napi_value js_flock(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t fd;
  if (!arg_int(env, argv, argc, 0, "flock", "fd", &fd)) return NULL;
  char op[4] = {0};
  size_t len = 0;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[1], op, sizeof op, &len) != napi_ok)
    return throw_type(env, "flock", "op must be \"sh\", \"ex\" or \"un\"");
  int how;
  if (strcmp(op, "sh") == 0) how = LOCK_SH;
  else if (strcmp(op, "ex") == 0) how = LOCK_EX;
  else if (strcmp(op, "un") == 0) how = LOCK_UN;
  else return throw_type(env, "flock", "op must be \"sh\", \"ex\" or \"un\"");
  bool nb;
  if (!arg_bool(env, argv, argc, 2, &nb)) return NULL;
  if (nb) how |= LOCK_NB;
  for (;;) {
    if (flock(fd, how) == 0) return make_bool(env, true);
    if (errno == EINTR) continue;
    if (nb && errno == EWOULDBLOCK) return make_bool(env, false);
    return throw_errno(env, "flock", errno);
  }
}

// sendFds(socketFd, fds[], data) → bytes sent. The data must be at least one byte: a stream socket does
// not deliver ancillary data without payload.
static napi_value js_send_fds(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t sock;
  if (!arg_int(env, argv, argc, 0, "sendFds", "socketFd", &sock)) return NULL;
  bool is_array = false;
  if (argc >= 2) napi_is_array(env, argv[1], &is_array);
  if (!is_array) return throw_type(env, "sendFds", "fds must be an array of fds");
  uint32_t nfds;
  CHECK(napi_get_array_length(env, argv[1], &nfds));
  if (nfds > MAX_FDS_PER_MSG) return throw_type(env, "sendFds", "too many fds for one message (max 253)");
  bool is_buf = false;
  if (argc >= 3) napi_is_buffer(env, argv[2], &is_buf);
  if (!is_buf) return throw_type(env, "sendFds", "data must be a Buffer");
  void *data;
  size_t dlen;
  CHECK(napi_get_buffer_info(env, argv[2], &data, &dlen));
  if (dlen == 0) return throw_type(env, "sendFds", "data must be at least 1 byte");

  int fds[MAX_FDS_PER_MSG];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value el;
    CHECK(napi_get_element(env, argv[1], i, &el));
    if (!arg_int(env, &el, 1, 0, "sendFds", "every fd", &fds[i])) return NULL;
  }
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
    struct cmsghdr align;
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec iov = {.iov_base = data, .iov_len = dlen};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, "sendmsg", errno);
  return make_int(env, n);
}

// recvFds(socketFd, maxFds, maxBytes) → {data, fds}; data is empty at end of stream. Received fds are
// O_CLOEXEC. More fds than maxFds is an error (the kernel would have closed the extra ones).
static napi_value js_recv_fds(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t sock, max_fds, max_bytes;
  if (!arg_int(env, argv, argc, 0, "recvFds", "socketFd", &sock)) return NULL;
  if (!arg_int(env, argv, argc, 1, "recvFds", "maxFds", &max_fds)) return NULL;
  if (!arg_int(env, argv, argc, 2, "recvFds", "maxBytes", &max_bytes)) return NULL;
  if (max_fds > MAX_FDS_PER_MSG) max_fds = MAX_FDS_PER_MSG;
  if (max_bytes < 1 || max_bytes > MAX_RECV_BYTES)
    return throw_type(env, "recvFds", "maxBytes must be between 1 and 16 MiB");

  char *data = malloc((size_t)max_bytes);
  if (!data) return throw_errno(env, "recvFds", ENOMEM);
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = data, .iov_len = (size_t)max_bytes};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (max_fds > 0) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
  }
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    int e = errno;
    free(data);
    return throw_errno(env, "recvmsg", e);
  }

  int got[MAX_FDS_PER_MSG];
  size_t ngot = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k && ngot < MAX_FDS_PER_MSG; i++) memcpy(&got[ngot++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    for (size_t i = 0; i < ngot; i++) close(got[i]);
    free(data);
    return throw_code(env, "recvmsg", EMSGSIZE, "more fds arrived than maxFds (the rest were closed)");
  }

  napi_value result, buf, arr;
  void *copy;
  if (napi_create_buffer_copy(env, (size_t)n, data, &copy, &buf) != napi_ok) {
    for (size_t i = 0; i < ngot; i++) close(got[i]);
    free(data);
    return NULL;
  }
  free(data);
  CHECK(napi_create_array_with_length(env, ngot, &arr));
  for (size_t i = 0; i < ngot; i++) CHECK(napi_set_element(env, arr, (uint32_t)i, make_int(env, got[i])));
  CHECK(napi_create_object(env, &result));
  set_prop(env, result, "data", buf);
  set_prop(env, result, "fds", arr);
  return result;
}

// openpty() → {master, slave, name}; both fds O_CLOEXEC and not the controlling terminal of this process.
static napi_value js_openpty(napi_env env, napi_callback_info info) {
  (void)info;
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return throw_errno(env, "posix_openpt", errno);
  char name[128];
  const char *failed = NULL;
  if (grantpt(master) < 0) failed = "grantpt";
  else if (unlockpt(master) < 0) failed = "unlockpt";
  else if ((errno = ptsname_r(master, name, sizeof name)) != 0) failed = "ptsname_r";
  if (failed) {
    int e = errno;
    close(master);
    return throw_errno(env, failed, e);
  }
  int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) {
    int e = errno;
    close(master);
    return throw_errno(env, "open pty slave", e);
  }
  napi_value r, s;
  CHECK(napi_create_object(env, &r));
  set_prop(env, r, "master", make_int(env, master));
  set_prop(env, r, "slave", make_int(env, slave));
  CHECK(napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &s));
  set_prop(env, r, "name", s);
  return r;
}

static napi_value js_set_winsize(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t fd, rows, cols;
  if (!arg_int(env, argv, argc, 0, "setWinsize", "fd", &fd)) return NULL;
  if (!arg_int(env, argv, argc, 1, "setWinsize", "rows", &rows)) return NULL;
  if (!arg_int(env, argv, argc, 2, "setWinsize", "cols", &cols)) return NULL;
  if (rows > 65535 || cols > 65535) return throw_type(env, "setWinsize", "rows and cols must be below 65536");
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  if (ioctl(fd, TIOCSWINSZ, &ws) < 0) return throw_errno(env, "ioctl TIOCSWINSZ", errno);
  return make_undefined(env);
}

static napi_value js_get_winsize(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!arg_int(env, argv, argc, 0, "getWinsize", "fd", &fd)) return NULL;
  struct winsize ws;
  if (ioctl(fd, TIOCGWINSZ, &ws) < 0) return throw_errno(env, "ioctl TIOCGWINSZ", errno);
  napi_value r;
  CHECK(napi_create_object(env, &r));
  set_prop(env, r, "rows", make_int(env, ws.ws_row));
  set_prop(env, r, "cols", make_int(env, ws.ws_col));
  return r;
}

// Orphaned descendants (a container init whose parent exited) are re-parented to this process.
static napi_value js_set_child_subreaper(napi_env env, napi_callback_info info) {
  (void)info;
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) return throw_errno(env, "prctl PR_SET_CHILD_SUBREAPER", errno);
  return make_undefined(env);
}

// socketpair() → [fd, fd]: AF_UNIX stream, blocking, O_CLOEXEC (hand one end to a child via stdio).
static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  (void)info;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return throw_errno(env, "socketpair", errno);
  napi_value arr;
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_set_element(env, arr, 0, make_int(env, sv[0])));
  CHECK(napi_set_element(env, arr, 1, make_int(env, sv[1])));
  return arr;
}

// pipe() → [readFd, writeFd], O_CLOEXEC. Container stdio must be real pipes, not the unix socketpairs
// Node's spawn makes: `echo > /dev/stdout` reopens the fd through /proc, which fails for a socket.
static napi_value js_pipe(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return throw_errno(env, "pipe2", errno);
  napi_value arr;
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_set_element(env, arr, 0, make_int(env, fds[0])));
  CHECK(napi_set_element(env, arr, 1, make_int(env, fds[1])));
  return arr;
}

static napi_value js_close_fd(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!arg_int(env, argv, argc, 0, "closeFd", "fd", &fd)) return NULL;
  // Linux always releases the fd, even when close reports EINTR: retrying could close someone else's.
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, "close", errno);
  return make_undefined(env);
}

// dupFd(fd) → a new fd (lowest free, at least 3 so it never lands on stdio), O_CLOEXEC.
static napi_value js_dup_fd(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!arg_int(env, argv, argc, 0, "dupFd", "fd", &fd)) return NULL;
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (r < 0) return throw_errno(env, "fcntl F_DUPFD_CLOEXEC", errno);
  return make_int(env, r);
}

static napi_value js_set_cloexec(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  bool on;
  if (!arg_int(env, argv, argc, 0, "setCloexec", "fd", &fd)) return NULL;
  if (!arg_bool(env, argv, argc, 1, &on)) return NULL;
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return throw_errno(env, "fcntl F_GETFD", errno);
  flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (fcntl(fd, F_SETFD, flags) < 0) return throw_errno(env, "fcntl F_SETFD", errno);
  return make_undefined(env);
}

// ---- cgroup v2 device filters ----
// cgroup v2 has no devices.allow: the kernel asks every BPF_PROG_TYPE_CGROUP_DEVICE program attached to
// the cgroup (and its ancestors) whether an open or mknod may proceed. The program is generated in
// TypeScript (src/engine/cgroups/devicefilter.ts); these calls load it, attach it to a cgroup directory
// fd, and take away the programs attached there before, so set() can replace a container's rules.
#include <linux/bpf.h>
#include <stdint.h>
#include <sys/syscall.h>

// The kernel's BPF_CGROUP_MAX_PROGS: no cgroup holds more programs of one attach type.
#define MAX_ATTACHED_PROGS 64
#define VERIFIER_LOG_SIZE (64 * 1024)

static long sys_bpf(int cmd, union bpf_attr *attr) {
  return syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

// Ids of the device programs attached directly to dirfd (not inherited ones); the count, or -errno.
static int query_device_filters(int dirfd, uint32_t *ids) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.query.target_fd = (uint32_t)dirfd;
  attr.query.attach_type = BPF_CGROUP_DEVICE;
  attr.query.prog_ids = (uint64_t)(uintptr_t)ids;
  attr.query.prog_cnt = MAX_ATTACHED_PROGS;
  if (sys_bpf(BPF_PROG_QUERY, &attr) < 0) return -errno;
  return (int)attr.query.prog_cnt;
}

// BPF_PROG_LOAD; on failure the verifier's last log line goes to why (empty when it has none).
static int load_device_program(const void *insns, uint32_t count, char *why, size_t why_len) {
  static const char license[] = "Apache";
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  attr.insns = (uint64_t)(uintptr_t)insns;
  attr.insn_cnt = count;
  attr.license = (uint64_t)(uintptr_t)license;
  // Shows in bpftool's listing, so an operator can tell whose program it is.
  static const char name[] = "kata_ts_devices";
  _Static_assert(sizeof name <= sizeof attr.prog_name, "program name too long");
  memcpy(attr.prog_name, name, sizeof name);
  why[0] = '\0';
  int fd = (int)sys_bpf(BPF_PROG_LOAD, &attr);
  if (fd >= 0) return fd;
  int err = errno;
  if (err == EACCES || err == EINVAL) {
    // Load again with the verifier log on, only to explain the refusal.
    char *log = calloc(1, VERIFIER_LOG_SIZE);
    if (log) {
      attr.log_level = 1;
      attr.log_buf = (uint64_t)(uintptr_t)log;
      attr.log_size = VERIFIER_LOG_SIZE;
      int again = (int)sys_bpf(BPF_PROG_LOAD, &attr);
      if (again >= 0) close(again);
      size_t n = strnlen(log, VERIFIER_LOG_SIZE - 1);
      while (n > 0 && (log[n - 1] == '\n' || log[n - 1] == ' ')) log[--n] = '\0';
      char *last = strrchr(log, '\n');
      snprintf(why, why_len, "%s", last ? last + 1 : log);
      free(log);
    }
  }
  errno = err;
  return -1;
}

static napi_value throw_bpf(napi_env env, const char *call, int err, const char *why) {
  if (!why || !why[0]) return throw_errno(env, call, err);
  char detail[400];
  snprintf(detail, sizeof detail, "%s (verifier: %s)", strerror(err), why);
  return throw_code(env, call, err, detail);
}

static void close_all(int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]);
}

// attachDeviceFilter(cgroupDirFd, insns) → {id, replaced}: loads insns (a Buffer of 8-byte struct bpf_insn)
// as a cgroup device program, attaches it to the cgroup with BPF_F_ALLOW_MULTI and detaches the device
// programs that were attached to that cgroup before (runc does the same): the new rules apply whole, and
// the cgroup is never without a filter in between. With exactly one old program, BPF_F_REPLACE swaps it
// atomically (kernel 5.6+; older kernels attach first, then detach).
static napi_value js_attach_device_filter(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t dirfd;
  if (!arg_int(env, argv, argc, 0, "attachDeviceFilter", "cgroupDirFd", &dirfd)) return NULL;
  bool is_buf = false;
  if (argc >= 2) napi_is_buffer(env, argv[1], &is_buf);
  if (!is_buf) return throw_type(env, "attachDeviceFilter", "insns must be a Buffer");
  void *insns;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[1], &insns, &len));
  if (len == 0 || len % sizeof(struct bpf_insn) != 0)
    return throw_type(env, "attachDeviceFilter", "insns must hold whole 8-byte instructions");

  uint32_t ids[MAX_ATTACHED_PROGS];
  int n = query_device_filters(dirfd, ids);
  if (n < 0) return throw_errno(env, "bpf BPF_PROG_QUERY", -n);
  int old[MAX_ATTACHED_PROGS];
  int nold = 0;
  for (int i = 0; i < n; i++) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_id = ids[i];
    int fd = (int)sys_bpf(BPF_PROG_GET_FD_BY_ID, &attr);
    if (fd >= 0) old[nold++] = fd;
    else if (errno != ENOENT) {  // ENOENT: detached meanwhile
      int e = errno;
      close_all(old, nold);
      return throw_errno(env, "bpf BPF_PROG_GET_FD_BY_ID", e);
    }
  }

  char why[256];
  int prog = load_device_program(insns, (uint32_t)(len / sizeof(struct bpf_insn)), why, sizeof why);
  if (prog < 0) {
    int e = errno;
    close_all(old, nold);
    return throw_bpf(env, "bpf BPF_PROG_LOAD", e, why);
  }

  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.target_fd = (uint32_t)dirfd;
  attr.attach_bpf_fd = (uint32_t)prog;
  attr.attach_type = BPF_CGROUP_DEVICE;
  attr.attach_flags = BPF_F_ALLOW_MULTI;
  bool replaced = false;
  if (nold == 1) {
    attr.attach_flags |= BPF_F_REPLACE;
    attr.replace_bpf_fd = (uint32_t)old[0];
    replaced = sys_bpf(BPF_PROG_ATTACH, &attr) == 0;
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    attr.replace_bpf_fd = 0;
  }
  if (!replaced && sys_bpf(BPF_PROG_ATTACH, &attr) < 0) {
    int e = errno;
    close(prog);
    close_all(old, nold);
    return throw_errno(env, "bpf BPF_PROG_ATTACH", e);
  }
  for (int i = 0; i < nold && !replaced; i++) {
    union bpf_attr d;
    memset(&d, 0, sizeof d);
    d.target_fd = (uint32_t)dirfd;
    d.attach_bpf_fd = (uint32_t)old[i];
    d.attach_type = BPF_CGROUP_DEVICE;
    if (sys_bpf(BPF_PROG_DETACH, &d) < 0 && errno != ENOENT) {
      int e = errno;
      close(prog);
      close_all(old, nold);
      return throw_errno(env, "bpf BPF_PROG_DETACH", e);
    }
  }
  close_all(old, nold);

  struct bpf_prog_info pinfo;
  memset(&pinfo, 0, sizeof pinfo);
  union bpf_attr q;
  memset(&q, 0, sizeof q);
  q.info.bpf_fd = (uint32_t)prog;
  q.info.info_len = sizeof pinfo;
  q.info.info = (uint64_t)(uintptr_t)&pinfo;
  int info_err = sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &q) < 0 ? errno : 0;
  // The cgroup holds its own reference: the program lives as long as it stays attached.
  close(prog);
  if (info_err) return throw_errno(env, "bpf BPF_OBJ_GET_INFO_BY_FD", info_err);
  napi_value r;
  CHECK(napi_create_object(env, &r));
  set_prop(env, r, "id", make_int(env, pinfo.id));
  set_prop(env, r, "replaced", make_int(env, nold));
  return r;
}

// deviceFilterIds(cgroupDirFd) → the ids of the device programs attached directly to that cgroup.
static napi_value js_device_filter_ids(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t dirfd;
  if (!arg_int(env, argv, argc, 0, "deviceFilterIds", "cgroupDirFd", &dirfd)) return NULL;
  uint32_t ids[MAX_ATTACHED_PROGS];
  int n = query_device_filters(dirfd, ids);
  if (n < 0) return throw_errno(env, "bpf BPF_PROG_QUERY", -n);
  napi_value arr;
  CHECK(napi_create_array_with_length(env, (size_t)n, &arr));
  for (int i = 0; i < n; i++) CHECK(napi_set_element(env, arr, (uint32_t)i, make_int(env, ids[i])));
  return arr;
}

// bpfProgramExists(id) → false once the kernel has freed the program (nothing holds it any more).
static napi_value js_bpf_program_exists(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t id;
  if (!arg_int(env, argv, argc, 0, "bpfProgramExists", "id", &id)) return NULL;
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_id = (uint32_t)id;
  int fd = (int)sys_bpf(BPF_PROG_GET_FD_BY_ID, &attr);
  if (fd >= 0) {
    close(fd);
    return make_bool(env, true);
  }
  if (errno == ENOENT) return make_bool(env, false);
  return throw_errno(env, "bpf BPF_PROG_GET_FD_BY_ID", errno);
}

// nsType(path): the CLONE_NEW* value of the namespace the file at path is (ioctl NS_GET_NSTYPE), or 0 when
// it is not a namespace file (a fifo or a device named by a config.json is never really opened: nsfile.h).
static napi_value js_ns_type(napi_env env, napi_callback_info info) {
  ARGS(1);
  char path[4096];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok)
    return throw_type(env, "nsType", "path must be a string");
  if (len >= sizeof path - 1) return throw_errno(env, "open", ENAMETOOLONG);
  int fd = open_ns_file(path);
  if (fd == -2) return make_int(env, 0);
  if (fd < 0) return throw_errno(env, "open", errno);
  int t = ioctl(fd, KATA_NS_GET_NSTYPE);
  int e = errno;
  close(fd);
  if (t < 0) return throw_errno(env, "ioctl NS_GET_NSTYPE", e);
  return make_int(env, t);
}

// reseedRandom(bytes): mixes host-given random bytes into the kernel's pool, credited as entropy
// (RNDADDENTROPY), then forces the CRNG to reseed at once (RNDRESEEDCRNG). A VM cloned from a template
// starts with the template's CRNG state: without the forced reseed, two clones would read the same
// /dev/urandom bytes until the kernel's next scheduled reseed. Kata's agent does the same on a clone.
static napi_value js_reseed_random(napi_env env, napi_callback_info info) {
  ARGS(1);
  void *data = NULL;
  size_t len = 0;
  bool isbuf = false;
  if (argc >= 1) napi_is_buffer(env, argv[0], &isbuf);
  if (!isbuf) return throw_type(env, "reseedRandom", "bytes must be a Buffer");
  CHECK(napi_get_buffer_info(env, argv[0], &data, &len));
  if (len == 0 || len > 4096) return throw_type(env, "reseedRandom", "bytes must hold 1 to 4096 bytes");
  struct rand_pool_info *rpi = malloc(sizeof *rpi + len);
  if (!rpi) return throw_errno(env, "malloc", ENOMEM);
  rpi->entropy_count = (int)(len * 8);
  rpi->buf_size = (int)len;
  memcpy(rpi->buf, data, len);
  int fd = open("/dev/random", O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    free(rpi);
    return throw_errno(env, "open /dev/random", e);
  }
  int r = ioctl(fd, RNDADDENTROPY, rpi);
  int e = errno;
  free(rpi);
  if (r == 0) {
    r = ioctl(fd, RNDRESEEDCRNG);
    e = errno;
    close(fd);
    if (r < 0) return throw_errno(env, "ioctl RNDRESEEDCRNG", e);
    return make_undefined(env);
  }
  close(fd);
  return throw_errno(env, "ioctl RNDADDENTROPY", e);
}

// setRealtime(ms): sets CLOCK_REALTIME to ms since the epoch (a clone resumes with its template's clock).
static napi_value js_set_realtime(napi_env env, napi_callback_info info) {
  ARGS(1);
  double ms = -1;
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (t == napi_number) napi_get_value_double(env, argv[0], &ms);
  if (t != napi_number || !(ms > 0)) return throw_type(env, "setRealtime", "ms must be a positive number");
  struct timespec ts;
  ts.tv_sec = (time_t)(ms / 1000);
  ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  if (ts.tv_nsec > 999999999) ts.tv_nsec = 999999999;
  if (clock_settime(CLOCK_REALTIME, &ts) < 0) return throw_errno(env, "clock_settime", errno);
  return make_undefined(env);
}

// Reads argument i as a string into buf (size bytes, NUL-terminated); throws a TypeError and returns
// false when it is not a string or does not fit.
static bool arg_str(napi_env env, napi_value *argv, size_t argc, size_t i, const char *fn, const char *name,
                    char *buf, size_t size) {
  size_t len = 0;
  napi_valuetype t = napi_undefined;
  if (i < argc) napi_typeof(env, argv[i], &t);
  if (t != napi_string || napi_get_value_string_utf8(env, argv[i], buf, size, &len) != napi_ok ||
      len >= size - 1) {
    char what[128];
    snprintf(what, sizeof what, "%s must be a string shorter than %zu bytes", name, size - 1);
    throw_type(env, fn, what);
    return false;
  }
  return true;
}

// mount(source, target, fstype, flags, data): mount(2) as it is ("" fstype or data: NULL). The guest
// agent mounts the sandbox share with it: spawning busybox `mount` from node costs ~0.1-0.25 s under
// TCG (node's fork), the syscall itself a few ms.
static napi_value js_mount(napi_env env, napi_callback_info info) {
  ARGS(5);
  static char source[4096], target[4096], fstype[256], data[4096];
  int32_t flags = 0;
  if (!arg_str(env, argv, argc, 0, "mount", "source", source, sizeof source) ||
      !arg_str(env, argv, argc, 1, "mount", "target", target, sizeof target) ||
      !arg_str(env, argv, argc, 2, "mount", "fstype", fstype, sizeof fstype) ||
      !arg_int(env, argv, argc, 3, "mount", "flags", &flags) ||
      !arg_str(env, argv, argc, 4, "mount", "data", data, sizeof data))
    return NULL;
  if (mount(source, target, fstype[0] ? fstype : NULL, (unsigned long)(uint32_t)flags, data[0] ? data : NULL) < 0)
    return throw_errno(env, "mount", errno);
  return make_undefined(env);
}

// umount2(target, flags).
static napi_value js_umount2(napi_env env, napi_callback_info info) {
  ARGS(2);
  static char target[4096];
  int32_t flags = 0;
  if (!arg_str(env, argv, argc, 0, "umount2", "target", target, sizeof target) ||
      !arg_int(env, argv, argc, 1, "umount2", "flags", &flags))
    return NULL;
  if (umount2(target, flags) < 0) return throw_errno(env, "umount2", errno);
  return make_undefined(env);
}

// statvfsFlags(path): statvfs(3)'s f_flag (ST_NOSUID, ST_NODEV, ...: the same bits as the MS_* flags),
// which a bind remount must carry over or the kernel clears (or refuses to clear) them.
static napi_value js_statvfs_flags(napi_env env, napi_callback_info info) {
  ARGS(1);
  static char path[4096];
  if (!arg_str(env, argv, argc, 0, "statvfsFlags", "path", path, sizeof path)) return NULL;
  struct statvfs st;
  if (statvfs(path, &st) < 0) return throw_errno(env, "statvfs", errno);
  return make_int(env, (int32_t)(st.f_flag & 0x7fffffff));
}

// startPriming(fd, intervalMs): a detached thread writes this process's pid to fd (its own cgroup.procs,
// opened by the caller; the thread owns it and closes it) every intervalMs until stopPriming() or a
// failed write. Each write is a no-op migration that keeps the kernel's cgroup_threadgroup_rwsem past its
// RCU grace period, so the container's real join does not wait for one (src/engine/cgroups/prime.ts says
// why). A thread, not libuv's pool: the series must go on while the main thread runs synchronous code.
static atomic_uint prime_generation;

struct primer {
  int fd;
  unsigned generation;
  unsigned interval_ms;
};

static void *prime_loop(void *arg) {
  struct primer *p = arg;
  char pid[16];
  int n = snprintf(pid, sizeof pid, "%d", (int)getpid());
  while (atomic_load(&prime_generation) == p->generation) {
    if (pwrite(p->fd, pid, (size_t)n, 0) < 0) break;
    struct timespec ts = {0, (long)p->interval_ms * 1000000L};
    nanosleep(&ts, NULL);
  }
  close(p->fd);
  free(p);
  return NULL;
}

static napi_value js_start_priming(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd, interval;
  if (!arg_int(env, argv, argc, 0, "startPriming", "fd", &fd) ||
      !arg_int(env, argv, argc, 1, "startPriming", "intervalMs", &interval))
    return NULL;
  // The fd is ours from here on, also when no thread comes to take it.
  struct primer *p = malloc(sizeof *p);
  if (!p) {
    close(fd);
    return throw_errno(env, "malloc", ENOMEM);
  }
  // A new generation stops any earlier series.
  *p = (struct primer){fd, atomic_fetch_add(&prime_generation, 1) + 1, interval > 0 ? (unsigned)interval : 1};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t t;
  int err = pthread_create(&t, &attr, prime_loop, p);
  pthread_attr_destroy(&attr);
  if (err) {
    close(fd);
    free(p);
    return throw_errno(env, "pthread_create", err);
  }
  return make_undefined(env);
}

static napi_value js_stop_priming(napi_env env, napi_callback_info info) {
  (void)info;
  atomic_fetch_add(&prime_generation, 1);
  return make_undefined(env);
}

static napi_value init(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"flock", js_flock},
      {"sendFds", js_send_fds},
      {"recvFds", js_recv_fds},
      {"openpty", js_openpty},
      {"setWinsize", js_set_winsize},
      {"getWinsize", js_get_winsize},
      {"setChildSubreaper", js_set_child_subreaper},
      {"socketpair", js_socketpair},
      {"pipe", js_pipe},
      {"closeFd", js_close_fd},
      {"dupFd", js_dup_fd},
      {"setCloexec", js_set_cloexec},
      {"attachDeviceFilter", js_attach_device_filter},
      {"deviceFilterIds", js_device_filter_ids},
      {"bpfProgramExists", js_bpf_program_exists},
      {"nsType", js_ns_type},
      {"reseedRandom", js_reseed_random},
      {"setRealtime", js_set_realtime},
      {"mount", js_mount},
      {"umount2", js_umount2},
      {"statvfsFlags", js_statvfs_flags},
      {"startPriming", js_start_priming},
      {"stopPriming", js_stop_priming},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    CHECK(napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &f));
    CHECK(napi_set_named_property(env, exports, fns[i].name, f));
  }
  return exports;
}

NAPI_MODULE(kata_native, init)
