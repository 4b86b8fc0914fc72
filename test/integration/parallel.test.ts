// 100 create/start/delete cycles, 10 containers at a time, against the runtime under test
// (KATA_TS_CONFORMANCE_RUNTIME, default bin/kata-ts with hypervisor = "none"): every call succeeds,
// `list` is empty afterwards, and the leak scanner finds nothing of any container. A first test
// checks the scanner itself on a container deliberately left behind.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type Bundle, makeBundle } from "../conformance/bundle";
import { type Runtime, runtimeUnderTest } from "../conformance/runtime";
import { findLeaks, snapshotHost } from "../leaks";

const CYCLES = Number(process.env.KATA_TS_PARALLEL_CYCLES || 100);
const WIDTH = Number(process.env.KATA_TS_PARALLEL_WIDTH || 10);

describe("parallel lifecycle", () => {
  let rt: Runtime;
  let work: string;
  let bundle: Bundle;

  before(() => {
    rt = runtimeUnderTest();
    work = mkdtempSync(join(tmpdir(), "kata-ts-parallel-"));
    // One bundle for all containers (engines reuse images the same way): read-only root, `true`.
    bundle = makeBundle({ process: { args: ["/bin/true"] } }, { parent: work });
  });
  after(() => {
    rt?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  test("the leak scanner sees a container that was not deleted", async () => {
    const id = `ktc-${randomBytes(5).toString("hex")}`;
    const before = snapshotHost();
    const keep = makeBundle({ process: { args: ["/bin/sleep", "30"] } }, { parent: work });
    try {
      const cr = rt.create(keep.dir, id, { stdout: join(work, "o"), stderr: join(work, "e") });
      assert.equal(cr.code, 0, `create: ${cr.stderr}`);
      const leaks = findLeaks(before, { root: rt.root, bundle: keep.dir, id });
      assert.ok(
        leaks.some((l) => l.startsWith("state dir")),
        `state dir not reported: ${leaks}`,
      );
      assert.ok(
        leaks.some((l) => l.startsWith("process")),
        `init process not reported: ${leaks}`,
      );
      assert.ok(
        leaks.some((l) => l.startsWith("cgroup")),
        `cgroup not reported: ${leaks}`,
      );
    } finally {
      rt.exec(["delete", "--force", id]);
    }
    assert.deepEqual(findLeaks(before, { root: rt.root, bundle: keep.dir, id }), []);
    keep.cleanup();
  });

  test(`${CYCLES} create/start/delete cycles, ${WIDTH} at a time`, async () => {
    const before = snapshotHost();
    const ids = Array.from({ length: CYCLES }, (_, i) => `ktc-${randomBytes(3).toString("hex")}-${i}`);
    const failures: string[] = [];
    const started = Date.now();

    async function cycle(id: string): Promise<void> {
      const pidFile = join(work, `${id}.pid`);
      const c = await rt.createAsync(bundle.dir, id, { pidFile, stderrFile: join(work, `${id}.err`) });
      if (c.code !== 0) {
        failures.push(`${id} create ${c.code}: ${c.stderr.trim()}`);
        return;
      }
      const pid = Number(readFileSync(pidFile, "utf8"));
      if (!(pid > 1)) failures.push(`${id} pid file holds ${pid}`);
      const s = await rt.execAsync(["start", id]);
      if (s.code !== 0) failures.push(`${id} start ${s.code}: ${s.stderr.trim()}`);
      const st = await rt.waitStatus(id, "stopped");
      if (st?.status !== "stopped") failures.push(`${id} did not stop: ${st?.status}`);
      const d = await rt.execAsync(["delete", id]);
      if (d.code !== 0) failures.push(`${id} delete ${d.code}: ${d.stderr.trim()}`);
    }

    let next = 0;
    async function lane(): Promise<void> {
      while (next < ids.length) await cycle(ids[next++]);
    }
    await Promise.all(Array.from({ length: WIDTH }, lane));
    const seconds = (Date.now() - started) / 1000;
    console.log(`# ${rt.name}: ${CYCLES} cycles, ${WIDTH} wide, ${seconds.toFixed(1)} s`);

    assert.deepEqual(failures, []);
    assert.deepEqual(rt.list(), [], "list is empty after every delete");
    const leaks = ids.flatMap((id) => findLeaks(before, { root: rt.root, bundle: bundle.dir, id }));
    assert.deepEqual(leaks, []);
  });
});
