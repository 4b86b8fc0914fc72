/*
 * Seccomp from plan records (actions, operators and arch names arrive already translated by TS):
 *   seccomp-default ACTION      seccomp-arch NAME (libseccomp's: x86_64, x86, ...)
 *   seccomp-flag log|spec_allow seccomp-rule ACTION SYSCALL [INDEX OP VALUE VALUE2]...
 *   seccomp-known SYSCALL...    (names of rules that say what the default says: no rule, but see below)
 * Unknown syscall names are skipped (as runc does): a profile written for a newer kernel still loads.
 * Conditions on distinct arguments are ANDed in one rule; several conditions on the same argument
 * become one rule each (ORed), which is how runc reads such profiles.
 *
 * The -ENOSYS stub (runc's libcontainer/seccomp/patchbpf): unless the default action is permissive
 * (allow, log, trace) or already ENOSYS, a syscall numbered above the highest one the profile names for
 * its architecture fails with ENOSYS instead of the default action. A libc newer than the profile then
 * sees "not implemented" and falls back (clone3 → clone, faccessat2 → faccessat, ...) where EPERM would
 * be taken as a real refusal. The stub is prepended to libseccomp's program and the whole is loaded
 * with seccomp(2) ourselves, with the flags libseccomp would have used.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helper.h"

/* linux.seccomp.listenerPath, connected in phase 1 (before any setns): the notify fd goes there. */
int seccomp_listener = -1;

struct seccomp_plan {
  scmp_filter_ctx ctx;
  uint32_t default_action;
  int log, spec_allow;
  char *listener_message; /* seccomp-message: sent with the notify fd to the listener */
  int notify;              /* a rule uses SCMP_ACT_NOTIFY: the filter is loaded with a listener */
  uint32_t archs[8];       /* the profile's architectures (libseccomp tokens), for the ENOSYS stub */
  int narchs;
  char **names;            /* every syscall name the profile mentions */
  int nnames;
};

static void remember_name(struct seccomp_plan *p, const char *name) {
  p->names = realloc(p->names, sizeof(char *) * ((size_t)p->nnames + 1));
  if (!p->names) fail("out of memory");
  p->names[p->nnames++] = strdup(name);
}

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
  if (strcmp(op, "seccomp-known") == 0) {
    for (int i = 1; i < r->argc; i++) remember_name(p, r->argv[i]);
  } else if (strcmp(op, "seccomp-arch") == 0 && r->argc == 2) {
    uint32_t arch = seccomp_arch_resolve_name(r->argv[1]);
    if (arch == 0) fail("seccomp: unknown architecture %s", r->argv[1]);
    int rc = seccomp_arch_add(p->ctx, arch);
    if (rc < 0 && rc != -EEXIST) fail("seccomp: add architecture %s: %s", r->argv[1], strerror(-rc));
    int seen = 0;
    for (int i = 0; i < p->narchs; i++) seen |= p->archs[i] == arch;
    if (!seen && p->narchs < 8) p->archs[p->narchs++] = arch;
  } else if (strcmp(op, "seccomp-flag") == 0 && r->argc == 2) {
    if (strcmp(r->argv[1], "log") == 0) seccomp_attr_set(p->ctx, SCMP_FLTATR_CTL_LOG, 1);
    else if (strcmp(r->argv[1], "spec_allow") == 0) seccomp_attr_set(p->ctx, SCMP_FLTATR_CTL_SSB, 1);
  } else if (strcmp(op, "seccomp-rule") == 0 && r->argc >= 3 && (r->argc - 3) % 4 == 0) {
    uint32_t action = (uint32_t)parse_u64(r->argv[1], "seccomp action");
    remember_name(p, r->argv[2]);
    if (action == SCMP_ACT_NOTIFY) p->notify = 1;
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

/* ---- the -ENOSYS stub ---- */

struct prog {
  struct sock_filter *insn;
  size_t n, cap;
};

static size_t emit(struct prog *g, uint16_t code, uint8_t jt, uint8_t jf, uint32_t k) {
  if (g->n == g->cap) {
    g->cap = g->cap ? g->cap * 2 : 64;
    g->insn = realloc(g->insn, g->cap * sizeof(*g->insn));
    if (!g->insn) fail("out of memory");
  }
  g->insn[g->n] = (struct sock_filter){code, jt, jf, k};
  return g->n++;
}

/* An unconditional jump to a label resolved later (ja has a 32-bit offset, so any distance works). */
enum { TO_ENOSYS = 1, TO_FILTER = 2, TO_SECTION = 3 };
struct fixup {
  size_t at;
  int to, section;
};

/* The real architecture for a libseccomp token: x32 is x86_64 with bit 30 set in the syscall number. */
static uint32_t audit_arch(uint32_t token) { return token == SCMP_ARCH_X32 ? AUDIT_ARCH_X86_64 : token; }

/* Highest syscall number named in the profile for `arch` (0: none). */
static uint32_t last_syscall(struct seccomp_plan *p, uint32_t arch) {
  uint32_t last = 0;
  for (int i = 0; i < p->nnames; i++) {
    int nr = seccomp_syscall_resolve_name_arch(arch, p->names[i]);
    if (nr > 0 && (uint32_t)nr > last) last = (uint32_t)nr; /* negative: not on this arch */
  }
  return last;
}

/*
 * load [arch]; one "jeq ARCH → section" per architecture; else → filter.
 * section: load [nr]; (x86_64: x32 numbers have bit 30 set and their own limit)
 *          jgt LAST → ENOSYS; else → filter.     ENOSYS: ret ERRNO(ENOSYS).     filter: libseccomp's.
 */
static void enosys_stub(struct seccomp_plan *p, struct prog *g) {
  uint32_t native[8], lim64[8], lim32[8];
  int n = 0;
  for (int i = 0; i < p->narchs; i++) {
    uint32_t a = audit_arch(p->archs[i]), last = last_syscall(p, p->archs[i]);
    if (!last) continue; /* runc: "could not find any syscalls for arch" → no section */
    int j = 0;
    while (j < n && native[j] != a) j++;
    if (j == n) {
      native[n] = a;
      lim64[n] = lim32[n] = UINT32_MAX; /* a mode the profile does not list goes to the filter */
      n++;
    }
    if (p->archs[i] == SCMP_ARCH_X32) lim32[j] = last;
    else lim64[j] = last;
  }
  struct fixup fx[64];
  int nfx = 0;
  size_t section_at[8];
  emit(g, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, arch));
  for (int i = 0; i < n; i++) {
    emit(g, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, native[i]);
    fx[nfx++] = (struct fixup){emit(g, BPF_JMP | BPF_JA, 0, 0, 0), TO_SECTION, i};
  }
  fx[nfx++] = (struct fixup){emit(g, BPF_JMP | BPF_JA, 0, 0, 0), TO_FILTER, 0};
  for (int i = 0; i < n; i++) {
    section_at[i] = emit(g, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, nr));
    if (native[i] == AUDIT_ARCH_X86_64) emit(g, BPF_JMP | BPF_JSET | BPF_K, 3, 0, 0x40000000);
    if (native[i] == AUDIT_ARCH_S390 || native[i] == AUDIT_ARCH_S390X) {
      /* s390's setup(2) (0) multiplexes unknown large numbers: runc answers it with ENOSYS too */
      emit(g, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0);
      fx[nfx++] = (struct fixup){emit(g, BPF_JMP | BPF_JA, 0, 0, 0), TO_ENOSYS, 0};
    }
    emit(g, BPF_JMP | BPF_JGT | BPF_K, 0, 1, lim64[i]);
    fx[nfx++] = (struct fixup){emit(g, BPF_JMP | BPF_JA, 0, 0, 0), TO_ENOSYS, 0};
    fx[nfx++] = (struct fixup){emit(g, BPF_JMP | BPF_JA, 0, 0, 0), TO_FILTER, 0};
    if (native[i] == AUDIT_ARCH_X86_64) {
      emit(g, BPF_JMP | BPF_JGT | BPF_K, 0, 1, lim32[i]);
      fx[nfx++] = (struct fixup){emit(g, BPF_JMP | BPF_JA, 0, 0, 0), TO_ENOSYS, 0};
      fx[nfx++] = (struct fixup){emit(g, BPF_JMP | BPF_JA, 0, 0, 0), TO_FILTER, 0};
    }
  }
  size_t enosys_at = emit(g, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS);
  size_t filter_at = g->n;
  for (int i = 0; i < nfx; i++) {
    size_t target = fx[i].to == TO_ENOSYS ? enosys_at : fx[i].to == TO_FILTER ? filter_at : section_at[fx[i].section];
    g->insn[fx[i].at].k = (uint32_t)(target - fx[i].at - 1);
  }
}

/* True when the default action lets unknown syscalls through anyway (runc's isAllowAction). */
static int permissive(uint32_t action) {
  uint32_t a = action & SECCOMP_RET_ACTION_FULL;
  return a == SCMP_ACT_ALLOW || a == SCMP_ACT_LOG || a == SECCOMP_RET_TRACE;
}

/* libseccomp's program with the stub in front, loaded by hand; returns the listener fd or -1. */
static int load_patched(struct seccomp_plan *p) {
  int mfd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
  if (mfd < 0) fail("seccomp: memfd_create: %s", strerror(errno));
  int rc = seccomp_export_bpf(p->ctx, mfd);
  if (rc < 0) fail("seccomp: export the filter: %s", strerror(-rc));
  struct stat st;
  if (fstat(mfd, &st) < 0 || st.st_size % (off_t)sizeof(struct sock_filter) != 0)
    fail("seccomp: exported filter has a bad size");
  struct prog g = {0};
  enosys_stub(p, &g);
  size_t stub = g.n, body = (size_t)st.st_size / sizeof(struct sock_filter);
  for (size_t i = 0; i < body; i++) emit(&g, 0, 0, 0, 0);
  if (pread(mfd, g.insn + stub, (size_t)st.st_size, 0) != st.st_size) fail("seccomp: read the exported filter");
  close(mfd);
  if (g.n > BPF_MAXINSNS) fail("seccomp: filter too long (%zu instructions)", g.n);
  struct sock_fprog prog = {.len = (unsigned short)g.n, .filter = g.insn};
  unsigned long flags = 0;
  uint32_t v = 0;
  if (seccomp_attr_get(p->ctx, SCMP_FLTATR_CTL_LOG, &v) == 0 && v) flags |= SECCOMP_FILTER_FLAG_LOG;
  v = 0;
  if (seccomp_attr_get(p->ctx, SCMP_FLTATR_CTL_SSB, &v) == 0 && v) flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW;
  if (p->notify) flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
  long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
  if (fd < 0) fail("seccomp: load the filter: %s", strerror(errno));
  free(g.insn);
  if (p->notify && seccomp_listener < 0) {
    close((int)fd); /* nobody to hand it to (the kernel made it close-on-exec anyway) */
    fd = -1;
  }
  return p->notify ? (int)fd : -1;
}

void plan_seccomp_load(struct seccomp_plan *p) {
  ensure_ctx(p);
  int nfd = -1;
  if (!permissive(p->default_action) && p->default_action != SCMP_ACT_ERRNO(ENOSYS)) {
    nfd = load_patched(p);
  } else {
    int rc = seccomp_load(p->ctx);
    if (rc < 0) fail("seccomp: load the filter: %s", strerror(-rc));
    if (p->notify) nfd = seccomp_notify_fd(p->ctx);
  }
  if (seccomp_listener >= 0 && p->listener_message) {
    /* SCMP_ACT_NOTIFY: the listener gets the notify fd with the container process state, as from runc */
    if (nfd < 0) fail("seccomp: no notify fd: %s", strerror(-nfd));
    if (send_fd(seccomp_listener, nfd, p->listener_message) < 0)
      fail("seccomp: send the notify fd to the listener: %s", strerror(errno));
    close(nfd);
    close(seccomp_listener);
    seccomp_listener = -1;
  }
}

int seccomp_has_rules(struct seccomp_plan *p) { return p->ctx != NULL; }
