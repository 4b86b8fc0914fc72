// Load and kill points, CI short forms (the full runs: bench/load.sh). On one --root:
//   - 40 host-mode create/start/delete --force cycles, 8 at a time, `list` sampled all along and
//     checked against what existed; every call succeeds, no lock complaint, nothing left;
//   - 3 VM sandboxes at once (real QEMU; probe: guest kernel, QEMU);
//   - kill -9 of the CLI, the supervisor or the stand-in (VM mode, host agent), of the CLI (host mode)
//     and of QEMU (real VMs) at seeded random points of create, start, exec and delete, then
//     `delete --force`: exit 0, not listed, nothing left (leak scanner).
// KATA_TS_LOAD_SEED picks other kill points (the seed is printed); KATA_TS_LOAD_CYCLES/WIDTH resize.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type Bundle, makeBundle } from "../conformance/bundle";
import { tempDir, writeVmTestConfig } from "../helpers";
import {
  type Cli,
  call,
  formatTimes,
  type KillOutcome,
  type KillVerb,
  killCreateAtReady,
  loadClis,
  pickKillPoints,
  runKillPoint,
  runLoad,
} from "../load";
import { all, executable, skipUnless } from "../probes";

const CYCLES = Number(process.env.KATA_TS_LOAD_CYCLES || 40);
const WIDTH = Number(process.env.KATA_TS_LOAD_WIDTH || 8);
// A fixed seed: CI must judge the same kill points every run; bench/load.sh varies them.
const SEED = Number(process.env.KATA_TS_LOAD_SEED || 20791);
const KERNEL = "/var/cache/kata-ts/vmlinux";
const VM = all(
  executable("/usr/bin/qemu-system-x86_64", "QEMU"),
  executable("/bin/busybox", "busybox-static"),
  existsSync(KERNEL) ? { ok: true, detail: KERNEL } : { ok: false, reason: `no guest kernel at ${KERNEL}` },
);
const VERBS: KillVerb[] = ["create", "start", "exec", "delete"];

const tmp = tempDir("kata-ts-load-");
const work = join(tmp.path, "work");
const clis = loadClis(tmp.path);
const { root, host, hostAgent } = clis;
let bundle: Bundle;

before(() => {
  mkdirSync(work);
  bundle = makeBundle({ process: { args: ["/bin/sleep", "100000"] } }, { parent: tmp.path });
});

after(async () => {
  // Whatever a failed test left: delete --force every container of the root, then the files.
  const cfgs = [host, hostAgent];
  for (const id of existsSync(root) ? readdirSync(root) : [])
    if (id !== "sandboxes") for (const c of cfgs) await call(c, ["delete", "--force", id]);
  tmp.cleanup();
});

function checkKills(t: { diagnostic: (m: string) => void }, outs: KillOutcome[]): void {
  for (const o of outs)
    t.diagnostic(
      `${o.point.verb} ${o.point.victim} +${o.point.delayMs} ms: ${!o.killed ? "victim absent" : o.during ? `killed ${o.killedAtMs} ms in` : "killed after the verb"}, verb exit ${o.verbCode}`,
    );
  const bad = outs.filter((o) => o.problems.length);
  assert.deepEqual(
    bad.map((o) => `${o.point.verb}/${o.point.victim}/+${o.point.delayMs}: ${o.problems.join("; ")}`),
    [],
    `seed ${SEED}`,
  );
  assert.ok(
    outs.some((o) => o.killed && o.during),
    "no kill landed while a verb ran",
  );
}

describe("load and kill points", () => {
  test(`host mode: ${CYCLES} create/start/delete cycles, ${WIDTH} at a time; list right at every sample`, async (t) => {
    const r = await runLoad({
      cli: host,
      bundle: bundle.dir,
      cycles: CYCLES,
      width: WIDTH,
      prefix: `kl${process.pid}h`,
      work,
    });
    t.diagnostic(`total ${(r.totalMs / 1000).toFixed(1)} s, ${r.lists} list samples`);
    for (const l of formatTimes(r)) t.diagnostic(l);
    assert.deepEqual(r.failures, []);
    assert.ok(r.lists > 0, "list was sampled during the run");
    assert.equal(r.times.create!.length, CYCLES);
  });

  test(`kill -9 of CLI, supervisor, stand-in at seeded points of every verb (VM mode, host agent; seed ${SEED})`, async (t) => {
    const outs: KillOutcome[] = [];
    for (const [i, p] of pickKillPoints(SEED, VERBS, ["cli", "supervisor", "standin"], 400).entries())
      outs.push(await runKillPoint(hostAgent, bundle.dir, `kk${process.pid}a${i}`, p, work));
    checkKills(t, outs);
  });

  test(`kill -9 of the CLI at seeded points of every verb (host mode; seed ${SEED})`, async (t) => {
    const outs: KillOutcome[] = [];
    for (const [i, p] of pickKillPoints(SEED + 1, VERBS, ["cli"], 300).entries())
      outs.push(await runKillPoint(host, bundle.dir, `kk${process.pid}h${i}`, p, work));
    checkKills(t, outs);
  });

  test("kill -9 of create's CLI the moment its init waits on the exec fifo, 6 times (host mode): nothing left", async (t) => {
    // The window CI once hit at a seeded point: the init ready, the record not yet naming it.
    let landed = 0;
    const problems: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await killCreateAtReady(host, bundle.dir, `kk${process.pid}r${i}`, work);
      if (r.during) landed++;
      problems.push(...r.problems.map((p) => `round ${i}: ${p}`));
    }
    t.diagnostic(`${landed}/6 kills landed while create ran`);
    assert.deepEqual(problems, []);
    assert.ok(landed > 0, "no kill landed while create ran");
  });

  describe("real QEMU", { skip: skipUnless(VM) }, () => {
    let vm: Cli | undefined;
    before(async () => {
      // The guest image of this tree (into the test's own cache), the machine's kernel.
      vm = { ...clis.vm, config: await writeVmTestConfig(join(tmp.path, "vm"), KERNEL) };
    });
    after(async () => {
      if (!vm) return;
      for (const id of existsSync(root) ? readdirSync(root) : [])
        if (id !== "sandboxes") await call(vm, ["delete", "--force", id]);
    });

    test("3 VM sandboxes at once: create/start/exec/delete --force all succeed, list right, nothing left", async (t) => {
      const r = await runLoad({
        cli: vm!,
        bundle: bundle.dir,
        cycles: 3,
        width: 3,
        exec: true,
        prefix: `kl${process.pid}v`,
        work,
        timeoutMs: 300_000,
        listEveryMs: 500,
      });
      t.diagnostic(`total ${(r.totalMs / 1000).toFixed(1)} s`);
      for (const l of formatTimes(r)) t.diagnostic(l);
      assert.deepEqual(r.failures, []);
    });

    test(`kill -9 of QEMU at two seeded points (seed ${SEED})`, async (t) => {
      const outs: KillOutcome[] = [];
      for (const [i, p] of pickKillPoints(SEED + 2, VERBS, ["qemu"], 2000, 2).entries())
        outs.push(
          await runKillPoint(vm!, bundle.dir, `kk${process.pid}q${i}`, p, work, { timeoutMs: 300_000 }),
        );
      checkKills(t, outs);
    });
  });
});
