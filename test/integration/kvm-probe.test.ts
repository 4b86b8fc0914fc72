// The KVM probe on this host: the binary's JSON report and the verdict kata-ts draws from it. Machines of
// this kind differ: on some /dev/kvm is a software hypervisor (kvm_pvm) that emulates the guest (the
// verdict there must be "unusable" with the measured rate), on others there is no /dev/kvm at all (the
// verdict must be the one-line "does not exist" refusal). test/probes.ts tells which; the tests that need
// a device skip with that finding. Needs `make -C native` and root.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  classifyProbe,
  formatMips,
  MIN_MIPS,
  PROBE_FILE,
  parseProbeOutput,
  probeKvm,
} from "../../src/sys/kvm";
import { findNativeFile } from "../../src/sys/native";
import { tempDir } from "../helpers";
import { kvmDevice } from "../probes";

const PROBE = findNativeFile(PROBE_FILE);
const KVM = kvmDevice();
const HAVE_KVM = KVM.present;
const EMULATED_KVM = KVM.emulated;
/** node:test skip reasons: the probe's finding when the device (or its emulating kind) is missing. */
const NO_KVM = !HAVE_KVM && "/dev/kvm does not exist";
const NOT_EMULATED = !EMULATED_KVM && (HAVE_KVM ? "/dev/kvm is not the emulating kvm_pvm" : NO_KVM);

describe("kata-ts-kvm-probe", () => {
  it("is built", () => assert.ok(PROBE, "run `make -C native`"));

  it("reports one JSON line: a measured rate, or the stage that failed", { skip: NO_KVM }, () => {
    const started = performance.now();
    const r = spawnSync(PROBE!, ["1000000", "5000"], { encoding: "utf8", timeout: 20_000 });
    const ms = performance.now() - started;
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim().split("\n").length, 1);
    const out = parseProbeOutput(r.stdout);
    assert.ok(out, `unparseable: ${r.stdout}`);
    if (out.ok) {
      assert.ok(out.iterations > 0 && out.iterations <= 1_000_000);
      assert.ok(out.seconds > 0 && out.seconds * 1000 <= ms, "the timed part fits in the process's lifetime");
      const rate = out.iterations / out.seconds / 1e6;
      assert.ok(Math.abs(rate - out.mips) / rate < 0.01, "mips = iterations / seconds");
      if (EMULATED_KVM) assert.ok(out.mips < MIN_MIPS, `emulated /dev/kvm measured at ${out.mips} M/s`);
    } else {
      assert.match(out.stage, /^(open|create_vm|create_vcpu|run)$/);
      assert.ok(out.error.length > 0);
    }
  });

  it("stopped early (budget or SIGTERM), still reports what it measured", {
    skip: NOT_EMULATED,
  }, async () => {
    // 4e9 iterations would take over an hour here: only the interruption can end it.
    const child = spawn(PROBE!, ["4000000000", "60000"], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    setTimeout(() => child.kill("SIGTERM"), 700);
    const code = await new Promise((r) => child.once("exit", r));
    assert.equal(code, 0);
    const out = parseProbeOutput(stdout);
    assert.ok(out?.ok, stdout);
    assert.equal(out.complete, false);
    assert.ok(out.iterations > 0 && out.iterations < 4_000_000_000);
    assert.ok(out.seconds > 0.3 && out.seconds < 5, `ran ${out.seconds} s`);

    const budget = spawnSync(PROBE!, ["4000000000", "300"], { encoding: "utf8", timeout: 10_000 });
    const b = parseProbeOutput(budget.stdout);
    assert.ok(b?.ok && !b.complete, budget.stdout);
    assert.ok(b.seconds >= 0.29 && b.seconds < 2, `ran ${b.seconds} s for a 300 ms budget`);
  });

  it("reports a missing device as a failed open", () => {
    const r = spawnSync(PROBE!, ["1000", "1000", "/dev/no-such-kvm"], { encoding: "utf8" });
    assert.equal(r.status, 0);
    assert.deepEqual(parseProbeOutput(r.stdout), {
      ok: false,
      stage: "open",
      error: "open /dev/no-such-kvm: No such file or directory",
    });
    assert.equal(spawnSync(PROBE!, ["lots"]).status, 2);
  });
});

describe("probeKvm", () => {
  it("gives the verdict the measured rate implies, with the rate in the reason", {
    skip: NO_KVM,
  }, async () => {
    const v = await probeKvm();
    if (v.mips === undefined) {
      assert.equal(v.usable, false);
      assert.match(v.reason, /^KVM unusable: .*; TCG fallback$/);
      return;
    }
    assert.equal(v.usable, v.mips >= MIN_MIPS);
    assert.deepEqual(
      classifyProbe({ ok: true, complete: true, iterations: 1, seconds: 1, mips: v.mips }).reason,
      v.reason,
    );
    assert.ok(v.reason.includes(`${formatMips(v.mips)} M iterations/s`), v.reason);
    assert.ok(v.elapsedMs! < 5000);
  });

  it("without /dev/kvm: the one-line refusal, TCG fallback", {
    skip: HAVE_KVM && "/dev/kvm exists",
  }, async () => {
    assert.deepEqual(await probeKvm(), {
      usable: false,
      reason: "KVM unusable: /dev/kvm does not exist; TCG fallback",
    });
  });

  it("calls this machine's emulating /dev/kvm unusable", { skip: NOT_EMULATED }, async () => {
    const v = await probeKvm();
    assert.equal(v.usable, false);
    assert.ok(v.mips !== undefined && v.mips > 0 && v.mips < 5, `${v.mips}`);
    assert.match(
      v.reason,
      /^KVM unusable: \/dev\/kvm runs a test loop at [\d.]+ M iterations\/s \(real KVM: ~1000 M\/s\); TCG fallback$/,
    );
    // The probe stops its guest after its budget (1 s for the default 5 s deadline).
    assert.ok(v.elapsedMs! >= 900 && v.elapsedMs! < 2500, `${v.elapsedMs} ms`);
  });

  it("turns a missing device, a missing probe and a timeout into unusable verdicts", async () => {
    const noDev = await probeKvm({ device: "/dev/no-such-kvm" });
    assert.deepEqual(noDev, {
      usable: false,
      reason: "KVM unusable: /dev/no-such-kvm does not exist; TCG fallback",
    });

    const noProbe = await probeKvm({ device: "/dev/null", probePath: "/nonexistent/kata-ts-kvm-probe" });
    assert.equal(noProbe.usable, false);
    assert.match(noProbe.reason, /kata-ts-kvm-probe is not built/);

    // /dev/null is not KVM: the probe runs and fails at the API version check.
    const notKvm = await probeKvm({ device: "/dev/null" });
    assert.equal(notKvm.usable, false);
    assert.match(notKvm.reason, /^KVM unusable: probe failed at open: KVM_GET_API_VERSION: /);

    // A probe that never answers stands in for a hung one and is killed at the deadline.
    const t = tempDir();
    try {
      const hungProbe = join(t.path, "hung-probe");
      writeFileSync(hungProbe, `#!/bin/sh\necho $$ > ${t.path}/pid\nexec sleep 60\n`, { mode: 0o755 });
      const started = performance.now();
      const hung = await probeKvm({ device: "/dev/null", probePath: hungProbe, timeoutMs: 300 });
      assert.equal(hung.usable, false);
      assert.equal(hung.reason, "KVM unusable: the probe did not finish within 0.3 s; TCG fallback");
      assert.ok(performance.now() - started < 2000);
      const pid = Number(readFileSync(join(t.path, "pid"), "utf8"));
      assert.throws(() => process.kill(pid, 0), { code: "ESRCH" }, "the hung probe was killed");
    } finally {
      t.cleanup();
    }
  });
});
