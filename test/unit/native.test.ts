// Pure parts of the native gateway: reading the KVM probe's report, the usable/unusable verdict, and where
// native build outputs are looked up.
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { classifyProbe, formatMips, MIN_MIPS, parseProbeOutput } from "../../src/sys/kvm";
import { findNativeFile, isErrno, nativeDirs } from "../../src/sys/native";
import { tempDir } from "../helpers";

describe("parseProbeOutput", () => {
  it("reads a successful report", () => {
    const out = parseProbeOutput(
      '{"ok":true,"complete":true,"iterations":1000000,"seconds":1.7,"mips":0.587}\n',
    );
    assert.deepEqual(out, { ok: true, complete: true, iterations: 1000000, seconds: 1.7, mips: 0.587 });
  });

  it("reads an interrupted run as incomplete and a report without the flag as complete", () => {
    const a = parseProbeOutput('{"ok":true,"complete":false,"iterations":764385,"seconds":1.0,"mips":0.76}');
    assert.equal(a?.ok && a.complete, false);
    const b = parseProbeOutput('{"ok":true,"iterations":10,"seconds":1,"mips":0.00001}');
    assert.equal(b?.ok && b.complete, true);
  });

  it("reads a failure report", () => {
    const out = parseProbeOutput('{"ok":false,"stage":"open","error":"open /dev/kvm: Permission denied"}');
    assert.deepEqual(out, { ok: false, stage: "open", error: "open /dev/kvm: Permission denied" });
  });

  it("takes the last line when something else was printed first", () => {
    const out = parseProbeOutput('warning\n{"ok":false,"stage":"run","error":"x"}\n');
    assert.equal(out?.ok, false);
  });

  it("rejects garbage and incomplete reports", () => {
    for (const s of [
      "",
      "   \n",
      "not json",
      "[]",
      "null",
      '{"ok":true}',
      '{"ok":true,"mips":"1"}',
      '{"ok":false}',
    ]) {
      assert.equal(parseProbeOutput(s), undefined, s);
    }
  });
});

describe("classifyProbe", () => {
  it("calls an emulating /dev/kvm unusable and names the measured rate", () => {
    const v = classifyProbe({ ok: true, complete: true, iterations: 1_000_000, seconds: 1.25, mips: 0.8 });
    assert.equal(v.usable, false);
    assert.equal(v.mips, 0.8);
    assert.equal(
      v.reason,
      "KVM unusable: /dev/kvm runs a test loop at 0.8 M iterations/s (real KVM: ~1000 M/s); TCG fallback",
    );
  });

  it("calls hardware-speed KVM usable", () => {
    const v = classifyProbe({ ok: true, complete: true, iterations: 10_000_000, seconds: 0.008, mips: 1250 });
    assert.equal(v.usable, true);
    assert.equal(v.reason, "KVM usable: /dev/kvm runs a test loop at 1250 M iterations/s");
  });

  it("puts the threshold at MIN_MIPS", () => {
    const at = (mips: number) => classifyProbe({ ok: true, complete: true, iterations: 1, seconds: 1, mips });
    assert.equal(at(MIN_MIPS).usable, true);
    assert.equal(at(MIN_MIPS - 0.01).usable, false);
  });

  it("reports the failing stage", () => {
    const v = classifyProbe(
      { ok: false, stage: "create_vm", error: "KVM_CREATE_VM: Device or resource busy" },
      "/dev/x",
    );
    assert.equal(v.usable, false);
    assert.equal(v.mips, undefined);
    assert.equal(
      v.reason,
      "KVM unusable: probe failed at create_vm: KVM_CREATE_VM: Device or resource busy; TCG fallback",
    );
  });
});

describe("formatMips", () => {
  it("keeps two significant digits below 10 and rounds above", () => {
    assert.equal(formatMips(0.7644), "0.76");
    assert.equal(formatMips(0.8), "0.8");
    assert.equal(formatMips(7.64), "7.6");
    assert.equal(formatMips(76.4), "76");
    assert.equal(formatMips(1234.5), "1235");
  });
});

describe("native file lookup", () => {
  it("searches KATA_TS_NATIVE_DIR first, then the bundle and source-tree build dirs", () => {
    const dirs = nativeDirs({ KATA_TS_NATIVE_DIR: "/opt/x" });
    assert.equal(dirs[0], "/opt/x");
    assert.ok(dirs.slice(1).every((d) => d.endsWith(join("native", "build"))));
    assert.equal(nativeDirs({}).length, dirs.length - 1);
  });

  it("finds a file in the override dir before any other", () => {
    const t = tempDir();
    try {
      mkdirSync(join(t.path, "b"));
      writeFileSync(join(t.path, "b", "kata_native.node"), "");
      assert.equal(
        findNativeFile("kata_native.node", { KATA_TS_NATIVE_DIR: join(t.path, "b") }),
        join(t.path, "b", "kata_native.node"),
      );
      assert.equal(findNativeFile("no-such-output", { KATA_TS_NATIVE_DIR: t.path }), undefined);
    } finally {
      t.cleanup();
    }
  });
});

describe("isErrno", () => {
  it("matches errors by code only", () => {
    const e = Object.assign(new Error("flock: Resource temporarily unavailable"), { code: "EAGAIN" });
    assert.equal(isErrno(e, "EAGAIN"), true);
    assert.equal(isErrno(e, "EBADF"), false);
    assert.equal(isErrno({ code: "EAGAIN" }, "EAGAIN"), false);
  });
});
