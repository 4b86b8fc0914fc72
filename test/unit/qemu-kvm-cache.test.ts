// The KVM probe verdict is cached per host boot: sandbox starts measure once, `check` always afresh.
// The probe itself is injected here (no /dev/kvm needed); the cache file is a temp file.
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import {
  fileIdentity,
  type KvmVerdict,
  type ProbeOptions,
  probeCacheKey,
  probeKvmCached,
  readProbeCache,
  writeProbeCache,
} from "../../src/sys/kvm";
import { tempDir } from "../helpers";

describe("KVM probe cache", () => {
  let tmp: ReturnType<typeof tempDir>;
  let cacheFile: string;
  let probePath: string;
  let calls: ProbeOptions[];
  let next: KvmVerdict;
  const probe = async (o: ProbeOptions) => {
    calls.push(o);
    return next;
  };
  const slow: KvmVerdict = {
    usable: false,
    reason: "KVM unusable: 0.8 M/s; TCG fallback",
    mips: 0.8,
    measured: true,
  };
  beforeEach(() => {
    tmp = tempDir();
    cacheFile = join(tmp.path, "sub", "kvm-probe.json");
    probePath = join(tmp.path, "probe");
    writeFileSync(probePath, "v1");
    calls = [];
    next = slow;
  });
  afterEach(() => tmp.cleanup());

  test("the second call in the same boot reuses the verdict without probing", async () => {
    const o = { cacheFile, probePath, bootId: "boot-a", probe };
    const first = await probeKvmCached(o);
    assert.equal(first.cached, undefined);
    assert.equal(calls.length, 1);
    assert.ok(existsSync(cacheFile), "the verdict is stored (parent directory created)");
    const second = await probeKvmCached(o);
    assert.equal(calls.length, 1, "no second probe");
    assert.deepEqual(
      { usable: second.usable, reason: second.reason, mips: second.mips, cached: second.cached },
      { usable: false, reason: slow.reason, mips: 0.8, cached: true },
    );
  });

  test("another boot, another probe binary or another device measure again", async () => {
    await probeKvmCached({ cacheFile, probePath, bootId: "boot-a", probe });
    await probeKvmCached({ cacheFile, probePath, bootId: "boot-b", probe });
    assert.equal(calls.length, 2, "new boot id");
    writeFileSync(probePath, "v2 rebuilt");
    await probeKvmCached({ cacheFile, probePath, bootId: "boot-b", probe });
    assert.equal(calls.length, 3, "probe binary changed");
    await probeKvmCached({ cacheFile, probePath, bootId: "boot-b", probe, device: "/dev/other" });
    assert.equal(calls.length, 4, "other device");
    assert.equal(calls[3].device, "/dev/other");
  });

  test("fresh measures even with a cached verdict and stores the new one", async () => {
    await probeKvmCached({ cacheFile, probePath, bootId: "b", probe });
    next = { usable: true, reason: "KVM usable: 1000 M/s", mips: 1000, measured: true };
    const v = await probeKvmCached({ cacheFile, probePath, bootId: "b", probe, fresh: true });
    assert.equal(calls.length, 2);
    assert.equal(v.usable, true);
    const again = await probeKvmCached({ cacheFile, probePath, bootId: "b", probe });
    assert.equal(calls.length, 2);
    assert.equal(again.usable, true);
  });

  test("verdicts without a measurement (timeout, crash, no device) are not cached", async () => {
    next = { usable: false, reason: "KVM unusable: the probe did not finish within 5 s; TCG fallback" };
    await probeKvmCached({ cacheFile, probePath, bootId: "b", probe });
    assert.equal(existsSync(cacheFile), false);
    await probeKvmCached({ cacheFile, probePath, bootId: "b", probe });
    assert.equal(calls.length, 2);
  });

  test("unknown boot id or missing probe binary: no key, always probe", async () => {
    await probeKvmCached({ cacheFile, probePath, bootId: "", probe });
    await probeKvmCached({ cacheFile, probePath, bootId: "", probe });
    assert.equal(calls.length, 2);
    assert.equal(existsSync(cacheFile), false);
    assert.equal(probeCacheKey("b", fileIdentity(join(tmp.path, "missing")), "/dev/kvm"), "");
  });

  test("a garbage or foreign cache file is ignored and replaced", async () => {
    const key = probeCacheKey("b", fileIdentity(probePath), "/dev/kvm");
    writeFileSync(join(tmp.path, "c.json"), "{not json");
    assert.equal(readProbeCache(join(tmp.path, "c.json"), key), undefined);
    writeProbeCache(join(tmp.path, "c.json"), "other-key", slow);
    assert.equal(readProbeCache(join(tmp.path, "c.json"), key), undefined);
    writeProbeCache(join(tmp.path, "c.json"), key, { ...slow, cached: true });
    const stored = JSON.parse(readFileSync(join(tmp.path, "c.json"), "utf8"));
    assert.equal(stored.key, key);
    assert.equal(stored.verdict.cached, undefined, "the flags are not stored");
    assert.equal(stored.verdict.measured, undefined);
    assert.equal(readProbeCache(join(tmp.path, "c.json"), key)?.reason, slow.reason);
  });
});
