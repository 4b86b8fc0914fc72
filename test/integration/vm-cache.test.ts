// The VM cache (vm_cache_number) with real VMs: no server → create starts its own VM with a warning;
// `factory init` with vm_cache_number = 1 serves one ready clone; a create takes it (no boot, its
// supervisor is the cached one) and the server refills; two cached VMs read different /dev/urandom bytes
// and have the host's clock and their sandbox's hostname; kill -9 of a cached VM's QEMU then
// `delete --force` leaves nothing; a pod with a network interface is refused by the cached VM (no NIC)
// and gets a VM of its own with it, the pod's netns left as it was; kill -9 of the server stops its idle VMs by themselves, a sandbox it
// served keeps running, and `factory destroy` leaves nothing (no process, directory or socket).
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { appendFileSync, closeSync, existsSync, openSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { sandboxPaths } from "../../src/sandbox/paths";
import {
  alive,
  BIN,
  type CliResult,
  createOnFiles,
  kata,
  processesNaming,
  shellBundle,
  tempDir,
  until,
  vmTestEnv,
  vmTestKernel,
  vmTestSkip,
  writeVmTestConfig,
} from "../helpers";
import { assertNoLeaks, snapshotHost } from "../leaks";

const skip = vmTestSkip();

const tmp = tempDir("kata-vm-cache-");
const root = join(tmp.path, "root");
const templates = join(tmp.path, "t");
const endpoint = join(tmp.path, "cache.sock");
const env = vmTestEnv();
const SUFFIX = Math.random().toString(36).slice(2, 8);
let CONFIG = "";
let server: ChildProcess | undefined;

function cli(args: string[]): CliResult {
  return kata(["--root", root, "--config", CONFIG, ...args], { env });
}

interface Status {
  cache: {
    idle: number;
    booting: number;
    served: number;
    slots: { dir: string; pid: number; state: string }[];
  } | null;
}

function status(): Status {
  const r = cli(["factory", "status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

/** Processes whose command line names the template directory (cached VMs, their supervisors). */
function cacheProcesses(): string[] {
  return processesNaming(`${templates}/`);
}

function slotDirs(): string[] {
  const d = join(templates, "cache");
  return existsSync(d) ? readdirSync(d) : [];
}

function bundle(id: string, script: string): string {
  return shellBundle(join(tmp.path, id), script, (spec) => {
    // The guest's own UTS namespace: the container sees the guest kernel's hostname.
    spec.hostname = undefined;
    spec.linux = { ...spec.linux, namespaces: spec.linux?.namespaces?.filter((n) => n.type !== "uts") };
  });
}

/** Starts `factory init` (the cache server) in the background and waits for a ready VM. */
async function startServer(): Promise<void> {
  const out = openSync(join(tmp.path, "server.log"), "a");
  server = spawn(BIN, ["--root", root, "--config", CONFIG, "factory", "init"], {
    env,
    stdio: ["ignore", out, out],
  });
  closeSync(out);
  await until("a cached VM ready", () => (status().cache?.idle ?? 0) === 1, 240_000, 500);
}

function serverLog(): string {
  return readFileSync(join(tmp.path, "server.log"), "utf8");
}

const cachedScript =
  "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; cat /proc/sys/kernel/hostname";

describe("VM cache: a server keeps clones ready, create takes one", { skip }, () => {
  before(async () => {
    CONFIG = await writeVmTestConfig(tmp.path, vmTestKernel());
    appendFileSync(
      CONFIG,
      `[factory]\ntemplate_path = "${templates}"\nvm_cache_number = 1\nvm_cache_endpoint = "${endpoint}"\n`,
    );
  });
  after(() => {
    server?.kill("SIGKILL");
    // A failed test's containers (a passing test deletes its own).
    for (const n of ["none", "run1", "run2", "kill", "nic", "srv"])
      cli(["delete", "--force", `kca-${n}-${SUFFIX}`]);
    cli(["factory", "destroy"]);
    tmp.cleanup();
  });

  test("no server: create starts a VM of its own and says why", () => {
    const id = `kca-none-${SUFFIX}`;
    const b = bundle(id, "echo own-vm-ok");
    const before = snapshotHost();
    const r = cli(["run", "--bundle", b, id]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /own-vm-ok/);
    assert.match(r.stderr, /factory: the VM cache at .*cache\.sock does not answer/);
    assertNoLeaks(before, { root, bundle: b, id });
    const c = cli(["check"]);
    assert.match(c.stdout, /WARN\s+factory: VM cache: no server on .*cache\.sock/);
  });

  test("a create takes the cached VM; the server refills; two cached VMs differ and keep the host's clock", async () => {
    await startServer();
    const first = status().cache;
    assert.ok(first);
    assert.match(serverLog(), /VM cache: keeping 1 VM\(s\) of template [0-9a-f]{16}/);
    assert.match(cli(["check"]).stdout, /INFO\s+factory: VM cache on .*cache\.sock: 1 of 1 VMs ready/);
    // A second server on the same endpoint is refused in one line; the first one keeps serving.
    const second = cli(["factory", "init"]);
    assert.notEqual(second.code, 0);
    assert.match(second.stderr, /factory init: a VM cache server already serves .*cache\.sock/);
    assert.doesNotMatch(second.stderr, /\n\s+at /, "no stack trace");
    assert.equal(status().cache?.idle, 1);
    const outs: { bytes: string; guest: number; from: number; to: number; host: string; slotPid: number }[] =
      [];
    for (const n of [1, 2]) {
      // The second run waits for the refill: a ready VM that is not the first one.
      await until("the cache refilled", () => (status().cache?.idle ?? 0) === 1, 240_000, 500);
      const slot = status().cache?.slots.find((s) => s.state === "idle");
      assert.ok(slot);
      const id = `kca-run${n}-${SUFFIX}`;
      const b = bundle(id, cachedScript);
      const before = snapshotHost();
      const from = Date.now() / 1000;
      const r = cli(["run", "--bundle", b, id]);
      const to = Date.now() / 1000;
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /factory:/, "a ready VM was there: no warning");
      const [bytes, secs, host] = r.stdout.trim().split("\n");
      assert.match(bytes, /^[0-9a-f]{64}$/);
      outs.push({ bytes, guest: Number(secs), from, to, host, slotPid: slot.pid });
      assert.equal(host, id, "the cached VM's kernel hostname is its sandbox's");
      assertNoLeaks(before, { root, bundle: b, id });
      // The cached VM went with its sandbox: its supervisor, QEMU and directory.
      assert.ok(!alive(slot.pid), "the slot's supervisor ended with its sandbox");
      assert.ok(!existsSync(slot.dir), `${slot.dir} was removed`);
    }
    assert.notEqual(outs[0].slotPid, outs[1].slotPid);
    assert.notEqual(outs[0].bytes, outs[1].bytes, "two cached VMs must not share their CRNG state");
    for (const o of outs)
      assert.ok(
        o.guest >= Math.floor(o.from) - 1 && o.guest <= Math.ceil(o.to) + 1,
        `guest ${o.guest}, host ${o.from}..${o.to}`,
      );
    await until("the cache refilled", () => (status().cache?.idle ?? 0) === 1, 240_000, 500);
    assert.equal(status().cache?.served, 2);
  });

  test("kill -9 of a cached VM's QEMU: delete --force leaves nothing", async () => {
    await until("a cached VM ready", () => (status().cache?.idle ?? 0) === 1, 240_000, 500);
    const slot = status().cache?.slots.find((s) => s.state === "idle");
    assert.ok(slot);
    const id = `kca-kill-${SUFFIX}`;
    const b = bundle(id, "sleep 60");
    const before = snapshotHost();
    const c = createOnFiles(["--root", root, "--config", CONFIG], b, id, tmp.path, 120_000);
    assert.equal(c.code, 0, c.stderr);
    const log = readFileSync(sandboxPaths(root, id).log, "utf8");
    assert.match(log, /slot .*: serving sandbox/);
    const info = JSON.parse(readFileSync(sandboxPaths(root, id).info, "utf8")) as {
      vmPid: number;
      supervisorPid: number;
    };
    assert.equal(info.supervisorPid, slot.pid, "the sandbox's supervisor is the cached one");
    process.kill(info.vmPid, "SIGKILL");
    await until("QEMU gone", () => !alive(info.vmPid));
    const d = cli(["delete", "--force", id]);
    assert.equal(d.code, 0, d.stderr);
    assertNoLeaks(before, { root, bundle: b, id });
    assert.ok(!alive(slot.pid));
    assert.ok(!existsSync(slot.dir), `${slot.dir} was removed`);
  });

  test("a pod with a network interface: the cached VM refuses it, create boots a VM with the NIC", async () => {
    await until("a cached VM ready", () => (status().cache?.idle ?? 0) === 1, 240_000, 500);
    const slot = status().cache?.slots.find((s) => s.state === "idle");
    assert.ok(slot);
    // The pod's netns with eth0, one end of a veth pair whose peer is in a netns of its own.
    const ns = `kca-pod-${SUFFIX}`;
    const peer = `kca-peer-${SUFFIX}`;
    execFileSync("ip", ["netns", "add", ns]);
    execFileSync("ip", ["netns", "add", peer]);
    try {
      const inNs = (args: string[]) =>
        execFileSync("ip", ["netns", "exec", ns, ...args], { encoding: "utf8" });
      execFileSync("ip", [
        "link",
        "add",
        "kcapeer0",
        "netns",
        peer,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns,
      ]);
      inNs(["ip", "addr", "add", "10.217.0.2/24", "dev", "eth0"]);
      inNs(["ip", "link", "set", "eth0", "up"]);
      const id = `kca-nic-${SUFFIX}`;
      const b = shellBundle(join(tmp.path, id), "ip -o -4 addr show dev eth0", (spec) => {
        spec.linux = {
          ...spec.linux,
          namespaces: [
            ...(spec.linux?.namespaces ?? []).filter((n) => n.type !== "network"),
            { type: "network", path: `/run/netns/${ns}` },
          ],
        };
      });
      const before = snapshotHost();
      const r = cli(["run", "--bundle", b, id]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /eth0\s+inet 10\.217\.0\.2\/24/, "the container has the pod's interface");
      assert.match(r.stderr, /factory: VM cache: the pod has 1 network interface\(s\).*: starting a VM/);
      assertNoLeaks(before, { root, bundle: b, id, allowNetns: [ns, peer] });
      // The refusing slot undid its taps and stopped; the pod's netns is as the engine made it.
      const links = (JSON.parse(inNs(["ip", "-j", "link", "show"])) as { ifname: string }[]).map(
        (l) => l.ifname,
      );
      assert.deepEqual(links.sort(), ["eth0", "lo"]);
      await until("the refusing slot gone", () => !alive(slot.pid) && !existsSync(slot.dir), 30_000, 100);
    } finally {
      for (const n of [ns, peer]) spawnSync("ip", ["netns", "del", n]);
    }
  });

  test("kill -9 of the server: idle VMs stop, a served sandbox lives on, factory destroy leaves nothing", async () => {
    await until("a cached VM ready", () => (status().cache?.idle ?? 0) === 1, 240_000, 500);
    const id = `kca-srv-${SUFFIX}`;
    const b = bundle(id, "sleep 60");
    const before = snapshotHost();
    const c = createOnFiles(["--root", root, "--config", CONFIG], b, id, tmp.path, 120_000);
    assert.equal(c.code, 0, c.stderr);
    // The refill has started (or finished): kill the server in the middle of it.
    server?.kill("SIGKILL");
    await until("the server gone", () => server?.exitCode !== null || server?.signalCode !== null);
    // Idle and starting slots see their link to the server end and stop; the served one is not idle.
    const served = JSON.parse(readFileSync(sandboxPaths(root, id).info, "utf8")) as {
      vmPid: number;
      supervisorPid: number;
    };
    const own = [`${served.vmPid}:`, `${served.supervisorPid}:`];
    await until(
      "only the served sandbox's processes left",
      () => cacheProcesses().every((p) => own.some((o) => p.startsWith(o))),
      60_000,
      200,
    );
    const e = cli(["exec", id, "echo", "still-here"]);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /still-here/);
    const d = cli(["delete", "--force", id]);
    assert.equal(d.code, 0, d.stderr);
    assertNoLeaks(before, { root, bundle: b, id });
    const r = cli(["factory", "destroy"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /removed 1 template\(s\)/);
    assert.deepEqual(cacheProcesses(), []);
    assert.deepEqual(slotDirs(), []);
    assert.deepEqual(readdirSync(templates), []);
    assert.ok(!existsSync(endpoint), "the dead server's socket is removed");
  });
});
