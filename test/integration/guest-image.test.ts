// The guest image end to end: build it (cold, then warm from the cache), inspect it through the CLI,
// boot it once under TCG and check from inside the guest what the image and its init must provide.
// The agent in the image is a stand-in written below (it speaks a line protocol on the agent port), so
// this test checks the image and the init independently of the real agent: node starts with its
// libraries, the addon loads, the helper is executable, the init's mounts, cgroup2, lo, PID 1 reaping
// orphans, and power-off when the agent exits. One VM boot in total.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AgentClient } from "../../src/agent/client";
import { defaultConfig } from "../../src/config/config";
import { buildQemuArgs, hostTscKhz, startVm } from "../../src/hypervisor/qemu";
import { buildImage, defaultSources, IMAGE_FILE, type ImageSources } from "../../src/image/image";
import { ensureStockKernel } from "../../src/image/kernel";
import { kata, REPO, tempDir } from "../helpers";
import { buildBootstrapInitramfs, stockBootstrapModules } from "../support/bootstrap";

const QEMU = "/usr/bin/qemu-system-x86_64";
const BUILT_KERNEL = "/var/cache/kata-ts/vmlinux";

/** The agent stand-in: reports what it sees as one JSON line, then serves MEM / ORPHAN / EXIT. */
const STUB_AGENT = String.raw`
const fs = require("node:fs");
const uptime = () => Number(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]);
const portName = process.env.KATA_TS_AGENT_PORT;
let port;
for (const d of fs.readdirSync("/sys/class/virtio-ports")) {
  if (fs.readFileSync("/sys/class/virtio-ports/" + d + "/name", "utf8").trim() === portName) port = "/dev/" + d;
}
if (!port) { console.error("stub: no port " + portName); process.exit(3); }
const fd = fs.openSync(port, "r+");
const send = (o) => fs.writeSync(fd, JSON.stringify(o) + "\n");
let addon;
try { addon = Object.keys(require(process.env.KATA_TS_NATIVE_DIR + "/kata_native.node")).sort(); } catch (e) { addon = e.message; }
let helper = "executable";
try { fs.accessSync(process.env.KATA_TS_HELPER, fs.constants.X_OK); } catch (e) { helper = e.message; }
const status = (pid) => { try { return fs.readFileSync("/proc/" + pid + "/status", "utf8"); } catch { return ""; } };
const field = (s, k) => (s.match(new RegExp(k + ":\\s+(\\S+)")) || [])[1];
send({
  readyAt: uptime(),
  bootId: fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim(),
  kernelRelease: fs.readFileSync("/proc/sys/kernel/osrelease", "utf8").trim(),
  pid1: fs.readlinkSync("/proc/1/exe"),
  env: [process.env.KATA_TS_AGENT_PORT, process.env.KATA_TS_HELPER, process.env.KATA_TS_NATIVE_DIR],
  addon, helper,
  mounts: fs.readFileSync("/proc/self/mounts", "utf8").trim().split("\n").map((l) => l.split(" ").slice(1, 4).join(" ")),
  subtreeControl: fs.readFileSync("/sys/fs/cgroup/cgroup.subtree_control", "utf8").trim(),
  loFlags: fs.readFileSync("/sys/class/net/lo/flags", "utf8").trim(),
  hostname: fs.readFileSync("/proc/sys/kernel/hostname", "utf8").trim(),
  rootWritable: (() => { try { fs.writeFileSync("/probe", "x"); return true; } catch { return false; } })(),
});
let buf = "";
const sab = new Int32Array(new SharedArrayBuffer(4));
for (;;) {
  const b = Buffer.alloc(4096);
  let n = 0;
  try { n = fs.readSync(fd, b); } catch (e) { if (e.code !== "EAGAIN") throw e; }
  if (n === 0) { Atomics.wait(sab, 0, 0, 50); continue; }
  buf += b.subarray(0, n).toString();
  for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
    const [cmd, arg] = buf.slice(0, i).split(" ");
    buf = buf.slice(i + 1);
    if (cmd === "MEM") {
      const m = Object.fromEntries(fs.readFileSync("/proc/meminfo", "utf8").trim().split("\n").map((l) => { const [k, v] = l.split(/:\s+/); return [k, parseInt(v, 10)]; }));
      send({ memTotalKb: m.MemTotal, memAvailableKb: m.MemAvailable, cachedKb: m.Cached, rssKb: Number(field(status("self"), "VmRSS")) });
    } else if (cmd === "ORPHAN") {
      // The shell exits at once, so the sleep is re-parented to PID 1, which must reap it when it ends.
      const pid = Number(require("node:child_process").execFileSync("/bin/sh", ["-c", "/bin/sleep 3 </dev/null >/dev/null 2>&1 & echo $!"]).toString());
      const ppid = Number(field(status(pid), "PPid"));
      // Once the sleep ends its /proc entry must vanish; an unreaped zombie would stay in state Z.
      let state = field(status(pid), "State");
      for (let waited = 0; state && waited < 15000; waited += 100) {
        Atomics.wait(sab, 0, 0, 100);
        state = field(status(pid), "State");
      }
      send({ orphanPpid: ppid, after: state || "gone" });
    } else if (cmd === "EXIT") {
      process.exit(Number(arg));
    }
  }
}
`;

function lineReader(sock: Socket) {
  let buf = "";
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  sock.setEncoding("utf8");
  sock.on("data", (d: string) => {
    buf += d;
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    wake?.();
  });
  return async (timeoutMs: number, what: () => string): Promise<Record<string, unknown>> => {
    const end = Date.now() + timeoutMs;
    while (lines.length === 0) {
      if (Date.now() > end) throw new Error(`no line from the guest within ${timeoutMs} ms\n${what()}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 100);
      });
    }
    return JSON.parse(lines.shift()!);
  };
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

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

interface BootedVm {
  pid: number;
  exited: Promise<number | null>;
  consoleLog: string;
  agentSocket: string;
  expectRelease: RegExp;
  kernelKind: string;
  kill(): void;
}

/**
 * Boots `image`: with kata-ts's kernel through the QEMU driver (the image is the root device), else
 * with Debian's kernel and the bootstrap initramfs (virtio-blk and ext4 are modules there, so it loads
 * them and switch_roots into the image; the driver takes one of initrd/image, so the drive is added
 * here).
 */
async function bootImage(image: string, dir: string): Promise<BootedVm> {
  const cfg = { ...defaultConfig().hypervisor, path: QEMU, accel: "tcg" as const };
  if (existsSync(BUILT_KERNEL)) {
    const vm = await startVm({
      id: "gimg",
      dir,
      config: { ...cfg, kernel: BUILT_KERNEL, image, initrd: "" },
      memoryMiB: 512,
    });
    return {
      pid: vm.pid,
      exited: vm.waitExit().then((e) => e.code),
      consoleLog: vm.consoleLog,
      agentSocket: vm.agentSocket,
      expectRelease: /-kata-ts$/,
      kernelKind: "kata-ts kernel",
      kill: () => vm.kill(),
    };
  }
  mkdirSync(dir, { recursive: true });
  const kernel = await ensureStockKernel({ cacheDir: join(dir, "..", "cache") });
  const initrd = join(dir, "bootstrap.cpio");
  writeFileSync(initrd, buildBootstrapInitramfs({ modules: stockBootstrapModules(kernel.id!) }));
  const consoleLog = join(dir, "console.log");
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
    consoleLog,
    qmpSocket: join(dir, "qmp.sock"),
    agentSocket,
    pidFile: join(dir, "qemu.pid"),
    tscKhz: hostTscKhz(),
  });
  argv.push("-drive", `if=none,id=image,file=${image},format=raw,readonly=on`);
  argv.push("-device", "virtio-blk-device,drive=image");
  const c = spawn(argv[0], argv.slice(1), { stdio: "ignore" });
  return {
    pid: c.pid!,
    exited: new Promise((r) => c.once("exit", (code) => r(code))),
    consoleLog,
    agentSocket,
    expectRelease: new RegExp(`^${kernel.id!.replace(/\./g, "\\.")}$`),
    kernelKind: "stock kernel + bootstrap",
    kill: () => c.kill("SIGKILL"),
  };
}

describe("guest image", { skip: !existsSync(QEMU) && "qemu-system-x86_64 missing" }, () => {
  const tmp = tempDir("kata-ts-gimg-");
  const cacheDir = join(tmp.path, "cache");
  let sources: ImageSources;
  let image: string;
  let key: string;

  before(() => {
    sources = defaultSources();
    sources.agentBundle = join(tmp.path, "stub-agent.cjs");
    writeFileSync(sources.agentBundle, STUB_AGENT);
  });
  after(() => tmp.cleanup());

  test("cold build publishes a content-addressed image and links it as current; warm build is a no-op", async (t) => {
    const phases = new Set<string>();
    const cold = await buildImage({ sources, cacheDir, onProgress: (e) => phases.add(e.phase) });
    assert.equal(cold.status, "built");
    assert.deepEqual([...phases], ["inputs", "copy", "mkfs", "publish"]);
    image = cold.paths.image;
    key = cold.key;
    assert.equal(image, join(cacheDir, "images", key, IMAGE_FILE));
    assert.equal(realpathSync(join(cacheDir, IMAGE_FILE)), image, "kata-ts-guest.img points at the build");
    assert.ok(lstatSync(join(cacheDir, IMAGE_FILE)).isSymbolicLink());
    const magic = Buffer.alloc(2);
    readFileSync(image).copy(magic, 0, 1080, 1082); // ext2/3/4 superblock magic at 1024 + 56
    assert.equal(magic.readUInt16LE(0), 0xef53, "the image is an ext4 file system");
    const dests = cold.manifest.components.map((c) => c.dest);
    for (const d of ["/usr/bin/node", "/bin/busybox", "/init", "/opt/kata-ts/kata-agent.cjs"])
      assert.ok(dests.includes(d), `${d} in the image`);
    for (const d of ["/opt/kata-ts/kata-ts-helper", "/opt/kata-ts/kata_native.node", "/etc/passwd"])
      assert.ok(dests.includes(d), `${d} in the image`);
    assert.ok(dests.includes("/lib/x86_64-linux-gnu/libstdc++.so.6"), "node's libraries come along");
    // The helper is linked statically where libseccomp/libcap allow it; otherwise its libraries must come.
    const helperIsDynamic = spawnSync("ldd", [join(REPO, "native/build/kata-ts-helper")]).status === 0;
    if (helperIsDynamic)
      assert.ok(dests.includes("/lib/x86_64-linux-gnu/libseccomp.so.2"), "the helper's libraries come along");
    assert.equal(cold.manifest.symlinks["/sbin/init"], "/init");
    t.diagnostic(
      `cold build ${cold.seconds.toFixed(2)} s, image ${(cold.manifest.imageBytes / 2 ** 20).toFixed(1)} MiB`,
    );

    const warm = await buildImage({ sources, cacheDir });
    assert.equal(warm.status, "up-to-date");
    assert.equal(warm.key, key);
    assert.ok(warm.seconds < 1, `warm check took ${warm.seconds} s`);
    t.diagnostic(`warm check ${warm.seconds.toFixed(2)} s`);
  });

  test("CLI: guest build says up to date, inspect lists the components, a missing bundle is a clear error", (t) => {
    const started = performance.now();
    const r = kata(["guest", "build", "--cache-dir", cacheDir, "--agent-bundle", sources.agentBundle]);
    const ms = performance.now() - started;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^up to date: .*/images/${key}/${IMAGE_FILE} \\(key ${key}\\)`));
    assert.ok(ms < 1000, `second build took ${Math.round(ms)} ms`);
    t.diagnostic(`kata-ts guest build (warm): ${Math.round(ms)} ms`);

    const i = kata(["guest", "inspect", "--cache-dir", cacheDir, "--image", join(cacheDir, IMAGE_FILE)]);
    assert.equal(i.code, 0, i.stderr);
    assert.match(i.stdout, new RegExp(`^key\\s+${key} `, "m"));
    assert.match(i.stdout, /^\s+node\s+\/usr\/bin\/node\s+[\d.]+ MiB\s+[0-9a-f]{12}\s+node v\d+/m);
    assert.match(i.stdout, /^\s+lib\s+\/lib\/x86_64-linux-gnu\/libc\.so\.6 .* libc6 /m);
    const j = kata([
      "guest",
      "inspect",
      "--json",
      "--cache-dir",
      cacheDir,
      "--image",
      join(cacheDir, IMAGE_FILE),
    ]);
    assert.equal(JSON.parse(j.stdout).manifest.key, key);

    const missing = join(tmp.path, "no-agent.cjs");
    const m = kata(["guest", "build", "--cache-dir", cacheDir, "--agent-bundle", missing]);
    assert.equal(m.code, 1);
    assert.equal(
      m.stderr
        .trim()
        .split("\n")
        .filter((l) => l.includes(missing)).length,
      1,
      m.stderr,
    );
    assert.match(m.stderr, /no-agent\.cjs is missing \(build the guest agent/);
    assert.equal(realpathSync(join(cacheDir, IMAGE_FILE)), image, "a failed build leaves the current image");
  });

  test("boots under TCG: the init sets the guest up, the agent runs, PID 1 reaps, agent exit powers off", async (t) => {
    const started = performance.now();
    const vm = await bootImage(image, join(tmp.path, "vm"));
    t.after(() => vm.kill());
    const { pid, exited, consoleLog, agentSocket, expectRelease } = vm;
    const consoleText = () => (existsSync(consoleLog) ? `console:\n${readFileSync(consoleLog, "utf8")}` : "");
    const sock = await connectRetry(agentSocket, 10_000);
    const next = lineReader(sock);
    const ready = await next(120_000, consoleText);
    const readyMs = performance.now() - started;
    t.diagnostic(
      `${vm.kernelKind}: spawn to agent ready ${Math.round(readyMs)} ms ` +
        `(guest uptime ${ready.readyAt} s)`,
    );

    const hostBootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    assert.notEqual(ready.bootId, hostBootId, "the agent runs in the guest");
    assert.match(String(ready.kernelRelease), expectRelease);
    assert.equal(ready.pid1, "/bin/busybox", "busybox init is PID 1");
    assert.deepEqual(ready.env, ["agent.channel.0", "/opt/kata-ts/kata-ts-helper", "/opt/kata-ts"]);
    assert.ok(Array.isArray(ready.addon) && ready.addon.includes("flock"), `addon: ${ready.addon}`);
    assert.equal(ready.helper, "executable");
    const mounts = ready.mounts as string[];
    assert.ok(mounts.includes("/ ext4 ro,relatime"), `read-only ext4 root: ${mounts}`);
    assert.equal(ready.rootWritable, false);
    for (const [where, type] of [
      ["/proc", "proc"],
      ["/sys", "sysfs"],
      ["/dev", "devtmpfs"],
      ["/dev/pts", "devpts"],
      ["/dev/shm", "tmpfs"],
      ["/run", "tmpfs"],
      ["/tmp", "tmpfs"],
      ["/sys/fs/cgroup", "cgroup2"],
    ]) {
      assert.ok(
        mounts.some((m) => m.startsWith(`${where} ${type} `)),
        `${type} on ${where}: ${mounts.join("; ")}`,
      );
    }
    // favordynmods where the kernel has it (6.0+; older ones refuse it and the init mounts without).
    const cgroupOptions = mounts
      .find((m) => m.startsWith("/sys/fs/cgroup cgroup2 "))
      ?.split(" ")[2]
      .split(",");
    assert.ok(cgroupOptions?.includes("nsdelegate"), `cgroup2 options: ${cgroupOptions}`);
    const major = Number(String(ready.kernelRelease).split(".")[0]);
    if (major >= 6) assert.ok(cgroupOptions?.includes("favordynmods"), `cgroup2 options: ${cgroupOptions}`);
    for (const c of ["cpu", "memory", "pids"])
      assert.ok(String(ready.subtreeControl).split(" ").includes(c), `cgroup ${c} enabled for children`);
    assert.equal(Number(ready.loFlags) & 1, 1, "lo is up");
    assert.equal(ready.hostname, "kata-ts");

    await new Promise((r) => setTimeout(r, 2000));
    sock.write("MEM\n");
    const mem = await next(30_000, consoleText);
    t.diagnostic(
      `guest memory: ${Math.round(Number(mem.memTotalKb) / 1024)} MiB total, ` +
        `${Math.round((Number(mem.memTotalKb) - Number(mem.memAvailableKb)) / 1024)} MiB used, ` +
        `agent RSS ${Math.round(Number(mem.rssKb) / 1024)} MiB, page cache ${Math.round(Number(mem.cachedKb) / 1024)} MiB`,
    );
    assert.ok(Number(mem.rssKb) > 0);

    sock.write("ORPHAN\n");
    const orphan = await next(30_000, consoleText);
    assert.equal(orphan.orphanPpid, 1, "the orphan was re-parented to PID 1");
    assert.equal(orphan.after, "gone", "PID 1 reaped it (no zombie)");

    sock.write("EXIT 0\n");
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("timeout"), 30_000))]);
    assert.equal(code, 0, `QEMU exits when the agent does (power-off)\n${consoleText()}`);
    assert.equal(alive(pid), false, "no QEMU left");
    assert.match(readFileSync(consoleLog, "utf8"), /agent exited with status 0: powering off/);
    sock.destroy();
  });
  test("the real agent (dist/kata-agent.cjs) answers ping from the image and shuts the VM down", {
    skip: !existsSync(defaultSources().agentBundle) && "dist/kata-agent.cjs not built yet",
  }, async (t) => {
    const built = await buildImage({ cacheDir: join(tmp.path, "cache-real"), link: false });
    const started = performance.now();
    const vm = await bootImage(built.paths.image, join(tmp.path, "vm-real"));
    t.after(() => vm.kill());
    const client = await AgentClient.connect(vm.agentSocket, { timeoutMs: 180_000 });
    t.after(() => client.close());
    const details = await client.call("ping", {});
    t.diagnostic(
      `${vm.kernelKind}: spawn to agent ping ${Math.round(performance.now() - started)} ms (readyAt ${details.readyAt} s)`,
    );
    assert.notEqual(details.bootId, readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim());
    assert.match(details.kernelRelease, vm.expectRelease);
    // The init gives node the image's agent flags, and the code cache made with the image under the same
    // flags is accepted (a cache made under other flags is rejected by V8).
    assert.deepEqual(details.nodeFlags, ["--jitless"]);
    assert.equal(details.codeCache, "accepted");
    // As the sandbox supervisor does: the answer, then it hangs up; the agent cleans up, syncs and exits
    // 0, and the init powers the VM off.
    await client.call("shutdown", {});
    const asked = performance.now();
    client.close();
    const code = await Promise.race([vm.exited, new Promise((r) => setTimeout(() => r("timeout"), 10_000))]);
    if (code === "timeout") {
      vm.kill();
      await vm.exited;
    }
    const guestLog = readFileSync(vm.consoleLog, "utf8");
    assert.equal(code, 0, `QEMU exits within 10 s of the agent's shutdown (init powers off)\n${guestLog}`);
    t.diagnostic(`shutdown to QEMU exit ${Math.round(performance.now() - asked)} ms`);
    assert.match(guestLog, /agent exited with status 0: powering off/);
    assert.equal(alive(vm.pid), false, "no QEMU left");
  });
});
