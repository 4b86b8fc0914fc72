// The fuzzer's CI slice (the full runs are `node scripts/fuzz.mjs`, see test/fuzz/): seeded cases of
// mutated config.json, ids, exec process.json and CLI flag combinations through the real CLI, in host
// mode (300) and VM mode (20), each holding every invariant (test/fuzz/driver.ts, worker.ts, output.ts):
// one-line errors, nothing left after `delete --force`, the caller's root/cwd/mounts/namespaces and the
// host's files unchanged. Then every defect the fuzzer found, replayed as a named regression case.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { CaseResult } from "../fuzz/driver";
import type { FuzzCase } from "../fuzz/gen";
import { fuzz, type RunSummary, replay, vmConfig, vmKernel } from "../fuzz/run";

const SEED = Number(process.env.KATA_FUZZ_SEED ?? 20261204);
const HOST_CASES = Number(process.env.KATA_FUZZ_HOST_CASES ?? 300);
const VM_CASES = Number(process.env.KATA_FUZZ_VM_CASES ?? 20);
const REGRESSIONS = join(__dirname, "..", "fuzz", "regressions");

interface Regression {
  name: string;
  mode: "host" | "vm";
  /** "open": a defect not fixed yet (the test is a todo naming who has it) */
  status: "fixed" | "open";
  defect: string;
  case: FuzzCase;
}

const regressions: Regression[] = readdirSync(REGRESSIONS)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((f) => JSON.parse(readFileSync(join(REGRESSIONS, f), "utf8")));

const missing = ["/bin/busybox", "/usr/bin/unshare"].filter((f) => !existsSync(f));
const hostSkip = missing.length ? `missing ${missing.join(", ")}` : false;
const vmMissing = ["/usr/bin/qemu-system-x86_64", vmKernel()].filter((f) => !existsSync(f));
const vmSkip = hostSkip || (vmMissing.length ? `missing ${vmMissing.join(", ")} (scripts/setup.sh)` : false);

function report(failures: CaseResult[]): string {
  return failures
    .map(
      (f) =>
        `case ${f.index} (rerun: node scripts/fuzz.mjs --seed ${SEED} --cases ${f.index + 1} --mode ...):\n  ${f.violations.join("\n  ")}\n  ${f.steps.map((s) => `${s.args.slice(4).join(" ")} => ${s.code}`).join("\n  ")}\n  case: ${JSON.stringify(f.case)}`,
    )
    .join("\n\n");
}

function summary(s: RunSummary): string {
  return `${s.cases} cases, ${s.created} created a container, ${s.calls} CLI calls, ${Math.round(s.ms / 1000)} s, seed ${SEED}`;
}

function assertClean(results: CaseResult[]): void {
  const failures = results.filter((r) => r.violations.length > 0);
  assert.equal(
    failures.length,
    0,
    `${failures.length} fuzz case(s) broke an invariant:\n${report(failures)}`,
  );
}

describe("fuzz (host mode)", { skip: hostSkip }, () => {
  test(`seeded slice: ${HOST_CASES} cases hold every invariant`, { timeout: 900_000 }, async (t) => {
    const s = await fuzz({ cases: HOST_CASES, seed: SEED, mode: "host" });
    t.diagnostic(summary(s));
    assert.equal(s.cases, HOST_CASES);
    // The slice must reach past create: a generator that only makes broken bundles tests little.
    assert.ok(s.created >= HOST_CASES / 5, `only ${s.created} of ${HOST_CASES} cases created a container`);
    assertClean(s.failures);
  });

  for (const r of regressions.filter((x) => x.mode === "host")) {
    test(`regression: ${r.name}`, { todo: r.status === "open" ? r.defect : undefined }, async () => {
      assertClean(await replay([r.case], "host"));
    });
  }
});

describe("fuzz (VM mode)", { skip: vmSkip }, () => {
  let config: string;
  test(`seeded slice: ${VM_CASES} cases hold every invariant`, { timeout: 1_800_000 }, async (t) => {
    config = await vmConfig();
    const s = await fuzz({ cases: VM_CASES, seed: SEED, mode: "vm", config });
    t.diagnostic(summary(s));
    assert.equal(s.cases, VM_CASES);
    // Each VM case must reach the VM (its create boots one), not stop at validation.
    assert.ok(s.created >= VM_CASES * 0.6, `only ${s.created} of ${VM_CASES} VM cases created a container`);
    assertClean(s.failures);
  });

  for (const r of regressions.filter((x) => x.mode === "vm")) {
    test(`regression: ${r.name}`, { todo: r.status === "open" ? r.defect : undefined }, async () => {
      config ??= await vmConfig();
      assertClean(await replay([r.case], "vm", config));
    });
  }
});
