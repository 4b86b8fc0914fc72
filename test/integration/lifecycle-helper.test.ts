// Fuzzes the C helper's record parser and op dispatch: random and mutated records must end in a clean
// failure (exit 1/126/127 with an "error" record, or a quiet exit when the plan is cut short), never
// in a crash (SIGSEGV/SIGABRT → 128+n) or a hang. Phase 2 runs in fresh mount/uts/ipc/net/pid
// namespaces without a rootfs, so ops that would touch the host fail before they do anything.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import type { Socket } from "node:net";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { helperPath } from "../../src/engine/launcher";
import { CLONE_FLAGS } from "../../src/engine/plan";
import { encodeRecords, type Rec, RecordDecoder } from "../../src/engine/protocol";
import { tempDir } from "../helpers";

const scratch = tempDir("kata-ts-helper-fuzz-");
after(() => scratch.cleanup());

function runHelper(bytes: Buffer): Promise<{ code: number; signal: string | null; records: Rec[] }> {
  return new Promise((resolve, reject) => {
    // cwd: a fresh scratch dir per run, so relative paths in random records (mkfifo abc) land there and
    // no run sees what an earlier one made (a fifo named "0" would block a later "fifo 0" by design).
    const child = spawn(helperPath(), ["3"], {
      stdio: ["ignore", "ignore", "ignore", "pipe"],
      cwd: mkdtempSync(join(scratch.path, "run-")),
    });
    const sock = child.stdio[3] as Socket;
    const dec = new RecordDecoder();
    const records: Rec[] = [];
    sock.on("data", (c: Buffer) => records.push(...dec.push(c)));
    sock.on("error", () => {});
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`helper hung on input ${bytes.toString("hex").slice(0, 200)}`));
    }, 10_000);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      // Let the socket drain what the container process wrote before it exited.
      setTimeout(() => {
        sock.destroy();
        resolve({ code: code ?? -1, signal, records });
      }, 5);
    });
    sock.end(bytes);
  });
}

const rand = (n: number) => Math.floor(Math.random() * n);
const pick = <T>(a: readonly T[]): T => a[rand(a.length)];
const STRINGS = [
  "",
  "0",
  "1",
  "-1",
  "18446744073709551616",
  "abc",
  "/",
  "/dev/null",
  "/nonexistent/x",
  "x".repeat(5000),
  "9999999999",
  "0x10",
  "dir",
  "file",
];
const SAFE_OPS = [
  "setsid",
  "prop",
  "mkdir",
  "device",
  "symlink",
  "ptmx",
  "mask",
  "readonly",
  "caps",
  "nnp",
  "user",
  "seccomp-default",
  "seccomp-arch",
  "seccomp-rule",
  "seccomp-flag",
  "seccomp-known",
  "cwd",
  "env",
  "arg",
  "preserve",
  "umask",
  "rlimit",
  "personality",
  "mount",
  "console",
  "fifo",
  "bogus",
  "hook",
];

function randomRec(ops: readonly string[]): Rec {
  const n = rand(6);
  return [pick(ops), ...Array.from({ length: n }, () => pick(STRINGS))];
}

function failedCleanly(r: { code: number; signal: string | null; records: Rec[] }, what: string): void {
  assert.equal(r.signal, null, `${what}: killed by ${r.signal}`);
  // 159 = SIGSYS: a random seccomp default action of "kill" is obeyed, which is not a crash.
  assert.ok([0, 1, 2, 126, 127, 159].includes(r.code), `${what}: exit ${r.code} (crash?)`);
  for (const rec of r.records)
    assert.ok(["pid", "error", "ready"].includes(rec[0]), `${what}: odd record ${rec[0]}`);
}

describe("helper robustness (fuzz)", { skip: process.getuid?.() !== 0 ? "needs root" : false }, () => {
  test("random bytes and malformed lengths", async () => {
    for (let i = 0; i < 60; i++) {
      const junk = randomBytes(rand(64) + 1);
      if (i % 3 === 0 && junk.length >= 4) junk.writeUInt32LE(rand(2) ? 0 : 0xffffffff, 0);
      failedCleanly(await runHelper(junk), `junk ${junk.toString("hex")}`);
    }
  });

  test("setns on a fifo fails at once with an error record (opening it for real would block)", async () => {
    const fifo = `${scratch.path}/not-a-namespace`;
    execFileSync("mkfifo", [fifo]);
    const started = Date.now();
    const r = await runHelper(
      encodeRecords([
        ["setns", fifo, "net"],
        ["clone", "0", "wait"],
      ]),
    );
    failedCleanly(r, "setns on a fifo");
    assert.ok(Date.now() - started < 5000, "the helper answered without waiting for a writer");
    const err = r.records.find((x) => x[0] === "error");
    assert.match(String(err?.[1]), /is not a namespace/);
    assert.ok(!r.records.some((x) => x[0] === "pid"), "no clone");
  });

  test("phase 1: random records never clone and fail with an error record", async () => {
    for (let i = 0; i < 60; i++) {
      const recs = Array.from({ length: rand(4) + 1 }, () =>
        randomRec(["setns", "mkfifo", "timens", "console-connect", "console-relay", "bogus", ""]),
      );
      const r = await runHelper(encodeRecords(recs));
      failedCleanly(r, JSON.stringify(recs).slice(0, 200));
      assert.ok(!r.records.some((x) => x[0] === "pid"), "no clone without a clone record");
    }
  });

  test("phase 2: random op sequences in fresh namespaces fail cleanly", async () => {
    const flags =
      CLONE_FLAGS.mount | CLONE_FLAGS.uts | CLONE_FLAGS.ipc | CLONE_FLAGS.network | CLONE_FLAGS.pid;
    for (let i = 0; i < 80; i++) {
      const recs: Rec[] = Array.from({ length: rand(8) + 1 }, () => randomRec(SAFE_OPS));
      if (rand(2)) recs.push(["arg", "/nonexistent-binary"], ["go"]);
      const r = await runHelper(encodeRecords([["clone", String(flags), "wait"], ...recs]));
      failedCleanly(r, JSON.stringify(recs).slice(0, 300));
      assert.ok(
        r.records.some((x) => x[0] === "pid"),
        "the helper cloned",
      );
    }
  });
});
