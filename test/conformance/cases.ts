// The conformance cases: each sets OCI config fields and asserts on what the container reported.
// Shared by test/integration/conformance-report.test.ts (one runtime, absolute assertions) and
// test/integration/differential.test.ts (two runtimes, reports compared after normalisation).
// Every case was validated against runc 1.1.5 on the reference machine (cgroup v1 hybrid, root
// without CAP_SYS_RESOURCE: nothing here raises limits or lowers oom_score_adj).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sharesToWeight } from "../../src/engine/cgroups/v2";
import { defaultSpec } from "../../src/oci/defaults";
import type { Mount } from "../../src/oci/spec";
import { capSysResource, hardNofile } from "../probes";
import type { ConformanceCase, Outcome, RunEnv } from "./harness";
import { hostCgroupDir, hostNamespaces, readHostFile } from "./harness";

const CAPS: Record<string, number> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_FOWNER: 3,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_SYS_CHROOT: 18,
  CAP_SYS_ADMIN: 21,
  CAP_MKNOD: 27,
  CAP_AUDIT_WRITE: 29,
};

/** A capability set as /proc/self/status prints it (16 hex digits). */
export function capHex(names: string[]): string {
  let v = 0n;
  for (const n of names) v |= 1n << BigInt(CAPS[n]);
  return v.toString(16).padStart(16, "0");
}

const DEFAULT_NS = ["pid", "network", "ipc", "uts", "mount"];
/** /proc/self/ns names of the OCI namespace types. */
const NS_FILE: Record<string, string> = {
  pid: "pid",
  network: "net",
  ipc: "ipc",
  uts: "uts",
  mount: "mnt",
  user: "user",
  cgroup: "cgroup",
};

function namespaces(types: string[], extra: Record<string, string> = {}) {
  return types.map((type) => (extra[type] ? { type, path: extra[type] } : { type }));
}

/**
 * The initial namespaces of a guest kernel, as /proc/self/ns inodes. The kernel gives its initial
 * ipc/uts/user/pid/cgroup namespaces fixed inodes (PROC_*_INIT_INO, 0xEFFFFFFF down to 0xEFFFFFFB),
 * the same in every kernel, so the guest's equal the host's. The initial network namespace has the
 * fixed 0xEFFFFFF9 only in recent kernels; before that it is the first dynamic proc inode
 * (0xF0000000: init_net is registered before anything else gets one). The initial mount namespace
 * has a dynamic inode the host cannot know, so it is not compared.
 */
const GUEST_INIT_NS: Record<string, string[]> = {
  ipc: [String(0xefffffff)],
  uts: [String(0xeffffffe)],
  user: [String(0xeffffffd)],
  pid: [String(0xeffffffc)],
  cgroup: [String(0xeffffffb)],
  net: [String(0xeffffff9), String(0xf0000000)],
};

/** The hostname the guest's init gives the VM (guest/rootfs/init): a container without uts sees it. */
const GUEST_HOSTNAME = "kata-ts";

/**
 * Asserts: the container has its own namespace for each of `fresh`, the host's for the others. In a
 * VM "the host's" is the guest kernel's initial namespace (the one the guest agent runs in), and so is
 * a new network namespace unless a new user namespace owns it: the VM is the container's network
 * (Kata's runtime drops the network namespace from the spec the guest gets; docs/sandbox.md, Networking).
 */
function assertNamespaces(o: Outcome, fresh: string[], env: RunEnv): void {
  const host = hostNamespaces();
  for (const [type, file] of Object.entries(NS_FILE)) {
    const seen = o.report.get(`ns.${file}`);
    assert.ok(seen, `ns.${file} missing from the report`);
    if (env.vm) {
      const init = GUEST_INIT_NS[file];
      if (!init) continue;
      if (fresh.includes(type) && (type !== "network" || fresh.includes("user")))
        assert.ok(!init.includes(seen), `${type} namespace should be new (${seen})`);
      else assert.ok(init.includes(seen), `${type} namespace should be the guest's initial one: ${seen}`);
    } else if (fresh.includes(type)) assert.notEqual(seen, host[file], `${type} namespace should be new`);
    else assert.equal(seen, host[file], `${type} namespace should be the host's`);
  }
}

function ok(o: Outcome): void {
  assert.equal(o.code, 0, `runtime exit ${o.code}; stderr: ${o.stderr.trim()}`);
  assert.ok(o.report.complete, `incomplete report:\n${o.stdout}\nstderr: ${o.stderr}`);
}

function mountOf(o: Outcome, point: string) {
  const m = o.report.mount(point);
  assert.ok(m, `no mount at ${point}; mounts:\n${o.report.all("mount").join("\n")}`);
  return m;
}

const EROFS = "Read-only file system";
const EPERM = "Operation not permitted";

/**
 * Syscalls allowed in the defaultErrnoRet case: what runc's and kata-ts's last steps (execve under
 * seccomp) and busybox need, minus mkdir/mkdirat, which then fail with defaultErrnoRet.
 */
const ALLOWED_SYSCALLS =
  `read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction
rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select sched_yield mremap madvise dup
dup2 pause nanosleep getitimer alarm setitimer getpid sendfile socket connect sendto recvfrom sendmsg recvmsg
shutdown bind getsockname getpeername socketpair setsockopt getsockopt clone fork vfork execve exit wait4 kill
uname fcntl flock fsync fdatasync truncate ftruncate getdents getcwd chdir fchdir rename rmdir creat link unlink
symlink readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit getrusage sysinfo times getuid
getgid setuid setgid geteuid getegid setpgid getppid getpgrp setsid setreuid setregid getgroups setgroups
setresuid getresuid setresgid getresgid getpgid getsid capget capset rt_sigpending rt_sigtimedwait
rt_sigqueueinfo rt_sigsuspend sigaltstack utime statfs fstatfs getpriority setpriority prctl arch_prctl
setrlimit sync gettid readahead getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr tkill time futex
sched_setaffinity sched_getaffinity set_thread_area get_thread_area getdents64 set_tid_address restart_syscall
fadvise64 clock_gettime clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes waitid
openat newfstatat unlinkat renameat linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll
set_robust_list get_robust_list splice tee utimensat epoll_pwait signalfd eventfd fallocate accept4 signalfd4
eventfd2 epoll_create epoll_create1 dup3 pipe2 preadv pwritev prlimit64 getcpu renameat2 seccomp getrandom
memfd_create execveat statx rseq clone3 close_range openat2 faccessat2 epoll_pwait2 fchownat futimesat`
    .split(/\s+/)
    .filter(Boolean);

export const CASES: ConformanceCase[] = [
  {
    name: "defaults: runc's spec as is",
    field: "(runc spec defaults)",
    spec: () => ({}),
    vmAdapted:
      "dropped namespaces are the guest kernel's initial ones; /sys/fs/cgroup is the guest's cgroup2 " +
      "(the guest runs the unified hierarchy only, the host is v1 hybrid); /dev/core → /proc/kcore may " +
      "exist (runc adds it when the kernel has /proc/kcore: the guest kernel has, this host's has not)",
    check(o, _ctx, env) {
      ok(o);
      assertNamespaces(o, DEFAULT_NS, env);
      const r = o.report;
      assert.equal(r.get("pid.self"), "1", "the workload is pid 1 of its pid namespace");
      assert.equal(r.get("pid1.cmdline"), "/bin/sh /report.sh");
      assert.equal(r.get("hostname"), "runc");
      assert.equal(r.get("uid"), "0");
      assert.equal(r.get("groups"), "0");
      const caps = capHex(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
      for (const k of ["CapPrm", "CapEff", "CapBnd"]) assert.equal(r.get(`status.${k}`), caps, k);
      assert.equal(r.get("status.CapInh"), capHex([]));
      // ambient caps are in the default spec, but a root exec keeps them only if inheritable has them.
      assert.equal(r.get("status.CapAmb"), capHex([]));
      assert.equal(r.get("status.NoNewPrivs"), "1");
      assert.equal(r.get("status.Seccomp"), "0");
      assert.equal(r.get("rlimit.Max_open_files"), "1024 1024");
      assert.equal(r.get("umask"), "0022");
      assert.equal(r.get("cwd"), "/");
      assert.deepEqual(
        r.keys("env.").map((k) => `${k.slice(4)}=${r.get(k)}`),
        ["HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "env: the spec's, plus HOME from /etc/passwd",
      );
      // root.readonly: true
      assert.ok(mountOf(o, "/").opts.includes("ro"));
      assert.equal(r.get("readonly./"), EROFS);
      // default mounts with their options
      assert.equal(mountOf(o, "/proc").type, "proc");
      const dev = mountOf(o, "/dev");
      assert.equal(dev.type, "tmpfs");
      assert.ok(dev.opts.includes("nosuid"));
      assert.ok(dev.superOpts.includes("mode=755") && dev.superOpts.includes("size=65536k"));
      const pts = mountOf(o, "/dev/pts");
      assert.equal(pts.type, "devpts");
      assert.ok(pts.superOpts.includes("gid=5") && pts.superOpts.includes("ptmxmode=666"));
      const shm = mountOf(o, "/dev/shm");
      assert.deepEqual(
        ["nosuid", "nodev", "noexec"].filter((x) => shm.opts.includes(x)),
        ["nosuid", "nodev", "noexec"],
      );
      assert.equal(mountOf(o, "/dev/mqueue").type, "mqueue");
      assert.ok(mountOf(o, "/sys").opts.includes("ro"));
      if (env.vm) {
        const cg = mountOf(o, "/sys/fs/cgroup");
        assert.equal(cg.type, "cgroup2");
        assert.ok(cg.opts.includes("ro"));
      } else assert.equal(mountOf(o, "/sys/fs/cgroup/memory").type, "cgroup");
      // masked paths: files are /dev/null, directories an empty read-only tmpfs
      assert.equal(r.get("masked./proc/keys"), "chr 1:3 bytes=0");
      assert.equal(r.get("masked./proc/timer_list"), "chr 1:3 bytes=0");
      assert.equal(r.get("masked./proc/acpi"), "dir entries=0");
      assert.equal(mountOf(o, "/proc/acpi").type, "tmpfs");
      assert.ok(mountOf(o, "/proc/acpi").opts.includes("ro"));
      assert.equal(r.get("masked./sys/firmware"), "dir entries=0");
      // readonly paths
      for (const p of ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"]) {
        assert.ok(mountOf(o, p).opts.includes("ro"), `${p} read-only`);
      }
      assert.equal(r.get("readonly./proc/sys"), EROFS);
      // the default device nodes and nothing else. runc (setupDevSymlinks) adds /dev/core → /proc/kcore
      // when the kernel has /proc/kcore: this host's kernel has not, the guest kernel has.
      let devs = r.keys("dev./dev/").filter((k) => !k.startsWith("dev./dev/pts/"));
      if (env.vm && r.get("dev./dev/core") !== undefined) {
        assert.equal(r.get("dev./dev/core"), "link /proc/kcore");
        devs = devs.filter((k) => k !== "dev./dev/core");
      }
      assert.deepEqual(
        devs.map((k) => k.slice(9)).sort(),
        [
          "fd",
          "full",
          "mqueue",
          "null",
          "ptmx",
          "pts",
          "random",
          "shm",
          "stderr",
          "stdin",
          "stdout",
          "tty",
          "urandom",
          "zero",
        ].sort(),
      );
      assert.equal(r.get("dev./dev/null"), "character special file 1:3 666 0:0");
      assert.equal(r.get("dev./dev/ptmx"), "link pts/ptmx");
      // CVE-2024-21626: only stdio (+ ls's own directory fd) in a fresh exec; the shell has 0-2.
      assert.equal(r.get("fds.exec"), "0 1 2 3");
      assert.deepEqual(r.keys("fd."), ["fd.0", "fd.1", "fd.2"]);
      assert.equal(r.get("seccomp.mkdir"), "ok");
      assert.equal(r.get("oom_score_adj"), "0");
      assert.equal(r.get("uname.m"), "x86_64");
      // runc brings up a new network namespace's lo; in a VM the container's is the guest's root netns, lo up
      assert.equal(r.get("lo.flags"), "0x9", "lo is up");
    },
  },

  // ---- namespaces ----
  ...["pid", "network", "ipc"].map(
    (drop): ConformanceCase => ({
      name: `namespaces: without ${drop}`,
      field: "linux.namespaces",
      spec: () => ({ linux: { namespaces: namespaces(DEFAULT_NS.filter((t) => t !== drop)) } }),
      vmAdapted: `the ${drop} namespace kept is the guest kernel's initial one, not the host's`,
      check(o, _ctx, env) {
        ok(o);
        assertNamespaces(
          o,
          DEFAULT_NS.filter((t) => t !== drop),
          env,
        );
        if (drop === "pid") assert.notEqual(o.report.get("pid.self"), "1", "host pid namespace: not pid 1");
      },
    }),
  ),
  {
    name: "namespaces: without uts (no hostname)",
    field: "linux.namespaces",
    spec: () => ({
      hostname: null,
      linux: { namespaces: namespaces(DEFAULT_NS.filter((t) => t !== "uts")) },
    }),
    vmAdapted: "the container shares the guest's UTS namespace: its hostname is the VM's, not the host's",
    check(o, _ctx, env) {
      ok(o);
      assertNamespaces(
        o,
        DEFAULT_NS.filter((t) => t !== "uts"),
        env,
      );
      const expected = env.vm ? GUEST_HOSTNAME : readFileSync("/proc/sys/kernel/hostname", "utf8").trim();
      assert.equal(o.report.get("hostname"), expected);
    },
  },
  {
    name: "namespaces: cgroup",
    field: "linux.namespaces (cgroup)",
    spec: () => ({ linux: { namespaces: namespaces([...DEFAULT_NS, "cgroup"]) } }),
    vmAdapted: "namespaces compared with the guest kernel's initial ones",
    check(o, _ctx, env) {
      ok(o);
      assertNamespaces(o, [...DEFAULT_NS, "cgroup"], env);
      // inside a cgroup namespace every hierarchy's path is the namespace root
      const paths = o.report.all("cgroup.self").map((l) => l.slice(l.lastIndexOf(":") + 1));
      assert.ok(paths.length > 0);
      assert.deepEqual([...new Set(paths)], ["/"]);
    },
  },
  {
    name: "namespaces: user with uid/gid mappings",
    field: "linux.namespaces (user), linux.uidMappings, linux.gidMappings",
    spec: () => ({
      linux: {
        namespaces: namespaces([...DEFAULT_NS, "user"]),
        uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }],
        gidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }],
      },
    }),
    probes: ["stat:/bin/busybox"],
    vmAdapted: "namespaces compared with the guest kernel's initial ones",
    check(o, _ctx, env) {
      ok(o);
      assertNamespaces(o, [...DEFAULT_NS, "user"], env);
      assert.equal(o.report.get("uid_map"), "0 100000 65536;");
      assert.equal(o.report.get("gid_map"), "0 100000 65536;");
      // brought up by the container's root in the new user namespace, which owns the new netns
      assert.equal(o.report.get("lo.flags"), "0x9", "lo is up");
      assert.equal(o.report.get("uid"), "0");
      // host root is not mapped: the rootfs files belong to the overflow id
      assert.match(o.report.get("probe.stat:/bin/busybox") ?? "", / 65534:65534 /);
    },
  },
  {
    name: "namespaces: join a network namespace by path",
    field: "linux.namespaces[].path",
    setup(ctx) {
      const name = `ktc-${ctx.id.slice(4)}`;
      execFileSync("ip", ["netns", "add", name]);
      ctx.vars.netns = name;
      const ino = String(statSync(`/run/netns/${name}`).ino);
      ctx.vars.ino = ino;
      ctx.knownInodes[ino] = "<joined-netns>";
    },
    teardown(ctx) {
      if (ctx.vars.netns) execFileSync("ip", ["netns", "del", ctx.vars.netns]);
    },
    spec: (ctx) => ({
      linux: { namespaces: namespaces(DEFAULT_NS, { network: `/run/netns/${ctx.vars.netns}` }) },
    }),
    vmAdapted:
      "the path names the pod's network namespace on the host: its interfaces become the VM's NICs " +
      "(this one has only lo: none) and the container runs in the guest's root network namespace, " +
      "where the agent configured them (docs/sandbox.md, Networking)",
    check(o, ctx, env) {
      ok(o);
      if (env.vm) {
        assertNamespaces(
          o,
          DEFAULT_NS.filter((t) => t !== "network"),
          env,
        );
        return;
      }
      assert.equal(o.report.get("ns.net"), ctx.vars.ino, "the container is in the given netns");
      // a joined namespace is left as it is: `ip netns add` made it with lo down
      assert.equal(o.report.get("lo.flags"), "0x8", "the joined netns's lo is not brought up");
      assert.match(
        execFileSync("ip", ["-n", ctx.vars.netns, "-o", "link", "show", "lo"], { encoding: "utf8" }),
        /state DOWN/,
      );
      assertNamespaces(o, DEFAULT_NS, env);
    },
  },

  // ---- root, mounts, masked and readonly paths ----
  {
    name: "root.readonly false",
    field: "root.readonly",
    spec: () => ({ root: { readonly: false } }),
    check(o) {
      ok(o);
      assert.equal(o.report.get("readonly./"), "writable");
      assert.ok(mountOf(o, "/").opts.includes("rw"));
    },
  },
  {
    name: "mounts: read-only bind, tmpfs with size/mode and nosuid/nodev/noexec",
    field: "mounts",
    setup(ctx) {
      mkdirSync(join(ctx.host, "data"));
      writeFileSync(join(ctx.host, "data", "file"), "hello-from-host\n");
    },
    spec: (ctx) => ({
      mounts: [
        ...defaultMounts(),
        { destination: "/mnt/ro", type: "bind", source: join(ctx.host, "data"), options: ["rbind", "ro"] },
        { destination: "/mnt/rw", type: "bind", source: join(ctx.host, "data"), options: ["bind", "rw"] },
        {
          destination: "/mnt/tmp",
          type: "tmpfs",
          source: "tmpfs",
          options: ["nosuid", "nodev", "noexec", "size=1m", "mode=700"],
        },
      ],
    }),
    probes: ["read:/mnt/ro/file", "write:/mnt/ro", "write:/mnt/rw", "stat:/mnt/tmp", "write:/mnt/tmp"],
    check(o, ctx) {
      ok(o);
      const r = o.report;
      assert.equal(r.get("probe.read:/mnt/ro/file"), "ok hello-from-host");
      assert.equal(r.get("probe.write:/mnt/ro"), EROFS);
      assert.equal(r.get("probe.write:/mnt/rw"), "ok");
      assert.ok(mountOf(o, "/mnt/ro").opts.includes("ro"));
      const t = mountOf(o, "/mnt/tmp");
      assert.equal(t.type, "tmpfs");
      for (const x of ["nosuid", "nodev", "noexec"]) assert.ok(t.opts.includes(x), x);
      assert.ok(t.superOpts.includes("size=1024k"), t.superOpts.join(","));
      assert.ok(t.superOpts.includes("mode=700"));
      assert.equal(r.get("probe.stat:/mnt/tmp"), "directory 700 0:0 0:0");
      assert.equal(r.get("probe.write:/mnt/tmp"), "ok");
      // the probe removed its file from the rw bind: the host dir holds only the original file
      assert.deepEqual(
        execFileSync("ls", ["-A", join(ctx.host, "data")], { encoding: "utf8" })
          .trim()
          .split("\n"),
        ["file"],
      );
    },
  },
  {
    name: "mounts: propagation (rshared bind, rslave tmpfs)",
    field: "mounts[].options propagation",
    setup(ctx) {
      mkdirSync(join(ctx.host, "p"));
    },
    spec: (ctx) => ({
      mounts: [
        ...defaultMounts(),
        {
          destination: "/mnt/shared",
          type: "bind",
          source: join(ctx.host, "p"),
          options: ["rbind", "rshared"],
        },
        {
          destination: "/mnt/private",
          type: "bind",
          source: join(ctx.host, "p"),
          options: ["rbind", "rprivate"],
        },
      ],
    }),
    check(o) {
      ok(o);
      assert.equal(mountOf(o, "/mnt/shared").prop, "shared");
      assert.equal(mountOf(o, "/mnt/private").prop, "private");
    },
  },
  {
    name: "maskedPaths and readonlyPaths: custom entries",
    field: "linux.maskedPaths, linux.readonlyPaths",
    spec: () => ({
      mounts: [
        ...defaultMounts(),
        { destination: "/mnt/rw", type: "tmpfs", source: "tmpfs", options: ["size=1m"] },
      ],
      linux: {
        maskedPaths: ["/proc/uptime", "/proc/driver", "/proc/does-not-exist"],
        readonlyPaths: ["/mnt/rw", "/proc/sysrq-trigger"],
      },
    }),
    probes: [
      "stat:/proc/uptime",
      "read:/proc/uptime",
      "ls:/proc/driver",
      "write:/mnt/rw",
      "stat:/proc/does-not-exist",
    ],
    check(o) {
      ok(o);
      const r = o.report;
      assert.equal(r.get("probe.stat:/proc/uptime"), "character special file 666 0:0 1:3");
      assert.equal(r.get("probe.read:/proc/uptime"), "ok ");
      assert.equal(r.get("probe.ls:/proc/driver"), "");
      assert.equal(mountOf(o, "/proc/driver").type, "tmpfs");
      assert.equal(r.get("probe.write:/mnt/rw"), EROFS);
      assert.ok(mountOf(o, "/mnt/rw").opts.includes("ro"));
      assert.equal(r.get("probe.stat:/proc/does-not-exist"), "No such file or directory");
      // the defaults are replaced, not added to
      assert.equal(r.get("masked./proc/keys"), "file bytes=64");
      assert.equal(r.get("readonly./proc/sys"), "writable");
    },
  },
  {
    name: "devices: /dev/fuse and custom nodes; the device cgroup enforces access",
    field: "linux.devices, linux.resources.devices",
    spec: () => ({
      linux: {
        devices: [
          { path: "/dev/fuse", type: "c", major: 10, minor: 229, fileMode: 0o666, uid: 0, gid: 0 },
          { path: "/dev/kata-zero", type: "c", major: 1, minor: 5, fileMode: 0o604, uid: 1000, gid: 1000 },
          // loop-control: opening it is harmless, and it has no read or write operation (EINVAL),
          // so EPERM on open can only come from the device cgroup
          { path: "/dev/kata-loopctl", type: "c", major: 10, minor: 237, fileMode: 0o600 },
        ],
        resources: {
          devices: [
            { allow: false, access: "rwm" },
            { allow: true, type: "c", major: 10, minor: 229, access: "rwm" },
            { allow: true, type: "c", major: 10, minor: 237, access: "r" },
          ],
        },
      },
    }),
    probes: ["read:/dev/kata-zero", "read:/dev/kata-loopctl", "write:/dev/kata-loopctl"],
    check(o) {
      ok(o);
      const r = o.report;
      assert.equal(r.get("dev./dev/fuse"), "character special file a:e5 666 0:0");
      assert.equal(r.get("dev./dev/kata-zero"), "character special file 1:5 604 1000:1000");
      assert.equal(r.get("dev./dev/kata-loopctl"), "character special file a:ed 600 0:0");
      assert.match(r.get("probe.read:/dev/kata-zero") ?? "", /^ok/);
      // read access allowed: the open works and the read itself fails (busybox reports EINVAL or EIO)
      assert.match(r.get("probe.read:/dev/kata-loopctl") ?? "", /^(Invalid argument|Input\/output error)$/);
      assert.equal(r.get("probe.write:/dev/kata-loopctl"), EPERM, "write access denied by the cgroup");
    },
  },
  {
    name: "hostname",
    field: "hostname",
    spec: () => ({ hostname: "conf-host" }),
    check(o) {
      ok(o);
      assert.equal(o.report.get("hostname"), "conf-host");
      assert.notEqual(readFileSync("/proc/sys/kernel/hostname", "utf8").trim(), "conf-host");
    },
  },
  {
    name: "domainname",
    field: "domainname",
    spec: () => ({ hostname: "conf-host", domainname: "conf.example" }),
    check(o) {
      ok(o);
      assert.equal(o.report.get("hostname"), "conf-host");
      assert.equal(o.report.get("domainname"), "conf.example");
      assert.equal(readHostFile("/proc/sys/kernel/domainname"), "(none)");
    },
    unsupportedBy: { runc: "runc 1.1 ignores domainname (runtime-spec 1.1; implemented in runc 1.2)" },
    noDiff: "runc 1.1 ignores domainname",
  },
  {
    name: "sysctl: net.ipv4.ip_forward (net ns) and kernel.shm_rmid_forced (ipc ns)",
    field: "linux.sysctl",
    setup(ctx) {
      // The host's own values (an engine's daemon may have turned ip_forward on): the container asks for
      // the opposite, and the host must keep its own.
      ctx.vars.ipForward = readHostFile("/proc/sys/net/ipv4/ip_forward");
      ctx.vars.shmRmidForced = readHostFile("/proc/sys/kernel/shm_rmid_forced");
    },
    spec: (ctx) => ({
      linux: {
        sysctl: {
          "net.ipv4.ip_forward": ctx.vars.ipForward === "1" ? "0" : "1",
          "kernel.shm_rmid_forced": ctx.vars.shmRmidForced === "1" ? "0" : "1",
        },
      },
    }),
    check(o, ctx) {
      ok(o);
      assert.equal(o.report.get("sysctl.net.ipv4.ip_forward"), ctx.vars.ipForward === "1" ? "0" : "1");
      assert.equal(o.report.get("sysctl.kernel.shm_rmid_forced"), ctx.vars.shmRmidForced === "1" ? "0" : "1");
      // namespaced: the host keeps its values
      assert.equal(readHostFile("/proc/sys/net/ipv4/ip_forward"), ctx.vars.ipForward);
      assert.equal(readHostFile("/proc/sys/kernel/shm_rmid_forced"), ctx.vars.shmRmidForced);
    },
  },

  // ---- process ----
  {
    name: "rlimits: lowered and below the host hard limit",
    field: "process.rlimits",
    spec: () => ({
      process: {
        rlimits: [
          { type: "RLIMIT_NOFILE", soft: 512, hard: 4096 },
          { type: "RLIMIT_CORE", soft: 1024, hard: 2048 },
          { type: "RLIMIT_MSGQUEUE", soft: 4096, hard: 8192 },
          { type: "RLIMIT_NPROC", soft: 500, hard: 1000 },
        ],
      },
    }),
    check(o) {
      ok(o);
      const r = o.report;
      assert.equal(r.get("rlimit.Max_open_files"), "512 4096");
      assert.equal(r.get("rlimit.Max_core_file_size"), "1024 2048");
      assert.equal(r.get("rlimit.Max_msgqueue_size"), "4096 8192");
      assert.equal(r.get("rlimit.Max_processes"), "500 1000");
    },
  },
  {
    name: "rlimits: above the hard limit without CAP_SYS_RESOURCE fails to start",
    field: "process.rlimits (failure mode)",
    spec: () => ({ process: { rlimits: [{ type: "RLIMIT_NOFILE", soft: 30000, hard: 30000 }] } }),
    vmAdapted:
      "the failure comes from this host's root lacking CAP_SYS_RESOURCE; the guest agent is the guest " +
      "kernel's root with every capability, so in a VM the limit is granted and the container runs with it",
    check(o, _ctx, env) {
      // Probe: a host whose root has CAP_SYS_RESOURCE, or whose hard limit is already 30000 or more,
      // grants the limit just as a guest does; only a host without either must refuse.
      if (env.vm || capSysResource().ok || hardNofile() >= 30000) {
        ok(o);
        assert.equal(o.report.get("rlimit.Max_open_files"), "30000 30000");
        return;
      }
      assert.notEqual(o.code, 0, "the runtime must fail");
      assert.equal(o.report.get("report.version"), undefined, "the workload must not run");
      assert.match(o.stderr, /operation not permitted|rlimit|RLIMIT_NOFILE|setrlimit/i);
    },
    noDiff: "no report; the error text is the runtime's own",
  },
  {
    name: "capabilities: all five sets as root",
    field: "process.capabilities",
    spec: () => ({
      process: {
        capabilities: {
          bounding: ["CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN", "CAP_SETUID"],
          effective: ["CAP_CHOWN", "CAP_KILL"],
          permitted: ["CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN"],
          inheritable: ["CAP_KILL", "CAP_NET_ADMIN"],
          ambient: ["CAP_KILL"],
        },
      },
    }),
    check(o) {
      ok(o);
      const r = o.report;
      assert.equal(r.get("status.CapBnd"), capHex(["CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN", "CAP_SETUID"]));
      assert.equal(r.get("status.CapInh"), capHex(["CAP_KILL", "CAP_NET_ADMIN"]));
      assert.equal(r.get("status.CapAmb"), capHex(["CAP_KILL"]));
      // exec as root: the kernel grants bounding | inheritable, but with no_new_privs it cannot exceed
      // the permitted set the runtime left before exec; effective follows permitted for root.
      const prm = capHex(["CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN"]);
      assert.equal(r.get("status.CapPrm"), prm);
      assert.equal(r.get("status.CapEff"), prm);
    },
  },
  {
    name: "capabilities: non-root user keeps exactly the ambient set",
    field: "process.capabilities (ambient), process.user",
    spec: () => ({
      process: {
        user: { uid: 1000, gid: 1000 },
        capabilities: {
          bounding: ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
          effective: ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
          permitted: ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
          inheritable: ["CAP_NET_BIND_SERVICE"],
          ambient: ["CAP_NET_BIND_SERVICE"],
        },
      },
    }),
    check(o) {
      ok(o);
      const r = o.report;
      const nbs = capHex(["CAP_NET_BIND_SERVICE"]);
      assert.equal(r.get("uid"), "1000");
      assert.equal(r.get("status.CapAmb"), nbs);
      assert.equal(r.get("status.CapPrm"), nbs);
      assert.equal(r.get("status.CapEff"), nbs);
      assert.equal(r.get("status.CapInh"), nbs);
      assert.equal(r.get("status.CapBnd"), capHex(["CAP_NET_BIND_SERVICE", "CAP_KILL"]));
    },
  },
  {
    name: "noNewPrivileges false",
    field: "process.noNewPrivileges",
    spec: () => ({ process: { noNewPrivileges: false } }),
    check(o) {
      ok(o);
      assert.equal(o.report.get("status.NoNewPrivs"), "0");
    },
  },
  {
    name: "user: uid, gid, additionalGids, umask",
    field: "process.user",
    spec: () => ({ process: { user: { uid: 1000, gid: 1000, additionalGids: [10, 100], umask: 0o027 } } }),
    check(o) {
      ok(o);
      const r = o.report;
      assert.equal(r.get("uid"), "1000");
      assert.equal(r.get("gid"), "1000");
      assert.equal(r.get("user"), "user");
      assert.deepEqual(r.get("groups")?.split(" ").sort(), ["10", "100", "1000"]);
      assert.equal(r.get("umask"), "0027");
      // a non-root user loses every capability on exec (no ambient set requested here)
      assert.equal(r.get("status.CapEff"), capHex([]));
    },
  },
  {
    name: "cwd and env",
    field: "process.cwd, process.env",
    spec: () => ({
      process: {
        cwd: "/home/user",
        env: ["PATH=/bin:/usr/bin", "A=1", "SPACED=two words", "EQ=a=b", "HOME=/h"],
      },
    }),
    check(o) {
      ok(o);
      const r = o.report;
      assert.equal(r.get("cwd"), "/home/user");
      assert.equal(r.get("env.A"), "1");
      assert.equal(r.get("env.SPACED"), "two words");
      assert.equal(r.get("env.EQ"), "a=b");
      assert.equal(r.get("env.HOME"), "/h", "an explicit HOME is kept");
      assert.equal(r.get("env.PATH"), "/bin:/usr/bin");
      assert.equal(r.get("env.TERM"), undefined);
    },
  },
  {
    name: "cwd that does not exist is created",
    field: "process.cwd",
    spec: () => ({ root: { readonly: false }, process: { cwd: "/work/sub" } }),
    check(o) {
      ok(o);
      assert.equal(o.report.get("cwd"), "/work/sub");
    },
  },
  {
    name: "oomScoreAdj",
    field: "process.oomScoreAdj",
    spec: () => ({ process: { oomScoreAdj: 500 } }),
    check(o) {
      ok(o);
      assert.equal(o.report.get("oom_score_adj"), "500");
    },
  },
  {
    name: "seccomp: errno action with errnoRet",
    field: "linux.seccomp (SCMP_ACT_ERRNO, errnoRet)",
    spec: () => ({
      linux: {
        seccomp: {
          defaultAction: "SCMP_ACT_ALLOW",
          architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
          syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 95 }],
        },
      },
    }),
    check(o) {
      ok(o);
      assert.equal(o.report.get("status.Seccomp"), "2");
      assert.match(o.report.get("seccomp.mkdir") ?? "", /not supported/i, "EOPNOTSUPP (95)");
    },
  },
  {
    name: "seccomp: default errno action with defaultErrnoRet",
    field: "linux.seccomp (defaultAction SCMP_ACT_ERRNO, defaultErrnoRet)",
    spec: () => ({
      linux: {
        seccomp: {
          defaultAction: "SCMP_ACT_ERRNO",
          defaultErrnoRet: 18,
          architectures: ["SCMP_ARCH_X86_64"],
          syscalls: [{ names: ALLOWED_SYSCALLS, action: "SCMP_ACT_ALLOW" }],
        },
      },
    }),
    check(o) {
      ok(o);
      assert.equal(o.report.get("status.Seccomp"), "2");
      assert.equal(o.report.get("seccomp.mkdir"), "Invalid cross-device link", "EXDEV (18)");
    },
  },
  {
    name: "seccomp: argument condition",
    field: "linux.seccomp.syscalls[].args",
    spec: () => ({
      linux: {
        seccomp: {
          defaultAction: "SCMP_ACT_ALLOW",
          architectures: ["SCMP_ARCH_X86_64"],
          // kill(pid, SIGUSR2) is refused; kill with any other signal is not
          syscalls: [
            { names: ["kill"], action: "SCMP_ACT_ERRNO", args: [{ index: 1, value: 12, op: "SCMP_CMP_EQ" }] },
          ],
        },
      },
    }),
    probes: ["kill:USR2", "kill:USR1"],
    check(o) {
      ok(o);
      assert.equal(o.report.get("probe.kill:USR2"), EPERM, "signal 12 matches the rule: EPERM");
      assert.equal(o.report.get("probe.kill:USR1"), "ok");
      assert.equal(o.report.get("status.Seccomp"), "2");
    },
  },
  {
    name: "personality LINUX32",
    field: "linux.personality",
    spec: () => ({ linux: { personality: { domain: "LINUX32" } } }),
    check(o) {
      ok(o);
      assert.equal(o.report.get("uname.m"), "i686");
    },
    unsupportedBy: { runc: "runc 1.1 ignores linux.personality (implemented in runc 1.2)" },
    noDiff: "runc 1.1 ignores linux.personality",
  },

  // ---- cgroups ----
  {
    name: "cgroup resources: memory, pids, cpu quota/period/shares",
    field: "linux.resources.{memory,pids,cpu}",
    mode: "detached",
    spec: () => ({
      linux: {
        resources: {
          memory: { limit: 64 * 1024 * 1024 },
          pids: { limit: 64 },
          cpu: { quota: 50000, period: 100000, shares: 512 },
        },
      },
    }),
    vmAdapted:
      "the --pid-file pid is the host stand-in's, in the caller's host cgroups: the limits are set in " +
      "the guest's cgroup2 tree, so they are read inside the container only (memory.max, pids.max, " +
      "cpu.max, cpu.weight = runc's conversion of shares)",
    inspect(pid, _ctx, env): Record<string, string> {
      if (env.vm) return {};
      const mem = hostCgroupDir(pid, "memory");
      const pids = hostCgroupDir(pid, "pids");
      const cpu = hostCgroupDir(pid, "cpu");
      return {
        memLimit: readHostFile(`${mem}/memory.limit_in_bytes`),
        pidsMax: readHostFile(`${pids}/pids.max`),
        quota: readHostFile(`${cpu}/cpu.cfs_quota_us`),
        period: readHostFile(`${cpu}/cpu.cfs_period_us`),
        shares: readHostFile(`${cpu}/cpu.shares`),
        procs: readHostFile(`${mem}/cgroup.procs`),
      };
    },
    check(o, _ctx, env) {
      assert.equal(o.host.createCode, "0", o.host.createStderr);
      assert.equal(o.host.status, "created");
      assert.equal(o.host.statePid, o.host.pidFile, "state pid = --pid-file");
      if (env.vm) {
        assert.equal(o.host.startCode, "0");
        assert.equal(o.host.finalStatus, "stopped");
        assert.equal(o.host.deleteCode, "0");
        assert.ok(o.report.complete, o.stdout + o.stderr);
        const r = o.report;
        assert.equal(r.get("cgroup.memory.max"), String(64 * 1024 * 1024));
        assert.equal(r.get("cgroup.pids.max"), "64");
        assert.equal(r.get("cgroup.cpu.max"), "50000 100000");
        assert.equal(r.get("cgroup.cpu.weight"), String(sharesToWeight(512)));
        return;
      }
      assert.equal(o.host.procs, o.host.pidFile, "the init process is in the container's memory cgroup");
      assert.equal(o.host.memLimit, String(64 * 1024 * 1024));
      assert.equal(o.host.pidsMax, "64");
      assert.equal(o.host.quota, "50000");
      assert.equal(o.host.period, "100000");
      assert.equal(o.host.shares, "512");
      assert.equal(o.host.startCode, "0");
      assert.equal(o.host.finalStatus, "stopped");
      assert.equal(o.host.deleteCode, "0");
      assert.ok(o.report.complete, o.stdout + o.stderr);
      const r = o.report;
      assert.equal(r.get("cgroup.memory/memory.limit_in_bytes"), String(64 * 1024 * 1024));
      assert.equal(r.get("cgroup.pids/pids.max"), "64");
      assert.equal(r.get("cgroup.cpu/cpu.cfs_quota_us"), "50000");
      assert.equal(r.get("cgroup.cpu/cpu.cfs_period_us"), "100000");
      assert.equal(r.get("cgroup.cpu/cpu.shares"), "512");
    },
  },

  // ---- exit codes ----
  {
    name: "exit code of the workload is run's exit code",
    field: "process.args (exit status)",
    spec: () => ({}),
    args: ["/bin/sh", "-c", "exit 7"],
    check(o) {
      assert.equal(o.code, 7, o.stderr);
    },
  },
  {
    name: "workload killed by a signal: run exits 128+n",
    field: "process.args (signal status)",
    spec: () => ({ linux: { namespaces: namespaces(DEFAULT_NS.filter((t) => t !== "pid")) } }),
    args: ["/bin/sh", "-c", "kill -TERM $$; sleep 5"],
    check(o) {
      assert.equal(o.code, 128 + 15, o.stderr);
    },
  },
  {
    name: "kill 9 from outside: run exits 137",
    field: "kill + run (signal status)",
    mode: "kill",
    spec: () => ({}),
    args: ["/bin/sleep", "30"],
    check(o) {
      assert.equal(o.host.statusBeforeKill, "running");
      assert.equal(o.host.killCode, "0");
      assert.equal(o.code, 137, o.stderr);
    },
  },
  {
    name: "missing executable: run fails and names it",
    field: "process.args[0] (error)",
    spec: () => ({}),
    args: ["/no/such/binary"],
    check(o) {
      assert.notEqual(o.code, 0);
      assert.match(o.stderr, /\/no\/such\/binary/);
      assert.match(o.stderr, /no such file or directory/i);
    },
    noDiff: "error text is the runtime's own",
  },
];

/** The default mounts (callers that set `mounts` replace the whole list, so they start from these). */
function defaultMounts(): Mount[] {
  return defaultSpec().mounts ?? [];
}
