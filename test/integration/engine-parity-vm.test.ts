// The engine-parity cases (see engine-parity.test.ts) in VM mode, where the same engine runs in the
// guest. Two boots: (1) one container with a terminal (--console-socket), a non-root user, a console
// size, a seccomp allow-list profile, a read-only /dev and a root-only directory, probed with several
// `exec`s; (2) a rootfs whose /proc is a symlink: `run` fails with runc's message and nothing is left
// on the host. (startContainer hooks are not run in VM mode at all, so their filtering is host-only.)
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadConfig } from "../../src/config/config";
import { defaultSpec } from "../../src/oci/defaults";
import type { Spec } from "../../src/oci/spec";
import { closeFd } from "../../src/sys/native";
import {
  allowListUpTo,
  buildSyscallProbe,
  ENOSYS_PROBE_ARGS,
  ENOSYS_PROBE_EXPECTED,
} from "../fixtures/parity";
import { BIN, busyboxRootfs, REPO, receiveConsole, tempDir, until, writeVmTestConfig } from "../helpers";
import { assertNoLeaks, snapshotHost } from "../leaks";

const QEMU = "/usr/bin/qemu-system-x86_64";
const KERNEL =
  process.env.KATA_TS_TEST_KERNEL ??
  loadConfig({ explicitPath: join(REPO, "config", "configuration.toml") }).config.hypervisor.kernel;
const missing = [QEMU, KERNEL, "/bin/busybox"].filter((f) => !existsSync(f));

const tmp = tempDir("kata-vm-parity-");
const root = join(tmp.path, "root");
const CONFIG = join(tmp.path, "configuration.toml");
const env = {
  ...process.env,
  KATA_TS_SUPERVISOR: join(REPO, "dist", "kata-supervisor.cjs"),
  KATA_TS_NATIVE_DIR: join(REPO, "native", "build"),
};
const ID = `kpv-${process.pid}`;

function cli(args: string[], stdin = "ignore" as "ignore" | "pipe") {
  const r = spawnSync(BIN, ["--root", root, "--config", CONFIG, ...args], {
    env,
    encoding: "utf8",
    stdio: [stdin, "pipe", "pipe"],
    timeout: 300_000,
  });
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

function bundle(name: string, edit: (s: Spec, rootfs: string) => void): string {
  const dir = join(tmp.path, name);
  const rootfs = join(dir, "rootfs");
  busyboxRootfs(rootfs);
  const spec = defaultSpec();
  spec.process = { ...(spec.process as NonNullable<Spec["process"]>), terminal: false };
  spec.root = { path: "rootfs", readonly: false };
  edit(spec, rootfs);
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

describe("engine parity with runc, in the guest", {
  skip: missing.length > 0 && `missing ${missing.join(", ")}`,
}, () => {
  before(async () => {
    await writeVmTestConfig(tmp.path, KERNEL);
  });
  after(() => {
    for (const id of existsSync(root) ? readdirSync(root) : [])
      if (id !== "sandboxes") cli(["delete", "--force", id]);
    tmp.cleanup();
  });

  test("terminal owner and size, seccomp ENOSYS stub, read-only /dev, exec cwd before the user switch", async (t) => {
    const probe = buildSyscallProbe(tmp.path);
    if (typeof probe !== "string") return t.skip(probe.skip);
    const allow = allowListUpTo(334, ["getpgrp"]);
    if (!Array.isArray(allow)) return t.skip(allow.skip);
    let master = -1;
    t.after(() => {
      if (master >= 0) closeFd(master);
      if (existsSync(join(root, ID))) cli(["delete", "--force", ID]);
    });
    const consoleSock = join(tmp.path, "console.sock");
    const got = receiveConsole(consoleSock);
    const b = bundle("main", (s, rootfs) => {
      copyFileSync(probe, join(rootfs, "bin", "sc"));
      chmodSync(join(rootfs, "bin", "sc"), 0o755);
      mkdirSync(join(rootfs, "secret", "in"), { recursive: true });
      chmodSync(join(rootfs, "secret"), 0o700);
      mkdirSync(join(rootfs, "out"));
      chmodSync(join(rootfs, "out"), 0o777);
      s.process = {
        ...(s.process as NonNullable<Spec["process"]>),
        terminal: true,
        consoleSize: { height: 33, width: 111 },
        user: { uid: 1000, gid: 1000 },
        args: ["sh", "-c", "stat -c '%u %g %a' $(tty) > /out/tty; stty size >> /out/tty; exec sleep 100000"],
      };
      s.mounts?.find((m) => m.destination === "/dev")?.options?.push("ro");
      s.linux = {
        ...s.linux,
        seccomp: {
          defaultAction: "SCMP_ACT_ERRNO",
          architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
          syscalls: [{ names: allow, action: "SCMP_ACT_ALLOW" }],
        },
      };
    });
    const run = cli(["run", "--detach", "--console-socket", consoleSock, "--bundle", b, ID]);
    assert.equal(run.code, 0, run.stderr);
    master = (await got).fd;

    await until(
      "the terminal report",
      () =>
        existsSync(join(b, "rootfs", "out", "tty")) &&
        readFileSync(join(b, "rootfs", "out", "tty"), "utf8").split("\n").length > 2,
      60_000,
    );
    assert.equal(readFileSync(join(b, "rootfs", "out", "tty"), "utf8"), "1000 5 620\n33 111\n");

    const sc = cli(["exec", ID, "/bin/sc", ...ENOSYS_PROBE_ARGS]);
    assert.equal(sc.stdout, ENOSYS_PROBE_EXPECTED, sc.stderr);

    const dev = cli([
      "exec",
      "--user",
      "0:0",
      ID,
      "sh",
      "-c",
      "grep ' /dev ' /proc/self/mountinfo | cut -d' ' -f6; ls /dev; touch /dev/x",
    ]);
    assert.equal(dev.code, 1, dev.stderr);
    const lines = dev.stdout.split("\n");
    assert.match(lines[0], /^ro,/);
    for (const n of ["console", "null", "ptmx", "pts", "shm", "stdout", "tty", "zero"])
      assert.ok(lines.includes(n), n);
    assert.match(dev.stderr, /touch: \/dev\/x: Read-only file system/);

    const cwd = cli(["exec", "--user", "1000:1000", "--cwd", "/secret/in", ID, "sh", "-c", "pwd; id -u"]);
    assert.equal(cwd.stdout, "/secret/in\n1000\n", cwd.stderr);
    assert.equal(cli(["delete", "--force", ID]).code, 0);
  });

  test("procfs on a symlink is refused in the guest and nothing is left", () => {
    const id = `${ID}-link`;
    const b = bundle("link", (s, rootfs) => {
      rmSync(join(rootfs, "proc"), { recursive: true });
      mkdirSync(join(rootfs, "elsewhere"));
      symlinkSync("/elsewhere", join(rootfs, "proc"));
      s.process = { ...(s.process as NonNullable<Spec["process"]>), args: ["true"] };
    });
    const before = snapshotHost();
    const r = cli(["run", "--bundle", b, id]);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /error mounting "proc" to rootfs at "\/proc": filesystem "proc" must be mounted on ordinary directory/,
    );
    assert.equal(existsSync(join(root, id)), false, "a failed run leaves no container state");
    assertNoLeaks(before, { root, bundle: b, id });
  });
});
