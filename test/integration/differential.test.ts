// Differential test: every conformance case's bundle runs under a reference runtime (runc) and under
// the candidate (kata-ts, hypervisor = "none"); the two in-container reports must be equal line for
// line after normalisation (paths, ids, namespace inodes, host pids), except for the keys in the
// allow-list below. Exit codes must be equal too.
//
//   KATA_TS_DIFF_REFERENCE   reference runtime binary (default /usr/sbin/runc)
//   KATA_TS_DIFF_CANDIDATE   candidate runtime binary (default <repo>/bin/kata-ts, run with a
//                            hypervisor = "none" config; KATA_TS_CONFORMANCE_CONFIG overrides it)
//
// Against kata-ts this fails until kata-ts runs containers. To check the harness itself, use crun as
// the candidate (see docs/conformance.md) or runc against itself.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { templateRootfs } from "../conformance/bundle";
import { CASES } from "../conformance/cases";
import { hostNamespaces, newContext, normaliseReport, runCase } from "../conformance/harness";
import { KATA_TS_BIN, RUNC_BIN, Runtime } from "../conformance/runtime";

/**
 * Intentional differences (report keys left out of the comparison). Keep this short; every entry
 * needs a reason that holds for every candidate, not just "kata-ts does it differently".
 */
export const ALLOWED_DIFFERENCES: { key: RegExp; reason: string }[] = [
  {
    // `run` without a terminal: runc 1.1 puts pipes of its own between its stdio and the container
    // and copies (stdin shows as a pipe even when runc's stdin is /dev/null); kata-ts hands the
    // container the caller's descriptors, which is what both runtimes do for `create`, the path
    // every engine uses. (fd.1/fd.2 in the report are the probe's own redirections.)
    key: /^fd\.0=/,
    reason: "attached run: runc interposes stdio pipes, kata-ts passes descriptors through",
  },
];

/**
 * Allow-listed lines reduced to their key; mount lines sorted by mount point (a stable sort: mounts
 * stacked on one point keep their order, the order of unrelated mounts is not observable).
 */
function comparable(lines: string[]): string[] {
  const out = lines.map((l) => {
    for (const a of ALLOWED_DIFFERENCES) {
      const m = a.key.exec(l);
      if (m) return `${m[0]}<allowed: ${a.reason}>`;
    }
    return l;
  });
  const point = (l: string) => l.slice(6, l.indexOf(" "));
  const mounts = out.filter((l) => l.startsWith("mount=")).sort((x, y) => point(x).localeCompare(point(y)));
  let i = 0;
  return out.map((l) => (l.startsWith("mount=") ? mounts[i++] : l));
}

describe("differential: reference runtime vs candidate", () => {
  let ref: Runtime;
  let cand: Runtime;
  let hostNs: Record<string, string>;

  before(() => {
    ref = new Runtime(process.env.KATA_TS_DIFF_REFERENCE || RUNC_BIN);
    cand = new Runtime(process.env.KATA_TS_DIFF_CANDIDATE || KATA_TS_BIN, {
      config: process.env.KATA_TS_CONFORMANCE_CONFIG || undefined,
    });
    hostNs = hostNamespaces();
    templateRootfs();
  });
  after(() => {
    ref?.cleanup();
    cand?.cleanup();
  });

  for (const c of CASES) {
    if (c.noDiff) continue;
    test(`${c.name}`, async () => {
      const runs = [];
      for (const rt of [ref, cand]) {
        const ctx = newContext();
        const o = await runCase(rt, c, { ctx });
        runs.push({ rt, o, lines: comparable(normaliseReport(o, ctx, rt, hostNs)) });
      }
      const [a, b] = runs;
      assert.ok(a.o.code === 0 || c.args, `reference ${a.rt.name} failed (${a.o.code}): ${a.o.stderr}`);
      assert.equal(b.o.code, a.o.code, `exit code: ${b.rt.name} vs ${a.rt.name}; stderr: ${b.o.stderr}`);
      assert.deepEqual(b.lines, a.lines, `report of ${b.rt.name} (actual) vs ${a.rt.name} (expected)`);
      assert.deepEqual(b.o.leaks, [], `${b.rt.name} leaks:\n  ${b.o.leaks.join("\n  ")}`);
    });
  }
});
