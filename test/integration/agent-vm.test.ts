// The real agent in a TCG guest: the image built from this tree (dist/kata-agent.cjs inside), Debian's
// kernel with the bootstrap initramfs, the agent channel over virtio-serial. One boot for the file.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AgentClient } from "../../src/agent";
import { buildQemuArgs, hostTscKhz } from "../../src/hypervisor/qemu";
import { buildImage, defaultSources } from "../../src/image/image";
import { ensureStockKernel } from "../../src/image/kernel";
import { defaultSpec } from "../../src/oci/defaults";
import { REPO, tempDir } from "../helpers";
import { buildBootstrapInitramfs, stockBootstrapModules } from "../support/bootstrap";

const QEMU = "/usr/bin/qemu-system-x86_64";
const AGENT = join(REPO, "dist", "kata-agent.cjs");

describe("guest agent in a TCG VM", {
  skip: (!existsSync(QEMU) || !existsSync(AGENT)) && "needs qemu and a build",
}, () => {
  const tmp = tempDir("kata-ts-agent-vm-");
  const dir = join(tmp.path, "vm");
  let qemu: ChildProcess | undefined;
  let qemuExit: Promise<number | null> = Promise.resolve(null);
  let client: AgentClient;

  before(async () => {
    mkdirSync(dir, { recursive: true });
    const img = await buildImage({ sources: defaultSources(), cacheDir: join(tmp.path, "cache") });
    const kernel = await ensureStockKernel({ cacheDir: join(tmp.path, "kcache") });
    const initrd = join(dir, "bootstrap.cpio");
    writeFileSync(initrd, buildBootstrapInitramfs({ modules: stockBootstrapModules(kernel.id as string) }));
    const agentSocket = join(dir, "agent.sock");
    const argv = buildQemuArgs({
      qemuPath: QEMU,
      machineType: "microvm",
      accel: "tcg",
      vcpus: 1,
      memoryMiB: 512,
      kernel: kernel.path,
      initrd,
      console: "serial",
      consoleLog: join(dir, "console.log"),
      qmpSocket: join(dir, "qmp.sock"),
      agentSocket,
      pidFile: join(dir, "qemu.pid"),
      tscKhz: hostTscKhz(),
    });
    argv.push("-drive", `if=none,id=image,file=${img.paths.image},format=raw,readonly=on`);
    argv.push("-device", "virtio-blk-device,drive=image");
    const q = spawn(argv[0], argv.slice(1), { stdio: "ignore" });
    qemu = q;
    qemuExit = new Promise((r) => q.once("exit", (code) => r(code)));
    client = await AgentClient.connect(agentSocket, { timeoutMs: 120_000 });
  });

  after(async () => {
    client?.close();
    if (qemu && qemu.exitCode === null) {
      const t = setTimeout(() => qemu?.kill("SIGKILL"), 10_000);
      await qemuExit;
      clearTimeout(t);
    }
    tmp.cleanup();
  });

  it("serves over the virtio-serial port: ping, a container's stdout and exit code, shutdown exits the agent", async () => {
    const d = await client.call("ping", {});
    assert.notEqual(d.kernelRelease, "");
    assert.notEqual(
      d.bootId,
      readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim(),
      "answered by the guest",
    );
    const spec = defaultSpec();
    spec.process = { ...(spec.process as NonNullable<typeof spec.process>), terminal: false };
    spec.process.args = ["/bin/sh", "-c", "echo hi from the guest; head -c 5000000 /dev/zero; exit 3"];
    spec.root = { path: "/run/c1/rootfs", readonly: true };
    const [o, e] = [client.openStream(), client.openStream()];
    let bytes = 0;
    let head = "";
    o.on("data", (c: Buffer) => {
      if (head.length < 18) head += c.subarray(0, 18 - head.length).toString();
      bytes += c.length;
    });
    const ended = new Promise((r) => o.on("end", r));
    await client.call("createContainer", {
      containerId: "c1",
      spec,
      mounts: [{ source: "/", fstype: "bind", target: "/run/c1/rootfs", options: [] }],
      stdio: { terminal: false, stdin: 0, stdout: o.id, stderr: e.id },
    });
    await client.call("startContainer", { containerId: "c1" });
    assert.deepEqual(await client.call("waitProcess", { containerId: "c1", execId: "" }), { exitStatus: 3 });
    await ended;
    assert.equal(head, "hi from the guest\n");
    assert.equal(bytes, 18 + 5_000_000);
    await client.call("removeContainer", { containerId: "c1" });
    await client.call("shutdown", {});
    // the agent finishes its shutdown (then exits; the init powers off)
    const log = join(dir, "console.log");
    const end = Date.now() + 60_000;
    while (!/kata-ts-agent: shutdown complete/.test(readFileSync(log, "utf8")) && Date.now() < end)
      await new Promise((r) => setTimeout(r, 200));
    assert.match(readFileSync(log, "utf8"), /kata-ts-agent: shutdown complete/);
  });
});
