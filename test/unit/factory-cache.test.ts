// The VM cache's shared parts (src/factory/cache.ts) without VMs: the request client against a real
// unix socket, the sandbox's slot record (never an arbitrary path), and the cleanup of what a dead
// server's slots left (real processes stand in for slot supervisors).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { defaultConfig } from "../../src/config/config";
import {
  cacheRequest,
  cacheRoot,
  cacheStatus,
  cleanCacheLeftovers,
  SANDBOX_SLOT_RECORD,
  SLOT_PID,
  SLOT_SANDBOX,
  slotDirOf,
} from "../../src/factory/cache";
import { processStartTime } from "../../src/sys/proc";
import { alive, tempDir, until } from "../helpers";

test("cacheRequest: one JSON line each way; no server, a hang-up and garbage are errors", async () => {
  const tmp = tempDir("kata-cache-unit-");
  try {
    const sock = join(tmp.path, "c.sock");
    await assert.rejects(cacheRequest(sock, { op: "status" }, 1000), /ENOENT/);
    const seen: string[] = [];
    const server = createServer((c) => {
      c.setEncoding("utf8");
      c.on("data", (d: string) => {
        seen.push(d);
        const req = JSON.parse(d) as { op: string };
        if (req.op === "status") c.end(`${JSON.stringify({ ok: true, status: { idle: 1 } })}\n`);
        else if (req.op === "stop") c.end("not json\n");
        else c.end();
      });
    });
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      assert.deepEqual(await cacheStatus(sock), { idle: 1 });
      assert.deepEqual(seen, ['{"op":"status"}\n']);
      await assert.rejects(cacheRequest(sock, { op: "stop" }), /not JSON/);
      await assert.rejects(cacheRequest(sock, { op: "take", key: "k" }), /hung up/);
    } finally {
      server.close();
    }
    assert.equal(await cacheStatus(sock, 500), undefined);
  } finally {
    tmp.cleanup();
  }
});

test("slotDirOf: only a slot directory of ours (…/cache/<16 hex>) is ever named for removal", () => {
  const tmp = tempDir("kata-cache-unit-");
  try {
    const rec = (content: string) => {
      writeFileSync(join(tmp.path, SANDBOX_SLOT_RECORD), content);
      return slotDirOf(tmp.path);
    };
    assert.equal(
      rec("/run/kata-ts/template/cache/0123456789abcdef\n"),
      "/run/kata-ts/template/cache/0123456789abcdef",
    );
    assert.equal(rec("/"), undefined);
    assert.equal(rec("/etc"), undefined);
    assert.equal(rec("/run/kata-ts/template/cache/../../../etc"), undefined);
    assert.equal(rec("/run/kata-ts/template/other/0123456789abcdef"), undefined);
    assert.equal(rec("/run/kata-ts/template/cache/0123456789ABCDEF"), undefined);
    assert.equal(slotDirOf(join(tmp.path, "missing")), undefined);
  } finally {
    tmp.cleanup();
  }
});

test("cleanCacheLeftovers: stops idle slots, removes dead ones, leaves slots serving a sandbox", async () => {
  const tmp = tempDir("kata-cache-unit-");
  const config = defaultConfig();
  config.factory.templatePath = tmp.path;
  const root = cacheRoot(config);
  const sleepers: number[] = [];
  try {
    const slot = (name: string, pid: number | undefined, taken: boolean) => {
      const dir = join(root, name);
      mkdirSync(join(dir, "vm"), { recursive: true });
      if (pid) writeFileSync(join(dir, SLOT_PID), `${pid} ${processStartTime(pid)}\n`);
      if (taken) writeFileSync(join(dir, SLOT_SANDBOX), "/run/kata-ts/sandboxes/x");
      return dir;
    };
    const live = () => {
      const c = spawn("sleep", ["60"], { stdio: "ignore" });
      sleepers.push(c.pid ?? 0);
      return c.pid ?? 0;
    };
    const idle = slot("00000000000000a1", live(), false);
    const dead = slot("00000000000000a2", 999_999_999, false);
    const noPid = slot("00000000000000a3", undefined, false);
    const servingPid = live();
    const serving = slot("00000000000000a4", servingPid, true);
    const orphan = slot("00000000000000a5", 999_999_999, true);
    const foreign = join(root, "not-a-slot");
    mkdirSync(foreign);
    const unmounted: string[] = [];
    const n = await cleanCacheLeftovers(config, (d) => unmounted.push(d));
    assert.equal(n, 3);
    for (const d of [idle, dead, noPid]) assert.ok(!existsSync(d), `${d} removed`);
    assert.deepEqual(unmounted.sort(), [idle, dead, noPid].sort(), "unmounted before removal");
    await until("the idle slot's process stopped", () => !alive(sleepers[0]), 5000);
    assert.ok(alive(servingPid), "a slot serving a sandbox is not stopped");
    assert.ok(existsSync(serving) && existsSync(orphan) && existsSync(foreign));
  } finally {
    for (const p of sleepers) {
      try {
        process.kill(p, "SIGKILL");
      } catch {
        // gone
      }
    }
    tmp.cleanup();
  }
});
