// The CLI's V8 code cache is trained on a real host-mode container (scripts/code-cache.mjs): every call
// of the training succeeds, the cache holds more than a `list` alone compiles, and the training leaves
// nothing on the host.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { helperPath } from "../../src/engine/launcher";
import { REPO, tempDir } from "../helpers";
import { assertNoLeaks, snapshotHost } from "../leaks";

function helperBuilt(): boolean {
  try {
    return existsSync(helperPath());
  } catch {
    return false;
  }
}

const root = process.getuid?.() === 0;
const BUNDLE = join(REPO, "dist", "kata-ts.cjs");

describe("the CLI's code cache", {
  skip:
    (!root && "trains as root only (it runs a container)") ||
    (!existsSync("/bin/busybox") && "needs a static /bin/busybox") ||
    (!helperBuilt() && "needs the helper: make -C native") ||
    (!existsSync(BUNDLE) && "needs the bundle: npm run build"),
}, () => {
  const tmp = tempDir("kata-ts-code-cache-");
  after(() => tmp.cleanup());

  it("is trained on a container's whole life, and the training leaves nothing behind", async () => {
    const { writeCodeCache } = await import(join(REPO, "scripts", "code-cache.mjs"));
    const work = join(tmp.path, "work");
    const before = snapshotHost();
    const calls: { args: string[]; ok: boolean }[] = writeCodeCache({ work });
    assert.deepEqual(
      calls.filter((c) => !c.ok),
      [],
    );
    assert.deepEqual(
      calls.map((c) => c.args[0]),
      ["spec", "run", "create", "start", "state", "exec", "ps", "kill", "delete", "list"],
    );
    assertNoLeaks(before, {
      root: join(work, "root"),
      bundle: join(work, "bundle"),
      id: `kt-code-cache-${process.pid}`,
    });
    assert.equal(existsSync(work), false);

    // The same bundle's cache from `list` alone, for comparison: training adds the functions of the
    // container verbs (measured: 412 kB against 247 kB).
    const alone = join(tmp.path, "kata-ts.cjs");
    copyFileSync(BUNDLE, alone);
    const r = spawnSync(
      process.execPath,
      [join(REPO, "bin", "run-cached.cjs"), alone, "--root", join(tmp.path, "root"), "list"],
      { env: { ...process.env, KATA_TS_WRITE_CODE_CACHE: "1" } },
    );
    assert.equal(r.status, 0, r.stderr.toString());
    const trained = statSync(`${BUNDLE}.v8cache`).size;
    const listOnly = statSync(`${alone}.v8cache`).size;
    assert.ok(trained > listOnly * 1.3, `trained cache ${trained} bytes, list-only ${listOnly}`);
  });
});

const SHIM_BUNDLE = join(REPO, "dist", "containerd-shim-kata-ts-v2.cjs");

describe("the shim's code cache", {
  skip: !existsSync(SHIM_BUNDLE) && "needs the bundle: npm run build",
}, () => {
  it("is written from the shim's -v and V8 accepts it when containerd starts the shim", async () => {
    const { writeShimCodeCache } = await import(join(REPO, "scripts", "code-cache.mjs"));
    assert.equal(writeShimCodeCache(), true);
    assert.ok(statSync(`${SHIM_BUNDLE}.v8cache`).size > 100_000, "the top level is in it");
    // What V8 made of the cache, as bin/run-cached.cjs reports it, in a start like the launcher's.
    const probe = [
      `const { runCached } = require(${JSON.stringify(join(REPO, "bin", "run-cached.cjs"))});`,
      `process.argv.splice(1, process.argv.length, ${JSON.stringify(SHIM_BUNDLE)}, "-v");`,
      'process.on("exit", () => process.stderr.write("cache " + globalThis.kataTsCodeCache + "\\n"));',
      `runCached(${JSON.stringify(SHIM_BUNDLE)});`,
    ].join("\n");
    const r = spawnSync(process.execPath, ["-e", probe], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /containerd-shim-kata-ts-v2:\n\s+Version:/);
    assert.match(r.stderr, /^cache accepted$/m);
  });
});
