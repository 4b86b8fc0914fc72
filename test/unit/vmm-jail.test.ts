// The VMM jail's pure parts: QEMU's -sandbox flag, the jailer's argv, the jail's binds, the tap owner,
// the configuration keys, and what `check` and `env` say about it (fake KVM probe). The jail itself is
// exercised for real in test/integration/jailer.test.ts and vm-jail.test.ts.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { defaultConfig, parseConfig } from "../../src/config/config";
import {
  DEFAULT_SECCOMP_SANDBOX,
  describeJail,
  ensureJailUser,
  JAIL_CAPS,
  type JailSpec,
  jailArgv,
  jailMounts,
  lookupUser,
} from "../../src/hypervisor/jail";
import { withParentDeathSignal } from "../../src/hypervisor/qemu";
import { buildQemuArgs, launchFromConfig, type QemuLaunch } from "../../src/hypervisor/qemu/cmdline";
import { tcfilterSetup } from "../../src/network/tcfilter";
import { runHostChecks } from "../../src/runtime/check";
import { buildEnv } from "../../src/runtime/env";
import { tempDir } from "../helpers";

const base: QemuLaunch = {
  qemuPath: "/usr/bin/qemu-system-x86_64",
  machineType: "microvm",
  accel: "tcg",
  vcpus: 1,
  memoryMiB: 256,
  kernel: "/k/vmlinux",
  image: "/k/img",
  console: "serial",
  consoleLog: "/run/x/console.log",
  qmpSocket: "/run/x/qmp.sock",
  agentSocket: "/run/x/agent.sock",
  pidFile: "/run/x/qemu.pid",
};
const slowKvm = async () => ({ usable: false, reason: "KVM unusable: test", mips: 0.7 });

describe("QEMU's seccomp sandbox", () => {
  test("the default configuration denies obsolete, elevateprivileges, spawn and resourcecontrol", () => {
    const cfg = defaultConfig().hypervisor;
    assert.equal(cfg.seccompsandbox, DEFAULT_SECCOMP_SANDBOX);
    const a = buildQemuArgs(launchFromConfig(cfg, { ...base }));
    const at = a.indexOf("-sandbox");
    assert.ok(at > 0, "-sandbox is on the command line");
    const opts = a[at + 1].split(",");
    assert.equal(opts[0], "on");
    for (const o of ["obsolete=deny", "elevateprivileges=deny", "spawn=deny", "resourcecontrol=deny"])
      assert.ok(opts.includes(o), o);
  });

  test('seccompsandbox = "" leaves QEMU without a filter', () => {
    const cfg = { ...defaultConfig().hypervisor, seccompsandbox: "" };
    assert.ok(!buildQemuArgs(launchFromConfig(cfg, { ...base })).includes("-sandbox"));
  });
});

describe("the jailer's argv", () => {
  const spec: JailSpec = {
    jailer: "/x/kata-ts-jailer",
    root: "/run/kata-ts/jail",
    binds: ["/run/s/1"],
    readonlyBinds: ["/usr", "/k/vmlinux"],
    links: ["/lib"],
    devices: ["/dev/null", "/dev/urandom"],
    user: { uid: 999, gid: 995 },
    caps: [0, 1],
  };

  test("namespace binds, identity and capabilities, then the parent-death signal and QEMU's argv", () => {
    assert.deepEqual(jailArgv(spec, ["/usr/bin/qemu", "-m", "1"]), [
      "/x/kata-ts-jailer",
      "--root",
      "/run/kata-ts/jail",
      "--bind-ro",
      "/usr",
      "--bind-ro",
      "/k/vmlinux",
      "--bind",
      "/run/s/1",
      "--link",
      "/lib",
      "--dev",
      "/dev/null",
      "--dev",
      "/dev/urandom",
      "--uid",
      "999",
      "--gid",
      "995",
      "--cap",
      "0",
      "--cap",
      "1",
      "--pdeathsig",
      "--parent",
      String(process.pid),
      "--",
      "/usr/bin/qemu",
      "-m",
      "1",
    ]);
  });

  test("parents are bound before what lies inside them, whatever their mode", () => {
    const a = jailArgv({ ...spec, binds: ["/w/q/sandbox"], readonlyBinds: ["/w/q/x/y/z", "/w"] }, ["/q"]);
    const order = a.filter((x) => x.startsWith("/w"));
    assert.deepEqual(order, ["/w", "/w/q/sandbox", "/w/q/x/y/z"]);
  });

  test("--proc (9p's /proc/self/fd) goes with the mount namespace", () => {
    const a = jailArgv({ ...spec, proc: true }, ["/q"]);
    assert.ok(a.indexOf("--proc") > a.indexOf("--root") && a.indexOf("--proc") < a.indexOf("--uid"));
    assert.ok(!jailArgv({ ...spec, proc: true, root: undefined }, ["/q"]).includes("--proc"));
  });

  test("without a mount namespace no bind is passed; without a user no identity change", () => {
    const a = jailArgv({ ...spec, root: undefined, user: undefined }, ["/q"], 42);
    assert.deepEqual(a, ["/x/kata-ts-jailer", "--pdeathsig", "--parent", "42", "--", "/q"]);
    assert.deepEqual(jailArgv({ ...spec, root: undefined, user: undefined }, ["/q"], null), [
      "/x/kata-ts-jailer",
      "--pdeathsig",
      "--",
      "/q",
    ]);
  });

  test("an unjailed QEMU or virtiofsd: the jailer sets only the parent-death signal; setpriv without it", () => {
    assert.deepEqual(withParentDeathSignal(["/bin/true", "-x"], "/x/kata-ts-jailer"), [
      "/x/kata-ts-jailer",
      "--pdeathsig",
      "--parent",
      String(process.pid),
      "--",
      "/bin/true",
      "-x",
    ]);
    assert.deepEqual(withParentDeathSignal(["/bin/true"], ""), [
      "/usr/bin/setpriv",
      "--pdeathsig",
      "KILL",
      "--",
      "/bin/true",
    ]);
    // Not executable: spawned as is, so that spawn's own error names it.
    assert.deepEqual(withParentDeathSignal(["/nonexistent/qemu"], "/x/kata-ts-jailer"), [
      "/nonexistent/qemu",
    ]);
  });

  test("the kept capabilities are the 9p ones only", () => {
    assert.deepEqual([...JAIL_CAPS].sort(), [0, 1, 3, 4], "chown, dac_override, fowner, fsetid");
  });
});

describe("the jail's binds", () => {
  const merged = {
    isLink: (p: string) => ["/bin", "/sbin", "/lib", "/lib64"].includes(p),
    exists: (p: string) => p !== "/lib32" && p !== "/libx32",
  };

  test("merged /usr: /usr read-only, the others as links; writable dirs nested once; boot files", () => {
    const m = jailMounts(
      {
        qemuPath: "/usr/bin/qemu-system-x86_64",
        writable: ["/r/sandboxes/s1/shared", "/r/sandboxes/s1", "/r/sandboxes/s1"],
        readable: ["/var/cache/kata-ts/vmlinux", "/var/cache/kata-ts/img", "", "/r/sandboxes/s1/k"],
        devices: ["/dev/null", "/dev/urandom", "/dev/null"],
      },
      merged,
    );
    assert.deepEqual(m.links, ["/bin", "/sbin", "/lib", "/lib64"]);
    assert.deepEqual(m.binds, ["/r/sandboxes/s1"], "the share is inside the sandbox dir: bound with it");
    assert.deepEqual(m.readonlyBinds, ["/usr", "/var/cache/kata-ts/vmlinux", "/var/cache/kata-ts/img"]);
    assert.deepEqual(m.devices, ["/dev/null", "/dev/urandom"]);
  });

  test("split /usr: every system directory read-only; a QEMU outside them is bound by itself", () => {
    const m = jailMounts(
      { qemuPath: "/opt/kata/bin/qemu", writable: ["/a", "/b"], readable: ["/usr/share/x"], devices: [] },
      { isLink: () => false, exists: (p) => ["/usr", "/bin", "/lib"].includes(p) },
    );
    assert.deepEqual(m.links, []);
    assert.deepEqual(m.readonlyBinds, ["/usr", "/bin", "/lib", "/opt/kata/bin/qemu"]);
    assert.deepEqual(m.binds, ["/a", "/b"]);
  });
});

test("a rootless QEMU's taps are owned by its uid (it attaches without CAP_NET_ADMIN)", () => {
  const iface = { name: "eth0", mac: "02:00:00:00:00:01", mtu: 1500, addresses: [] };
  const owned = tcfilterSetup({ iface, tap: "tap0_kata", owner: { uid: 999, gid: 995 } } as never);
  assert.match(owned.ip, /^tuntap add dev tap0_kata mode tap user 999 group 995$/m);
  const plain = tcfilterSetup({ iface, tap: "tap0_kata" } as never);
  assert.match(plain.ip, /^tuntap add dev tap0_kata mode tap$/m);
});

describe("configuration", () => {
  test("defaults: jailed (Kata's keys seccompsandbox, rootless, sandbox_cgroup_only)", () => {
    const c = defaultConfig();
    assert.equal(c.hypervisor.rootless, true);
    assert.equal(c.hypervisor.rootlessUser, "kata-ts-vmm");
    assert.equal(c.hypervisor.jailMountNamespace, true);
    assert.equal(c.runtime.sandboxCgroupOnly, true);
  });

  test("each jail key can be turned off; a wrong type is a one-line error naming the line", () => {
    const { config } = parseConfig(
      '[hypervisor.qemu]\nseccompsandbox = ""\nrootless = false\nrootless_user = "vmm"\njail_mount_namespace = false\n[runtime]\nsandbox_cgroup_only = false\n',
      "c.toml",
    );
    assert.equal(config.hypervisor.seccompsandbox, "");
    assert.equal(config.hypervisor.rootless, false);
    assert.equal(config.hypervisor.rootlessUser, "vmm");
    assert.equal(config.hypervisor.jailMountNamespace, false);
    assert.equal(config.runtime.sandboxCgroupOnly, false);
    assert.throws(() => parseConfig('[hypervisor.qemu]\n\nrootless = "yes"\n', "c.toml"), {
      message: 'config: c.toml:3: rootless must be true or false, got "yes"',
    });
  });

  test("a rootless_user that is no user name is refused before anything runs", () => {
    assert.throws(() => ensureJailUser("root; rm"), /rootless_user "root; rm" is not a valid user name/);
    assert.throws(() => ensureJailUser(""), /not a valid user name/);
  });
});

describe("check and env report the jail", () => {
  test("check: one line with the four parts; turned off, a warning", async () => {
    const cfg = defaultConfig();
    const r = await runHostChecks(cfg, { probe: slowKvm });
    const jail = r.results.filter((x) => x.name === "jail");
    assert.ok(jail.length >= 1);
    assert.equal(jail[0].level, "info");
    assert.equal(jail[0].message, `VMM jail: ${describeJail(cfg.hypervisor, true)}`);
    assert.match(jail[0].message, /seccomp -sandbox on,obsolete=deny/);
    assert.match(jail[0].message, /user kata-ts-vmm with cap_chown,cap_dac_override,cap_fowner,cap_fsetid/);
    assert.match(jail[0].message, /own mount namespace; sandbox cgroup$/);

    const off = defaultConfig();
    off.hypervisor.seccompsandbox = "";
    off.hypervisor.rootless = false;
    off.hypervisor.jailMountNamespace = false;
    off.runtime.sandboxCgroupOnly = false;
    const r2 = await runHostChecks(off, { probe: slowKvm });
    const j2 = r2.results.filter((x) => x.name === "jail");
    assert.equal(j2.length, 1);
    assert.equal(j2[0].level, "warn");
    assert.equal(j2[0].message, "VMM jail: no seccomp filter; root; host mount namespace; caller's cgroup");

    const none = defaultConfig();
    none.runtime.hypervisor = "none";
    const r3 = await runHostChecks(none, { probe: slowKvm });
    assert.equal(r3.results.filter((x) => x.name === "jail").length, 0, "no VMM, no jail line");
  });

  test("env: Hypervisor.Jail", async () => {
    const env = (await buildEnv(
      { path: undefined, config: defaultConfig(), warnings: [] },
      { runtimePath: "/usr/bin/kata-ts", probe: slowKvm },
    )) as { Hypervisor: { Jail: Record<string, unknown> } };
    const j = env.Hypervisor.Jail;
    assert.equal(j.SeccompSandbox, DEFAULT_SECCOMP_SANDBOX);
    assert.equal(j.Rootless, true);
    assert.equal(j.User, "kata-ts-vmm");
    assert.deepEqual(j.Capabilities, ["cap_chown", "cap_dac_override", "cap_fowner", "cap_fsetid"]);
    assert.equal(j.MountNamespace, true);
    assert.equal(j.SandboxCgroupOnly, true);
    assert.equal(typeof j.Uid, "number");
  });
});

describe("the jail user's lookup", () => {
  test("from a passwd file without a spawn; a malformed line or an unknown name is undefined", () => {
    const tmp = tempDir("kata-ts-passwd-");
    const file = join(tmp.path, "passwd");
    writeFileSync(
      file,
      [
        "root:x:0:0:root:/root:/bin/bash",
        "kata-ts-vmm:x:998:997::/nonexistent:/usr/sbin/nologin",
        "broken:x:a:b",
      ].join("\n"),
    );
    try {
      assert.deepEqual(lookupUser("kata-ts-vmm", file), { uid: 998, gid: 997 });
      assert.equal(lookupUser("broken", file), undefined);
      // Not in the file: the name service (getent) answers, here for a name nobody has.
      assert.equal(lookupUser("kt-nobody-has-this", file), undefined);
      assert.deepEqual(
        lookupUser("root", join(tmp.path, "missing")),
        { uid: 0, gid: 0 },
        "getent without a file",
      );
    } finally {
      tmp.cleanup();
    }
  });
});
