// The guest image as persistent memory with DAX (virtio-pmem) on q35, as Kata maps its image as an
// nvdimm: the guest's root is /dev/pmem0 mounted dax=always and there is no virtio-blk disk; with
// `disable_image_nvdimm = true` the same machine reads the image over virtio-blk (/dev/vda) and keeps
// its own page-cache copy of it. Seen from inside a container that shares the guest's PID namespace
// (its /proc/1 is the guest's init). Each case leaves nothing behind (leak scanner).
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  kata,
  shellBundle,
  tempDir,
  vmTestEnv,
  vmTestKernel,
  vmTestSkip,
  writeVmTestConfig,
} from "../helpers";
import { assertNoLeaks, snapshotHost } from "../leaks";

const skip = vmTestSkip();
const tmp = tempDir("kata-vm-dax-");
const root = join(tmp.path, "root");
const env = vmTestEnv();
const SUFFIX = Math.random().toString(36).slice(2, 8);
let DAX = "";
let BLK = "";

// The guest's block devices, its root mount (from the guest init's mountinfo) and its page cache.
const SCRIPT = [
  "ls /sys/block | grep -v '^loop' | tr '\\n' ' '; echo",
  "awk '$5 == \"/\" {print $4, $5, $(NF - 2), $NF}' /proc/1/mountinfo",
  "awk '/^Cached:/ {print $2}' /proc/meminfo",
].join("; ");

function runGuest(config: string, name: string) {
  const id = `kdx-${name}-${SUFFIX}`;
  const b = shellBundle(join(tmp.path, id), SCRIPT, (spec) => {
    // The guest's PID namespace: /proc/1 is the guest's init, whose root is the image.
    spec.linux = { ...spec.linux, namespaces: spec.linux?.namespaces?.filter((n) => n.type !== "pid") };
  });
  const before = snapshotHost();
  const r = kata(["--root", root, "--config", config, "run", "--bundle", b, id], { env });
  assertNoLeaks(before, { root, bundle: b, id });
  assert.equal(r.code, 0, r.stderr);
  const [disks, rootMount, cached] = r.stdout.trim().split("\n");
  return { disks: disks.trim().split(/\s+/), rootMount, cachedKb: Number(cached) };
}

describe("the guest image over virtio-pmem with DAX (q35)", { skip }, () => {
  before(async () => {
    DAX = await writeVmTestConfig(tmp.path, vmTestKernel(), ['machine_type = "q35"']);
    BLK = join(tmp.path, "blk.toml");
    const text = readFileSync(DAX, "utf8");
    writeFileSync(
      BLK,
      text.replace('machine_type = "q35"', 'machine_type = "q35"\ndisable_image_nvdimm = true'),
    );
    assert.notEqual(readFileSync(BLK, "utf8"), text);
  });
  after(() => tmp.cleanup());

  test("q35: the root is /dev/pmem0 mounted dax=always, no virtio-blk disk", () => {
    const g = runGuest(DAX, "dax");
    assert.deepEqual(g.disks, ["pmem0"]);
    assert.match(g.rootMount, /^\/ \/ ext4 ro,dax=always/);
    // DAX: the image's files are not copied into the guest's page cache.
    assert.ok(g.cachedKb < 20_000, `Cached: ${g.cachedKb} kB`);
  });

  test("disable_image_nvdimm = true: the same machine reads the image over virtio-blk", () => {
    const g = runGuest(BLK, "blk");
    assert.deepEqual(g.disks, ["vda"]);
    assert.match(g.rootMount, /^\/ \/ ext4 ro$/);
    assert.ok(g.cachedKb > 20_000, `Cached: ${g.cachedKb} kB (the guest's own copy of what it read)`);
  });
});
