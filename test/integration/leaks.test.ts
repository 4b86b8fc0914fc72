// The leak scanner itself (test/leaks.ts): strict for what a test made, blind to what other programs
// create on the shared machine during the run (an engine's netns, another run's same-named container).
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { sleep, tempDir } from "../helpers";
import { findLeaks, snapshotHost } from "../leaks";

const tmp = tempDir("kata-ts-leaks-");
const root = join(tmp.path, "root");
const bundle = join(tmp.path, "bundle");
mkdirSync(root);
mkdirSync(bundle);
const id = `ktl-${process.pid}`;
const netns: string[] = [];
const children: ChildProcess[] = [];

after(async () => {
  // Each shell leads its own group: the group kill takes its sleep too.
  for (const c of children)
    try {
      process.kill(-c.pid!, "SIGKILL");
    } catch {}
  await sleep(50);
  for (const n of netns) spawnSync("ip", ["netns", "del", n]);
  tmp.cleanup();
});

function addNetns(name: string): void {
  const r = spawnSync("ip", ["netns", "add", name], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  netns.push(name);
}

/** A process whose cmdline names `word`, gone with the test. */
async function proc(word: string, cwd?: string): Promise<ChildProcess> {
  const c = spawn("/bin/sh", ["-c", `sleep 300; : ${word}`], { cwd, stdio: "ignore", detached: true });
  children.push(c);
  await sleep(100);
  return c;
}

test("objects of other programs are ignored; the test's own are reported", async (t) => {
  if (spawnSync("ip", ["-V"]).status !== 0) return t.skip("iproute2 is not installed");
  // Already running before the snapshot and naming the id: another run's container, not this test's.
  const old = await proc(id);
  const before = snapshotHost();
  addNetns(`unrelated-${process.pid}`);
  assert.deepEqual(findLeaks(before, { root, bundle, id }), [], "an unrelated netns and an older process");

  // Made after the snapshot: a process naming the id, one in the bundle, a netns named with the id.
  const mine = await proc(id);
  const inBundle = await proc("x", bundle);
  addNetns(`${id}-net`);
  const leaks = findLeaks(before, { root, bundle, id });
  assert.ok(
    leaks.some((l) => l.startsWith(`process ${mine.pid} (cmdline)`)),
    leaks.join("\n"),
  );
  assert.ok(
    leaks.some((l) => l.startsWith(`process ${inBundle.pid} (cwd `)),
    leaks.join("\n"),
  );
  assert.ok(leaks.includes(`netns /run/netns/${id}-net`), leaks.join("\n"));
  assert.ok(!leaks.some((l) => l.startsWith(`process ${old.pid} `)), leaks.join("\n"));
  assert.ok(!leaks.some((l) => l.includes("unrelated-")), leaks.join("\n"));
  // A netns the test declares its own and removes itself is not reported.
  assert.ok(
    !findLeaks(before, { root, bundle, id, allowNetns: [`${id}-net`] }).some((l) => l.startsWith("netns")),
  );
});
