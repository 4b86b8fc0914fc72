// The conformance suite as a node:test describe, for any runtime: every case of cases.ts, judged by
// what the container reports about itself, plus a leak scan after every container and an empty `list`
// at the end. conformance-report.test.ts runs it for the runtime under test, conformance-vm.test.ts for
// kata-ts in VM mode.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { templateRootfs } from "./bundle";
import { CASES } from "./cases";
import { runCase } from "./harness";
import type { Runtime } from "./runtime";

export function describeConformance(
  title: string,
  makeRuntime: () => Runtime,
  opts: { skip?: string | false } = {},
): void {
  describe(title, { skip: opts.skip }, () => {
    let rt: Runtime;

    before(() => {
      rt = makeRuntime();
      templateRootfs();
    });
    after(() => rt?.cleanup());

    test("the runtime under test exists and runs a container", () => {
      assert.ok(existsSync(rt.bin), `${rt.bin} does not exist (build kata-ts: npm run build)`);
      const v = rt.exec(["--version"]);
      assert.equal(v.code, 0, `${rt.bin} --version: ${v.stderr}`);
    });

    for (const c of CASES) {
      test(`${c.name} [${c.field}]`, async (t) => {
        const why = c.unsupportedBy?.[rt.name];
        if (why) {
          t.skip(`${rt.name}: ${why}`);
          return;
        }
        if (rt.vm && c.vmHostOnly) {
          t.skip(`VM mode: ${c.vmHostOnly}`);
          return;
        }
        await runCase(rt, c, { check: true });
      });
    }

    test("list is empty after every case", () => {
      assert.deepEqual(rt.list(), []);
    });
  });
}
