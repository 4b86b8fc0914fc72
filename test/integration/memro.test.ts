// native/memro (kata-ts-memro.so) for real, without a VM: preloaded into a dynamically linked program
// (bash, glibc like QEMU), it turns a read-write open of the one path KATA_TS_MEMRO_PATH names into a
// read-only one, so writes through that descriptor fail and the file keeps its bytes; any other path
// opens as asked. A clone's QEMU is started with it (docs/factory.md, "Security notes"); vm-factory
// checks the clone's descriptor and its jail.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { cloneMemoryReadOnly, MEMRO_LIBRARY } from "../../src/hypervisor/qemu";
import { REPO, tempDir } from "../helpers";

const LIB = join(REPO, "native", "build", MEMRO_LIBRARY);
const skip = !existsSync(LIB)
  ? `${MEMRO_LIBRARY} not built (make -C native)`
  : !existsSync("/bin/bash") && "needs bash";

const tmp = tempDir("kata-memro-");
after(() => tmp.cleanup());

/** bash opens `file` read-write on fd 3 (`3<>`), then writes through it; returns the exit status. */
function writeThrough(file: string, env: Record<string, string>) {
  return spawnSync("/bin/bash", ["-c", `exec 3<>"$1" && echo changed >&3`, "bash", file], {
    encoding: "utf8",
    env: { PATH: process.env.PATH, ...env },
  });
}

describe("kata-ts-memro.so", { skip }, () => {
  test("the named file opens read-only: the write through it fails and the file keeps its bytes", () => {
    const memory = join(tmp.path, "memory");
    writeFileSync(memory, "template bytes\n");
    const r = writeThrough(memory, cloneMemoryReadOnly(memory, LIB).env);
    assert.notEqual(r.status, 0, "writing through the descriptor must fail");
    assert.match(r.stderr, /Bad file descriptor/);
    assert.equal(readFileSync(memory, "utf8"), "template bytes\n");
  });

  test("any other path opens as asked, and without the library the same write succeeds", () => {
    const memory = join(tmp.path, "memory2");
    const other = join(tmp.path, "other");
    writeFileSync(memory, "template bytes\n");
    writeFileSync(other, "other bytes\n");
    const r = writeThrough(other, cloneMemoryReadOnly(memory, LIB).env);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(other, "utf8"), "changed\ntes\n");
    const plain = writeThrough(memory, {});
    assert.equal(plain.status, 0, plain.stderr);
    assert.equal(readFileSync(memory, "utf8"), "changed\n bytes\n");
  });

  test("a clone cannot start without the library: one line that says how to build it", () => {
    assert.throws(
      () => cloneMemoryReadOnly("/t/memory", ""),
      /^Error: qemu: kata-ts-memro\.so not built \(run `make -C native`\): cannot start a clone$/,
    );
  });
});
