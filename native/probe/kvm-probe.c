// kata-ts-kvm-probe: is /dev/kvm usable for real, or only present?
//
// Some hosts expose a /dev/kvm that emulates guests instruction by instruction (e.g. a software "PVM"
// hypervisor): it opens, creates VMs and runs them, only ~1000x slower than hardware virtualisation,
// which makes QEMU slower than plain TCG. Presence says nothing; speed does. This program creates a VM
// with raw KVM ioctls, runs a real-mode guest that counts ECX down from N (`dec ecx; jnz`) and halts,
// and prints one JSON line with the measured rate:
//   {"ok":true,"complete":true,"iterations":N,"seconds":s,"mips":M}
//   {"ok":false,"stage":"open|create_vm|create_vcpu|run","error":"..."}
// A run that exceeds the budget (or gets SIGTERM/SIGINT) is interrupted and reports the iterations it
// completed so far with "complete":false: the rate is still a measurement.
// Usage: kata-ts-kvm-probe [iterations (default 1000000)] [budget-ms (default 3000)] [device]
// Exit status 0 whenever it printed a verdict, 2 on bad usage.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define GUEST_MEM_SIZE 0x10000
#define CODE_ADDR 0x1000

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
}

static void json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') printf("\\%c", c);
    else if (c < 0x20) printf("\\u%04x", c);
    else putchar(c);
  }
  putchar('"');
}

static int fail(const char *stage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(const char *stage, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("{\"ok\":false,\"stage\":\"%s\",\"error\":", stage);
  json_string(msg);
  printf("}\n");
  fflush(stdout);
  return 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *exit_name(uint32_t r) {
  switch (r) {
  case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
  case KVM_EXIT_IO: return "KVM_EXIT_IO";
  case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
  case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
  case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
  case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
  default: return "other";
  }
}

static int parse_u64(const char *s, unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *s == '\0' || *end != '\0') return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  unsigned long long iterations = 1000000, budget_ms = 3000;
  const char *device = "/dev/kvm";
  if ((argc > 1 && parse_u64(argv[1], &iterations)) || (argc > 2 && parse_u64(argv[2], &budget_ms)) ||
      argc > 4 || iterations == 0 || iterations > 0xffffffffULL || budget_ms == 0) {
    fprintf(stderr, "usage: %s [iterations 1..4294967295] [budget-ms] [device]\n", argv[0]);
    return 2;
  }
  if (argc > 3) device = argv[3];

  int kvm = open(device, O_RDWR | O_CLOEXEC);
  if (kvm < 0) return fail("open", "open %s: %s", device, strerror(errno));
  int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
  if (api < 0) return fail("open", "KVM_GET_API_VERSION: %s", strerror(errno));
  if (api != KVM_API_VERSION) return fail("open", "KVM API version %d, expected %d", api, KVM_API_VERSION);

  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return fail("create_vm", "KVM_CREATE_VM: %s", strerror(errno));
  uint8_t *mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return fail("create_vm", "mmap guest memory: %s", strerror(errno));
  // Real mode, 16-bit code: the 0x66 prefix makes the operations 32-bit.
  const uint8_t code[] = {
      0x66, 0xb9, 0, 0, 0, 0, // mov ecx, N
      0x66, 0x49,             // l: dec ecx
      0x75, 0xfc,             // jnz l
      0xf4,                   // hlt
  };
  memcpy(mem + CODE_ADDR, code, sizeof code);
  uint32_t n32 = (uint32_t)iterations;
  memcpy(mem + CODE_ADDR + 2, &n32, sizeof n32);
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_MEM_SIZE, .userspace_addr = (uintptr_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
    return fail("create_vm", "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) return fail("create_vcpu", "KVM_CREATE_VCPU: %s", strerror(errno));
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < (int)sizeof(struct kvm_run))
    return fail("create_vcpu", "KVM_GET_VCPU_MMAP_SIZE: %s", run_size < 0 ? strerror(errno) : "too small");
  struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) return fail("create_vcpu", "mmap kvm_run: %s", strerror(errno));
  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) return fail("create_vcpu", "KVM_GET_SREGS: %s", strerror(errno));
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) return fail("create_vcpu", "KVM_SET_SREGS: %s", strerror(errno));
  struct kvm_regs regs = {.rip = CODE_ADDR, .rflags = 0x2};
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) return fail("create_vcpu", "KVM_SET_REGS: %s", strerror(errno));

  // Without SA_RESTART, a signal makes KVM_RUN return EINTR (or exit with KVM_EXIT_INTR).
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  struct itimerval budget = {.it_value = {.tv_sec = (time_t)(budget_ms / 1000),
                                          .tv_usec = (suseconds_t)(budget_ms % 1000) * 1000}};
  setitimer(ITIMER_REAL, &budget, NULL);

  double start = now();
  int complete = 0;
  while (!interrupted) {
    int r = ioctl(vcpu, KVM_RUN, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r < 0) return fail("run", "KVM_RUN: %s", strerror(errno));
    if (run->exit_reason == KVM_EXIT_HLT) {
      complete = 1;
      break;
    }
    if (run->exit_reason == KVM_EXIT_INTR) continue;
    struct kvm_regs at;
    unsigned long long rip = ioctl(vcpu, KVM_GET_REGS, &at) == 0 ? at.rip : 0;
    if (run->exit_reason == KVM_EXIT_FAIL_ENTRY)
      return fail("run", "KVM_EXIT_FAIL_ENTRY (reason 0x%llx)",
                  (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
    if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
      return fail("run", "KVM_EXIT_INTERNAL_ERROR (suberror %u) at rip 0x%llx", run->internal.suberror, rip);
    return fail("run", "unexpected exit %u (%s) at rip 0x%llx", run->exit_reason, exit_name(run->exit_reason),
                rip);
  }
  double seconds = now() - start;
  struct itimerval off = {0};
  setitimer(ITIMER_REAL, &off, NULL);

  unsigned long long done = iterations;
  if (!complete) {
    // The guest was stopped mid-loop: ECX holds what was left. (Before the first `mov`, RCX is 0 and
    // RIP is still at the start: nothing ran.)
    struct kvm_regs at;
    if (ioctl(vcpu, KVM_GET_REGS, &at) < 0) return fail("run", "KVM_GET_REGS: %s", strerror(errno));
    done = at.rip == CODE_ADDR ? 0 : iterations - (at.rcx & 0xffffffffULL);
    if (done == 0)
      return fail("run", "the guest did not run one loop iteration in %.3f s", seconds);
  }
  double mips = seconds > 0 ? (double)done / seconds / 1e6 : 0;
  printf("{\"ok\":true,\"complete\":%s,\"iterations\":%llu,\"seconds\":%.6f,\"mips\":%.4f}\n",
         complete ? "true" : "false", done, seconds, mips);
  fflush(stdout);
  return 0;
}
