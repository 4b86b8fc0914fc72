// The pure parts of the cgroup-backed commands: update merging (zero = unchanged), size and duration
// parsing, runc's flags, ps output filtering.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  filterPsOutput,
  mergeResources,
  parseBytes,
  parseDuration,
  resourcesFromFlags,
} from "../../src/runtime/operations";

test("mergeResources: zeros and empty strings leave stored values alone; non-zero values replace them", () => {
  const base = { memory: { limit: 100, swap: 200 }, cpu: { shares: 512, cpus: "0-1" }, pids: { limit: 10 } };
  const docker = {
    memory: { limit: 64, reservation: 0, swap: 128, kernel: 0 },
    cpu: { shares: 0, quota: 0, period: 0, cpus: "" },
    blockIO: { weight: 0 },
  };
  assert.deepEqual(mergeResources(base, docker), {
    memory: { limit: 64, swap: 128 },
    cpu: { shares: 512, cpus: "0-1" },
    pids: { limit: 10 },
    blockIO: {},
  });
  assert.deepEqual(mergeResources(base, { pids: { limit: -1 } }).pids, { limit: -1 });
  assert.deepEqual(mergeResources({ unified: { a: "1" } }, { unified: { b: "2" } }).unified, {
    a: "1",
    b: "2",
  });
  assert.deepEqual(mergeResources(undefined, { hugepageLimits: [] }), {});
});

test("parseBytes: runc/docker sizes in binary units", () => {
  assert.equal(parseBytes("1024"), 1024);
  assert.equal(parseBytes("64m"), 64 << 20);
  assert.equal(parseBytes("1G"), 1 << 30);
  assert.equal(parseBytes("512kb"), 512 << 10);
  assert.equal(parseBytes("-1"), -1);
  assert.throws(() => parseBytes("lots"), /invalid size/);
});

test("parseDuration: Go durations", () => {
  assert.equal(parseDuration("5s"), 5000);
  assert.equal(parseDuration("300ms"), 300);
  assert.equal(parseDuration("1m30s"), 90_000);
  assert.throws(() => parseDuration("5"), /invalid duration/);
  assert.throws(() => parseDuration("0s"), /must be positive/);
});

test("resourcesFromFlags maps runc's update flags", () => {
  assert.deepEqual(
    resourcesFromFlags({
      memory: "32m",
      memorySwap: "-1",
      cpuShares: "256",
      cpusetCpus: "0",
      pidsLimit: "7",
      blkioWeight: "300",
    }),
    {
      memory: { limit: 32 << 20, swap: -1 },
      cpu: { shares: 256, cpus: "0" },
      pids: { limit: 7 },
      blockIO: { weight: 300 },
    },
  );
  assert.deepEqual(resourcesFromFlags({}), {});
  assert.throws(() => resourcesFromFlags({ pidsLimit: "many" }), /invalid value for --pids-limit/);
});

test("filterPsOutput keeps the header and the container's pids, whatever column PID is in", () => {
  const out = "UID   PID  PPID CMD\nroot  10  1 sh\nroot  11  10 sleep\nroot  110  1 other\n";
  assert.equal(filterPsOutput(out, [10, 11]), "UID   PID  PPID CMD\nroot  10  1 sh\nroot  11  10 sleep\n");
  assert.equal(filterPsOutput("  PID COMMAND\n  5 a\n  6 b\n", [6]), "  PID COMMAND\n  6 b\n");
  assert.throws(() => filterPsOutput("USER COMMAND\n", [1]), /couldn't find PID field in ps output/);
});
