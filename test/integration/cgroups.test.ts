// The cgroup managers on this machine's real hierarchies: v1 controllers (hybrid layout) and the cgroup2
// mount at /sys/fs/cgroup/unified (real v2, only hugetlb available, which is enough for directories,
// cgroup.procs, cgroup.freeze and hugetlb). Limits are read back from the kernel's files, freezing is
// observed on a live process, and every directory made is gone at the end.
// Host features vary between machines of this kind (test/probes.ts): blkio weights need CFQ/BFQ, huge
// page limits need hugetlb. Where a feature is missing the test asserts kata-ts's one-line refusal;
// where a whole layout is missing (no hybrid hierarchy, no cgroup2 mount) it skips with the finding.
// Each test destroys its cgroups in \`finally\`, so one failure cannot leave a cgroup for the next.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  type CgroupManager,
  cgroupManagerFor,
  cgroupManagerFromState,
  runcStatsData,
} from "../../src/engine/cgroups";
import { tempDir } from "../helpers";
import { blkioWeight, hugepages2M, hugetlbHybrid, hugetlbV2, hybridCgroups, skipUnless } from "../probes";

const BASE = `/kata-ts-itest-${process.pid}`;
const UNIFIED = "/sys/fs/cgroup/unified";
const tmp = tempDir("kata-ts-cgint-");
const children: ChildProcess[] = [];
const managers: CgroupManager[] = [];
const HYBRID = hybridCgroups();
const V2 = hugetlbV2(UNIFIED);
const BLKIO_WEIGHT = blkioWeight();
const HUGETLB = hugetlbHybrid();
const PAGES_2M = hugepages2M();
const unifiedSubtree = V2.ok ? readFileSync(join(UNIFIED, "cgroup.subtree_control"), "utf8").trim() : "";

after(async () => {
  for (const c of children) c.kill("SIGKILL");
  await sleep(100);
  for (const m of managers) {
    try {
      m.destroy();
    } catch {}
  }
  // Leave the host's cgroup2 root as we found it.
  if (V2.ok && !unifiedSubtree.split(/\s+/).includes("hugetlb")) {
    try {
      writeFileSync(join(UNIFIED, "cgroup.subtree_control"), "-hugetlb");
    } catch {}
  }
  tmp.cleanup();
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function track(m: CgroupManager): CgroupManager {
  managers.push(m);
  return m;
}

/** Runs `fn` with a fresh manager and destroys it afterwards, whatever `fn` did. */
async function withManager(m: CgroupManager, fn: (m: CgroupManager) => Promise<void> | void): Promise<void> {
  track(m);
  try {
    await fn(m);
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await Promise.all(children.map(exited));
    try {
      m.destroy();
    } catch {}
  }
}

function run(args: string[]): ChildProcess {
  const c = spawn(args[0]!, args.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
  children.push(c);
  return c;
}

/** A process that bumps a counter file every 20 ms: it stops counting exactly when frozen. */
function counter(file: string): ChildProcess {
  // Written with a rename so a reader never sees the file truncated mid-write (it would read 0).
  return run([
    "/bin/sh",
    "-c",
    `i=0; while :; do i=$((i+1)); echo $i > ${file}.tmp; mv ${file}.tmp ${file}; sleep 0.02; done`,
  ]);
}

const readNum = (p: string) => Number(readFileSync(p, "utf8").trim() || "0");

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined; // exited meanwhile
  }
}

/** Polls (a loaded CI machine may take a while to run the thawed shell) until the counter passes n. */
async function movesPast(file: string, n: number, timeoutMs = 5000): Promise<boolean> {
  for (const end = Date.now() + timeoutMs; Date.now() < end; await sleep(50))
    if (readNum(file) > n) return true;
  return false;
}
const cg = (m: CgroupManager, c: string, f: string) => readFileSync(join(m.paths[c]!, f), "utf8").trim();

function exited(c: ChildProcess): Promise<void> {
  return c.exitCode !== null || c.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => c.once("exit", () => r()));
}

describe("cgroup v1 (hybrid) on the real hierarchy", { skip: skipUnless(HYBRID) }, () => {
  test("create, apply a real process, set limits and read them back, stats, destroy", () =>
    withManager(cgroupManagerFor({ id: "c1", cgroupsPath: `${BASE}/c1` }), async (m) => {
      assert.equal(m.mode, "hybrid");
      m.create();
      for (const p of Object.values(m.paths)) assert.ok(existsSync(p), p);
      assert.notEqual(cg(m, "cpuset", "cpuset.cpus"), "", "cpuset initialised from the parent");
      const sl = run(["sleep", "60"]);
      m.apply(sl.pid!);
      assert.match(readFileSync(`/proc/${sl.pid}/cgroup`, "utf8"), new RegExp(`:memory:${BASE}/c1\\n`));
      assert.match(readFileSync(`/proc/${sl.pid}/cgroup`, "utf8"), new RegExp(`0::${BASE}/c1\\n`));
      m.set({
        memory: { limit: 64 << 20, swap: 128 << 20, reservation: 32 << 20 },
        pids: { limit: 20 },
        cpu: { shares: 512, quota: 20000, period: 100000, cpus: "0" },
      });
      assert.equal(cg(m, "memory", "memory.limit_in_bytes"), String(64 << 20));
      assert.equal(cg(m, "memory", "memory.memsw.limit_in_bytes"), String(128 << 20));
      assert.equal(cg(m, "memory", "memory.soft_limit_in_bytes"), String(32 << 20));
      assert.equal(cg(m, "pids", "pids.max"), "20");
      assert.equal(cg(m, "cpu", "cpu.shares"), "512");
      assert.equal(cg(m, "cpu", "cpu.cfs_quota_us"), "20000");
      assert.equal(cg(m, "cpuset", "cpuset.cpus"), "0");
      // Lowering and raising memory+swap: the kernel rejects a wrong write order with EINVAL.
      m.update({ memory: { limit: 16 << 20, swap: 32 << 20 } });
      assert.equal(cg(m, "memory", "memory.memsw.limit_in_bytes"), String(32 << 20));
      m.update({ memory: { limit: 512 << 20, swap: 1024 << 20 } });
      assert.equal(cg(m, "memory", "memory.limit_in_bytes"), String(512 << 20));
      assert.deepEqual(m.pids(), [sl.pid]);
      // biome-ignore lint/suspicious/noExplicitAny: parsed JSON checked field by field
      const d = runcStatsData(m.stats()) as any;
      assert.equal(d.pids.current, 1);
      assert.equal(d.pids.limit, 20);
      assert.equal(d.memory.usage.limit, 512 << 20);
      assert.equal(d.memory.swap.limit, 1024 << 20);
      assert.ok(Array.isArray(d.cpu.usage.percpu));
      sl.kill("SIGKILL");
      await exited(sl);
      const saved = JSON.parse(JSON.stringify(m.save()));
      cgroupManagerFromState(saved).destroy();
      for (const p of Object.values(m.paths)) assert.equal(existsSync(p), false, `${p} left behind`);
      for (const p of saved.created as string[]) assert.equal(existsSync(p), false, `${p} left behind`);
    }));

  test("freeze stops a live process, thaw resumes it", () =>
    withManager(cgroupManagerFor({ id: "fz", cgroupsPath: `${BASE}/fz` }), async (m) => {
      m.create();
      const file = join(tmp.path, "count-v1");
      const c = counter(file);
      m.apply(c.pid!);
      await sleep(150);
      m.freeze();
      assert.equal(cg(m, "freezer", "freezer.state"), "FROZEN");
      assert.equal(m.frozen(), true);
      const a = readNum(file);
      await sleep(300);
      assert.equal(readNum(file), a, "counter moved while frozen");
      m.thaw();
      assert.equal(m.frozen(), false);
      assert.ok(await movesPast(file, a), "counter did not move after thaw");
      c.kill("SIGKILL");
      await exited(c);
      m.destroy();
      assert.equal(existsSync(m.paths.freezer!), false);
    }));

  test("pids limit and device rules are enforced on processes inside", () =>
    withManager(cgroupManagerFor({ id: "lim", cgroupsPath: `${BASE}/lim` }), async (m) => {
      m.create();
      // The shell waits for a line on stdin, so it is inside the cgroup before it forks or opens devices.
      const sh = run([
        "/bin/sh",
        "-c",
        "read x; (sleep 5 & sleep 5 & sleep 5 & wait) 2>/dev/null; echo forks=$?; head -c1 /dev/zero >/dev/null && echo zero=ok; head -c1 /dev/kmsg >/dev/null 2>&1 || echo kmsg=denied",
      ]);
      let out = "";
      sh.stdout!.on("data", (b) => {
        out += b;
      });
      m.apply(sh.pid!);
      m.set({ pids: { limit: 2 }, devices: [{ allow: false, access: "rwm" }] });
      assert.match(cg(m, "devices", "devices.list"), /^c 1:5 rwm$/m);
      assert.doesNotMatch(cg(m, "devices", "devices.list"), /^a /m);
      sh.stdin!.end("go\n");
      await exited(sh);
      assert.match(out, /zero=ok/);
      assert.match(out, /kmsg=denied/);
      assert.ok(Number(cg(m, "pids", "pids.events").split(/\s+/)[1]) > 0, "pids.events max counter");
      m.destroy();
    }));

  // Probe-dependent: with hugetlb (v1, or the hybrid layout's cgroup2 tree) the limit lands in the
  // kernel's file; without it kata-ts refuses in one line.
  test(`hugepage limits go to hugetlb (v1, else the hybrid layout's cgroup2 tree) — probe: ${HUGETLB.ok ? HUGETLB.detail : HUGETLB.reason}`, (t) =>
    withManager(cgroupManagerFor({ id: "hp", cgroupsPath: `${BASE}/hp` }), (m) => {
      m.create();
      const set = () => m.set({ hugepageLimits: [{ pageSize: "2MB", limit: 4 << 20 }] });
      if (!HUGETLB.ok) {
        assert.throws(set, {
          message:
            "hugepage limits requested but the hugetlb cgroup controller is not available on this host",
        });
        return;
      }
      if (!PAGES_2M.ok) return t.skip(PAGES_2M.reason);
      set();
      const file = m.paths.hugetlb
        ? join(m.paths.hugetlb, "hugetlb.2MB.limit_in_bytes")
        : join(m.paths.unified!, "hugetlb.2MB.max");
      assert.equal(readFileSync(file, "utf8").trim(), String(4 << 20));
      m.destroy();
      for (const p of Object.values(m.paths)) assert.equal(existsSync(p), false, `${p} left behind`);
    }));

  // Probe-dependent: CFQ's blkio.weight or BFQ's blkio.bfq.weight gets the weight; a host with neither
  // (a kernel built without BFQ: queues offer none mq-deadline kyber) gets kata-ts's one-line refusal,
  // and the refusal leaves the cgroup as it was.
  test(`blkio weight goes to the scheduler's weight file — probe: ${BLKIO_WEIGHT.ok ? BLKIO_WEIGHT.detail : BLKIO_WEIGHT.reason}`, () =>
    withManager(cgroupManagerFor({ id: "bw", cgroupsPath: `${BASE}/bw` }), (m) => {
      m.create();
      const set = () => m.set({ blockIO: { weight: 300 } });
      if (!BLKIO_WEIGHT.ok) {
        assert.throws(set, {
          message:
            "blkio weight requested but neither blkio.weight nor blkio.bfq.weight exists (no CFQ/BFQ I/O scheduler on this host)",
        });
        assert.ok(existsSync(m.paths.blkio!), "the cgroup is still there for destroy");
        return;
      }
      set();
      assert.equal(cg(m, "blkio", BLKIO_WEIGHT.detail), "300");
    }));
});

describe("cgroup v2 on the real cgroup2 mount (/sys/fs/cgroup/unified)", { skip: skipUnless(V2) }, () => {
  test("create, cgroup.procs, freeze/thaw a live process, hugetlb, pids, destroy", () =>
    withManager(cgroupManagerFor({ id: "v2", cgroupsPath: `${BASE}/v2`, root: UNIFIED }), async (m) => {
      assert.equal(m.mode, "v2");
      assert.deepEqual(m.paths, { unified: `${UNIFIED}${BASE}/v2` });
      m.create();
      assert.match(readFileSync(join(UNIFIED, BASE, "cgroup.subtree_control"), "utf8"), /hugetlb/);
      const file = join(tmp.path, "count-v2");
      const c = counter(file);
      m.apply(c.pid!);
      // The counter's shell and, at times, the child it just forked (mv, sleep): nothing else.
      const pids = m.pids();
      assert.ok(pids.includes(c.pid!), `${c.pid} in ${pids}`);
      for (const p of pids)
        if (p !== c.pid) assert.equal(parentOf(p), c.pid, `${p} is not the counter's child`);
      m.set({ hugepageLimits: [{ pageSize: "2MB", limit: 2 << 20 }] });
      assert.equal(readFileSync(join(m.paths.unified!, "hugetlb.2MB.max"), "utf8").trim(), String(2 << 20));
      await sleep(150);
      m.freeze();
      assert.equal(m.frozen(), true);
      assert.match(readFileSync(join(m.paths.unified!, "cgroup.events"), "utf8"), /^frozen 1$/m);
      const a = readNum(file);
      await sleep(300);
      assert.equal(readNum(file), a, "counter moved while frozen");
      m.thaw();
      assert.ok(await movesPast(file, a), "counter did not move after thaw");
      const s = m.stats();
      assert.ok(Number(s.cpu.usage.total) > 0, "cpu.stat usage");
      assert.ok("2MB" in s.hugetlb);
      c.kill("SIGKILL");
      await exited(c);
      m.destroy();
      assert.equal(existsSync(join(UNIFIED, BASE)), false);
    }));
});
