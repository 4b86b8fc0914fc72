import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { containerStatus } from "../../src/runtime/status";
import {
  ContainerExists,
  ContainerNotFound,
  type ContainerRecord,
  StateStore,
} from "../../src/runtime/store";
import { writeFileAtomic } from "../../src/sys/files";
import { findProcesses, parseProcStat, processAlive, processStartTime } from "../../src/sys/proc";
import { tempDir } from "../helpers";

function record(id: string, extra: Partial<ContainerRecord> = {}): ContainerRecord {
  return {
    id,
    bundle: "/b",
    rootfs: "/b/rootfs",
    created: "2026-01-01T00:00:00Z",
    owner: "",
    annotations: {},
    pid: 0,
    pidStartTime: 0,
    paused: false,
    hypervisor: "none",
    sandboxId: id,
    containerType: "sandbox",
    config: { ociVersion: "1.2.0" } as ContainerRecord["config"],
    engine: {},
    ...extra,
  };
}

describe("StateStore", () => {
  const tmp = tempDir();
  after(tmp.cleanup);
  const store = new StateStore(join(tmp.path, "root"));

  it("creates, reads, lists and removes a record", () => {
    store.create(record("a"));
    store.create(record("b"));
    assert.deepEqual(store.list(), ["a", "b"]);
    assert.equal(store.read("a").id, "a");
    store.remove("a");
    assert.deepEqual(store.list(), ["b"]);
    assert.equal(existsSync(store.dir("a")), false);
  });

  it("refuses a second create of the same id with runc's wording", () => {
    store.create(record("dup"));
    assert.throws(
      () => store.create(record("dup")),
      (e: Error) => e instanceof ContainerExists && /container with id exists: dup/.test(e.message),
    );
  });

  it("reports a missing container as not existing", () => {
    assert.throws(
      () => store.read("nope"),
      (e: Error) => e instanceof ContainerNotFound && e.message === 'container "nope" does not exist',
    );
  });

  it("writes atomically: no temp files remain, content is the last write", () => {
    const r = record("w");
    store.create(r);
    for (let i = 1; i <= 20; i++) store.write({ ...r, pid: i });
    assert.equal(store.read("w").pid, 20);
    assert.deepEqual(
      readdirSync(store.dir("w")).filter((f) => f.includes(".tmp")),
      [],
    );
    assert.equal(JSON.parse(readFileSync(join(store.dir("w"), "state.json"), "utf8")).pid, 20);
  });

  it("refuses ids that would leave the root (remove of '..' once deleted the root's parent)", () => {
    const inner = new StateStore(join(tmp.path, "nested", "root"));
    inner.create(record("keep"));
    for (const id of ["..", ".", "../root", "a/b", ""]) {
      assert.throws(() => inner.remove(id), /invalid container id/);
      assert.throws(() => inner.read(id), /invalid container id/);
    }
    assert.deepEqual(inner.list(), ["keep"]);
    assert.equal(inner.exists(".."), false);
  });

  it("a failed rename leaves no temp file behind", () => {
    const dir = join(tmp.path, "target-is-a-dir");
    mkdirSync(dir);
    assert.throws(() => writeFileAtomic(dir, "1"), /EISDIR/);
    assert.deepEqual(
      readdirSync(tmp.path).filter((f) => f.startsWith("target-is-a-dir.tmp")),
      [],
    );
  });

  it("an empty or missing root lists nothing", () => {
    assert.deepEqual(new StateStore(join(tmp.path, "absent")).list(), []);
  });
});

describe("status", () => {
  it("parses /proc/PID/stat even when comm has spaces and parentheses", () => {
    const line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
    assert.deepEqual(parseProcStat(line), { state: "S", startTime: 987654 });
    assert.equal(parseProcStat("garbage"), undefined);
  });

  it("tells a live process from a recycled pid", () => {
    const start = processStartTime(process.pid);
    assert.ok(start !== undefined && start > 0);
    assert.equal(processAlive(process.pid, start), true);
    assert.equal(processAlive(process.pid, start + 1), false);
    assert.equal(processAlive(0x3fffff, 1), false);
  });

  it("derives created/running/paused/stopped", () => {
    const tmp = tempDir();
    try {
      const store = new StateStore(tmp.path);
      const start = processStartTime(process.pid)!;
      const r = record("s", { pid: process.pid, pidStartTime: start });
      store.create(r);
      assert.equal(containerStatus(store, r), "running");
      assert.equal(containerStatus(store, { ...r, paused: true }), "paused");
      assert.equal(containerStatus(store, { ...r, pidStartTime: start + 1 }), "stopped");
      assert.equal(containerStatus(store, { ...r, pid: 0 }), "creating");
    } finally {
      tmp.cleanup();
    }
  });

  it("finds live processes by argv, with their start times", () => {
    const child = spawn("sleep", ["1000"], { argv0: "kata-ts-find-me" });
    try {
      // argv[0] is the marker; a matcher that looks elsewhere finds nothing.
      const found = findProcesses((argv) => argv[1] === "kata-ts-find-me");
      assert.deepEqual(found, []);
      const mine = findProcesses((argv) => argv.includes("kata-ts-find-me"));
      assert.deepEqual(mine, [{ pid: child.pid, start: processStartTime(child.pid!) }]);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
