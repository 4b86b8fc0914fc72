// Guest assets for the QEMU driver: kernel cache key (same as build.sh), PVH note detection, vmlinux
// extraction from a bzImage, the floor initramfs (newc cpio) and module ordering.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { contentKey, ensureCached } from "../../src/image/cache";
import {
  classifyKernel,
  extractVmlinux,
  hasPvhNote,
  kernelCacheKey,
  kernelRecipeDir,
  kernelSourceVersion,
  newestBootKernel,
  payloadCandidates,
  resolveGuestKernel,
} from "../../src/image/kernel";
import { REPO, tempDir } from "../helpers";
import { buildFloorInitramfs, moduleLoadOrder, newcArchive, S_IFREG } from "../support/floor";

const tmp = tempDir("kata-ts-guest-");
after(() => tmp.cleanup());

/** A minimal ELF64 LE file with one PT_NOTE segment holding one note. */
function elfWithNote(name: string, type: number): Buffer {
  const noteName = Buffer.from(`${name}\0`);
  const desc = Buffer.alloc(4);
  const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
  const nhdr = Buffer.alloc(12);
  nhdr.writeUInt32LE(noteName.length, 0);
  nhdr.writeUInt32LE(desc.length, 4);
  nhdr.writeUInt32LE(type, 8);
  const note = Buffer.concat([nhdr, pad(noteName), pad(desc)]);
  const eh = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(eh);
  eh.writeBigUInt64LE(64n, 32); // e_phoff
  eh.writeUInt16LE(56, 54); // e_phentsize
  eh.writeUInt16LE(1, 56); // e_phnum
  const ph = Buffer.alloc(56);
  ph.writeUInt32LE(4, 0); // PT_NOTE
  ph.writeBigUInt64LE(BigInt(64 + 56), 8); // p_offset
  ph.writeBigUInt64LE(BigInt(note.length), 32); // p_filesz
  return Buffer.concat([eh, ph, note]);
}

describe("guest kernel", () => {
  test("the cache key matches build.sh --print-key and changes with the fragment", async (t) => {
    const recipe = kernelRecipeDir(join(REPO, "src", "image"));
    assert.equal(recipe, join(REPO, "guest", "kernel"));
    const fragment = readFileSync(join(recipe!, "config-fragment"));
    const script = readFileSync(join(recipe!, "build.sh"));
    const a = kernelCacheKey("6.1.1-1", fragment, script);
    assert.match(a, /^[0-9a-f]{16}$/);
    assert.notEqual(
      kernelCacheKey("6.1.1-1", Buffer.concat([fragment, Buffer.from("CONFIG_X=y\n")]), script),
      a,
    );
    assert.notEqual(kernelCacheKey("6.1.1-2", fragment, script), a);
    const version = await kernelSourceVersion();
    if (!version) return t.skip("linux-source-6.1 not installed");
    const r = spawnSync("bash", [join(recipe!, "build.sh"), "--print-key"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), kernelCacheKey(version, fragment, script));
  });

  test("PVH note: Xen PHYS32_ENTRY (type 18) only; non-ELF is not a kernel", () => {
    assert.equal(hasPvhNote(elfWithNote("Xen", 18)), true);
    assert.equal(hasPvhNote(elfWithNote("Xen", 17)), false);
    assert.equal(hasPvhNote(elfWithNote("GNU", 18)), false);
    assert.equal(
      hasPvhNote(Buffer.from("MZ not an elf at all, padded to be long enough for a header....")),
      false,
    );
  });

  test("extractVmlinux skips a false magic and finds the compressed ELF inside a bzImage-like file", async () => {
    const elf = elfWithNote("Xen", 18);
    const fake = Buffer.concat([
      Buffer.from("HdrS setup code"),
      Buffer.from([0x1f, 0x8b, 0x08, 0xff, 0xff]), // gzip magic followed by garbage
      Buffer.alloc(100, 7),
      gzipSync(elf),
      Buffer.from("trailing bytes after the payload"),
    ]);
    assert.ok(payloadCandidates(fake).filter((c) => c.codec === "gzip").length >= 2);
    const out = await extractVmlinux(fake);
    assert.equal(out.codec, "gzip");
    assert.deepEqual(out.vmlinux, elf);
    assert.deepEqual((await extractVmlinux(elf)).codec, "none");
    await assert.rejects(extractVmlinux(Buffer.alloc(4096, 1)), /no compressed ELF kernel found/);
  });

  test("extractVmlinux: an xz payload (Debian's bzImage) through xz --single-stream", async (t) => {
    const elf = elfWithNote("Xen", 18);
    const xz = spawnSync("xz", ["-c", "--check=crc32"], { input: elf });
    if (xz.status !== 0) return t.skip("xz not installed");
    const out = await extractVmlinux(Buffer.concat([Buffer.alloc(512, 3), xz.stdout, Buffer.alloc(64, 9)]));
    assert.equal(out.codec, "xz");
    assert.deepEqual(out.vmlinux, elf);
  });

  test("classify: kata-ts builds and stock extractions by their place in the cache; resolve fallbacks", async () => {
    const cache = join(tmp.path, "cache");
    mkdirSync(join(cache, "kernel", "0123456789abcdef"), { recursive: true });
    mkdirSync(join(cache, "kernel", "stock-6.1.0-57-amd64"), { recursive: true });
    writeFileSync(join(cache, "kernel", "0123456789abcdef", "vmlinux"), "x");
    writeFileSync(join(cache, "kernel", "stock-6.1.0-57-amd64", "vmlinux"), "x");
    symlinkSync("kernel/0123456789abcdef/vmlinux", join(cache, "vmlinux"));
    const k = classifyKernel(join(cache, "vmlinux"), cache);
    assert.equal(k.kind, "kata-ts");
    assert.equal(k.id, "0123456789abcdef");
    assert.equal(k.path, join(cache, "kernel", "0123456789abcdef", "vmlinux"));
    assert.equal(k.needsModules, false);
    const s = classifyKernel(join(cache, "kernel", "stock-6.1.0-57-amd64", "vmlinux"), cache);
    assert.deepEqual([s.kind, s.id, s.needsModules], ["stock", "6.1.0-57-amd64", true]);
    assert.equal(classifyKernel("/elsewhere/vmlinux", cache).kind, "other");
    assert.equal((await resolveGuestKernel(join(cache, "vmlinux"), { cacheDir: cache })).kind, "kata-ts");
    await assert.rejects(
      resolveGuestKernel(join(tmp.path, "mine"), { cacheDir: cache }),
      /mine does not exist/,
    );
    // The default path missing and no /boot kernel: the fallback says what to install.
    const empty = join(tmp.path, "empty");
    mkdirSync(join(tmp.path, "noboot"));
    await assert.rejects(
      resolveGuestKernel(join(empty, "vmlinux"), { cacheDir: empty, bootDir: join(tmp.path, "noboot") }),
      /linux-image-amd64/,
    );
  });

  test("newestBootKernel orders releases numerically", () => {
    const boot = join(tmp.path, "boot");
    mkdirSync(boot);
    for (const r of ["6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-10-amd64"])
      writeFileSync(join(boot, `vmlinuz-${r}`), "");
    writeFileSync(join(boot, "config-9.9.9"), "");
    assert.equal(newestBootKernel(boot)?.release, "6.1.0-57-amd64");
  });
});

describe("floor initramfs", () => {
  test("newc archive: header layout, 4-byte alignment, trailer", () => {
    const a = newcArchive([{ name: "init", mode: S_IFREG | 0o755, data: Buffer.from("#!/bin/sh\n") }]);
    assert.equal(a.subarray(0, 6).toString(), "070701");
    assert.equal(a.length % 4, 0);
    assert.equal(Number.parseInt(a.subarray(6 + 8, 6 + 16).toString(), 16), S_IFREG | 0o755, "mode field");
    assert.equal(Number.parseInt(a.subarray(6 + 48, 6 + 56).toString(), 16), 10, "file size field");
    assert.ok(a.includes(Buffer.from("TRAILER!!!\0")));
  });

  test("cpio(1) lists the floor: init, busybox, applet links, /dev/console, modules in load order", async (t) => {
    const bb = join(tmp.path, "busybox");
    writeFileSync(bb, "fake busybox");
    const mods = [join(tmp.path, "a.ko"), join(tmp.path, "b.ko")];
    for (const m of mods) writeFileSync(m, m);
    const archive = buildFloorInitramfs({ busybox: bb, modules: mods });
    const r = spawnSync("cpio", ["-itv", "--quiet"], { input: archive, encoding: "utf8" });
    if (r.error) return t.skip("cpio not installed");
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    const find = (name: string) => lines.find((l) => l.endsWith(` ${name}`) || l.includes(` ${name} -> `));
    assert.match(find("init") ?? "", /^-rwxr-xr-x/);
    assert.match(find("bin/busybox") ?? "", /^-rwxr-xr-x/);
    assert.match(find("bin/sh") ?? "", /^lrwxrwxrwx.* bin\/sh -> busybox$/);
    assert.match(find("dev/console") ?? "", /^crw-------.* 5,\s+1 /);
    const extract = (name: string) =>
      spawnSync("cpio", ["-i", "--quiet", "--to-stdout", name], { input: archive }).stdout.toString();
    assert.equal(extract("lib/modules/load"), "00-a.ko\n01-b.ko\n");
    assert.equal(extract("lib/modules/01-b.ko"), mods[1]);
    const init = extract("init");
    assert.match(init, /virtio-ports\/\*\/name/);
    assert.match(init, /"agent\.channel\.0"/);
    // Same inputs, same bytes: the cache key is stable.
    assert.deepEqual(buildFloorInitramfs({ busybox: bb, modules: mods }), archive);
  });

  test("module load order: dependencies first, each once; unknown and compressed modules are errors", () => {
    const dir = join(tmp.path, "mods");
    mkdirSync(dir);
    writeFileSync(
      join(dir, "modules.dep"),
      [
        "kernel/drivers/virtio/virtio_ring.ko:",
        "kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
        "kernel/fs/x/packed.ko.xz:",
        "",
      ].join("\n"),
    );
    const order = moduleLoadOrder(dir, ["virtio_mmio", "virtio_console"]).map((p) => p.slice(dir.length + 1));
    assert.deepEqual(order, [
      "kernel/drivers/virtio/virtio_ring.ko",
      "kernel/drivers/virtio/virtio.ko",
      "kernel/drivers/virtio/virtio_mmio.ko",
      "kernel/drivers/char/virtio_console.ko",
    ]);
    assert.throws(() => moduleLoadOrder(dir, ["nope"]), /module nope is not in/);
    assert.throws(() => moduleLoadOrder(dir, ["packed"]), /compressed modules/);
  });

  test("cache: content keys are length-prefixed; ensureCached produces once", async () => {
    assert.notEqual(contentKey("ab", "c"), contentKey("a", "bc"));
    let calls = 0;
    const p = join(tmp.path, "c", "k", "file");
    const produce = () => {
      calls++;
      return Buffer.from("data");
    };
    assert.equal(await ensureCached(p, produce), p);
    await ensureCached(p, produce);
    assert.equal(calls, 1);
    assert.equal(readFileSync(p, "utf8"), "data");
  });
});
