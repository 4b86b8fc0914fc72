import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { defaultSpec } from "../../src/oci/defaults";
import { parseConfigJson, SpecError, validateProcess, validateSpec } from "../../src/oci/validate";

// biome-ignore lint/suspicious/noExplicitAny: free-form JSON fixtures mutated by the cases
type J = any;

// A valid base config; each case mutates a deep copy.
function base(): Record<string, J> {
  return JSON.parse(JSON.stringify(defaultSpec()));
}

function rejects(mutate: (s: Record<string, J>) => void, message: string): void {
  const s = base();
  mutate(s);
  assert.throws(
    () => validateSpec(s),
    (err: unknown) => {
      assert.ok(err instanceof SpecError, `expected SpecError, got ${err}`);
      assert.equal(err.message, message);
      return true;
    },
  );
}

describe("validateSpec", () => {
  it("accepts the default and rootless specs and returns the same object", () => {
    const s = base();
    assert.equal(validateSpec(s), s);
    validateSpec(defaultSpec({ rootless: true, hostUid: 1000, hostGid: 1000 }));
  });

  it("ignores unknown fields", () => {
    const s = base();
    s.whatever = { x: 1 };
    s.process.futureField = 3;
    s.linux.somethingNew = [];
    validateSpec(s);
  });

  const cases: [string, (s: Record<string, J>) => void, string][] = [
    ["ociVersion missing", (s) => delete s.ociVersion, "ociVersion: is required"],
    ["ociVersion type", (s) => (s.ociVersion = 1), "ociVersion: must be a string, got a number"],
    ["ociVersion major", (s) => (s.ociVersion = "2.0.0"), 'ociVersion: unsupported version "2.0.0"'],
    ["root missing", (s) => delete s.root, "root: is required"],
    ["root.path type", (s) => (s.root.path = 5), "root.path: must be a string, got a number"],
    [
      "root.readonly type",
      (s) => (s.root.readonly = "yes"),
      "root.readonly: must be a boolean, got a string",
    ],
    ["process missing", (s) => delete s.process, "process: is required"],
    ["args empty", (s) => (s.process.args = []), "process.args: must not be empty"],
    [
      "args item type",
      (s) => (s.process.args = ["sh", 1]),
      "process.args[1]: must be a string, got a number",
    ],
    ["cwd relative", (s) => (s.process.cwd = "tmp"), 'process.cwd: must be an absolute path, got "tmp"'],
    ["cwd missing", (s) => delete s.process.cwd, "process.cwd: is required"],
    ["user missing", (s) => delete s.process.user, "process.user: is required"],
    [
      "uid negative",
      (s) => (s.process.user.uid = -1),
      "process.user.uid: -1 is out of range [0, 4294967295]",
    ],
    ["gid float", (s) => (s.process.user.gid = 1.5), "process.user.gid: must be an integer, got 1.5"],
    [
      "additionalGids type",
      (s) => (s.process.user.additionalGids = ["a"]),
      "process.user.additionalGids[0]: must be an integer, got a string",
    ],
    [
      "env no =",
      (s) => (s.process.env = ["FOO"]),
      `process.env[0]: invalid environment variable "FOO": missing '='`,
    ],
    ["terminal type", (s) => (s.process.terminal = 1), "process.terminal: must be a boolean, got a number"],
    [
      "unknown capability",
      (s) => (s.process.capabilities.bounding = ["CAP_FOO"]),
      'process.capabilities.bounding[0]: unknown capability "CAP_FOO"',
    ],
    [
      "capability set type",
      (s) => (s.process.capabilities.ambient = "CAP_KILL"),
      "process.capabilities.ambient: must be an array, got a string",
    ],
    [
      "rlimit type",
      (s) => (s.process.rlimits[0].type = "RLIMIT_FOO"),
      'process.rlimits[0].type: unknown rlimit type "RLIMIT_FOO"',
    ],
    [
      "rlimit duplicate",
      (s) => s.process.rlimits.push({ type: "RLIMIT_NOFILE", hard: 1, soft: 1 }),
      'process.rlimits[1].type: duplicate rlimit type "RLIMIT_NOFILE"',
    ],
    [
      "rlimit soft > hard",
      (s) => (s.process.rlimits[0].soft = 2048),
      "process.rlimits[0]: soft limit 2048 is greater than hard limit 1024",
    ],
    [
      "oomScoreAdj range",
      (s) => (s.process.oomScoreAdj = 1001),
      "process.oomScoreAdj: 1001 is out of range [-1000, 1000]",
    ],
    [
      "ioPriority class",
      (s) => (s.process.ioPriority = { class: "X" }),
      'process.ioPriority.class: unknown I/O priority class "X"',
    ],
    [
      "scheduler policy",
      (s) => (s.process.scheduler = { policy: "SCHED_FOO" }),
      'process.scheduler.policy: unknown scheduler policy "SCHED_FOO"',
    ],
    ["mounts type", (s) => (s.mounts = {}), "mounts: must be an array, got an object"],
    [
      "mount destination relative",
      (s) => (s.mounts[1].destination = "dev"),
      'mounts[1].destination: must be an absolute path, got "dev"',
    ],
    [
      "mount options type",
      (s) => (s.mounts[0].options = "ro"),
      "mounts[0].options: must be an array, got a string",
    ],
    ["hostname type", (s) => (s.hostname = 7), "hostname: must be a string, got a number"],
    [
      "hostname without uts",
      (s) => (s.linux.namespaces = s.linux.namespaces.filter((n: J) => n.type !== "uts")),
      "hostname: unable to set hostname without a private UTS namespace",
    ],
    [
      "hook path",
      (s) => (s.hooks = { prestart: [{ path: "x" }] }),
      'hooks.prestart[0].path: must be an absolute path, got "x"',
    ],
    [
      "hook timeout",
      (s) => (s.hooks = { poststop: [{ path: "/x", timeout: 0 }] }),
      "hooks.poststop[0].timeout: must be at least 1 second",
    ],
    [
      "annotations value",
      (s) => (s.annotations = { a: 1 }),
      'annotations["a"]: must be a string, got a number',
    ],
    [
      "namespace type",
      (s) => (s.linux.namespaces[2].type = "foo"),
      'linux.namespaces[2].type: unknown namespace type "foo"',
    ],
    [
      "namespace duplicate",
      (s) => s.linux.namespaces.push({ type: "pid" }),
      'linux.namespaces[5].type: duplicate namespace type "pid"',
    ],
    [
      "namespace path relative",
      (s) => (s.linux.namespaces[1].path = "proc/1/ns/net"),
      'linux.namespaces[1].path: must be an absolute path, got "proc/1/ns/net"',
    ],
    [
      "user ns without mappings",
      (s) => s.linux.namespaces.push({ type: "user" }),
      "linux.uidMappings: user namespaces enabled, but no uid mappings found",
    ],
    [
      "user ns without gid mappings",
      (s) => {
        s.linux.namespaces.push({ type: "user" });
        s.linux.uidMappings = [{ containerID: 0, hostID: 1000, size: 1 }];
      },
      "linux.gidMappings: user namespaces enabled, but no gid mappings found",
    ],
    [
      "mappings without user ns",
      (s) => (s.linux.uidMappings = [{ containerID: 0, hostID: 1000, size: 1 }]),
      'linux.uidMappings: uid/gid mappings require a user namespace (add {"type": "user"} to linux.namespaces)',
    ],
    [
      "mapping size",
      (s) => (s.linux.uidMappings = [{ containerID: 0, hostID: 1, size: "1" }]),
      "linux.uidMappings[0].size: must be an integer, got a string",
    ],
    [
      "device type",
      (s) => (s.linux.devices = [{ path: "/dev/x", type: "z" }]),
      'linux.devices[0].type: unknown device type "z"',
    ],
    [
      "device major required",
      (s) => (s.linux.devices = [{ path: "/dev/x", type: "c", minor: 1 }]),
      "linux.devices[0].major: is required",
    ],
    [
      "cgroupsPath type",
      (s) => (s.linux.cgroupsPath = 1),
      "linux.cgroupsPath: must be a string, got a number",
    ],
    [
      "resources devices allow",
      (s) => (s.linux.resources.devices[0].allow = "no"),
      "linux.resources.devices[0].allow: must be a boolean, got a string",
    ],
    [
      "memory limit type",
      (s) => (s.linux.resources.memory = { limit: "1G" }),
      "linux.resources.memory.limit: must be an integer, got a string",
    ],
    [
      "swappiness",
      (s) => (s.linux.resources.memory = { swappiness: 101 }),
      "linux.resources.memory.swappiness: 101 is out of range [0, 100]",
    ],
    [
      "cpu shares",
      (s) => (s.linux.resources.cpu = { shares: -1 }),
      "linux.resources.cpu.shares: -1 is out of range [0, 18446744073709552000]",
    ],
    ["pids limit", (s) => (s.linux.resources.pids = {}), "linux.resources.pids.limit: is required"],
    [
      "blockIO weight",
      (s) => (s.linux.resources.blockIO = { weight: "x" }),
      "linux.resources.blockIO.weight: must be an integer, got a string",
    ],
    [
      "hugepage size",
      (s) => (s.linux.resources.hugepageLimits = [{ pageSize: "2M", limit: 1 }]),
      'linux.resources.hugepageLimits[0].pageSize: invalid page size "2M"',
    ],
    [
      "network classID",
      (s) => (s.linux.resources.network = { classID: "a" }),
      "linux.resources.network.classID: must be an integer, got a string",
    ],
    [
      "rdma",
      (s) => (s.linux.resources.rdma = { mlx: { hcaHandles: -3 } }),
      'linux.resources.rdma["mlx"].hcaHandles: -3 is out of range [0, 4294967295]',
    ],
    [
      "unified key",
      (s) => (s.linux.resources.unified = { "../x": "1" }),
      'linux.resources.unified: invalid cgroup v2 key "../x"',
    ],
    [
      "rootfsPropagation",
      (s) => (s.linux.rootfsPropagation = "weird"),
      'linux.rootfsPropagation: unknown rootfs propagation "weird"',
    ],
    ["seccomp defaultAction", (s) => (s.linux.seccomp = {}), "linux.seccomp.defaultAction: is required"],
    [
      "seccomp action",
      (s) => (s.linux.seccomp = { defaultAction: "SCMP_ACT_NOPE" }),
      'linux.seccomp.defaultAction: unknown seccomp action "SCMP_ACT_NOPE"',
    ],
    [
      "seccomp arch",
      (s) => (s.linux.seccomp = { defaultAction: "SCMP_ACT_ALLOW", architectures: ["SCMP_ARCH_Z80"] }),
      'linux.seccomp.architectures[0]: unknown seccomp architecture "SCMP_ARCH_Z80"',
    ],
    [
      "seccomp flag",
      (s) => (s.linux.seccomp = { defaultAction: "SCMP_ACT_ALLOW", flags: ["FOO"] }),
      'linux.seccomp.flags[0]: unknown seccomp flag "FOO"',
    ],
    [
      "seccomp names empty",
      (s) =>
        (s.linux.seccomp = {
          defaultAction: "SCMP_ACT_ALLOW",
          syscalls: [{ names: [], action: "SCMP_ACT_ERRNO" }],
        }),
      "linux.seccomp.syscalls[0].names: must not be empty",
    ],
    [
      "seccomp arg op",
      (s) =>
        (s.linux.seccomp = {
          defaultAction: "SCMP_ACT_ALLOW",
          syscalls: [{ names: ["read"], action: "SCMP_ACT_ERRNO", args: [{ index: 0, value: 1, op: "EQ" }] }],
        }),
      'linux.seccomp.syscalls[0].args[0].op: unknown seccomp operator "EQ"',
    ],
    [
      "seccomp arg index",
      (s) =>
        (s.linux.seccomp = {
          defaultAction: "SCMP_ACT_ALLOW",
          syscalls: [
            { names: ["read"], action: "SCMP_ACT_ERRNO", args: [{ index: 6, value: 1, op: "SCMP_CMP_EQ" }] },
          ],
        }),
      "linux.seccomp.syscalls[0].args[0].index: 6 is out of range [0, 5]",
    ],
    [
      "seccomp errnoRet with ALLOW",
      (s) =>
        (s.linux.seccomp = {
          defaultAction: "SCMP_ACT_ERRNO",
          syscalls: [{ names: ["read"], action: "SCMP_ACT_ALLOW", errnoRet: 1 }],
        }),
      "linux.seccomp.syscalls[0].errnoRet: errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not SCMP_ACT_ALLOW",
    ],
    [
      "seccomp notify without listener",
      (s) =>
        (s.linux.seccomp = {
          defaultAction: "SCMP_ACT_ALLOW",
          syscalls: [{ names: ["mkdir"], action: "SCMP_ACT_NOTIFY" }],
        }),
      "linux.seccomp.listenerPath: is required when SCMP_ACT_NOTIFY is used",
    ],
    [
      "sysctl net without netns",
      (s) => {
        s.linux.namespaces = s.linux.namespaces.filter((n: J) => n.type !== "network");
        s.linux.sysctl = { "net.ipv4.ip_forward": "1" };
      },
      'linux.sysctl["net.ipv4.ip_forward"]: sysctl is not allowed in the host network namespace',
    ],
    [
      "sysctl not namespaced",
      (s) => (s.linux.sysctl = { "vm.swappiness": "1" }),
      'linux.sysctl["vm.swappiness"]: sysctl is not in a separate kernel namespace',
    ],
    [
      "sysctl value",
      (s) => (s.linux.sysctl = { "net.core.somaxconn": 5 }),
      'linux.sysctl["net.core.somaxconn"]: must be a string, got a number',
    ],
    [
      "maskedPaths item",
      (s) => (s.linux.maskedPaths = ["proc/kcore"]),
      'linux.maskedPaths[0]: must be an absolute path, got "proc/kcore"',
    ],
    ["mountLabel", (s) => (s.linux.mountLabel = false), "linux.mountLabel: must be a string, got a boolean"],
    [
      "intelRdt",
      (s) => (s.linux.intelRdt = { enableCMT: "y" }),
      "linux.intelRdt.enableCMT: must be a boolean, got a string",
    ],
    [
      "personality",
      (s) => (s.linux.personality = { domain: "WINDOWS" }),
      'linux.personality.domain: unknown personality domain "WINDOWS"',
    ],
    [
      "timeOffsets without time ns",
      (s) => (s.linux.timeOffsets = { monotonic: { secs: 10 } }),
      "linux.timeOffsets: time offsets require a time namespace",
    ],
    ["linux type", (s) => (s.linux = []), "linux: must be an object, got an array"],
  ];

  for (const [name, mutate, message] of cases) {
    it(`rejects: ${name}`, () => rejects(mutate, message));
  }

  it("accepts a full-featured config", () => {
    const s = base();
    s.linux.namespaces.push({ type: "user" }, { type: "time" }, { type: "cgroup" });
    s.linux.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
    s.linux.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
    s.linux.timeOffsets = { monotonic: { secs: 10, nanosecs: 5 } };
    s.linux.sysctl = { "net.ipv4.ip_forward": "1", "kernel.shmmax": "1000", "fs.mqueue.msg_max": "10" };
    s.linux.seccomp = {
      defaultAction: "SCMP_ACT_ERRNO",
      defaultErrnoRet: 1,
      architectures: ["SCMP_ARCH_X86_64"],
      flags: ["SECCOMP_FILTER_FLAG_LOG"],
      listenerPath: "/run/seccomp.sock",
      syscalls: [
        { names: ["read", "write"], action: "SCMP_ACT_ALLOW" },
        { names: ["mkdir"], action: "SCMP_ACT_NOTIFY" },
        {
          names: ["personality"],
          action: "SCMP_ACT_ALLOW",
          args: [{ index: 0, value: 8, valueTwo: 0, op: "SCMP_CMP_EQ" }],
        },
      ],
    };
    s.linux.resources.memory = { limit: 1 << 20, swap: 2 << 20, swappiness: 10 };
    s.linux.resources.cpu = { shares: 512, quota: -1, period: 100000, cpus: "0-1", mems: "0" };
    s.linux.resources.pids = { limit: -1 };
    s.linux.resources.hugepageLimits = [{ pageSize: "2MB", limit: 0 }];
    s.linux.resources.unified = { "memory.high": "max" };
    s.linux.devices = [{ path: "/dev/fuse", type: "c", major: 10, minor: 229, fileMode: 0o666 }];
    s.linux.personality = { domain: "LINUX32" };
    s.linux.rootfsPropagation = "rslave";
    s.process.scheduler = { policy: "SCHED_OTHER", nice: 5 };
    s.process.ioPriority = { class: "IOPRIO_CLASS_BE", priority: 4 };
    s.hooks = { createRuntime: [{ path: "/bin/true", args: ["true"], timeout: 5 }] };
    s.annotations = { "io.kubernetes.cri.container-type": "sandbox" };
    validateSpec(s);
  });

  it("does not require process when asked not to", () => {
    const s = base();
    delete s.process;
    validateSpec(s, { requireProcess: false });
  });

  it("allows a VM-only bundle without root", () => {
    const s = base();
    delete s.root;
    s.vm = { kernel: { path: "/vmlinux" }, image: { path: "/img", format: "raw" } };
    validateSpec(s);
  });

  it("rejects a non-object config", () => {
    assert.throws(() => validateSpec([]), /config: must be an object, got an array/);
  });
});

describe("validateProcess", () => {
  it("accepts a process and rejects the same errors as in config.json", () => {
    const p = base().process;
    assert.equal(validateProcess(p), p);
    assert.throws(() => validateProcess({ ...p, args: [] }), { message: "process.args: must not be empty" });
    assert.throws(() => validateProcess({ ...p, cwd: 3 }), {
      message: "process.cwd: must be a string, got a number",
    });
    assert.throws(() => validateProcess("x"), { message: "process: must be an object, got a string" });
  });
});

describe("parseConfigJson", () => {
  it("parses valid JSON", () => {
    assert.deepEqual(parseConfigJson('{"a":1}'), { a: 1 });
  });
  it("turns malformed JSON into one line naming the file", () => {
    assert.throws(
      () => parseConfigJson('{"a":\n', "config.json"),
      (err: Error) => {
        assert.match(err.message, /^config\.json: invalid JSON: /);
        assert.ok(!err.message.includes("\n"));
        return true;
      },
    );
  });
});
