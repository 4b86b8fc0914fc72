/*
 * Seccomp from plan records (actions, operators and arch names arrive already translated by TS):
 *   seccomp-default ACTION      seccomp-arch NAME (libseccomp's: x86_64, x86, ...)
 *   seccomp-flag log|spec_allow seccomp-rule ACTION SYSCALL [INDEX OP VALUE VALUE2]...
 * Unknown syscall names are skipped (as runc does): a profile written for a newer kernel still loads.
 * Conditions on distinct arguments are ANDed in one rule; several conditions on the same argument
 * become one rule each (ORed), which is how runc reads such profiles.
 */
#include <errno.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helper.h"

struct seccomp_plan {
  scmp_filter_ctx ctx;
  uint32_t default_action;
  int log, spec_allow;
  char *listener_message; /* seccomp-message: sent with the notify fd to the listener */
};

struct seccomp_plan *seccomp_new(void) {
  struct seccomp_plan *p = calloc(1, sizeof(*p));
  if (!p) fail("out of memory");
  p->default_action = SCMP_ACT_ALLOW;
  return p;
}

static void ensure_ctx(struct seccomp_plan *p) {
  if (p->ctx) return;
  p->ctx = seccomp_init(p->default_action);
  if (!p->ctx) fail("seccomp: init failed");
  /* libseccomp would set no_new_privs itself; only the spec decides that. */
  seccomp_attr_set(p->ctx, SCMP_FLTATR_CTL_NNP, 0);
}

void seccomp_add(struct seccomp_plan *p, struct record *r) {
  const char *op = r->argv[0];
  if (strcmp(op, "seccomp-default") == 0 && r->argc == 2) {
    if (p->ctx) fail("seccomp: default action after rules");
    p->default_action = (uint32_t)parse_u64(r->argv[1], "seccomp action");
    return;
  }
  if (strcmp(op, "seccomp-message") == 0 && r->argc == 2) {
    free(p->listener_message);
    p->listener_message = strdup(r->argv[1]);
    return;
  }
  ensure_ctx(p);
  if (strcmp(op, "seccomp-arch") == 0 && r->argc == 2) {
    uint32_t arch = seccomp_arch_resolve_name(r->argv[1]);
    if (arch == 0) fail("seccomp: unknown architecture %s", r->argv[1]);
    int rc = seccomp_arch_add(p->ctx, arch);
    if (rc < 0 && rc != -EEXIST) fail("seccomp: add architecture %s: %s", r->argv[1], strerror(-rc));
  } else if (strcmp(op, "seccomp-flag") == 0 && r->argc == 2) {
    if (strcmp(r->argv[1], "log") == 0) seccomp_attr_set(p->ctx, SCMP_FLTATR_CTL_LOG, 1);
    else if (strcmp(r->argv[1], "spec_allow") == 0) seccomp_attr_set(p->ctx, SCMP_FLTATR_CTL_SSB, 1);
  } else if (strcmp(op, "seccomp-rule") == 0 && r->argc >= 3 && (r->argc - 3) % 4 == 0) {
    uint32_t action = (uint32_t)parse_u64(r->argv[1], "seccomp action");
    int nr = seccomp_syscall_resolve_name(r->argv[2]);
    if (nr == __NR_SCMP_ERROR) return;
    int n = (r->argc - 3) / 4;
    struct scmp_arg_cmp cmp[6];
    if (n > 6) fail("seccomp: too many conditions for %s", r->argv[2]);
    int repeated = 0;
    for (int i = 0; i < n; i++) {
      char **a = &r->argv[3 + 4 * i];
      cmp[i].arg = (unsigned)parse_u64(a[0], "seccomp arg index");
      cmp[i].op = (enum scmp_compare)parse_u64(a[1], "seccomp operator");
      cmp[i].datum_a = parse_u64(a[2], "seccomp value");
      cmp[i].datum_b = parse_u64(a[3], "seccomp value");
      for (int j = 0; j < i; j++)
        if (cmp[j].arg == cmp[i].arg) repeated = 1;
    }
    int rc;
    if (!repeated) {
      rc = seccomp_rule_add_array(p->ctx, action, nr, (unsigned)n, cmp);
      if (rc < 0) fail("seccomp: add rule for %s: %s", r->argv[2], strerror(-rc));
    } else {
      for (int i = 0; i < n; i++) {
        rc = seccomp_rule_add_array(p->ctx, action, nr, 1, &cmp[i]);
        if (rc < 0) fail("seccomp: add rule for %s: %s", r->argv[2], strerror(-rc));
      }
    }
  } else {
    fail("seccomp: malformed record %s", op);
  }
}

void plan_seccomp_load(struct seccomp_plan *p) {
  ensure_ctx(p);
  int rc = seccomp_load(p->ctx);
  if (rc < 0) fail("seccomp: load the filter: %s", strerror(-rc));
  if (seccomp_listener >= 0 && p->listener_message) {
    /* SCMP_ACT_NOTIFY: the listener gets the notify fd with the container process state, as from runc */
    int nfd = seccomp_notify_fd(p->ctx);
    if (nfd < 0) fail("seccomp: no notify fd: %s", strerror(-nfd));
    if (send_fd(seccomp_listener, nfd, p->listener_message) < 0)
      fail("seccomp: send the notify fd to the listener: %s", strerror(errno));
    close(nfd);
    close(seccomp_listener);
    seccomp_listener = -1;
  }
}

int seccomp_has_rules(struct seccomp_plan *p) { return p->ctx != NULL; }
