// The cgroup join priming for real (src/engine/cgroups/prime.ts): while it runs, moving a process into
// a cgroup does not wait for an RCU grace period; the priming itself moves nothing (the test process
// stays in its own cgroups), its thread ends after stop, and a file it cannot write stops it quietly.
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { detectLayout, ownCgroupDir, parseProcCgroup, primeCgroupJoin } from "../../src/engine/cgroups";
import { cgroupJoinMs, median, tempDir } from "../helpers";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const own = () => readFileSync("/proc/self/cgroup", "utf8");
const threads = () => readdirSync("/proc/self/task").length;
const dir = ownCgroupDir(detectLayout(), parseProcCgroup(own()));
const skip = process.getuid?.() !== 0 ? "needs root" : !dir ? "no cgroup hierarchy mounted" : false;
const test_cg = dir ? join(dir, `kata-ts-prime-${process.pid}`) : "";
const tmp = tempDir("kata-prime-");

after(() => {
  tmp.cleanup();
  try {
    rmdirSync(test_cg);
  } catch {
    // never made, or already removed
  }
});

describe("cgroup join priming", { skip }, () => {
  test("a join while priming runs takes no RCU wait; the priming moves nothing and its thread ends", async (t) => {
    mkdirSync(test_cg, { recursive: true });
    const cgroupsBefore = own();
    const threadsBefore = threads();
    // Unprimed first, after a quiet spell: does this host's join wait at all?
    const unprimed: number[] = [];
    for (let i = 0; i < 3; i++) {
      await sleep(300);
      unprimed.push(await cgroupJoinMs(test_cg));
    }
    const primed: number[] = [];
    for (let i = 0; i < 5; i++) {
      await sleep(300);
      const stop = primeCgroupJoin();
      await sleep(60); // the first priming write's own wait, as create's work would cover it
      primed.push(await cgroupJoinMs(test_cg));
      stop();
    }
    await sleep(50);
    assert.equal(own(), cgroupsBefore, "priming must not move the process");
    assert.equal(threads(), threadsBefore, "the priming thread ends after stop");
    t.diagnostic(
      `join ms unprimed ${unprimed.map((x) => x.toFixed(2))} primed ${primed.map((x) => x.toFixed(2))}`,
    );
    if (median(unprimed) < 2) {
      t.skip(`this host's joins do not wait for RCU (median ${median(unprimed).toFixed(2)} ms)`);
      return;
    }
    assert.ok(median(primed) < 2, `primed joins took ${primed.map((x) => x.toFixed(2)).join(", ")} ms`);
  });

  test("a file it cannot write stops it quietly; a missing one too", async () => {
    const threadsBefore = threads();
    primeCgroupJoin(join(tmp.path, "missing"))();
    const stop = primeCgroupJoin("/proc/self/stat"); // root opens it, but every write fails
    await sleep(50);
    assert.equal(threads(), threadsBefore, "the thread ended at its first failed write");
    stop();
  });
});
