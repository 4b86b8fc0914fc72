// The sandbox share's host mounts (src/sandbox/share.ts, mount(2) from the addon), on this host under a
// temporary directory: shared propagation, read-write and read-only binds (flags kept, the propagated
// copy read-only too), and nothing left in the caller's mount table afterwards.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  makeSharedMount,
  mountsUnder,
  shareDir,
  shareFile,
  unmountTree,
  unshare,
} from "../../src/sandbox/share";
import { tempDir } from "../helpers";

const mountinfo = () => readFileSync("/proc/self/mountinfo", "utf8");

/** The mountinfo line of the mount at exactly `target`: its per-mount options and optional fields. */
function mountAt(target: string): { options: string[]; optional: string } {
  const line = mountinfo()
    .split("\n")
    .filter((l) => l.split(" ")[4] === target)
    .pop();
  assert.ok(line, `${target} is a mount point`);
  const f = line.split(" ");
  return { options: f[5].split(","), optional: f.slice(6, f.indexOf("-")).join(" ") };
}

function writeFails(file: string): string {
  try {
    writeFileSync(file, "x");
    return "written";
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? "?";
  }
}

describe("sandbox share host mounts", { skip: process.getuid?.() !== 0 && "needs root (mount)" }, () => {
  test("shared propagation; rw and ro binds (flags kept, the peer's copy ro too); unshare and unmountTree leave nothing", () => {
    const tmp = tempDir("kata-ts-share-it-");
    const before = mountinfo().split("\n").length;
    const shared = join(tmp.path, "shared");
    const peer = join(tmp.path, "peer");
    const src = join(tmp.path, "src");
    const nosuid = join(tmp.path, "nosuid");
    try {
      makeSharedMount(shared);
      assert.match(mountAt(shared).optional, /\bshared:\d+/);
      // A second view of the share in the same peer group, as QEMU's or virtiofsd's copy is.
      mkdirSync(peer);
      execFileSync("mount", ["--bind", shared, peer]);

      mkdirSync(src);
      writeFileSync(join(src, "file"), "from the host\n");
      const rw = shareDir(shared, "c1/rootfs", src, false);
      writeFileSync(join(rw, "new"), "by the container\n");
      assert.equal(readFileSync(join(src, "new"), "utf8"), "by the container\n", "rw bind writes through");
      assert.equal(
        readFileSync(join(peer, "c1/rootfs/file"), "utf8"),
        "from the host\n",
        "it reached the peer",
      );

      // A read-only bind of a nosuid, nodev source: read-only, and still nosuid/nodev (a plain
      // MS_REMOUNT|MS_BIND|MS_RDONLY would have cleared them).
      mkdirSync(nosuid);
      writeFileSync(join(nosuid, "f"), "ro data\n");
      execFileSync("mount", ["--bind", nosuid, nosuid]);
      execFileSync("mount", ["-o", "remount,bind,nosuid,nodev", nosuid]);
      const ro = shareDir(shared, "c2/mounts/0", nosuid, true);
      const opts = mountAt(ro).options;
      for (const o of ["ro", "nosuid", "nodev"]) assert.ok(opts.includes(o), `${o} in ${opts}`);
      assert.equal(readFileSync(join(ro, "f"), "utf8"), "ro data\n");
      assert.equal(writeFails(join(ro, "f")), "EROFS");
      assert.equal(writeFails(join(peer, "c2/mounts/0/f")), "EROFS", "the propagated copy is read-only too");
      const file = shareFile(shared, "c2/mounts/1", join(src, "file"), true);
      assert.equal(writeFails(file), "EROFS");
      assert.equal(readFileSync(join(src, "file"), "utf8"), "from the host\n");
      assert.deepEqual(
        mountsUnder(tmp.path).filter((m) => m.includes(".ro-stage")),
        [],
        "no staging mount is left",
      );

      // Bad input: a source that does not exist is one line, and leaves no mount and no staging point.
      const missing = join(tmp.path, "missing");
      for (const readonly of [false, true])
        assert.throws(
          () => shareDir(shared, `c3/mounts/${Number(readonly)}`, missing, readonly),
          (e: Error) =>
            /^bind \S+ on \S+: mount: No such file or directory$/.test(e.message) &&
            !e.message.includes("\n"),
        );
      assert.deepEqual(mountsUnder(join(shared, "c3")), []);
      assert.deepEqual(
        mountsUnder(tmp.path).filter((m) => m.includes(".ro-stage")),
        [],
      );
      unshare(shared, "c3");

      unshare(shared, "c1");
      unshare(shared, "c2");
      assert.equal(existsSync(join(shared, "c1")), false);
      assert.equal(existsSync(join(shared, "c2")), false);
      assert.equal(
        readFileSync(join(src, "new"), "utf8"),
        "by the container\n",
        "unshare left the source alone",
      );
    } finally {
      unmountTree(tmp.path);
      // Only once nothing is mounted there: removing would reach through a mount into its source.
      if (mountsUnder(tmp.path).length === 0) tmp.cleanup();
    }
    assert.deepEqual(mountsUnder(tmp.path), []);
    assert.equal(mountinfo().split("\n").length, before, "the caller's mount table is as it was");
  });
});
