// Load and kill points, full size (issue 9 item 5). Run through bench/load.sh, which builds first:
//   host   200 create/start/delete --force cycles, 16 at a time, hypervisor = "none", one --root
//   vm     10 VM sandboxes at once (create/start/exec/delete --force), real QEMU, the same --root
//   kill   kill -9 of the CLI, the supervisor, QEMU or the stand-in at seeded random points of create,
//          start, exec and delete; then delete --force must leave nothing
// Prints total time, p50/p99 per verb and every failure; exits 1 when anything failed.
//
// usage: node --import tsx bench/load.ts [host] [vm] [kill] [--cycles N] [--width N] [--vms N]
//        [--seed N] [--kills N] [--point VERB/VICTIM] [--kernel PATH] [--image PATH]
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeBundle } from "../test/conformance/bundle";
import {
  formatTimes,
  type KillOutcome,
  type KillVerb,
  loadClis,
  pickKillPoints,
  runKillPoint,
  runLoad,
  type Victim,
} from "../test/load";

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv.splice(i, 2)[1]! : dflt;
};
const CYCLES = Number(opt("--cycles", "200"));
const WIDTH = Number(opt("--width", "16"));
const VMS = Number(opt("--vms", "10"));
const SEED = Number(opt("--seed", String(Date.now() % 100000)));
const KILLS = Number(opt("--kills", "0"));
// --point start/supervisor: only that combination in the host-agent kill points (to chase one failure).
const [POINT_VERB, POINT_VICTIM] = opt("--point", "/").split("/");
const KERNEL = opt("--kernel", "/var/cache/kata-ts/vmlinux");
const IMAGE = opt("--image", "/var/cache/kata-ts/kata-ts-guest.img");
const modes = argv.length ? argv : ["host", "vm", "kill"];

const work = mkdtempSync(join(tmpdir(), "kata-ts-load-"));
const clis = loadClis(work, { kernel: KERNEL, image: IMAGE });
const haveVm = existsSync(KERNEL) && existsSync(IMAGE) && existsSync("/usr/bin/qemu-system-x86_64");
let failed = 0;

function report(title: string, r: Awaited<ReturnType<typeof runLoad>>): void {
  console.log(`\n== ${title}`);
  console.log(
    `total ${(r.totalMs / 1000).toFixed(1)} s, ${r.lists} list samples checked, ${r.failures.length} failures`,
  );
  for (const l of formatTimes(r)) console.log(l);
  for (const f of r.failures.slice(0, 50)) console.log(`FAIL ${f}`);
  failed += r.failures.length;
}

function reportKills(title: string, outs: KillOutcome[], ms: number): void {
  console.log(`\n== ${title}: ${outs.length} kill points in ${(ms / 1000).toFixed(1)} s`);
  for (const o of outs) {
    const p = o.point;
    const what = `${p.verb.padEnd(6)} ${p.victim.padEnd(10)} +${String(p.delayMs).padStart(4)} ms`;
    const status = o.problems.length ? `FAIL ${o.problems.join("; ")}` : "ok";
    const kill = !o.killed
      ? "victim absent"
      : o.during
        ? `killed ${o.killedAtMs} ms in`
        : "killed after the verb";
    console.log(`${what}  ${kill.padEnd(18)} verb exit ${String(o.verbCode).padStart(3)}  ${status}`);
    failed += o.problems.length ? 1 : 0;
  }
}

async function main(): Promise<void> {
  const bundle = makeBundle({ process: { args: ["/bin/sleep", "100000"] } }, { parent: work });
  console.log(
    `kata-ts load: ${modes.join(", ")}; work ${work}; load average ${require("node:os")
      .loadavg()
      .map((x: number) => x.toFixed(1))
      .join(" ")}`,
  );
  if (modes.includes("host")) {
    const cli = clis.host;
    report(
      `host mode: ${CYCLES} create/start/delete --force cycles, ${WIDTH} at a time`,
      await runLoad({
        cli,
        bundle: bundle.dir,
        cycles: CYCLES,
        width: WIDTH,
        prefix: `kl${process.pid}h`,
        work,
      }),
    );
  }
  if (modes.includes("vm")) {
    if (!haveVm) console.log(`\n== vm mode: skipped: ${KERNEL}, ${IMAGE} or QEMU missing`);
    else {
      const cli = clis.vm;
      report(
        `vm mode: ${VMS} sandboxes at once (create/start/exec/delete --force)`,
        await runLoad({
          cli,
          bundle: bundle.dir,
          cycles: VMS,
          width: VMS,
          exec: true,
          prefix: `kl${process.pid}v`,
          work,
          timeoutMs: 300_000,
          listEveryMs: 500,
        }),
      );
    }
  }
  if (modes.includes("kill")) {
    const verbs: KillVerb[] = POINT_VERB ? [POINT_VERB as KillVerb] : ["create", "start", "exec", "delete"];
    console.log(`\nkill points: seed ${SEED} (rerun with --seed ${SEED})`);
    // VM mode with the supervisor's host agent: CLI, supervisor and stand-in, no boot time.
    const hostAgent = clis.hostAgent;
    const victims: Victim[] = POINT_VICTIM ? [POINT_VICTIM as Victim] : ["cli", "supervisor", "standin"];
    let t = performance.now();
    let outs: KillOutcome[] = [];
    for (const [i, p] of pickKillPoints(SEED, verbs, victims, 400, KILLS || undefined).entries())
      outs.push(await runKillPoint(hostAgent, bundle.dir, `kk${process.pid}a${i}`, p, work));
    reportKills("VM mode, host agent (cli, supervisor, stand-in)", outs, performance.now() - t);
    if (POINT_VERB) return bundle.cleanup();
    // Host mode: the CLI is the only runtime process.
    const host = clis.host;
    t = performance.now();
    outs = [];
    for (const [i, p] of pickKillPoints(SEED + 1, verbs, ["cli"], 300).entries())
      outs.push(await runKillPoint(host, bundle.dir, `kk${process.pid}h${i}`, p, work));
    reportKills("host mode (cli)", outs, performance.now() - t);
    // Real QEMU: every verb with QEMU and the supervisor killed; later in create (the boot takes seconds).
    if (!haveVm) console.log(`\n== real QEMU kill points: skipped: ${KERNEL}, ${IMAGE} or QEMU missing`);
    else {
      const vm = clis.vm;
      t = performance.now();
      outs = [];
      for (const [i, p] of pickKillPoints(
        SEED + 2,
        verbs,
        ["qemu", "supervisor", "standin", "cli"],
        3000,
      ).entries())
        outs.push(
          await runKillPoint(vm, bundle.dir, `kk${process.pid}q${i}`, p, work, { timeoutMs: 300_000 }),
        );
      reportKills("VM mode, real QEMU", outs, performance.now() - t);
    }
  }
  bundle.cleanup();
}

main()
  .catch((e) => {
    console.error(`load: ${(e as Error).stack}`);
    failed++;
  })
  .finally(() => {
    rmSync(work, { recursive: true, force: true });
    console.log(failed ? `\n${failed} failures` : "\nno failures");
    process.exit(failed ? 1 : 0);
  });
