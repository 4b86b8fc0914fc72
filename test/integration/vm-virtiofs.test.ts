// VM mode with shared_fs = "virtio-fs": QEMU 7.2's C virtiofsd serves the sandbox share under TCG.
// Two boots: (1) a container whose rootfs comes over virtio-fs writes a file the host sees, reads a
// read-only bind mount and fails to write it, writes a read-write one; after `delete` no virtiofsd,
// QEMU, mount, socket or lock file is left (leak scanner); (2) kill -9 of the supervisor: virtiofsd and
// QEMU die with it, and `delete --force` leaves nothing.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadConfig } from "../../src/config/config";
import { virtiofsdLockFile } from "../../src/hypervisor/virtiofsd";
import { defaultSpec } from "../../src/oci/defaults";
import { alive, BIN, busyboxRootfs, REPO, tempDir, until, writeVmTestConfig } from "../helpers";
import { assertNoLeaks, snapshotHost } from "../leaks";

const QEMU = "/usr/bin/qemu-system-x86_64";
const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
const KERNEL =
  process.env.KATA_TS_TEST_KERNEL ??
  loadConfig({ explicitPath: join(REPO, "config", "configuration.toml") }).config.hypervisor.kernel;
const missing = [QEMU, VIRTIOFSD, KERNEL, "/bin/busybox"].filter((f) => !existsSync(f));

const tmp = tempDir("kata-vm-vfs-");
const root = join(tmp.path, "root");
const CONFIG = join(tmp.path, "configuration.toml");
const env = {
  ...process.env,
  KATA_TS_SUPERVISOR: join(REPO, "dist", "kata-supervisor.cjs"),
  KATA_TS_NATIVE_DIR: join(REPO, "native", "build"),
};

function cli(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(BIN, ["--root", root, "--config", CONFIG, ...args], {
    env,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 180_000,
  });
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

function bundle(
  name: string,
  args: string[],
  mounts: { dest: string; src: string; ro: boolean }[] = [],
): string {
  const dir = join(tmp.path, name);
  busyboxRootfs(join(dir, "rootfs"));
  const spec = defaultSpec();
  spec.process = { ...(spec.process as NonNullable<typeof spec.process>), terminal: false, args };
  spec.root = { path: "rootfs", readonly: false };
  for (const m of mounts)
    spec.mounts?.push({
      destination: m.dest,
      type: "bind",
      source: m.src,
      options: ["rbind", m.ro ? "ro" : "rw"],
    });
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

/** Live processes (not zombies) whose argv contains `needle`. */
function procsWith(needle: string): string[] {
  const out: string[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid || !alive(Number(p))) continue;
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " ");
      if (argv.includes(needle)) out.push(`${p}: ${argv}`);
    } catch {}
  }
  return out;
}

function assertNothingLeft(id: string): void {
  const sandbox = join(root, "sandboxes", id);
  assert.deepEqual(procsWith(`--socket-path=${sandbox}/`), [], "virtiofsd left");
  assert.deepEqual(procsWith(`sandbox-${id} `), [], "QEMU left");
  assert.deepEqual(procsWith(`--sandbox ${id}`), [], "supervisor left");
  assert.equal(existsSync(virtiofsdLockFile(join(sandbox, "virtiofsd.sock"))), false, "virtiofsd lock left");
  assert.equal(existsSync(sandbox), false, "sandbox dir left");
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes(sandbox) || l.includes(join(tmp.path, id)));
  assert.deepEqual(mounts, [], "mounts left");
}

describe("VM sandboxes with virtio-fs", {
  skip: missing.length > 0 && `missing ${missing.join(", ")}`,
}, () => {
  before(async () => {
    await writeVmTestConfig(tmp.path, KERNEL, [
      'shared_fs = "virtio-fs"',
      `virtio_fs_daemon = "${VIRTIOFSD}"`,
    ]);
  });
  after(() => {
    for (const id of existsSync(root) ? readdirSync(root) : [])
      if (id !== "sandboxes") cli(["delete", "--force", id]);
    tmp.cleanup();
  });

  test("rootfs and bind mounts over virtio-fs: guest writes reach the host, a ro bind stays ro; delete leaves nothing", async (t) => {
    // A failure mid-way must not leave this sandbox to the next test's leak scan.
    t.after(() => {
      if (existsSync(join(root, "vfs1"))) cli(["delete", "--force", "vfs1"]);
    });
    const ro = join(tmp.path, "ro-src");
    const rw = join(tmp.path, "rw-src");
    mkdirSync(ro);
    mkdirSync(rw);
    writeFileSync(join(ro, "x"), "from the host\n");
    writeFileSync(join(tmp.path, "ro-file"), "a file\n");
    const script = [
      `awk '$2 == "/" { print "rootfs-type " $3 }' /proc/mounts`,
      "echo written-in-guest > /hello",
      "cat /ro/x /ro-file",
      "echo y > /ro/y && echo ro-dir-writable || echo ro-dir-refused",
      "echo y >> /ro-file && echo ro-file-writable || echo ro-file-refused",
      "echo z > /rw/z && echo rw-ok",
      // virtiofsd makes special files (9p with Debian's QEMU 7.2 cannot: docs/machine-notes.md)
      "mkfifo /rw/fifo && echo fifo-ok",
      "echo ready",
      "exec sleep 100000",
    ].join("; ");
    const b = bundle(
      "vfs1",
      ["/bin/sh", "-c", script],
      [
        { dest: "/ro", src: ro, ro: true },
        { dest: "/ro-file", src: join(tmp.path, "ro-file"), ro: true },
        { dest: "/rw", src: rw, ro: false },
      ],
    );
    const before = snapshotHost();
    const out = join(tmp.path, "vfs1.out");
    const err = join(tmp.path, "vfs1.err");
    const [fdOut, fdErr] = [openSync(out, "w"), openSync(err, "w")];
    const c = spawnSync(BIN, ["--root", root, "--config", CONFIG, "create", "--bundle", b, "vfs1"], {
      env,
      stdio: ["ignore", fdOut, fdErr],
      timeout: 180_000,
    });
    assert.equal(c.status, 0, readFileSync(err, "utf8"));
    assert.equal(cli(["start", "vfs1"]).code, 0);
    await until("the container's output", () => readFileSync(out, "utf8").includes("ready\n"), 60_000);
    await until("the container's errors", () => readFileSync(err, "utf8").split("\n").length > 2, 10_000);
    assert.equal(
      readFileSync(out, "utf8"),
      [
        "rootfs-type virtiofs",
        "from the host",
        "a file",
        "ro-dir-refused",
        "ro-file-refused",
        "rw-ok",
        "fifo-ok",
        "ready",
        "",
      ].join("\n"),
    );
    assert.ok(lstatSync(join(rw, "fifo")).isFIFO(), "the host has the guest's FIFO");
    // EROFS, not EACCES: the mounts are read-only in the guest as on the host.
    assert.equal(
      readFileSync(err, "utf8"),
      "/bin/sh: can't create /ro/y: Read-only file system\n/bin/sh: can't create /ro-file: Read-only file system\n",
    );
    assert.equal(readFileSync(join(b, "rootfs", "hello"), "utf8"), "written-in-guest\n");
    assert.equal(readFileSync(join(rw, "z"), "utf8"), "z\n");
    assert.equal(existsSync(join(ro, "y")), false);
    assert.equal(readFileSync(join(tmp.path, "ro-file"), "utf8"), "a file\n");

    // One virtiofsd serving the sandbox's share (forked once into its own namespaces), QEMU wired to it.
    const sandbox = join(root, "sandboxes", "vfs1");
    const daemons = procsWith(`--socket-path=${sandbox}/virtiofsd.sock`);
    assert.ok(
      daemons.length >= 1 && daemons.every((d) => d.includes(`source=${sandbox}/shared`)),
      daemons.join("\n"),
    );
    const qemu = procsWith("sandbox-vfs1 ");
    assert.equal(qemu.length, 1);
    assert.match(qemu[0], /vhost-user-fs-device,chardev=vfs0,tag=kataShared/);
    // Inside virtiofsd's own mount namespace (pivoted into shared/), the container's mounts arrived
    // after it started (propagation) and the ro ones are read-only there too, not only in the guest.
    const [parent] = readFileSync(join(sandbox, "virtiofsd.pid"), "utf8").split(" ").map(Number);
    const [child] = readFileSync(`/proc/${parent}/task/${parent}/children`, "utf8")
      .trim()
      .split(" ")
      .map(Number);
    const seen = new Map(
      readFileSync(`/proc/${child}/mountinfo`, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => [l.split(" ")[4], l.split(" ")[5].split(",")[0]]),
    );
    const n = (dest: string) =>
      JSON.parse(readFileSync(join(b, "config.json"), "utf8")).mounts.findIndex(
        (m: { destination: string }) => m.destination === dest,
      );
    assert.equal(seen.get("/vfs1/rootfs"), "rw");
    assert.equal(seen.get(`/vfs1/mounts/${n("/ro")}`), "ro");
    assert.equal(seen.get(`/vfs1/mounts/${n("/ro-file")}`), "ro");
    assert.equal(seen.get(`/vfs1/mounts/${n("/rw")}`), "rw");

    assert.equal(cli(["kill", "vfs1", "KILL"]).code, 0);
    await until("stopped", () => JSON.parse(cli(["state", "vfs1"]).stdout).status === "stopped");
    const d = cli(["delete", "vfs1"]);
    assert.equal(d.code, 0, d.stderr);
    assertNothingLeft("vfs1");
    assertNoLeaks(before, { root, bundle: b, id: "vfs1" });
  });

  test("kill -9 of the supervisor: virtiofsd and QEMU die with it; delete --force leaves nothing", async () => {
    const b = bundle("vfs2", ["/bin/sh", "-c", "echo ready; exec sleep 100000"]);
    const before = snapshotHost();
    const c = spawnSync(BIN, ["--root", root, "--config", CONFIG, "create", "--bundle", b, "vfs2"], {
      env,
      stdio: "ignore",
      timeout: 180_000,
    });
    assert.equal(c.status, 0);
    assert.equal(cli(["start", "vfs2"]).code, 0);
    const sandbox = join(root, "sandboxes", "vfs2");
    const info = JSON.parse(readFileSync(join(sandbox, "sandbox.json"), "utf8"));
    const [vfsd] = readFileSync(join(sandbox, "virtiofsd.pid"), "utf8").split(" ").map(Number);
    assert.ok(alive(vfsd) && alive(info.vmPid) && alive(info.supervisorPid));
    const daemons = () => procsWith(`--socket-path=${sandbox}/virtiofsd.sock`);
    // The daemon forked into its own pid namespace when QEMU connected: parent and child.
    assert.equal(daemons().length, 2, daemons().join("\n"));
    process.kill(info.supervisorPid, "SIGKILL");
    await until("virtiofsd and QEMU gone", () => daemons().length === 0 && !alive(info.vmPid), 10_000);
    const d = cli(["delete", "--force", "vfs2"]);
    assert.equal(d.code, 0, d.stderr);
    assertNothingLeft("vfs2");
    assertNoLeaks(before, { root, bundle: b, id: "vfs2" });
  });
});
