// The guest kernel: where kata-ts's own build lives in the cache, and Debian's stock kernel as the
// fallback. Both must be an uncompressed ELF vmlinux with a PVH note: QEMU then enters the kernel
// directly in 32-bit protected mode (no firmware, no real-mode setup, no decompressor; the XZ
// decompressor alone costs ~5 s under TCG).
//
// kata-ts's kernel is built by guest/kernel/build.sh into <cache>/kernel/<key>/vmlinux, where the key
// hashes the linux-source-6.1 package version, the config fragment and the build script, so a change
// to any of them means a new build and an unchanged input never rebuilds. <cache>/vmlinux is a symlink
// to the current build (the configured default kernel path).
//
// The stock fallback is the vmlinux extracted from /boot/vmlinuz-* (linux-image-amd64). Every virtio
// driver is a module there (virtio_mmio, virtio_console, 9p, virtiofs, vsock...), so a guest booted
// with it must insmod them from its own image before it can see the agent port; `needsModules` says so.

import { execFile, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { GUEST_ASSET_DIR } from "../config/config";
import { firstLine } from "../errors";
import { sha256Hex } from "../sys/crypto";
import { publishFile } from "./cache";

export const KERNEL_SOURCE_PACKAGE = "linux-source-6.1";

export type KernelKind = "kata-ts" | "stock" | "other";

export interface GuestKernel {
  /** The vmlinux to pass to `-kernel` (symlinks resolved). */
  path: string;
  kind: KernelKind;
  /** Cache key (kata-ts builds) or kernel release (stock). */
  id?: string;
  /** True when virtio drivers are modules the guest image must load (the stock kernel). */
  needsModules: boolean;
}

/**
 * The cache key build.sh computes: first 16 hex of
 * sha256("<source version>\n<sha256(fragment)>\n<sha256(build.sh)>\n").
 */
export function kernelCacheKey(
  sourceVersion: string,
  fragment: string | Buffer,
  script: string | Buffer,
): string {
  return sha256Hex(`${sourceVersion}\n${sha256Hex(fragment)}\n${sha256Hex(script)}\n`).slice(0, 16);
}

/** guest/kernel in the source tree or next to the bundle (dist/ → ../guest/kernel). */
export function kernelRecipeDir(from = __dirname): string | undefined {
  let dir = resolve(from);
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, "guest", "kernel");
    if (existsSync(join(candidate, "build.sh")) && existsSync(join(candidate, "config-fragment")))
      return candidate;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { encoding: "utf8" }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd}: ${firstLine(stderr) || err.message}`));
      else resolvePromise(stdout);
    });
  });
}

/** The installed linux-source-6.1 version, or undefined when the package is not installed. */
export async function kernelSourceVersion(pkg = KERNEL_SOURCE_PACKAGE): Promise<string | undefined> {
  try {
    const v = (await run("dpkg-query", ["-W", `-f=\${Version}`, pkg])).trim();
    return v || undefined;
  } catch {
    return undefined;
  }
}

/** The key the current recipe would build under, or undefined without the recipe or the source package. */
export async function currentKernelKey(recipeDir = kernelRecipeDir()): Promise<string | undefined> {
  if (!recipeDir) return undefined;
  const version = await kernelSourceVersion();
  if (!version) return undefined;
  return kernelCacheKey(
    version,
    readFileSync(join(recipeDir, "config-fragment")),
    readFileSync(join(recipeDir, "build.sh")),
  );
}

export function builtKernelPath(key: string, cacheDir = GUEST_ASSET_DIR): string {
  return join(cacheDir, "kernel", key, "vmlinux");
}

// ---- ELF / PVH checks ----

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

export function isElf(buf: Buffer): boolean {
  return buf.length >= 64 && buf.subarray(0, 4).equals(ELF_MAGIC);
}

/**
 * True when an ELF64 image carries the Xen PHYS32_ENTRY note, the PVH entry point QEMU needs to boot an
 * uncompressed vmlinux with -kernel ("Error loading uncompressed kernel without PVH ELF Note" otherwise).
 */
export function hasPvhNote(buf: Buffer): boolean {
  if (!isElf(buf) || buf[4] !== 2 || buf[5] !== 1) return false; // ELFCLASS64, little endian
  const phoff = Number(buf.readBigUInt64LE(32));
  const phentsize = buf.readUInt16LE(54);
  const phnum = buf.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > buf.length || buf.readUInt32LE(ph) !== 4) continue; // PT_NOTE
    const off = Number(buf.readBigUInt64LE(ph + 8));
    const size = Number(buf.readBigUInt64LE(ph + 32));
    let p = off;
    const end = Math.min(off + size, buf.length);
    while (p + 12 <= end) {
      const namesz = buf.readUInt32LE(p);
      const descsz = buf.readUInt32LE(p + 4);
      const type = buf.readUInt32LE(p + 8);
      const name = buf.toString("latin1", p + 12, p + 12 + Math.max(0, namesz - 1));
      if (name === "Xen" && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      p += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

const align4 = (n: number) => (n + 3) & ~3;

// ---- vmlinux extraction from a bzImage (scripts/extract-vmlinux, in TypeScript) ----

interface Codec {
  name: string;
  magic: Buffer;
  /** Decompressor command reading stdin, writing stdout. */
  cmd: [string, ...string[]];
}

const CODECS: Codec[] = [
  // gzip(1), not zlib: Node's gunzip rejects the bytes that follow the stream in a bzImage.
  { name: "gzip", magic: Buffer.from([0x1f, 0x8b, 0x08]), cmd: ["gzip", "-dc"] },
  // --single-stream: stop at the end of the first stream, ignoring the bzImage tail after it.
  {
    name: "xz",
    magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
    cmd: ["xz", "-dc", "--single-stream"],
  },
  { name: "zstd", magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), cmd: ["zstd", "-dcq"] },
  { name: "bzip2", magic: Buffer.from("BZh"), cmd: ["bzip2", "-dc"] },
  { name: "lzma", magic: Buffer.from([0x5d, 0x00, 0x00, 0x00]), cmd: ["xz", "-dc", "--format=lzma"] },
  { name: "lz4", magic: Buffer.from([0x02, 0x21, 0x4c, 0x18]), cmd: ["lz4", "-dc"] },
];

/** Every (offset, codec) where a compressed payload may start, in file order. */
export function payloadCandidates(image: Buffer, maxPerCodec = 4): { offset: number; codec: string }[] {
  const out: { offset: number; codec: string }[] = [];
  for (const c of CODECS) {
    let from = 0;
    for (let n = 0; n < maxPerCodec; n++) {
      const at = image.indexOf(c.magic, from);
      if (at < 0) break;
      out.push({ offset: at, codec: c.name });
      from = at + 1;
    }
  }
  return out.sort((a, b) => a.offset - b.offset);
}

/** Decompresses with an external tool; the output counts even when the tool complains about a tail. */
function pipeThrough(cmd: [string, ...string[]], input: Buffer): Promise<Buffer> {
  return new Promise((resolvePromise) => {
    const child = spawn(cmd[0], cmd.slice(1), { stdio: ["pipe", "pipe", "ignore"] });
    const chunks: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => chunks.push(c));
    child.on("error", () => resolvePromise(Buffer.alloc(0)));
    child.on("close", () => resolvePromise(Buffer.concat(chunks)));
    child.stdin.on("error", () => {}); // EPIPE when the tool stops reading early
    child.stdin.end(input);
  });
}

/**
 * The uncompressed vmlinux inside a bzImage: tries each compression magic found in the file, keeps the
 * first decompression that yields an ELF image. A file that already is ELF is returned as is.
 */
export async function extractVmlinux(image: Buffer): Promise<{ vmlinux: Buffer; codec: string }> {
  if (isElf(image)) return { vmlinux: image, codec: "none" };
  for (const cand of payloadCandidates(image)) {
    const codec = CODECS.find((c) => c.name === cand.codec)!;
    const input = image.subarray(cand.offset);
    const out = await pipeThrough(codec.cmd, input);
    if (isElf(out)) return { vmlinux: out, codec: codec.name };
  }
  throw new Error("no compressed ELF kernel found in the image (not a bzImage?)");
}

/** The newest /boot/vmlinuz-<release>, by release version order. */
export function newestBootKernel(bootDir = "/boot"): { path: string; release: string } | undefined {
  let names: string[];
  try {
    names = readdirSync(bootDir).filter((n) => n.startsWith("vmlinuz-"));
  } catch {
    return undefined;
  }
  if (names.length === 0) return undefined;
  names.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  const name = names[names.length - 1];
  return { path: join(bootDir, name), release: name.slice("vmlinuz-".length) };
}

/**
 * Debian's stock kernel as an uncompressed vmlinux in <cache>/kernel/stock-<release>/vmlinux, extracted
 * once (install linux-image-amd64 for /boot/vmlinuz-*). Throws when there is no kernel to extract or
 * the result cannot be booted with PVH.
 */
export async function ensureStockKernel(
  opts: { cacheDir?: string; bootDir?: string } = {},
): Promise<GuestKernel> {
  const cacheDir = opts.cacheDir ?? GUEST_ASSET_DIR;
  const boot = newestBootKernel(opts.bootDir);
  if (!boot) throw new Error(`no /boot/vmlinuz-* to fall back to (apt-get install linux-image-amd64)`);
  const out = join(cacheDir, "kernel", `stock-${boot.release}`, "vmlinux");
  if (!existsSync(out)) {
    const { vmlinux } = await extractVmlinux(readFileSync(boot.path));
    if (!hasPvhNote(vmlinux))
      throw new Error(`${boot.path}: the kernel has no PVH entry note; it cannot boot with -kernel`);
    publishFile(out, vmlinux);
  }
  return { path: out, kind: "stock", id: boot.release, needsModules: true };
}

/** What kind of kernel a path (after symlinks) is, judged by where it sits in the cache. */
export function classifyKernel(path: string, cacheDir = GUEST_ASSET_DIR): GuestKernel {
  const real = existsSync(path) ? realpathSync(path) : path;
  const dir = basename(dirname(real));
  const inCache = dirname(dirname(real)) === join(realpathOr(cacheDir), "kernel");
  if (inCache && /^[0-9a-f]{16}$/.test(dir))
    return { path: real, kind: "kata-ts", id: dir, needsModules: false };
  if (inCache && dir.startsWith("stock-"))
    return { path: real, kind: "stock", id: dir.slice("stock-".length), needsModules: true };
  return { path: real, kind: "other", needsModules: false };
}

function realpathOr(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/**
 * The kernel to boot for a configured path: that file when it exists; when it is missing and it is
 * the default (<cache>/vmlinux, i.e. kata-ts's build has not finished or was never run), the stock
 * fallback. A missing non-default path is an error: the user asked for that file.
 */
export async function resolveGuestKernel(
  configured: string,
  opts: { cacheDir?: string; bootDir?: string } = {},
): Promise<GuestKernel> {
  const cacheDir = opts.cacheDir ?? GUEST_ASSET_DIR;
  if (existsSync(configured)) return classifyKernel(configured, cacheDir);
  if (resolve(configured) === join(cacheDir, "vmlinux")) return ensureStockKernel(opts);
  throw new Error(`guest kernel ${configured} does not exist`);
}
