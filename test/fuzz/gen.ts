// fast-check generators of fuzz cases: a valid busybox bundle's config.json with mutations of every
// part of it, a container id, the CLI flag combinations of create/exec/kill, exec's process.json and a
// verb sequence. Cases are plain JSON (a regression case is a saved one) with two placeholders the
// driver fills in: @CASE@ (the case's own directory, on a tmpfs private to the fuzz worker) and @TOKEN@
// (a string unique to the run and the case, so leak checks can be scoped to what this case made).
//
// Safety by construction (the machine is shared): no generated path names a host file outside @CASE@
// except read-only system binaries for hooks (/bin/true, /bin/sh writing into @CASE@); symlinks and
// "../" escapes land inside @CASE@ (the rootfs sits four levels below it); namespace paths are
// /proc/self/... (the worker's own throw-away namespaces), never /proc/1/...; cgroup paths always
// carry @TOKEN@; no mount type that shares a host superblock (devtmpfs, debugfs, named cgroup v1).
import fc from "fast-check";
import { ROOTFS_PROPAGATIONS } from "../../src/oci/names";
import { HOOK_NAMES } from "../../src/oci/spec";

// biome-ignore lint/suspicious/noExplicitAny: config.json is fuzzed, so any JSON shape is allowed
export type Json = any;

export type Verb =
  | "create"
  | "start"
  | "exec"
  | "kill"
  | "state"
  | "pause"
  | "resume"
  | "ps"
  | "run-detach"
  | "create-again"
  | "delete";

export interface FuzzCase {
  /** container id (may be invalid on purpose) */
  id: string;
  /** the whole config.json */
  spec: { mutations: Mutation[] };
  /** extra global flags (--debug, --log ..., --systemd-cgroup, --rootless ...) */
  globals: string[];
  /** extra create/run flags */
  createFlags: string[];
  /** run create with cwd = the bundle and without --bundle */
  bundleFromCwd: boolean;
  /** symlinks made in the rootfs before create: [path in rootfs, target] */
  symlinks: [string, string][];
  /** the verbs in order; the driver always ends with `delete --force` */
  verbs: Verb[];
  /** exec: either command-line flags + args, or a process.json */
  exec: { flags: string[]; args: string[] } | { processJson: Json; flags: string[] };
  /** kill's signal and flags */
  kill: { signal: string; flags: string[] };
}

export const NS_TYPES = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"];
const PROC_NS: Record<string, string> = {
  pid: "pid",
  network: "net",
  mount: "mnt",
  ipc: "ipc",
  uts: "uts",
  user: "user",
  cgroup: "cgroup",
  time: "time",
};

/** Sysctl keys: namespaced (net, ipc) and not (vm, fs, kernel.pid_max): values stay harmless. */
export const SYSCTL_KEYS = [
  "net.ipv4.ip_forward",
  "net.core.somaxconn",
  "net.ipv4.tcp_keepalive_time",
  "kernel.msgmax",
  "kernel.shmmni",
  "fs.mqueue.msg_max",
  "kernel.domainname",
  "vm.swappiness",
  "kernel.sched_child_runs_first",
  "net.ipv4.ping_group_range",
];

/** The keys of SYSCTL_KEYS that are not namespaced: a write to them changes the whole host. */
export const GLOBAL_SYSCTLS = ["vm.swappiness", "kernel.sched_child_runs_first"];

const str = (xs: string[]) => fc.constantFrom(...xs);

const weirdString = fc.oneof(
  str(["", " ", "\n", "a\nb", "-x", "--help", "..", ".", "/", "é", "\u0000", "a=b", "%s%n", "$" + "{x}"]),
  fc.string({ maxLength: 12 }),
);

/** A path inside the container: mostly sane, sometimes escaping or odd. */
const containerPath = fc.oneof(
  { weight: 4, arbitrary: str(["/mnt", "/tmp/x", "/opt/a/b", "/data", "/etc/fuzz", "/run/f"]) },
  {
    weight: 2,
    arbitrary: str(["/proc", "/sys", "/dev", "/", "/dev/null", "/etc/passwd", "/bin/busybox", "/proc/sys"]),
  },
  { weight: 2, arbitrary: str(["../../x", "../../../y", "/../../z", "/mnt/../../w", "rel/dir", "./x", ""]) },
  {
    weight: 1,
    arbitrary: str(["/link/inside", "/link", "/dlink/x", "/proc/self/root/x", "//double//slash"]),
  },
  { weight: 1, arbitrary: weirdString },
);

/** A host path for mount sources and such: inside the case directory, or a pseudo source. */
const hostSource = fc.oneof(
  { weight: 4, arbitrary: str(["@CASE@/host/src/dir", "@CASE@/host/src/file", "@CASE@/host/src/link"]) },
  { weight: 2, arbitrary: str(["tmpfs", "proc", "none", "sysfs", "mqueue", "devpts", "shm", "cgroup"]) },
  {
    weight: 1,
    arbitrary: str(["@CASE@/host/src/missing", "", "relative/src", "@CASE@/host/src/dir/../file"]),
  },
  { weight: 1, arbitrary: weirdString },
);

const MOUNT_OPTIONS = [
  "bind",
  "rbind",
  "ro",
  "rw",
  "nosuid",
  "nodev",
  "noexec",
  "relatime",
  "strictatime",
  ...ROOTFS_PROPAGATIONS.filter((p) => p !== ""),
  "remount",
  "mode=755",
  "mode=1777",
  "size=64k",
  "nr_inodes=16",
  "newinstance",
  "ptmxmode=0666",
  "gid=5",
  "bogus=1",
  "",
  "recursive",
  "nosymfollow",
  "idmap",
  "rro",
];

const mountArb = fc.record(
  {
    destination: containerPath,
    type: fc.oneof(
      { weight: 4, arbitrary: str(["bind", "tmpfs", "proc", "sysfs", "mqueue", "devpts", "none"]) },
      { weight: 1, arbitrary: str(["", "overlay", "nonsuch", "cgroup", "ext4"]) },
    ),
    source: hostSource,
    options: fc.array(str(MOUNT_OPTIONS), { maxLength: 5 }),
  },
  { requiredKeys: ["destination"] },
);

const nsPath = fc.oneof(
  fc.constantFrom(...Object.values(PROC_NS)).map((t) => `/proc/self/ns/${t}`),
  fc.constantFrom(...Object.values(PROC_NS)).map((t) => `/proc/thread-self/ns/${t}`),
  str(["/nonexistent/ns", "@CASE@/host/src/file", "@CASE@/host/src/dir", "/dev/null", "rel/ns", ""]),
);

const namespacesArb = fc.array(
  fc.record(
    {
      type: fc.oneof({ weight: 6, arbitrary: str(NS_TYPES) }, { weight: 1, arbitrary: weirdString }),
      path: nsPath,
    },
    { requiredKeys: ["type"] },
  ),
  { maxLength: 8 },
);

const idMapping = fc.record({
  containerID: fc.oneof(str([0, 1, 1000] as unknown as string[]), fc.integer({ min: -1, max: 70000 })),
  hostID: fc.oneof(fc.constantFrom(0, 100000, 200000, 4294967295), fc.integer({ min: -1, max: 300000 })),
  size: fc.oneof(fc.constantFrom(0, 1, 65536, 4294967295), fc.integer({ min: -1, max: 70000 })),
});

const deviceArb = fc.record(
  {
    path: fc.oneof(str(["/dev/fuzz0", "/dev/null", "/dev/net/tun", "/dev/a/b/c", "dev/rel"]), containerPath),
    type: str(["c", "b", "u", "p", "x", ""]),
    major: fc.oneof(fc.constantFrom(1, 5, 10, 136), fc.integer({ min: -1, max: 5000 })),
    minor: fc.oneof(fc.constantFrom(3, 5, 7, 200), fc.integer({ min: -1, max: 5000 })),
    fileMode: fc.oneof(fc.constantFrom(0o666, 0o600, 0o7777, 0o20666), fc.integer({ min: -1, max: 70000 })),
    uid: fc.oneof(fc.constantFrom(0, 1000, 4294967295), fc.integer({ min: -1, max: 70000 })),
    gid: fc.oneof(fc.constantFrom(0, 5, 4294967295), fc.integer({ min: -1, max: 70000 })),
  },
  { requiredKeys: ["path", "type"] },
);

/** Hook programs: host binaries that only read, or write into @CASE@/host/out. */
const hookArb = fc.record(
  {
    path: fc.oneof(
      { weight: 4, arbitrary: str(["/bin/true", "/bin/false", "/bin/sh", "/bin/sleep"]) },
      {
        weight: 1,
        arbitrary: str(["/nonexistent/hook", "rel/hook", "", "@CASE@/host/src/file", "@CASE@/host/src/dir"]),
      },
    ),
    args: fc.oneof(
      str([
        ["true"],
        ["sh", "-c", "cat > @CASE@/host/out/hook-$$"],
        ["sh", "-c", "exit 3"],
        ["sh", "-c", "echo hook-said-this >&2; exit 1"],
        ["sleep", "3"],
        [],
      ] as unknown as string[]) as unknown as fc.Arbitrary<string[]>,
      fc.array(weirdString, { maxLength: 3 }),
    ),
    env: fc.array(fc.oneof(str(["A=b", "NOEQUALS", "=x", "PATH=/nonexistent"]), weirdString), {
      maxLength: 2,
    }),
    timeout: fc.oneof(fc.constantFrom(1, 2, 0, -1), fc.integer({ min: -5, max: 5 })),
  },
  { requiredKeys: ["path"] },
);

const HOOK_KINDS = [...HOOK_NAMES];

const CAPS = [
  "CAP_CHOWN",
  "CAP_KILL",
  "CAP_SYS_ADMIN",
  "CAP_NET_ADMIN",
  "CAP_SYS_RESOURCE",
  "CAP_AUDIT_WRITE",
  "CAP_BOGUS",
  "chown",
  "",
  "CAP_SYS_PTRACE",
  "CAP_MKNOD",
];
const capList = fc.array(str(CAPS), { maxLength: 4 });

const rlimitArb = fc.record({
  type: str(["RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_STACK", "RLIMIT_BOGUS", "nofile", ""]),
  hard: fc.oneof(fc.constantFrom(0, 1024, 20000, 1048576, -1, 2 ** 53), fc.nat()),
  soft: fc.oneof(fc.constantFrom(0, 1024, 20000, 1048576, -1), fc.nat()),
});

/** Workload arguments: short, long-running, missing, odd. */
const argsArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant(["sleep", "30"]) },
  {
    weight: 2,
    arbitrary: str([
      ["true"],
      ["/bin/false"],
      ["sh", "-c", "exit 7"],
      ["/bin/sleep", "30"],
    ] as unknown as string[]),
  },
  {
    weight: 1,
    arbitrary: str([
      [],
      ["/nonexistent"],
      [""],
      ["/etc/passwd"],
      ["/dev"],
      ["rel/bin"],
    ] as unknown as string[]),
  },
) as unknown as fc.Arbitrary<string[]>;

const userArb = fc.record(
  {
    uid: fc.oneof(fc.constantFrom(0, 1000, 65534, 4294967295), fc.integer({ min: -1, max: 70000 })),
    gid: fc.oneof(fc.constantFrom(0, 1000, 65534), fc.integer({ min: -1, max: 70000 })),
    additionalGids: fc.array(fc.integer({ min: -1, max: 70000 }), { maxLength: 3 }),
    umask: fc.oneof(fc.constantFrom(0, 0o22, 0o777), fc.integer({ min: -1, max: 5000 })),
    username: weirdString,
  },
  { requiredKeys: ["uid", "gid"] },
);

const processMutations = fc.record(
  {
    args: argsArb,
    cwd: fc.oneof(str(["/", "/tmp", "/nonexistent", "rel", "", "/etc/passwd", "/proc/self"]), weirdString),
    env: fc.array(fc.oneof(str(["PATH=/bin", "X=1", "NOEQ", "=v", "A=b\nc"]), weirdString), { maxLength: 3 }),
    user: userArb,
    capabilities: fc.record(
      { bounding: capList, effective: capList, permitted: capList, inheritable: capList, ambient: capList },
      { requiredKeys: [] },
    ),
    rlimits: fc.array(rlimitArb, { maxLength: 3 }),
    noNewPrivileges: fc.boolean(),
    terminal: fc.boolean(),
    oomScoreAdj: fc.oneof(fc.constantFrom(-1000, 0, 500, 1000, 1001), fc.integer({ min: -2000, max: 2000 })),
    apparmorProfile: weirdString,
    selinuxLabel: weirdString,
    consoleSize: fc.record({ height: fc.nat(1000), width: fc.nat(1000) }),
  },
  { requiredKeys: [] },
);

const seccompArb = fc.record(
  {
    defaultAction: str([
      "SCMP_ACT_ALLOW",
      "SCMP_ACT_ERRNO",
      "SCMP_ACT_KILL",
      "SCMP_ACT_LOG",
      "SCMP_ACT_BOGUS",
      "",
    ]),
    defaultErrnoRet: fc.integer({ min: -1, max: 5000 }),
    architectures: fc.array(
      str(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64", "SCMP_ARCH_BOGUS"]),
      {
        maxLength: 3,
      },
    ),
    flags: fc.array(str(["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "BOGUS"]), {
      maxLength: 2,
    }),
    syscalls: fc.array(
      fc.record(
        {
          names: fc.array(str(["getcwd", "mkdir", "chmod", "nonesuch", "", "execve", "write", "clone3"]), {
            maxLength: 3,
          }),
          action: str([
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_KILL",
            "SCMP_ACT_TRACE",
            "SCMP_ACT_NOTIFY",
            "x",
          ]),
          errnoRet: fc.integer({ min: -1, max: 5000 }),
          args: fc.array(
            fc.record({
              index: fc.integer({ min: -1, max: 7 }),
              value: fc.nat(),
              valueTwo: fc.nat(),
              op: str(["SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_BOGUS"]),
            }),
            { maxLength: 2 },
          ),
        },
        { requiredKeys: ["names", "action"] },
      ),
      { maxLength: 3 },
    ),
  },
  { requiredKeys: ["defaultAction"] },
);

const cgroupsPathArb = fc.oneof(
  str([
    "/kata-fuzz-@TOKEN@",
    "/kata-fuzz-@TOKEN@/a/b",
    "kata-fuzz-@TOKEN@",
    "/kata-fuzz-@TOKEN@/x/../y",
    "kata-fuzz-@TOKEN@/../kata-fuzz-@TOKEN@-z",
    "kfz@TOKEN@.slice:pre:@TOKEN@",
    ":kata:@TOKEN@",
    "-.slice:kata:@TOKEN@",
    "bad.slice:x:@TOKEN@",
    "kfz@TOKEN@.slice:pre:@TOKEN@.slice",
    "@TOKEN@:::",
    "/kata-fuzz-@TOKEN@/ with space",
    "/kata-fuzz-@TOKEN@/\nnl",
  ]),
);

const resourcesArb = fc.record(
  {
    memory: fc.record({ limit: fc.oneof(fc.constantFrom(-1, 0, 4096, 1 << 30), fc.integer()) }),
    pids: fc.record({ limit: fc.oneof(fc.constantFrom(-1, 0, 1, 100), fc.integer()) }),
    cpu: fc.record(
      {
        shares: fc.oneof(fc.constantFrom(0, 2, 1024, 262145), fc.nat()),
        quota: fc.integer({ min: -2, max: 1000000 }),
        period: fc.oneof(fc.constantFrom(0, 1000, 100000), fc.nat()),
        cpus: str(["0", "0-1", "5", "x", ""]),
      },
      { requiredKeys: [] },
    ),
    devices: fc.array(
      fc.record(
        {
          allow: fc.boolean(),
          type: str(["a", "c", "b", "x"]),
          major: fc.integer({ min: -1, max: 300 }),
          minor: fc.integer({ min: -1, max: 300 }),
          access: str(["rwm", "r", "", "q"]),
        },
        { requiredKeys: ["allow"] },
      ),
      { maxLength: 3 },
    ),
  },
  { requiredKeys: [] },
);

const annotationsArb = fc.dictionary(
  fc.oneof(
    str([
      "io.kubernetes.cri.container-type",
      "io.kubernetes.cri.sandbox-id",
      "io.kubernetes.cri-o.ContainerType",
      "io.kubernetes.docker.type",
      "io.katacontainers.config.hypervisor.kernel",
      "org.opencontainers.image.os",
      "",
    ]),
    weirdString,
  ),
  fc.oneof(str(["sandbox", "container", "podsandbox", "@TOKEN@", "/nonexistent", ""]), weirdString),
  { maxKeys: 3 },
);

/** One mutation of config.json: a function of (spec) described by data, so cases stay JSON. */
export type Mutation = [string, Json];

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  namespacesArb.map((v): Mutation => ["linux.namespaces", v]),
  fc.record({ type: str(NS_TYPES), path: nsPath }).map((v): Mutation => ["linux.namespaces+", v]),
  fc.array(mountArb, { maxLength: 3 }).map((v): Mutation => ["mounts+", v]),
  fc.array(mountArb, { maxLength: 3 }).map((v): Mutation => ["mounts", v]),
  fc.array(deviceArb, { maxLength: 3 }).map((v): Mutation => ["linux.devices", v]),
  fc
    .dictionary(str(HOOK_KINDS), fc.array(hookArb, { minLength: 1, maxLength: 2 }), { maxKeys: 3 })
    .map((v): Mutation => ["hooks", v]),
  processMutations.map((v): Mutation => ["process", v]),
  fc.array(rlimitArb, { maxLength: 3 }).map((v): Mutation => ["process.rlimits", v]),
  fc
    .record({ bounding: capList, effective: capList, permitted: capList })
    .map((v): Mutation => ["process.capabilities", v]),
  seccompArb.map((v): Mutation => ["linux.seccomp", v]),
  cgroupsPathArb.map((v): Mutation => ["linux.cgroupsPath", v]),
  resourcesArb.map((v): Mutation => ["linux.resources", v]),
  fc
    .dictionary(
      str(SYSCTL_KEYS),
      fc.oneof(str(["0", "1", "128", "1 0", "x", "", "fuzz.example"]), weirdString),
      {
        maxKeys: 3,
      },
    )
    .map((v): Mutation => ["linux.sysctl", v]),
  fc
    .record({
      uidMappings: fc.array(idMapping, { maxLength: 2 }),
      gidMappings: fc.array(idMapping, { maxLength: 2 }),
    })
    .map((v): Mutation => ["idmappings", v]),
  annotationsArb.map((v): Mutation => ["annotations", v]),
  fc
    .record(
      {
        path: str([
          "rootfs",
          "@CASE@/moat/a/b/c/bundle/rootfs",
          "nonexistent",
          "",
          "../bundle/rootfs",
          "@CASE@/host/src/file",
          "@CASE@/host/src/link",
        ]),
        readonly: fc.boolean(),
      },
      { requiredKeys: ["path"] },
    )
    .map((v): Mutation => ["root", v]),
  fc
    .oneof(str(["fuzz-host", "", "a".repeat(70), "bad/name"]), weirdString)
    .map((v): Mutation => ["hostname", v]),
  fc.oneof(str(["fuzz-domain", ""]), weirdString).map((v): Mutation => ["domainname", v]),
  fc
    .array(str(["/proc/kcore", "/nonexistent", "rel", "", "/etc/passwd", "/dev/null"]), { maxLength: 3 })
    .map((v): Mutation => ["linux.maskedPaths", v]),
  fc
    .array(str(["/proc/sys", "/nonexistent", "rel", "", "/etc"]), { maxLength: 3 })
    .map((v): Mutation => ["linux.readonlyPaths", v]),
  str(["1.0.2-dev", "1.2.0", "0.1.0", "", "99.0.0", "bogus"]).map((v): Mutation => ["ociVersion", v]),
  str(["rprivate", "private", "rslave", "slave", "shared", "rshared", "unbindable", "bogus", ""]).map(
    (v): Mutation => ["linux.rootfsPropagation", v],
  ),
  fc
    .constantFrom("process", "root", "linux", "mounts", "ociVersion", "linux.namespaces")
    .map((v): Mutation => ["delete", v]),
  fc
    .oneof(fc.constant(null), fc.constant([]), fc.constant("str"), fc.constant(42))
    .chain((v) =>
      str([
        "process",
        "root",
        "linux",
        "mounts",
        "hooks",
        "annotations",
        "linux.namespaces",
        "process.args",
        "process.user",
      ]).map((k): Mutation => ["set", [k, v]]),
    ),
);

/**
 * Mutations a runtime should accept: they get cases past validation into the namespace, mount, cgroup
 * and process set-up (and, in VM mode, into the VM), where the deeper defects live.
 */
const validMutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc
    .subarray(["pid", "network", "ipc", "uts", "cgroup"])
    .map((t): Mutation => ["linux.namespaces", [{ type: "mount" }, ...t.map((type) => ({ type }))]]),
  fc
    .array(
      fc.record({
        destination: str(["/mnt", "/opt/data", "/run/x", "/tmp/y", "/link/inside", "/dlink/x"]),
        type: str(["bind", "tmpfs"]),
        source: str(["@CASE@/host/src/dir", "@CASE@/host/src/link"]),
        options: fc.subarray(["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"]),
      }),
      { minLength: 1, maxLength: 2 },
    )
    .map(
      (m): Mutation => [
        "mounts+",
        m.map((x) =>
          x.type === "tmpfs" ? { ...x, source: "tmpfs" } : { ...x, options: ["rbind", ...x.options] },
        ),
      ],
    ),
  fc
    .record({
      path: str(["/dev/fuzz0", "/dev/fuzz1"]),
      type: str(["c", "b"]),
      major: fc.constantFrom(1, 7),
      minor: fc.constantFrom(3, 5),
    })
    .map((d): Mutation => ["linux.devices", [{ ...d, fileMode: 0o666, uid: 0, gid: 0 }]]),
  fc
    .record({
      kind: str(HOOK_KINDS),
      hook: fc.constantFrom(
        { path: "/bin/true" },
        { path: "/bin/sh", args: ["sh", "-c", "cat > @CASE@/host/out/hook-$$"] },
        { path: "/bin/sh", args: ["sh", "-c", "exit 1"] },
        { path: "/bin/sleep", args: ["sleep", "5"], timeout: 1 },
      ),
    })
    .map((h): Mutation => ["hooks", { [h.kind]: [h.hook] }]),
  fc
    .record(
      {
        env: fc.constant(["PATH=/bin", "FUZZ=1"]),
        cwd: str(["/", "/tmp", "/root"]),
        user: fc.record({ uid: fc.constantFrom(0, 1000, 65534), gid: fc.constantFrom(0, 1000, 65534) }),
        noNewPrivileges: fc.boolean(),
        oomScoreAdj: fc.constantFrom(0, 100, 1000),
        rlimits: fc.constant([{ type: "RLIMIT_NOFILE", hard: 4096, soft: 1024 }]),
      },
      { requiredKeys: [] },
    )
    .map((p): Mutation => ["process", p]),
  fc
    .subarray(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID"])
    .map((c): Mutation => ["process.capabilities", { bounding: c, effective: c, permitted: c }]),
  fc
    .record({
      defaultAction: str(["SCMP_ACT_ALLOW"]),
      syscalls: fc.constant([{ names: ["chmod", "mkdir"], action: "SCMP_ACT_ERRNO" }]),
    })
    .map((x): Mutation => ["linux.seccomp", x]),
  str(["/kata-fuzz-@TOKEN@", "kata-fuzz-@TOKEN@", "/kata-fuzz-@TOKEN@/a/b"]).map(
    (v): Mutation => ["linux.cgroupsPath", v],
  ),
  fc
    .record({
      memory: fc.record({ limit: fc.constantFrom(67108864, 268435456) }),
      pids: fc.record({ limit: fc.constantFrom(64, 1000) }),
      cpu: fc.record({
        shares: fc.constantFrom(512, 2048),
        quota: fc.constantFrom(50000, -1),
        period: fc.constant(100000),
      }),
    })
    .map((r): Mutation => ["linux.resources", r]),
  str(["net.core.somaxconn", "kernel.msgmax", "net.ipv4.ip_forward"]).map(
    (k): Mutation => ["linux.sysctl", { [k]: k === "net.ipv4.ip_forward" ? "1" : "4096" }],
  ),
  fc
    .record({
      containerID: fc.constant(0),
      hostID: fc.constantFrom(100000, 200000),
      size: fc.constant(65536),
    })
    .map((m): Mutation => ["idmappings", { uidMappings: [m], gidMappings: [m] }]),
  annotationsArb.map((v): Mutation => ["annotations", v]),
  fc.boolean().map((ro): Mutation => ["root", { path: "rootfs", readonly: ro }]),
  str(["fuzz-host", "h"]).map((v): Mutation => ["hostname", v]),
  fc.constant<Mutation>(["linux.maskedPaths", ["/proc/kcore", "/nonexistent"]]),
);

/** Mostly mutations that should be accepted, some that should not; 0-3 of them. */
const mutationsArb = fc
  .array(fc.oneof({ weight: 3, arbitrary: validMutationArb }, { weight: 2, arbitrary: mutationArb }), {
    maxLength: 3,
  })
  .map((m) => ({ mutations: m }));

/** VM mode: each case must reach the VM, so its mutations are the accepted kind and its id valid. */
export const vmMutationsArb = fc.array(validMutationArb, { maxLength: 2 }).map((m) => ({ mutations: m }));

const tokenId = fc.oneof(
  { weight: 8, arbitrary: fc.constant("kfz-@TOKEN@") },
  {
    weight: 3,
    arbitrary: str([
      "",
      ".",
      "..",
      "../@TOKEN@",
      "@TOKEN@/x",
      "-@TOKEN@",
      "@TOKEN@ x",
      "@TOKEN@\n",
      "@TOKEN@:x",
      "@TOKEN@é",
      `${"a".repeat(1100)}@TOKEN@`,
      "@TOKEN@.",
      "@TOKEN@+_-.",
      "@TOKEN@*",
    ]),
  },
);

const globalsArb = fc
  .record(
    {
      debug: fc.boolean(),
      log: str(["", "@CASE@/host/out/kata.log", "@CASE@/host/out/nodir/kata.log", "@CASE@/host/src/dir"]),
      logFormat: fc.oneof(
        { weight: 8, arbitrary: str(["", "json", "text"]) },
        { weight: 1, arbitrary: fc.constant("bogus") },
      ),
      systemd: fc.boolean(),
      rootless: fc.oneof(
        { weight: 8, arbitrary: str(["", "true", "false", "auto"]) },
        { weight: 1, arbitrary: fc.constant("maybe") },
      ),
    },
    { requiredKeys: [] },
  )
  .map((g) => {
    const out: string[] = [];
    if (g.debug) out.push("--debug");
    if (g.log) out.push("--log", g.log);
    if (g.logFormat) out.push("--log-format", g.logFormat);
    if (g.systemd) out.push("--systemd-cgroup");
    if (g.rootless) out.push("--rootless", g.rootless);
    return out;
  });

const createFlagsArb = fc.array(
  fc.oneof(
    fc.constant(["--no-pivot"]),
    fc.constant(["--pid-file", "@CASE@/host/out/pid"]),
    fc.constant(["--no-new-keyring"]),
    fc.constant(["--no-pivot"]),
    fc.constant(["--no-new-keyring"]),
    str(["@CASE@/host/out/pid", "rel.pid", "@CASE@/host/out/nodir/pid", "@CASE@/host/src/dir"]).map((p) => [
      "--pid-file",
      p,
    ]),
    str(["0", "1", "-1", "x", "1000"]).map((n) => ["--preserve-fds", n]),
    str(["@CASE@/host/out/nosock", "@CASE@/host/src/file"]).map((p) => ["--console-socket", p]),
    fc.constant(["--bogus-flag"]),
  ),
  { maxLength: 2 },
);

const execFlagsArb = fc.array(
  fc.oneof(
    str(["/", "/tmp", "/nonexistent", "rel"]).map((v) => ["--cwd", v]),
    str(["A=1", "NOEQ", "=x"]).map((v) => ["-e", v]),
    str(["0", "1000:1000", "65534", "x", "-1", "0:x"]).map((v) => ["-u", v]),
    str(["10", "x", "-1"]).map((v) => ["-g", v]),
    str(["CAP_SYS_ADMIN", "CAP_BOGUS", "CAP_SYS_RESOURCE"]).map((v) => ["--cap", v]),
    fc.constant(["--no-new-privs"]),
    fc.constant(["-t"]),
    fc.constant(["-d"]),
    str(["@CASE@/host/out/exec.pid", "@CASE@/host/out/nodir/p"]).map((v) => ["--pid-file", v]),
    str(["0", "2", "x"]).map((v) => ["--preserve-fds", v]),
  ),
  { maxLength: 3 },
);

const execArb = fc.oneof(
  fc.record({
    flags: execFlagsArb.map((a) => a.flat()),
    args: fc.oneof(
      str([
        ["true"],
        ["/bin/false"],
        ["sh", "-c", "exit 5"],
        ["/nonexistent"],
        ["sleep", "0"],
      ] as unknown as string[]),
      fc.array(weirdString, { maxLength: 2 }),
    ) as unknown as fc.Arbitrary<string[]>,
  }),
  fc.record({
    processJson: fc.oneof(
      processMutations,
      fc.constantFrom(null, [], "str", 1, { args: [] }, { args: ["true"] }, { args: ["true"], cwd: "rel" }),
    ),
    flags: fc.constantFrom<string[]>([], ["-d"], ["-t"]),
  }),
);

const VERB_SHAPES: Verb[][] = [
  ["create"],
  ["create", "start", "state", "exec", "kill"],
  ["create", "start", "kill"],
  ["create", "exec"],
  ["create", "start", "pause", "resume", "ps"],
  ["create", "kill"],
  ["create", "create-again"],
  ["run-detach", "exec", "kill"],
  ["create", "start", "exec", "exec", "kill"],
  ["start", "kill", "create", "start"],
];

export function caseArb(): fc.Arbitrary<FuzzCase> {
  return fc.record({
    id: tokenId,
    spec: mutationsArb,
    globals: globalsArb,
    createFlags: createFlagsArb.map((a) => a.flat()),
    bundleFromCwd: fc.boolean(),
    symlinks: fc.array(
      fc.tuple(
        str(["link", "dlink", "etc/fuzz", "mnt"]),
        str(["@CASE@/moat/target", "/proc/self/root/x", "../../../..", "dir"]),
      ),
      { maxLength: 2 },
    ),
    verbs: fc.constantFrom(...VERB_SHAPES),
    exec: execArb,
    kill: fc.record({
      signal: str(["KILL", "TERM", "9", "SIGKILL", "0", "BOGUS", "99", "-1", "HUP"]),
      flags: fc.constantFrom<string[]>([], ["--all"], ["-a"]),
    }),
  });
}

function setPath(obj: Json, path: string, value: Json): void {
  const keys = path.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) {
    if (typeof o[k] !== "object" || o[k] === null || Array.isArray(o[k])) o[k] = {};
    o = o[k];
  }
  o[keys[keys.length - 1]] = value;
}

function deletePath(obj: Json, path: string): void {
  const keys = path.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) {
    if (typeof o?.[k] !== "object" || o[k] === null) return;
    o = o[k];
  }
  if (o && typeof o === "object") delete o[keys[keys.length - 1]];
}

const obj = (v: Json): Json => (typeof v === "object" && v !== null && !Array.isArray(v) ? v : {});

/** Applies the mutations to a copy of `base` (a valid config.json). */
export function applyMutations(base: Json, mutations: Mutation[]): Json {
  const s = structuredClone(base);
  for (const [kind, v] of mutations) {
    switch (kind) {
      case "linux.namespaces+":
        s.linux = obj(s.linux);
        s.linux.namespaces = [...(Array.isArray(s.linux.namespaces) ? s.linux.namespaces : []), v];
        break;
      case "mounts+":
        s.mounts = [...(Array.isArray(s.mounts) ? s.mounts : []), ...v];
        break;
      case "process":
        s.process = { ...obj(s.process), ...v };
        break;
      case "idmappings":
        s.linux = obj(s.linux);
        s.linux.uidMappings = v.uidMappings;
        s.linux.gidMappings = v.gidMappings;
        if (!Array.isArray(s.linux.namespaces)) s.linux.namespaces = [];
        if (!s.linux.namespaces.some((n: Json) => n?.type === "user"))
          s.linux.namespaces.push({ type: "user" });
        break;
      case "delete":
        deletePath(s, v);
        break;
      case "set":
        setPath(s, v[0], v[1]);
        break;
      default:
        setPath(s, kind, v);
    }
  }
  return s;
}

/** Replaces @CASE@ and @TOKEN@ everywhere in a JSON value. */
export function fill<T>(value: T, caseDir: string, token: string): T {
  return JSON.parse(JSON.stringify(value).replaceAll("@CASE@", caseDir).replaceAll("@TOKEN@", token)) as T;
}
