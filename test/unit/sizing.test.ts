// The sandbox VM's size from Kata's hypervisor annotations (src/config/sizing.ts): what is obeyed, what
// is refused and with which one line, and the bounds.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { defaultConfig } from "../../src/config/config";
import { HYPERVISOR_ANNOTATION_PREFIX as P, sandboxVmSize } from "../../src/config/sizing";
import { KataError } from "../../src/errors";

const HOST = { memoryMiB: 8192, cpus: 4 };
const q = () => defaultConfig().hypervisor;

test("no annotation: the configuration's defaults; foreign annotations are ignored", () => {
  const c = q();
  assert.deepEqual(sandboxVmSize(undefined, c, HOST), { memoryMiB: c.defaultMemory, vcpus: c.defaultVcpus });
  assert.deepEqual(
    sandboxVmSize({ "io.kubernetes.cri.container-type": "sandbox", "io.katacontainers.pkg.x": "1" }, c, HOST),
    { memoryMiB: c.defaultMemory, vcpus: c.defaultVcpus },
  );
});

test("default_memory and default_vcpus size the VM when enabled (the default)", () => {
  assert.deepEqual(sandboxVmSize({ [`${P}default_memory`]: "768", [`${P}default_vcpus`]: "2" }, q(), HOST), {
    memoryMiB: 768,
    vcpus: 2,
  });
});

test("refusals are one-line KataErrors naming the annotation", () => {
  const cases: [Record<string, string>, RegExp, ReturnType<typeof q>?][] = [
    [{ [`${P}default_memory`]: "12x" }, /default_memory: "12x" is not a positive integer/],
    [{ [`${P}default_memory`]: "0" }, /is not a positive integer/],
    [{ [`${P}default_memory`]: "-5" }, /is not a positive integer/],
    [{ [`${P}default_memory`]: "128" }, /128 MiB is less than the minimum of 256 MiB/],
    [{ [`${P}default_memory`]: "9000" }, /9000 MiB is more than the host's 8192 MiB/],
    [{ [`${P}default_vcpus`]: "5" }, /5 vCPUs is more than the maximum of 4/],
    [{ [`${P}kernel_params`]: "quiet" }, /annotation \S+kernel_params is not enabled/],
    [
      { [`${P}default_memory`]: "512" },
      /default_memory is not enabled: see enable_annotations/,
      { ...q(), enableAnnotations: [] },
    ],
    [{ [`${P}default_vcpus`]: "3" }, /3 vCPUs is more than the maximum of 2/, { ...q(), defaultMaxvcpus: 2 }],
    [
      { [`${P}kernel_params`]: "quiet" },
      /kernel_params is not supported by kata-ts/,
      { ...q(), enableAnnotations: [".*"] },
    ],
  ];
  for (const [annotations, re, config] of cases) {
    assert.throws(
      () => sandboxVmSize(annotations, config ?? q(), HOST),
      (e: Error) => e instanceof KataError && re.test(e.message) && !e.message.includes("\n"),
      JSON.stringify(annotations),
    );
  }
});

test("enable_annotations entries match the whole name (a prefix does not let default_memory_x through)", () => {
  const c = { ...q(), enableAnnotations: ["default_mem"] };
  assert.throws(() => sandboxVmSize({ [`${P}default_memory`]: "512" }, c, HOST), /is not enabled/);
  const all = { ...q(), enableAnnotations: ["default_.*"] };
  assert.equal(sandboxVmSize({ [`${P}default_memory`]: "512" }, all, HOST).memoryMiB, 512);
});

test("property: any value is either obeyed within the bounds or refused in one line", () => {
  fc.assert(
    fc.property(fc.string(), fc.string(), (mem, cpus) => {
      try {
        const s = sandboxVmSize({ [`${P}default_memory`]: mem, [`${P}default_vcpus`]: cpus }, q(), HOST);
        assert.ok(s.memoryMiB >= 256 && s.memoryMiB <= HOST.memoryMiB && Number.isInteger(s.memoryMiB));
        assert.ok(s.vcpus >= 1 && s.vcpus <= HOST.cpus && Number.isInteger(s.vcpus));
      } catch (e) {
        assert.ok(e instanceof KataError, String(e));
        assert.ok(!e.message.includes("\n"));
      }
    }),
  );
});
