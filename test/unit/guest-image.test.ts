// Guest image builder logic without building anything: ldd parsing, applet links, the cache key, ext4
// sizing, progress rendering, the inspect report and the bootstrap initramfs script.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import { formatInspect } from "../../src/cli/commands/guest";
import {
  agentNodeFlags,
  appletLinks,
  type Component,
  ext4SizeFor,
  GUEST_AGENT_FLAGS_PATH,
  type ImageManifest,
  type ImagePlan,
  imageKey,
  imagePaths,
  parseLdd,
  uuidFromKey,
} from "../../src/image/image";
import { overallFraction, renderBar } from "../../src/image/progress";
import { bootstrapInitScript, bootstrapModuleNames } from "../support/bootstrap";

const LDD_NODE = `	linux-vdso.so.1 (0x00007fc9b6f1c000)
	libdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007fc9b6f03000)
	libstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007fc9b6c00000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fc9b69fe000)
	/lib64/ld-linux-x86-64.so.2 (0x00007fc9b6f1e000)
`;

const comp = (dest: string, sha256: string, size = 10, mode = 0o755): Component => ({
  role: "lib",
  source: dest,
  dest,
  sha256,
  size,
  mode,
});

describe("parseLdd", () => {
  test("libraries at their host paths, the interpreter, no vDSO", () => {
    assert.deepEqual(parseLdd(LDD_NODE), [
      { name: "libdl.so.2", path: "/lib/x86_64-linux-gnu/libdl.so.2" },
      { name: "libstdc++.so.6", path: "/lib/x86_64-linux-gnu/libstdc++.so.6" },
      { name: "libc.so.6", path: "/lib/x86_64-linux-gnu/libc.so.6" },
      { name: "/lib64/ld-linux-x86-64.so.2", path: "/lib64/ld-linux-x86-64.so.2" },
    ]);
  });
  test("a static binary has no libraries", () => {
    assert.deepEqual(parseLdd("\tstatically linked\n"), []);
    assert.deepEqual(parseLdd("\tnot a dynamic executable\n"), []);
  });
  test("a missing library is an error naming the binary and the library", () => {
    assert.throws(
      () => parseLdd("\tlibseccomp.so.2 => not found\n", "/x/kata-ts-helper"),
      /\/x\/kata-ts-helper needs libseccomp\.so\.2, which is not found/,
    );
  });
});

describe("appletLinks", () => {
  test("every applet but init and linuxrc links to /bin/busybox", () => {
    const links = appletLinks("bin/sh\nsbin/init\nlinuxrc\nusr/bin/[\nbin/busybox\nsbin/poweroff\n\n");
    assert.deepEqual(links, {
      "/bin/sh": "/bin/busybox",
      "/usr/bin/[": "/bin/busybox",
      "/sbin/poweroff": "/bin/busybox",
    });
  });
});

describe("imageKey", () => {
  const a = [comp("/usr/bin/node", "aa"), comp("/bin/busybox", "bb")];
  test("16 hex, independent of the order components were found in", () => {
    const k = imageKey(a, { "/bin/sh": "/bin/busybox" });
    assert.match(k, /^[0-9a-f]{16}$/);
    assert.equal(imageKey([...a].reverse(), { "/bin/sh": "/bin/busybox" }), k);
  });
  test("changes with any content hash, destination, mode or link", () => {
    const k = imageKey(a, {});
    assert.notEqual(imageKey([comp("/usr/bin/node", "ab"), comp("/bin/busybox", "bb")], {}), k);
    assert.notEqual(imageKey([comp("/usr/bin/nodejs", "aa"), comp("/bin/busybox", "bb")], {}), k);
    assert.notEqual(imageKey([comp("/usr/bin/node", "aa", 10, 0o644), comp("/bin/busybox", "bb")], {}), k);
    assert.notEqual(imageKey(a, { "/bin/sh": "/bin/busybox" }), k);
  });
  test("the source path and size are not part of it (only content and place)", () => {
    const moved = a.map((c) => ({ ...c, source: `/elsewhere${c.source}`, size: c.size + 1 }));
    assert.equal(imageKey(moved, {}), imageKey(a, {}));
  });
});

describe("layout", () => {
  test("paths under the cache: images/<key>/, current link at the configured default", () => {
    assert.deepEqual(imagePaths("0123456789abcdef", "/c"), {
      dir: "/c/images/0123456789abcdef",
      image: "/c/images/0123456789abcdef/kata-ts-guest.img",
      manifest: "/c/images/0123456789abcdef/manifest.json",
      current: "/c/kata-ts-guest.img",
    });
  });
  test("ext4 size: whole blocks plus headroom, a multiple of 2 MiB (virtio-pmem alignment)", () => {
    const plan: ImagePlan = {
      key: "k",
      components: [comp("/a", "x", 100 << 20), comp("/b", "y", 1)],
      symlinks: { "/s": "/a" },
      dirs: ["/", "/x"],
    };
    const size = ext4SizeFor(plan);
    assert.equal(size % (2 << 20), 0);
    assert.ok(size >= (100 << 20) + 4096 + (8 << 20), `${size}`);
    assert.ok(size < 120 << 20, `${size}`);
    assert.ok(ext4SizeFor(plan, [50 << 20, 1]) < size, "sizes as written (stripped node) override");
  });
  test("the file-system UUID is a stable function of the key", () => {
    assert.equal(uuidFromKey("abc"), uuidFromKey("abc"));
    assert.notEqual(uuidFromKey("abc"), uuidFromKey("abd"));
    assert.match(uuidFromKey("abc"), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

describe("the agent's node flags", () => {
  test("the first line of the tree's agent-node-flags, split on blanks; none without the file", (t) => {
    const root = mkdtempSync(join(tmpdir(), "kata-ts-flags-"));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    assert.deepEqual(agentNodeFlags(root), []);
    const file = join(root, GUEST_AGENT_FLAGS_PATH);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, "--jitless  --max-lazy\nignored\n");
    assert.deepEqual(agentNodeFlags(root), ["--jitless", "--max-lazy"]);
  });
});

describe("progress", () => {
  test("phases map onto one monotonic bar", () => {
    const f = [
      overallFraction({ phase: "inputs", label: "", done: 0, total: 0 }),
      overallFraction({ phase: "copy", label: "", done: 50, total: 100 }),
      overallFraction({ phase: "mkfs", label: "", done: 1, total: 1 }),
      overallFraction({ phase: "publish", label: "", done: 1, total: 1 }),
    ];
    assert.deepEqual(
      [...f].sort((a, b) => a - b),
      f,
    );
    assert.equal(f[3], 1);
  });
  test("bar rendering and truncation", () => {
    assert.equal(renderBar(0.5, "copy"), `[${"#".repeat(12)}${".".repeat(12)}]  50% copy`);
    assert.equal(renderBar(1, "x".repeat(200), 60).length, 60);
  });
});

describe("inspect report", () => {
  const manifest: ImageManifest = {
    key: "0123456789abcdef",
    builderVersion: "1",
    format: "ext4",
    built: "2026-11-29T00:00:00.000Z",
    buildSeconds: 1.8,
    image: "/c/images/0123456789abcdef/kata-ts-guest.img",
    imageBytes: 100 << 20,
    contentBytes: 99 << 20,
    versions: { "/usr/bin/node": "node v20.20.2" },
    components: [{ ...comp("/usr/bin/node", "f".repeat(64), 99 << 20), role: "node" }],
    symlinks: { "/bin/sh": "/bin/busybox" },
    nodeStripped: true,
  };
  test("up to date: key, size, one row per component with version", () => {
    const out = formatInspect({
      path: "/c/kata-ts-guest.img",
      resolved: manifest.image,
      manifest,
      currentKey: manifest.key,
    }).join("\n");
    assert.match(
      out,
      /^path +\/c\/kata-ts-guest\.img -> \/c\/images\/0123456789abcdef\/kata-ts-guest\.img$/m,
    );
    assert.match(out, /^key +0123456789abcdef \(matches the current inputs\)$/m);
    assert.match(out, /^size +100\.0 MiB image, 99\.0 MiB in 1 files, 1 links$/m);
    assert.match(out, /^ {2}node +\/usr\/bin\/node +99\.0 MiB +ffffffffffff +node v20\.20\.2$/m);
  });
  test("stale or missing", () => {
    const stale = formatInspect({ path: "/c/i", manifest, currentKey: "fedcba9876543210" }).join("\n");
    assert.match(stale, /current inputs differ \(key fedcba9876543210\): run `kata-ts guest build`/);
    assert.match(formatInspect({ path: "/c/i" }).join("\n"), /^image +missing$/m);
  });
});

describe("bootstrap initramfs (stock kernel)", () => {
  test("loads the bus, block, console and ext4 modules for the machine type", () => {
    assert.deepEqual(bootstrapModuleNames("microvm"), [
      "virtio_mmio",
      "virtio_blk",
      "virtio_console",
      "crc32c_generic",
      "ext4",
    ]);
    assert.equal(bootstrapModuleNames("q35")[0], "virtio_pci");
  });
  test("mounts the image read-only and hands over to its /sbin/init", () => {
    const s = bootstrapInitScript("/dev/vdb");
    assert.match(s, /^root=\/dev\/vdb$/m);
    assert.match(s, /mount -t ext4 -o ro "\$root" \/newroot/);
    assert.match(s, /exec switch_root \/newroot \/sbin\/init$/m);
  });
});
