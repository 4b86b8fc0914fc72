// OCI conformance of the runtime under test, judged by what the container reports about itself
// (test/conformance/report.sh) for each config field in test/conformance/cases.ts, plus a leak scan
// after every container.
//
//   KATA_TS_CONFORMANCE_RUNTIME=/usr/sbin/runc node scripts/run-tests.mjs integration conformance-report
//   node scripts/run-tests.mjs integration conformance-report        # bin/kata-ts, hypervisor = "none"
//   printf '[runtime]\nhypervisor = "qemu"\n' > /tmp/vm.toml      # VM mode (~8 min: a TCG VM per case)
//   KATA_TS_CONFORMANCE_CONFIG=/tmp/vm.toml node scripts/run-tests.mjs integration conformance-report
//
// Against kata-ts this suite fails (it does not skip) until kata-ts runs containers: that is its job.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { templateRootfs } from "../conformance/bundle";
import { CASES } from "../conformance/cases";
import { runCase } from "../conformance/harness";
import { type Runtime, runtimeUnderTest } from "../conformance/runtime";

describe("conformance report", () => {
  let rt: Runtime;

  before(() => {
    rt = runtimeUnderTest();
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
