// The VMM jail with a real VM (default configuration: jailed). A container VM boots; from the host its
// QEMU is checked: the jail's uid/gid with exactly the 9p capabilities (also its bounding set), QEMU's
// seccomp filter on (Seccomp: 2), a mount namespace of its own whose root shows only the sandbox
// directory, the kernel, the image, the system directories and a few devices, and the sandbox's cgroup
// (with the supervisor). The container still works over 9p: it reads a root-owned 0600 file of its
// rootfs and writes one. delete leaves nothing (processes, mounts, cgroups: leak scanner). Then kill -9
// of the supervisor: QEMU dies with it, delete --force removes the cgroup. With virtiofsd present, the
// same over virtio-fs, and virtiofsd in the sandbox cgroup, in its own mount namespace and seccomp filter.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadConfig } from "../../src/config/config";
import { JAIL_CAPS, lookupUser } from "../../src/hypervisor/jail";
import {
  alive,
  BIN,
  type CliResult,
  kata,
  REPO,
  shellBundle,
  tempDir,
  until,
  writeVmTestConfig,
} from "../helpers";
import { assertNoLeaks, snapshotHost } from "../leaks";

const QEMU = "/usr/bin/qemu-system-x86_64";
const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
const KERNEL =
  process.env.KATA_TS_TEST_KERNEL ??
  loadConfig({ explicitPath: join(REPO, "config", "configuration.toml") }).config.hypervisor.kernel;
const missing = [QEMU, KERNEL, "/bin/busybox"].filter((f) => !existsSync(f));
const skip =
  process.getuid?.() !== 0 ? "needs root" : missing.length > 0 ? `missing ${missing.join(", ")}` : false;

const tmp = tempDir("kata-vm-jail-");
const root = join(tmp.path, "root");
let CONFIG = "";
let CONFIG_VFS = "";
const env = {
  ...process.env,
  KATA_TS_SUPERVISOR: join(REPO, "dist", "kata-supervisor.cjs"),
  KATA_TS_NATIVE_DIR: join(REPO, "native", "build"),
};
const SUFFIX = Math.random().toString(36).slice(2, 8);

function cli(config: string, args: string[]): CliResult {
  return kata(["--root", root, "--config", config, ...args], { env });
}

/** A bundle whose rootfs holds a root-owned 0600 /secret; relative cgroupsPath (below our own cgroup). */
function bundle(id: string, script: string): string {
  return shellBundle(join(tmp.path, id), script, (spec) => {
    writeFileSync(join(tmp.path, id, "rootfs", "secret"), "root only\n");
    chmodSync(join(tmp.path, id, "rootfs", "secret"), 0o600);
    spec.linux = { ...spec.linux, cgroupsPath: `kata-ts-jail-${id}` };
  });
}

function status(pid: number, key: string): string {
  const m = new RegExp(`^${key}:[ \\t]*(.*)$`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? m[1].trim() : "";
}

function cgroupLines(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cgroup`, "utf8").trim().split("\n");
}

/** Every hierarchy places pid in the sandbox's cgroup. */
function assertInCgroup(pid: number, name: string, who: string): void {
  for (const line of cgroupLines(pid))
    assert.ok(line.endsWith(`/${name}`), `${who}: ${line} is not in ${name}`);
}

const SYSTEM = new Set(["usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32", "dev", "proc"]);

/** QEMU's view: only the system dirs, devices, and the paths to the sandbox dir, kernel and image. */
function assertJailedView(pid: number, sandbox: string, bundleDir: string): void {
  const config = loadConfig({ explicitPath: CONFIG }).config.hypervisor;
  const allowed = [sandbox, config.kernel, config.image];
  const firsts = new Set(allowed.map((p) => p.split("/")[1]));
  for (const e of readdirSync(`/proc/${pid}/root`))
    assert.ok(SYSTEM.has(e) || firsts.has(e), `unexpected /${e} in QEMU's root`);
  for (const p of allowed) assert.ok(existsSync(`/proc/${pid}/root${p}`), `${p} is visible to QEMU`);
  for (const p of ["/etc", "/root", "/home", "/sys", join(bundleDir, "config.json"), "/var/log"])
    assert.ok(!existsSync(`/proc/${pid}/root${p}`), `${p} is hidden from QEMU`);
  // Its /proc has process directories only (9p needs /proc/self/fd): no sysctls, no sysrq-trigger.
  for (const p of ["/proc/sys", "/proc/sysrq-trigger", "/proc/meminfo", "/proc/kcore"])
    assert.ok(!existsSync(`/proc/${pid}/root${p}`), `${p} is hidden from QEMU`);
  assert.ok(existsSync(`/proc/${pid}/root/proc/self`));
  const devs = readdirSync(`/proc/${pid}/root/dev`).sort();
  for (const d of devs) assert.ok(["null", "urandom", "kvm", "net"].includes(d), `/dev/${d} in QEMU's root`);
}

function hostJailMounts(): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes("kata-ts-jail") || l.includes(tmp.path));
}

async function runJailed(config: string, id: string, fs: "9p" | "virtiofs"): Promise<void> {
  const script = [
    `awk '$2 == "/" { print "rootfs-type " $3 }' /proc/mounts`,
    "cat /secret",
    "echo from-guest > /written && echo written",
    "echo ready",
    "exec sleep 100000",
  ].join("; ");
  const b = bundle(id, script);
  const before = snapshotHost();
  const out = join(tmp.path, `${id}.out`);
  const err = join(tmp.path, `${id}.err`);
  const c = spawnSync(BIN, ["--root", root, "--config", config, "create", "--bundle", b, id], {
    env,
    stdio: ["ignore", openSync(out, "w"), openSync(err, "w")],
    timeout: 180_000,
  });
  assert.equal(c.status, 0, readFileSync(err, "utf8"));
  assert.equal(cli(config, ["start", id]).code, 0);
  await until("the container's output", () => readFileSync(out, "utf8").includes("ready\n"), 90_000);
  // Over the share, as the guest's root: the 0600 root-owned file reads, a new file is written.
  assert.equal(
    readFileSync(out, "utf8"),
    [`rootfs-type ${fs}`, "root only", "written", "ready", ""].join("\n"),
    readFileSync(err, "utf8"),
  );
  assert.equal(readFileSync(join(b, "rootfs", "written"), "utf8"), "from-guest\n");

  const sandbox = join(root, "sandboxes", id);
  const info = JSON.parse(readFileSync(join(sandbox, "sandbox.json"), "utf8"));
  const qemu = info.vmPid as number;
  const user = lookupUser("kata-ts-vmm");
  assert.ok(user, "the VMM user was created");
  assert.equal(status(qemu, "Uid"), `${user.uid}\t${user.uid}\t${user.uid}\t${user.uid}`);
  assert.equal(status(qemu, "Gid"), `${user.gid}\t${user.gid}\t${user.gid}\t${user.gid}`);
  assert.equal(status(qemu, "Groups"), "");
  assert.equal(status(qemu, "Seccomp"), "2", "QEMU's -sandbox filter is on");
  const mask = JAIL_CAPS.reduce((a, c) => a | (1 << c), 0);
  for (const k of ["CapEff", "CapPrm", "CapBnd"]) assert.equal(Number.parseInt(status(qemu, k), 16), mask, k);
  assert.notEqual(readlinkSync(`/proc/${qemu}/ns/mnt`), readlinkSync("/proc/self/ns/mnt"));
  assertJailedView(qemu, sandbox, b);
  assertInCgroup(qemu, `kata-ts-jail-${id}`, "QEMU");
  assertInCgroup(info.supervisorPid, `kata-ts-jail-${id}`, "supervisor");

  if (fs === "virtiofs") {
    const [vfsd] = readFileSync(join(sandbox, "virtiofsd.pid"), "utf8").split(" ").map(Number);
    assertInCgroup(vfsd, `kata-ts-jail-${id}`, "virtiofsd");
    // The C daemon forks into its own namespaces; the child serves, under its own seccomp filter.
    const [child] = readFileSync(`/proc/${vfsd}/task/${vfsd}/children`, "utf8").trim().split(" ").map(Number);
    assertInCgroup(child, `kata-ts-jail-${id}`, "virtiofsd's child");
    assert.equal(status(child, "Seccomp"), "2", "virtiofsd's own seccomp filter");
    assert.notEqual(readlinkSync(`/proc/${child}/ns/mnt`), readlinkSync("/proc/self/ns/mnt"));
  }

  assert.equal(cli(config, ["kill", id, "KILL"]).code, 0);
  await until("stopped", () => JSON.parse(cli(config, ["state", id]).stdout).status === "stopped", 30_000);
  const d = cli(config, ["delete", id]);
  assert.equal(d.code, 0, d.stderr);
  assert.equal(alive(qemu), false);
  assert.deepEqual(hostJailMounts(), [], "no jail mount on the host");
  assertNoLeaks(before, { root, bundle: b, id });
}

describe("the VMM jail", { skip }, () => {
  before(async () => {
    CONFIG = await writeVmTestConfig(tmp.path, KERNEL);
    CONFIG_VFS = join(tmp.path, "configuration-vfs.toml");
    writeFileSync(
      CONFIG_VFS,
      readFileSync(CONFIG, "utf8").replace(
        "[hypervisor.qemu]\n",
        `[hypervisor.qemu]\nshared_fs = "virtio-fs"\nvirtio_fs_daemon = "${VIRTIOFSD}"\n`,
      ),
    );
  });
  after(() => {
    for (const id of existsSync(root) ? readdirSync(root) : [])
      if (id !== "sandboxes") cli(CONFIG, ["delete", "--force", id]);
    tmp.cleanup();
  });

  test("9p: QEMU jailed (uid, caps, seccomp, mount namespace, root view, cgroup); the container works; delete leaves nothing", async (t) => {
    const id = `kj9-${SUFFIX}`;
    t.after(() => void cli(CONFIG, ["delete", "--force", id]));
    await runJailed(CONFIG, id, "9p");
  });

  test("kill -9 of the supervisor: QEMU dies with it; delete --force removes the cgroup", async (t) => {
    const id = `kjk-${SUFFIX}`;
    t.after(() => void cli(CONFIG, ["delete", "--force", id]));
    const b = bundle(id, "echo ready; exec sleep 100000");
    const before = snapshotHost();
    const c = spawnSync(BIN, ["--root", root, "--config", CONFIG, "create", "--bundle", b, id], {
      env,
      stdio: "ignore",
      timeout: 180_000,
    });
    assert.equal(c.status, 0);
    const info = JSON.parse(readFileSync(join(root, "sandboxes", id, "sandbox.json"), "utf8"));
    assert.ok(alive(info.vmPid) && alive(info.supervisorPid));
    assertInCgroup(info.vmPid, `kata-ts-jail-${id}`, "QEMU");
    process.kill(info.supervisorPid, "SIGKILL");
    await until("QEMU gone with its supervisor", () => !alive(info.vmPid), 10_000);
    const d = cli(CONFIG, ["delete", "--force", id]);
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(hostJailMounts(), []);
    assertNoLeaks(before, { root, bundle: b, id });
  });

  test("virtio-fs: the same jail, virtiofsd in the sandbox cgroup with its own namespace and filter", {
    skip: !existsSync(VIRTIOFSD) && `no ${VIRTIOFSD}`,
  }, async (t) => {
    const id = `kjv-${SUFFIX}`;
    t.after(() => void cli(CONFIG_VFS, ["delete", "--force", id]));
    await runJailed(CONFIG_VFS, id, "virtiofs");
  });
});
