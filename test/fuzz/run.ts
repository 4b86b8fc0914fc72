// The fuzz run: N cases from a seed (fast-check), each through the real CLI in a throw-away worker, with
// every invariant checked. Failures are written as regression-case JSON files (see regressions/).
//   node --import tsx test/fuzz/run.ts --cases 5000 --seed 1 --mode host [--config F] [--out DIR]
//   ... --replay FILE.json        one saved case (a regression or a failure file)
//   ... --shrink INDEX            let fast-check shrink case INDEX of that seed to a minimal failing one
// `scripts/fuzz.mjs` is the wrapper (it also builds the VM-mode configuration).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { loadConfig } from "../../src/config/config";
import { REPO, writeVmTestConfig } from "../helpers";
import { type CaseResult, FuzzDriver } from "./driver";
import { caseArb, type FuzzCase, vmMutationsArb } from "./gen";

export interface RunOptions {
  cases: number;
  seed: number;
  mode: "host" | "vm";
  config?: string;
  /** called after every case */
  onCase?: (r: CaseResult) => void;
  /** restrict the generated cases (VM mode: cheaper verb sequences) */
  filter?: (c: FuzzCase) => FuzzCase;
}

export interface RunSummary {
  cases: number;
  failures: CaseResult[];
  ms: number;
  calls: number;
  /** cases whose create (or run --detach) succeeded: the generator must reach past validation */
  created: number;
  restarts: number;
}

/** A fast-check arbitrary of cases for a mode (VM mode: fewer verbs per case, each must reach the VM). */
export function modeArb(mode: "host" | "vm"): fc.Arbitrary<FuzzCase> {
  if (mode === "host") return caseArb();
  return fc.tuple(caseArb(), vmMutationsArb).map(([c, spec]) => vmShape({ ...c, spec, id: "kfz-@TOKEN@" }));
}

/**
 * VM cases keep create (the VM boots there) and at most one more verb before delete: a TCG boot costs
 * seconds, the verbs after it add little coverage that host mode does not have.
 */
export function vmShape(c: FuzzCase): FuzzCase {
  const rest = c.verbs.filter((v) => v !== "create" && v !== "run-detach").slice(0, 1);
  // Only flags that keep create valid (host mode fuzzes the others): the case must reach the VM.
  const keep = (flags: string[], ok: RegExp) => flags.filter((f) => ok.test(f));
  return {
    ...c,
    globals: keep(c.globals, /^--debug$/),
    createFlags: keep(c.createFlags, /^--no-(pivot|new-keyring)$/),
    verbs: ["create", ...rest],
  };
}

export async function fuzz(opts: RunOptions): Promise<RunSummary> {
  const runId = `${opts.seed.toString(36)}${Date.now().toString(36).slice(-4)}`;
  const driver = new FuzzDriver({ mode: opts.mode, config: opts.config, runId });
  const failures: CaseResult[] = [];
  let index = 0;
  let calls = 0;
  let created = 0;
  const t0 = Date.now();
  try {
    // Every case runs (the property records failures instead of stopping at the first), so one run
    // finds every defect its cases reach; --shrink then minimises one of them.
    await fc.check(
      fc.asyncProperty(modeArb(opts.mode), async (c) => {
        const r = await driver.runCase(c, index++);
        calls += r.steps.length;
        if (r.steps.some((x) => (x.verb === "create" || x.verb === "run-detach") && x.code === 0)) created++;
        if (r.violations.length) failures.push(r);
        opts.onCase?.(r);
        return true;
      }),
      { seed: opts.seed, numRuns: opts.cases, endOnFailure: true },
    );
  } finally {
    driver.close();
  }
  return { cases: index, failures, ms: Date.now() - t0, calls, created, restarts: driver.restarts };
}

/** Runs saved cases (regressions) and returns their results. */
export async function replay(cases: FuzzCase[], mode: "host" | "vm", config?: string): Promise<CaseResult[]> {
  const driver = new FuzzDriver({ mode, config, runId: `r${Date.now().toString(36).slice(-5)}` });
  const out: CaseResult[] = [];
  try {
    for (const [i, c] of cases.entries()) out.push(await driver.runCase(c, i));
  } finally {
    driver.close();
  }
  return out;
}

/** Shrinks case `index` of `seed` to a smaller case that still breaks an invariant. */
async function shrink(
  seed: number,
  index: number,
  mode: "host" | "vm",
  config?: string,
): Promise<FuzzCase | undefined> {
  const driver = new FuzzDriver({ mode, config, runId: `s${seed}` });
  let n = 0;
  try {
    const r = await fc.check(
      fc.asyncProperty(modeArb(mode), async (c) => {
        const res = await driver.runCase(c, n++);
        if (res.violations.length) console.log(`  still fails (${res.violations[0].slice(0, 120)})`);
        return res.violations.length === 0;
      }),
      { seed, path: String(index), numRuns: 1 },
    );
    return r.counterexample?.[0];
  } finally {
    driver.close();
  }
}

/** The guest kernel of the shipped configuration. */
export function vmKernel(): string {
  return loadConfig({ explicitPath: join(REPO, "config", "configuration.toml") }).config.hypervisor.kernel;
}

/** VM mode: a configuration with the guest image of this tree (cached, content-addressed, under /var/tmp). */
export async function vmConfig(dir = "/var/tmp/kata-fuzz-vm"): Promise<string> {
  mkdirSync(dir, { recursive: true });
  return writeVmTestConfig(dir, vmKernel());
}

function describe(r: CaseResult): object {
  return {
    name: `seed-case-${r.index}`,
    violations: r.violations,
    steps: r.steps.map((s) => ({ args: s.args.join(" "), code: s.code, stderr: s.stderr.slice(0, 500) })),
    case: r.case,
  };
}

async function main(): Promise<void> {
  const arg = (name: string, def?: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : def;
  };
  const mode = (arg("mode", "host") as "host" | "vm") ?? "host";
  const seed = Number(arg("seed", "1"));
  const config = arg("config") ?? (mode === "vm" ? await vmConfig() : undefined);
  const out = arg("out", `/tmp/kata-fuzz-failures-${mode}-${seed}`)!;
  const replayFile = arg("replay");
  const shrinkIndex = arg("shrink");
  if (replayFile) {
    const j = JSON.parse(readFileSync(replayFile, "utf8"));
    const [r] = await replay([j.case], mode, config);
    console.log(JSON.stringify(describe(r), null, 1));
    process.exitCode = r.violations.length ? 1 : 0;
    return;
  }
  if (shrinkIndex !== undefined) {
    const c = await shrink(seed, Number(shrinkIndex), mode, config);
    console.log(JSON.stringify(c ?? "case passes: nothing to shrink", null, 1));
    return;
  }
  const cases = Number(arg("cases", "100"));
  const verbose = process.argv.includes("--verbose");
  let done = 0;
  let failing = 0;
  const s = await fuzz({
    cases,
    seed,
    mode,
    config,
    onCase: (r) => {
      done++;
      if (r.violations.length) failing++;
      if (verbose || r.violations.length)
        console.log(
          `case ${r.index} (${r.ms} ms): ${r.steps.map((x) => `${x.verb}=${x.code}`).join(" ")}${r.violations.map((v) => `\n  ! ${v}`).join("")}`,
        );
      else if (done % 100 === 0) console.log(`${done} cases, ${failing} failing so far`);
    },
  });
  mkdirSync(out, { recursive: true });
  for (const f of s.failures)
    writeFileSync(join(out, `case-${f.index}.json`), JSON.stringify(describe(f), null, 1));
  console.log(
    `fuzz ${mode}: ${s.cases} cases (${s.created} created a container), ${s.calls} CLI calls, ${s.failures.length} failing, ${Math.round(s.ms / 1000)} s, worker restarts ${s.restarts}, seed ${seed}${s.failures.length ? `, failures in ${out}` : ""}`,
  );
  process.exitCode = s.failures.length ? 1 : 0;
}

if (require.main === module) void main();
