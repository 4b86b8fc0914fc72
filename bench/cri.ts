// The CRI timings of bench/cri.sh (see there). usage: node --import tsx bench/cri.ts [-n RUNS] [HANDLER...]
import { mkdtempSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import {
  criPrerequisites,
  DEFAULT_SHIM_DIR,
  findKataShim,
  HANDLERS,
  startCriContainerd,
} from "../test/support/cri";
import { takeRuns } from "./args";

const argv = process.argv.slice(2);
const RUNS = takeRuns(argv, 5);
const handlers = argv.length ? argv : ["runc"];
const SHIM_DIR = process.env.KATA_TS_CRI_SHIM_DIR || DEFAULT_SHIM_DIR;
// A kata-ts pod boots a VM: deadlines are generous.
const CALL = { timeoutMs: 300_000 };

const COLUMNS = ["RunPodSandbox", "1st create+start", "2nd create+start", "stop+remove pod"] as const;
type Column = (typeof COLUMNS)[number];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : Math.round((s[m - 1]! + s[m]!) / 2);
}

async function main(): Promise<number> {
  for (const h of handlers)
    if (!(HANDLERS as readonly string[]).includes(h))
      throw new Error(`unknown handler ${h} (${HANDLERS.join(", ")})`);
  const pre = criPrerequisites();
  if (!pre.ok) throw new Error(pre.reason);
  const shim = findKataShim(SHIM_DIR);
  const runnable = handlers.filter((h) => h !== "kata-ts" || shim.ok);
  if (!shim.ok && handlers.includes("kata-ts")) console.log(`kata-ts: skipped: ${shim.reason}`);
  if (runnable.length === 0) return 0;

  const base = mkdtempSync(join(tmpdir(), "kata-ts-bench-cri-"));
  let t = performance.now();
  const cri = await startCriContainerd(base, {
    shimDir: SHIM_DIR,
    kataConfigPath: process.env.KATA_TS_CRI_KATA_CONFIG || undefined,
  });
  console.log(
    `containerd ${(await cri.client.version()).runtimeVersion} up with images in ${Math.round(performance.now() - t)} ms; ` +
      `${RUNS} runs per handler; load average ${loadavg()
        .map((x) => x.toFixed(1))
        .join(" ")}`,
  );
  const results = new Map<string, Record<Column, number[]>>();
  const failures: string[] = [];
  try {
    for (const handler of runnable) {
      const r = Object.fromEntries(COLUMNS.map((c) => [c, [] as number[]])) as Record<Column, number[]>;
      results.set(handler, r);
      for (let i = 0; i < RUNS; i++) {
        const lap = (c: Column) => {
          const now = performance.now();
          r[c].push(Math.round(now - t));
          t = now;
        };
        try {
          const pod = cri.podConfig(`bench-${handler}`);
          t = performance.now();
          const podId = await cri.client.runPodSandbox(pod, handler, CALL);
          lap("RunPodSandbox");
          for (const name of ["first", "second"]) {
            const id = await cri.client.createContainer(
              podId,
              cri.containerConfig(name, ["sleep", "1000"]),
              pod,
              CALL,
            );
            await cri.client.startContainer(id, CALL);
            lap(name === "first" ? "1st create+start" : "2nd create+start");
          }
          await cri.client.stopPodSandbox(podId, CALL);
          await cri.client.removePodSandbox(podId, CALL);
          lap("stop+remove pod");
        } catch (e) {
          failures.push(`${handler} run ${i + 1}: ${(e as Error).message}`);
          break; // the rest of this handler's runs would fail the same way
        }
      }
    }
  } finally {
    t = performance.now();
    await cri.stop();
    console.log(`teardown ${Math.round(performance.now() - t)} ms, nothing left behind`);
  }

  const head = ["handler", ...COLUMNS.map((c) => `${c} (ms)`)];
  const rows = [...results].map(([h, r]) => [
    `${h} (${r["stop+remove pod"].length} runs)`,
    ...COLUMNS.map((c) =>
      r[c].length ? `${median(r[c])} (${Math.min(...r[c])}-${Math.max(...r[c])})` : "-",
    ),
  ]);
  console.log("\nmedian (min-max) per handler:\n");
  console.log(`| ${head.join(" | ")} |\n|${head.map(() => "---").join("|")}|`);
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
  for (const f of failures) console.log(`FAIL ${f}`);
  return failures.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`bench/cri: ${(e as Error).message}`);
    process.exit(1);
  },
);
