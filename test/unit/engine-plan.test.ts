// spec → helper plan, with fixed host facts: what records the helper gets, in what order, and which
// specs are refused before anything runs.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { parseMountOptions } from "../../src/engine/mountopts";
import {
  buildExecPlan,
  buildInitPlan,
  CLONE_FLAGS,
  capsRecord,
  type HostFacts,
  homeFor,
  mergeEnv,
  mountRecords,
  seccompListenerMessage,
  seccompRecords,
  u64,
} from "../../src/engine/plan";
import { encodeRecords, RecordDecoder } from "../../src/engine/protocol";
import { parseSignal } from "../../src/engine/signals";
import { defaultSpec } from "../../src/oci/defaults";
import type { Spec } from "../../src/oci/spec";
import { execProcessFromArgs } from "../../src/runtime/lifecycle";
import { checkTransition } from "../../src/runtime/transitions";

const facts: HostFacts = {
  isDir: (p) => (p.startsWith("/missing") ? undefined : !p.endsWith(".conf")),
  exists: () => true,
  capLastCap: 40,
  passwd: "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n",
  cgroupMount: (m) => [["mount", "tmpfs", m.destination, "tmpfs", "0", "0", "mode=755", "dir"]],
};

function spec(edit: (s: Spec) => void = () => {}): Spec {
  const s = defaultSpec();
  if (s.process) s.process.terminal = false;
  edit(s);
  return s;
}

function plan(s: Spec, extra: Partial<Parameters<typeof buildInitPlan>[0]> = {}, wait = false) {
  return buildInitPlan(
    { spec: s, bundle: "/b", rootfs: "/b/rootfs", fifo: "/run/x/exec.fifo", facts, ...extra },
    wait,
  );
}

describe("engine plan", () => {
  test("phase 1 starts with kata-ts's own mount namespace, which the init must not mount in", () => {
    const p = plan(spec(), { facts: { ...facts, ownMountNs: ["4", "4026531832"] } });
    assert.deepEqual(p.phase1[0], ["forbid-mntns", "4", "4026531832"]);
    const withNetns = spec((s) => {
      if (s.linux)
        s.linux.namespaces = s.linux.namespaces?.map((n) =>
          n.type === "network" ? { type: "network", path: "/run/netns/x" } : n,
        );
    });
    const joined = plan(withNetns, { facts: { ...facts, ownMountNs: ["4", "1"] } });
    assert.deepEqual(joined.phase1.slice(0, 2), [
      ["forbid-mntns", "4", "1"],
      ["setns", "/run/netns/x", "network"],
    ]);
  });

  test("phase 1: mkfifo, then clone with the new namespaces (cgroup ns deferred), detach or wait", () => {
    const p = plan(spec((s) => s.linux?.namespaces?.push({ type: "cgroup" })));
    const clone = p.phase1.at(-1);
    const flags =
      CLONE_FLAGS.pid | CLONE_FLAGS.network | CLONE_FLAGS.ipc | CLONE_FLAGS.uts | CLONE_FLAGS.mount;
    assert.deepEqual(clone, ["clone", String(flags), "detach"]);
    assert.deepEqual(p.phase1[0], ["mkfifo", "/run/x/exec.fifo"]);
    assert.equal(plan(spec(), {}, true).phase1.at(-1)?.[2], "wait");
    const ops = p.phase2("{}").map((r) => r[0]);
    assert.ok(
      ops.indexOf("unshare") < ops.indexOf("rootfs"),
      "cgroup ns made before mounts, after placement",
    );
  });

  test("joined namespaces become setns records, user first and mount last", () => {
    const p = plan(
      spec((s) => {
        if (!s.linux) return;
        s.linux.namespaces = [
          { type: "mount", path: "/proc/9/ns/mnt" },
          { type: "network", path: "/var/run/netns/x" },
          { type: "user", path: "/proc/9/ns/user" },
          { type: "pid" },
        ];
      }),
    );
    assert.deepEqual(
      p.phase1.filter((r) => r[0] === "setns").map((r) => r[2]),
      ["user", "network", "mount"],
    );
    assert.equal(p.namespaces.pid, "new");
    assert.equal(p.uidMappings, undefined, "maps only for a new user namespace");
    assert.equal(p.phase1.at(-1)?.length, 3, "no clone fsuid without a new user namespace");
  });

  test("a new user namespace gets maps and becomes root before mounting; devices are bound", () => {
    const p = plan(
      spec((s) => {
        s.linux?.namespaces?.push({ type: "user" });
        if (s.linux) {
          s.linux.uidMappings = [{ containerID: 0, hostID: 1000, size: 10 }];
          s.linux.gidMappings = [{ containerID: 0, hostID: 2000, size: 10 }];
        }
      }),
    );
    assert.equal(p.uidMappings, "0 1000 10\n");
    assert.equal(p.gidMappings, "0 2000 10\n");
    const recs = p.phase2("{}");
    const ops = recs.map((r) => r[0]);
    assert.ok(ops.indexOf("become-root") < ops.indexOf("rootfs"));
    // cloned with fsuid = the container root's host id (the new IPC namespace's mqueue root, as runc)
    assert.deepEqual(p.phase1.at(-1), ["clone", String(p.phase1.at(-1)?.[1]), "detach", "1000"]);
    const keyed = plan(
      spec((s) => {
        s.linux?.namespaces?.push({ type: "user" });
        if (s.linux) s.linux.uidMappings = [{ containerID: 0, hostID: 1000, size: 10 }];
      }),
      { sessionKeyring: "_ses.x" },
    )
      .phase2("{}")
      .map((r) => r[0]);
    assert.ok(
      keyed.indexOf("become-root") < keyed.indexOf("keyring"),
      "the keyring is joined as the ns root",
    );
    const null_ = recs.find((r) => r[0] === "device" && r[1] === "/dev/null");
    assert.equal(null_?.[8], "1", "bind from the host in a user namespace");
  });

  test("phase 2 order follows runc: mounts, devices, hooks, pivot, ro root, hostname, paths, process, go", () => {
    const s = spec((x) => {
      x.hooks = { createContainer: [{ path: "/h", args: ["h", "a"], env: ["A=1"], timeout: 3 }] };
    });
    const recs = plan(s).phase2('{"id":"x"}');
    const ops = recs.map((r) => r[0]);
    const order = [
      "setsid",
      "fifo",
      "lo-up",
      "prop",
      "rootfs",
      "mount",
      "device",
      "symlink",
      "ptmx",
      "mkdir",
      "hook",
      "pivot",
      "root-readonly",
      "hostname",
      "readonly",
      "mask",
      "umask",
      "rlimit",
      "caps",
      "nnp",
      "user",
      "cwd",
      "env",
      "arg",
      "preserve",
      "go",
    ];
    let last = -1;
    for (const op of order) {
      const i = ops.indexOf(op);
      assert.ok(i > last, `${op} after the previous step (${ops.join(",")})`);
      last = i;
    }
    const hook = recs.find((r) => r[0] === "hook");
    assert.deepEqual(hook, ["hook", "createContainer", "3", "/h", '{"id":"x"}', "2", "h", "a", "A=1"]);
    assert.deepEqual(
      recs.find((r) => r[0] === "prop"),
      ["prop", String(0x80000 | 0x4000)],
      "rslave by default",
    );
    assert.ok(
      recs.some((r) => r[0] === "env" && r[1] === "HOME=/root"),
      "HOME from the container's passwd",
    );
    assert.deepEqual(
      recs.find((r) => r[0] === "mkdir"),
      ["mkdir", "/", "493"],
    );
  });

  test("lo is brought up in a new network namespace only (as runc), after becoming the userns root", () => {
    const ops = (edit: (s: Spec) => void) =>
      plan(spec(edit))
        .phase2("{}")
        .map((r) => r[0]);
    const netns = (network?: { type: "network"; path?: string }) => (s: Spec) => {
      if (!s.linux?.namespaces) return;
      s.linux.namespaces = s.linux.namespaces.filter((n) => n.type !== "network");
      if (network) s.linux.namespaces.push(network);
    };
    assert.equal(ops(netns({ type: "network" })).filter((o) => o === "lo-up").length, 1);
    assert.ok(
      !ops(netns({ type: "network", path: "/run/netns/x" })).includes("lo-up"),
      "joined: left as it is",
    );
    assert.ok(!ops(netns()).includes("lo-up"), "the caller's network namespace: never touched");
    const userns = ops((s) => {
      s.linux?.namespaces?.push({ type: "user" });
      if (s.linux) s.linux.uidMappings = [{ containerID: 0, hostID: 1000, size: 10 }];
    });
    assert.ok(
      userns.indexOf("become-root") < userns.indexOf("lo-up"),
      "as the root of the namespace's owner",
    );
  });

  test("a read-only /dev is mounted writable and remounted read-only after the console, as runc", () => {
    const s = spec((x) => {
      x.process = { ...(x.process as NonNullable<Spec["process"]>), terminal: true };
      const dev = x.mounts?.find((m) => m.destination === "/dev");
      dev?.options?.push("ro");
    });
    const recs = plan(s, { consoleSocket: "/run/c.sock" }).phase2("{}");
    const dev = recs.find((r) => r[0] === "mount" && r[2] === "/dev");
    assert.equal(Number(dev?.[4]) & 1, 0, "the /dev mount itself is writable");
    const ops = recs.map((r) => r[0]);
    const ro = ops.indexOf("remount-ro");
    assert.deepEqual(recs[ro].slice(0, 2), ["remount-ro", "/dev"]);
    assert.equal(Number(recs[ro][2]) & 1, 1);
    for (const before of ["device", "symlink", "ptmx", "console"])
      assert.ok(ops.lastIndexOf(before) < ro, `${before} before the remount`);
    assert.ok(ops.indexOf("root-readonly") > ro);
    assert.equal(
      plan(spec())
        .phase2("{}")
        .some((r) => r[0] === "remount-ro"),
      false,
      "a writable /dev is left alone",
    );
  });

  test("--no-pivot uses chroot; terminal needs a console socket when detached", () => {
    assert.ok(
      plan(spec(), { noPivot: true })
        .phase2("{}")
        .some((r) => r[0] === "chroot"),
    );
    const t = spec((s) => {
      if (s.process) s.process.terminal = true;
    });
    assert.throws(() => plan(t), /cannot allocate tty if kata-ts will detach without setting console socket/);
    assert.throws(() => plan(spec(), { consoleSocket: "/s" }), /cannot use console socket/);
    const p = plan(t, { consoleSocket: "/tmp/c.sock" });
    assert.deepEqual(
      p.phase1.find((r) => r[0] === "console-connect"),
      ["console-connect", "/tmp/c.sock"],
    );
    assert.deepEqual(
      p.phase2("{}").find((r) => r[0] === "console"),
      ["console", "1", "0", "0"],
    );
    // the guest agent's console socket is an fd: no path, and it replaces the foreground relay
    const f = plan(t, { consoleFd: true });
    assert.deepEqual(
      f.phase1.filter((r) => r[0].startsWith("console")),
      [["console-fd"]],
    );
    assert.ok(f.phase2("{}").some((r) => r[0] === "console"));
    assert.ok(!plan(spec(), { consoleFd: true }).phase1.some((r) => r[0].startsWith("console")));
  });

  test("mounts: options to flags/data; binds resolve against the bundle; a missing source is refused", () => {
    assert.deepEqual(
      parseMountOptions(["nosuid", "noexec", "mode=755", "size=1m", "rprivate", "tmpcopyup"]),
      {
        flags: 0x2 | 0x8,
        propagation: 0x40000 | 0x4000,
        data: "mode=755,size=1m",
        attrSet: 0,
        attrClr: 0,
      },
    );
    const rec = parseMountOptions(["rbind", "rro", "rnosuid", "rnoatime", "rsuid"]);
    assert.equal(rec.attrSet, 0x1 | 0x10, "recursive ro and noatime set");
    assert.equal(
      rec.attrClr,
      0x2 | (0x70 & ~0x10),
      "rsuid clears nosuid; noatime clears the rest of the atime field",
    );
    assert.deepEqual(
      mountRecords({ destination: "/v", source: "/src", options: ["rbind", "rro"] }, "/b", facts).at(-1),
      ["setattr", "/v", "1", "0"],
    );
    assert.equal(parseMountOptions(["ro", "rw"]).flags, 0, "later options win");
    assert.deepEqual(
      mountRecords(
        { destination: "etc/app.conf", source: "app.conf", type: "bind", options: ["ro"] },
        "/b",
        facts,
      ),
      [["mount", "/b/app.conf", "/etc/app.conf", "", String(0x1 | 0x1000), "0", "", "file"]],
    );
    assert.throws(
      () => mountRecords({ destination: "/x", source: "/missing/dir", options: ["rbind"] }, "/b", facts),
      /error mounting "\/missing\/dir" to rootfs at "\/x": stat \/missing\/dir: no such file or directory/,
    );
    assert.equal(
      mountRecords({ destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup" }, "/b", facts)[0][3],
      "tmpfs",
    );
  });

  test("caps, seccomp and rlimits are translated to numbers", () => {
    assert.deepEqual(
      capsRecord({ bounding: ["CAP_KILL", "CAP_NOPE", "CAP_CHECKPOINT_RESTORE"], effective: [] }, 39),
      [["caps", "32", "0", "0", "0", "0"]],
    );
    const recs = seccompRecords({
      defaultAction: "SCMP_ACT_ERRNO",
      architectures: ["SCMP_ARCH_X86_64"],
      flags: ["SECCOMP_FILTER_FLAG_LOG"],
      syscalls: [
        { names: ["read", "write"], action: "SCMP_ACT_ALLOW" },
        {
          names: ["kill"],
          action: "SCMP_ACT_ERRNO",
          errnoRet: 1,
          args: [{ index: 1, value: 9, op: "SCMP_CMP_EQ" }],
        },
        { names: ["ptrace"], action: "SCMP_ACT_ERRNO", errnoRet: 38 },
      ],
    });
    assert.deepEqual(
      recs,
      [
        ["seccomp-default", String(0x00050001)],
        ["seccomp-arch", "x86_64"],
        ["seccomp-flag", "log"],
        ["seccomp-rule", String(0x7fff0000), "read"],
        ["seccomp-rule", String(0x7fff0000), "write"],
        ["seccomp-known", "kill"],
        ["seccomp-rule", String(0x00050026), "ptrace"],
      ],
      "the kill rule equals the default action: no rule, as runc does; its name still counts for the ENOSYS stub",
    );
    const notify = {
      defaultAction: "SCMP_ACT_ALLOW",
      listenerPath: "/run/l.sock",
      listenerMetadata: "m",
      syscalls: [{ names: ["mkdir"], action: "SCMP_ACT_NOTIFY" }],
    };
    const msg = seccompListenerMessage(notify, '{"id":"c"}', 42);
    assert.deepEqual(JSON.parse(msg), {
      ociVersion: "1.0.2",
      fds: ["seccompFd"],
      pid: 42,
      metadata: "m",
      state: { id: "c" },
    });
    assert.deepEqual(seccompRecords(notify, msg).slice(1), [
      ["seccomp-message", msg],
      ["seccomp-rule", String(0x7fc00000), "mkdir"],
    ]);
    const withListener = plan(
      spec((s) => {
        if (s.linux) s.linux.seccomp = notify;
      }),
    );
    const ops1 = withListener.phase1.map((r) => r.join(" "));
    assert.ok(ops1.indexOf("seccomp-connect /run/l.sock") >= 0, ops1.join(","));
    assert.ok(ops1.indexOf("seccomp-connect /run/l.sock") < ops1.findIndex((o) => o.startsWith("clone")));
    assert.equal(u64(2 ** 64), "18446744073709551615");
    assert.equal(u64(1024), "1024");
  });

  test("a new time namespace is unshared with its offsets; specs without a mount namespace are refused", () => {
    const t = plan(
      spec((s) => {
        s.linux?.namespaces?.push({ type: "time" });
        if (s.linux) s.linux.timeOffsets = { monotonic: { secs: 86400 }, boottime: { secs: 1, nanosecs: 5 } };
      }),
    );
    assert.deepEqual(
      t.phase1.find((r) => r[0] === "timens"),
      ["timens", "monotonic 86400 0", "boottime 1 5"],
    );
    assert.equal(Number(t.phase1.at(-1)?.[1]) & CLONE_FLAGS.time, 0, "not a clone flag");
    assert.throws(
      () =>
        plan(
          spec((s) => {
            if (s.linux) s.linux.namespaces = [{ type: "pid" }];
          }),
        ),
      /a mount namespace is required/,
    );
  });

  test("exec plan: console first, setns in order, no mounts, wait or detach", () => {
    const p = buildExecPlan({
      process: { args: ["sh"], cwd: "/", user: { uid: 1, gid: 2 }, terminal: true },
      joins: { mount: "/proc/5/ns/mnt", pid: "/proc/5/ns/pid", user: "/proc/5/ns/user" },
      consoleSocket: "/c.sock",
      detach: true,
      capLastCap: 40,
    });
    assert.deepEqual(
      p.phase1.map((r) => `${r[0]}:${r[2] ?? ""}`),
      ["console-connect:", "setns:user", "setns:pid", "setns:mount", "clone:detach"],
    );
    assert.ok(!p.phase2(7).some((r) => ["mount", "pivot", "fifo"].includes(r[0])));
    const agentExec = buildExecPlan({
      process: { args: ["sh"], cwd: "/", user: { uid: 1, gid: 2 }, terminal: true },
      joins: {},
      consoleFd: true,
      detach: false,
      capLastCap: 40,
    });
    assert.deepEqual(agentExec.phase1, [["console-fd"], ["clone", "0", "wait"]]);
    assert.deepEqual(
      p.phase2(7).find((r) => r[0] === "user"),
      ["user", "1", "2"],
    );
  });

  test("exec from argv inherits the container's process and adds flags like runc", () => {
    const base = spec().process;
    const p = execProcessFromArgs(base, {
      args: ["ls"],
      env: ["A=1"],
      user: "7:8",
      caps: ["net_admin"],
      tty: false,
    });
    assert.equal(p.user.uid, 7);
    assert.equal(p.user.gid, 8);
    assert.ok(p.env?.includes("A=1") && p.env.some((e) => e.startsWith("PATH=")));
    assert.ok(p.capabilities?.bounding?.includes("CAP_NET_ADMIN"));
    assert.equal(p.noNewPrivileges, true);
    assert.throws(() => execProcessFromArgs(base, { args: ["x"], user: "root" }), /uid\[:gid\]/);
  });

  test("state transitions use runc's words", () => {
    assert.throws(
      () => checkTransition("start", "stopped", "a"),
      /^Error: cannot start a container that has stopped$/,
    );
    assert.throws(
      () => checkTransition("start", "running", "a"),
      /cannot start an already running container/,
    );
    assert.throws(
      () => checkTransition("delete", "running", "a"),
      /cannot delete container a that is not stopped: running/,
    );
    assert.throws(() => checkTransition("kill", "stopped", "a"), /container not running/);
    assert.doesNotThrow(() => checkTransition("delete", "created", "a"));
  });

  test("signals, HOME, and the wire format", () => {
    assert.equal(parseSignal("KILL"), 9);
    assert.equal(parseSignal("sigterm"), 15);
    assert.equal(parseSignal("10"), 10);
    assert.equal(parseSignal(undefined), 15);
    assert.throws(() => parseSignal("FOO"), /unknown signal "FOO"/);
    assert.equal(homeFor("a:x:5:5::/h:/bin/sh\n", 5), "/h");
    assert.deepEqual(mergeEnv(["A=1", "B=2", "A=3", "C=x=y"]), ["A=3", "B=2", "C=x=y"]);
    assert.throws(() => mergeEnv(["NOEQUALS"]), /invalid environment variable/);
    assert.equal(homeFor(undefined, 0), "/");
    const bytes = encodeRecords([["op", "a", ""], ["go"]]);
    const d = new RecordDecoder();
    assert.deepEqual(d.push(bytes.subarray(0, 5)), []);
    assert.deepEqual(d.push(bytes.subarray(5)), [["op", "a", ""], ["go"]]);
    assert.throws(() => encodeRecords([["x\0y"]]), /NUL/);
  });

  test("any records (multi-byte text included) come back whole from the decoder, however the bytes are split", () => {
    const field = fc.string({ unit: "grapheme", maxLength: 12 }).filter((s) => !s.includes("\0"));
    const records = fc.array(fc.array(field, { minLength: 1, maxLength: 5 }), { maxLength: 8 });
    fc.assert(
      fc.property(records, fc.array(fc.nat(), { maxLength: 4 }), (recs, cuts) => {
        const bytes = encodeRecords(recs);
        // Each record is its u32 length (of UTF-8 bytes) and the NUL-terminated fields.
        const expected = recs.reduce(
          (n, r) => n + 4 + r.reduce((m, f) => m + Buffer.byteLength(f) + 1, 0),
          0,
        );
        assert.equal(bytes.length, expected);
        const d = new RecordDecoder();
        const got: string[][] = [];
        let at = 0;
        for (const c of [...cuts.map((c) => c % (bytes.length + 1))].sort((a, b) => a - b)) {
          got.push(...d.push(bytes.subarray(at, c)));
          at = c;
        }
        got.push(...d.push(bytes.subarray(at)));
        assert.deepEqual(got, recs);
      }),
    );
  });
});
