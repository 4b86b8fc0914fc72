// Two real processes contending for one container's lock must serialise.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, it } from "node:test";
import { StateStore } from "../../src/runtime/store";
import { REPO, tempDir } from "../helpers";

const tmp = tempDir();
after(tmp.cleanup);

function holder(root: string, id: string, log: string, ms: number): Promise<number> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(REPO, "test/fixtures/lock-holder.ts"), root, id, log, String(ms)],
    {
      stdio: "inherit",
      cwd: REPO,
    },
  );
  return new Promise((resolve) => child.on("exit", (code) => resolve(code ?? 1)));
}

it("two processes holding the same container lock do not overlap", async () => {
  const root = join(tmp.path, "root");
  const store = new StateStore(root);
  store.create({
    id: "c1",
    bundle: "/b",
    rootfs: "/b/rootfs",
    created: new Date().toISOString(),
    owner: "",
    annotations: {},
    pid: 0,
    pidStartTime: 0,
    paused: false,
    hypervisor: "none",
    sandboxId: "c1",
    containerType: "sandbox",
    config: { ociVersion: "1.2.0" } as never,
    engine: {},
  });
  const log = join(tmp.path, "log");
  const codes = await Promise.all([holder(root, "c1", log, 600), holder(root, "c1", log, 600)]);
  assert.deepEqual(codes, [0, 0]);
  const events = readFileSync(log, "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split(" "));
  assert.equal(events.length, 4);
  // enter A, leave A, enter B, leave B — never enter, enter.
  assert.deepEqual(
    events.map((e) => e[0]),
    ["enter", "leave", "enter", "leave"],
  );
  assert.equal(events[0][1], events[1][1]);
  assert.ok(Number(events[2][2]) >= Number(events[1][2]), "second holder entered before the first left");
});

it("a lock on a missing container is ContainerNotFound", async () => {
  const store = new StateStore(join(tmp.path, "root2"));
  await assert.rejects(
    store.withLock("ghost", () => 1),
    /container "ghost" does not exist/,
  );
});
