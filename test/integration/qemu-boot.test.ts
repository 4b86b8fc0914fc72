// Real QEMU under TCG: boots the floor guest (busybox initramfs) with the QEMU driver, talks to it over
// the virtio-serial agent socket and drives QEMU over QMP. One guest boot in total (CI time): the other
// cases start QEMU but never wait for a guest.
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { defaultConfig, type QemuConfig } from "../../src/config/config";
import { startVm } from "../../src/hypervisor/qemu";
import { ensureStockKernel, type GuestKernel, hasPvhNote } from "../../src/image/kernel";
import { tempDir } from "../helpers";
import { ensureFloorInitramfs, stockFloorModules } from "../support/floor";

const QEMU = "/usr/bin/qemu-system-x86_64";
const BUILT = "/var/cache/kata-ts/vmlinux";

/** Reads newline-terminated lines from a socket. */
function lineReader(sock: Socket) {
  let buf = "";
  const waiters: ((l: string) => void)[] = [];
  const lines: string[] = [];
  sock.setEncoding("utf8");
  sock.on("data", (d: string) => {
    buf += d;
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(l);
      else lines.push(l);
    }
  });
  return (timeoutMs: number) =>
    new Promise<string>((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(l);
      const w = (x: string) => {
        clearTimeout(t);
        resolve(x);
      };
      const t = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1); // a late line must go to the next reader
        reject(new Error(`no line within ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.push(w);
    });
}

async function connectRetry(path: string, timeoutMs: number): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = connect(path);
        s.once("connect", () => resolve(s));
        s.once("error", reject);
      });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

const pidAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("qemu driver (TCG, floor guest)", {
  skip: !existsSync(QEMU) && "qemu-system-x86_64 missing",
}, () => {
  const tmp = tempDir("kata-ts-qemu-");
  let kernel: GuestKernel;
  let initrd: string;
  let cfg: QemuConfig;

  before(async () => {
    // kata-ts's own kernel when it has been built (guest/kernel/build.sh), else Debian's stock one,
    // extracted into the test's temp dir, with its virtio modules in the initramfs.
    if (existsSync(BUILT)) kernel = { path: BUILT, kind: "kata-ts", needsModules: false };
    else kernel = await ensureStockKernel({ cacheDir: tmp.path });
    const modules = kernel.needsModules ? stockFloorModules(kernel.id!) : [];
    initrd = await ensureFloorInitramfs({ modules, cacheDir: tmp.path });
    cfg = { ...defaultConfig().hypervisor, path: QEMU, kernel: kernel.path, image: "", initrd, accel: "tcg" };
  });
  after(() => tmp.cleanup());

  test("boots to READY on the agent socket, answers pings, QMP status and quit clean up", async (t) => {
    assert.ok(hasPvhNote(readFileSync(kernel.path)), "the guest kernel has a PVH note");
    const warnings: string[] = [];
    const dir = join(tmp.path, "vm1");
    const started = performance.now();
    const vm = await startVm({
      id: "floor",
      dir,
      config: cfg,
      memoryMiB: 256,
      onWarning: (w) => warnings.push(w),
    });
    t.after(() => vm.kill());
    assert.equal(vm.accel.accel, "tcg");
    assert.ok(
      warnings.some((w) => /TCG/.test(w)),
      `TCG warning reported: ${JSON.stringify(warnings)}`,
    );
    // TCG with the configured translation cache (tcg_tb_size, default 64 MiB).
    assert.equal(vm.argv[vm.argv.indexOf("-accel") + 1], "tcg,tb-size=64");
    assert.match(vm.argv[vm.argv.indexOf("-append") + 1], /tsc_early_khz=\d+/);
    assert.equal(Number(readFileSync(join(dir, "qemu.pid"), "utf8").trim()), vm.pid, "pid file names QEMU");
    assert.ok(existsSync(vm.qmpSocket) && existsSync(vm.agentSocket));

    const sock = await connectRetry(vm.agentSocket, 5000);
    const next = lineReader(sock);
    const ready = await next(60_000);
    const bootMs = performance.now() - started;
    assert.match(ready, /^READY \d+\.\d+$/, `first line from the guest: ${ready}`);
    t.diagnostic(
      `${kernel.kind} kernel: spawn to READY ${Math.round(bootMs)} ms (guest uptime ${ready.slice(6)} s)`,
    );

    sock.write("PING 42\n");
    assert.equal(await next(5000), "PONG 42");

    const status = await vm.qmp.queryStatus();
    assert.equal(status.status, "running");
    assert.equal(status.running, true);

    // Pause and resume: QMP events arrive, and a paused guest does not answer.
    const stopped = vm.qmp.waitEvent("STOP", 5000);
    await vm.qmp.pause();
    await stopped;
    assert.equal((await vm.qmp.queryStatus()).status, "paused");
    sock.write("PING 43\n");
    await assert.rejects(next(300), /no line/);
    const resumed = vm.qmp.waitEvent("RESUME", 5000);
    await vm.qmp.resume();
    await resumed;
    assert.equal(await next(5000), "PONG 43");

    const shutdown = vm.qmp.waitEvent("SHUTDOWN", 5000);
    await vm.qmp.quit();
    assert.equal((await shutdown).data?.reason, "host-qmp-quit");
    const exit = await vm.waitExit();
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.equal(pidAlive(vm.pid), false, "QEMU is gone");
    for (const f of ["qmp.sock", "agent.sock", "qemu.pid"])
      assert.equal(existsSync(join(dir, f)), false, `${f} left`);
    assert.ok(existsSync(vm.consoleLog), "the console log stays for post-mortems");
    sock.destroy();
  });

  test("SIGKILL: waitExit reports the signal and the files are removed", async () => {
    const dir = join(tmp.path, "vm2");
    const vm = await startVm({ id: "killed", dir, config: cfg, memoryMiB: 128 });
    assert.ok(pidAlive(vm.pid));
    vm.kill();
    assert.deepEqual(await vm.waitExit(), { code: null, signal: "SIGKILL" });
    assert.equal(vm.exited, true);
    for (const f of ["qmp.sock", "agent.sock", "qemu.pid"])
      assert.equal(existsSync(join(dir, f)), false, `${f} left`);
  });

  test("a QEMU that cannot start: one-line error with QEMU's reason, nothing left behind", async () => {
    const dir = join(tmp.path, "vm3");
    // A missing kernel is caught before QEMU runs or anything is created.
    await assert.rejects(
      startVm({ id: "bad", dir, config: { ...cfg, kernel: join(tmp.path, "no-such-vmlinux") } }),
      /^Error: guest kernel .*no-such-vmlinux does not exist .*kata-ts guest build --kernel`$/,
    );
    assert.equal(existsSync(dir), false, "nothing created for a missing kernel");
    // A kernel QEMU cannot load: QEMU's own reason, in one line.
    const junk = join(tmp.path, "junk-vmlinux");
    writeFileSync(junk, "not a kernel\n");
    await assert.rejects(startVm({ id: "bad", dir, config: { ...cfg, kernel: junk } }), (err: Error) => {
      assert.match(err.message, /^qemu: .* exited during start: ./);
      assert.ok(!err.message.includes("\n"), "one line");
      return true;
    });
    for (const f of ["qmp.sock", "agent.sock", "qemu.pid"])
      assert.equal(existsSync(join(dir, f)), false, `${f} left`);
    await assert.rejects(
      startVm({ id: "nobin", dir, config: { ...cfg, path: join(tmp.path, "no-qemu") } }),
      /qemu: cannot run .*no-qemu: spawn .*ENOENT/,
    );
  });
});
