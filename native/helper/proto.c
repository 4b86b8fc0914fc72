/*
 * The sync-socket wire format, both directions: a record is a native-endian u32 payload length followed
 * by the payload, a sequence of NUL-terminated strings whose first is the op. Nothing else is parsed.
 * Also the helper's other unix sockets: connecting one, passing an fd over one.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "helper.h"

#define MAX_RECORD (16u << 20)

int sync_fd = -1;
int in_child = 0;

void set_sync_fd(int fd) { sync_fd = fd; }

static int read_full(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      struct pollfd p = {.fd = fd, .events = POLLIN};
      poll(&p, 1, -1);
      continue;
    }
    if (n < 0) return -1;
    if (n == 0) return 0;
    p += n;
    len -= (size_t)n;
  }
  return 1;
}

static int write_full(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, -1);
      continue;
    }
    if (n < 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int read_record(int fd, struct record *r) {
  uint32_t len;
  memset(r, 0, sizeof(*r));
  int got = read_full(fd, &len, sizeof(len));
  if (got <= 0) return got;
  if (len == 0 || len > MAX_RECORD) {
    errno = EPROTO;
    return -1;
  }
  r->buf = malloc(len + 1);
  if (!r->buf) return -1;
  got = read_full(fd, r->buf, len);
  if (got <= 0) {
    if (got == 0) errno = EPROTO;
    free(r->buf);
    r->buf = NULL;
    return -1;
  }
  r->buf[len] = '\0'; /* a payload that forgot its final NUL still ends */
  int n = 0;
  for (uint32_t i = 0; i < len; i++)
    if (r->buf[i] == '\0') n++;
  if (r->buf[len - 1] != '\0') n++;
  r->argv = calloc((size_t)n + 1, sizeof(char *));
  if (!r->argv) return -1;
  char *p = r->buf;
  for (int i = 0; i < n; i++) {
    r->argv[i] = p;
    p += strlen(p) + 1;
  }
  r->argc = n;
  return 1;
}

void free_record(struct record *r) {
  free(r->buf);
  free(r->argv);
  memset(r, 0, sizeof(*r));
}

int send_msg(int fd, const char *op, const char *arg) {
  size_t a = strlen(op) + 1, b = arg ? strlen(arg) + 1 : 0;
  uint32_t len = (uint32_t)(a + b);
  char *buf = malloc(sizeof(len) + len);
  if (!buf) return -1;
  memcpy(buf, &len, sizeof(len));
  memcpy(buf + sizeof(len), op, a);
  if (arg) memcpy(buf + sizeof(len) + a, arg, b);
  int rc = write_full(fd, buf, sizeof(len) + len);
  free(buf);
  return rc;
}

int fail_exit_code = 1;

/* One line to the caller (or to stderr once the caller is gone), then exit. */
void fail(const char *fmt, ...) {
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  for (char *p = msg; *p; p++)
    if (*p == '\n') *p = ' ';
  if (sync_fd < 0 || send_msg(sync_fd, "error", msg) < 0) {
    dprintf(2, "kata-ts: %s\n", msg);
  }
  _exit(fail_exit_code);
}

unsigned long long parse_u64(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || end == s || *end) fail("helper: bad %s %s", what, s);
  return v;
}

long long parse_i64(const char *s, const char *what) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 0);
  if (errno || end == s || *end) fail("helper: bad %s %s", what, s);
  return v;
}

/* A connected unix stream socket (CLOEXEC) to path; fails the plan when it cannot. */
int unix_connect(const char *path, const char *what) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof(addr.sun_path)) fail("%s path too long: %s", what, path);
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
    fail("connect to %s %s: %s", what, path, strerror(errno));
  return fd;
}

/* Sends fd over sock with SCM_RIGHTS; name is the message's data (a console's or a listener's). */
int send_fd(int sock, int fd, const char *name) {
  char cbuf[CMSG_SPACE(sizeof(int))];
  memset(cbuf, 0, sizeof(cbuf));
  struct iovec iov = {.iov_base = (void *)name, .iov_len = strlen(name)};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  return sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 ? -1 : 0;
}
