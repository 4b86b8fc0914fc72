/* kata-ts-helper: shared declarations. See docs/engine.md for the plan format and the handshake. */
#ifndef KATA_TS_HELPER_H
#define KATA_TS_HELPER_H

#include <stddef.h>
#include <stdint.h>

/* One plan record: an op name and its string arguments (all NUL-terminated, owned by the record). */
struct record {
  char *buf;   /* payload: "op\0arg1\0arg2\0" */
  int argc;    /* number of strings including the op */
  char **argv; /* argv[0] = op */
};

/* proto.c */
int read_record(int fd, struct record *r);   /* 1 = got one, 0 = EOF, -1 = error (errno) */
void free_record(struct record *r);
int send_msg(int fd, const char *op, const char *arg); /* arg may be NULL */
void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void set_sync_fd(int fd);
int unix_connect(const char *path, const char *what); /* a connected unix stream socket, or fail() */
int send_fd(int sock, int fd, const char *name);      /* SCM_RIGHTS, name as the data; -1 on error */
extern int sync_fd;
extern int in_child; /* 1 once we are the container process: errors go to the caller as "error" records */

/* util */
unsigned long long parse_u64(const char *s, const char *what);
long long parse_i64(const char *s, const char *what);

/* init.c: everything the container process does after the caller said go */
void container_main(void) __attribute__((noreturn));
/* A mount namespace (st_dev, st_ino of its nsfs file) the container init must not mount in. */
void note_forbidden_mntns(unsigned long long dev, unsigned long long ino);
void console_connect(const char *path);
extern int console_sock;
extern int console_relayed; /* console_sock is the waiting helper's relay (console-relay) */
void preopen_fifo(const char *path);
void close_fifo(void);

/* seccomp.c; the listener (linux.seccomp.listenerPath) is connected in phase 1 (main.c) */
extern int seccomp_listener;
struct seccomp_plan;
struct seccomp_plan *seccomp_new(void);
void seccomp_add(struct seccomp_plan *p, struct record *r);
void plan_seccomp_load(struct seccomp_plan *p);
int seccomp_has_rules(struct seccomp_plan *p);

/* hooks: run path with args/env, state on stdin, inside the current namespaces */
void run_hook(const char *kind, int index, struct record *r, int first_arg);

#endif
