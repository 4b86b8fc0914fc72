// The guest image: the immutable runtime tree the guest agent runs from, as a read-only ext4 file
// system that the guest kernel mounts as its root (`root=/dev/vda ro` over virtio-blk, or /dev/pmem0
// with DAX). docs/guest.md has the measurements behind that choice (vs. an initramfs or squashfs).
//
// Contents: busybox-static (+ a symlink per applet), node and every library `ldd` names for it, the
// agent bundle (dist/kata-agent.cjs), the C helper and the native addon (+ their libraries), the init
// (guest/rootfs/init) and a minimal /etc (guest/rootfs/etc: no CA store, no package database).
//
// The image is content-addressed: <cache>/images/<key>/kata-ts-guest.img, where the key hashes every
// input file (content and destination), the applet links and the builder version, so an unchanged
// input never rebuilds and any change does. <cache>/kata-ts-guest.img (the configured default
// hypervisor.image) is a symlink to the current build. Input hashes are remembered per (path, size,
// mtime, inode) so that checking a warm cache does not re-read the 100 MB node binary.

import { execFile, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  createReadStream,
  existsSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { GUEST_ASSET_DIR } from "../config/config";
import { firstLine } from "../errors";
import { sha256, sha256Hex } from "../sys/crypto";
import { contentKey } from "./cache";

/** Bump when the layout or the way the image is made changes: it is part of the key. */
export const IMAGE_BUILDER_VERSION = "1";
export const IMAGE_FILE = "kata-ts-guest.img";
export const MANIFEST_FILE = "manifest.json";
/** Where the agent's runtime lives in the guest (the init and the agent rely on these paths). */
export const GUEST_OPT_DIR = "/opt/kata-ts";
export const GUEST_AGENT_PATH = `${GUEST_OPT_DIR}/kata-agent.cjs`;
/** bin/run-cached.cjs: the init starts the agent through it, with the code cache made at build time. */
export const GUEST_LOADER_PATH = `${GUEST_OPT_DIR}/run-cached.cjs`;
export const GUEST_HELPER_PATH = `${GUEST_OPT_DIR}/kata-ts-helper`;
export const GUEST_ADDON_PATH = `${GUEST_OPT_DIR}/kata_native.node`;
export const GUEST_NODE_PATH = "/usr/bin/node";
/**
 * The agent's node flags, one line (guest/rootfs/opt/kata-ts/agent-node-flags): the init starts the agent
 * with them and the agent's code cache is made under them (V8 rejects a cache made under other flags).
 */
export const GUEST_AGENT_FLAGS_PATH = `${GUEST_OPT_DIR}/agent-node-flags`;

export type ComponentRole = "busybox" | "node" | "lib" | "agent" | "helper" | "addon" | "init" | "etc";

/** One regular file in the image. */
export interface Component {
  role: ComponentRole;
  /** Host file the content comes from (symlinks resolved). */
  source: string;
  /** Absolute path in the guest. */
  dest: string;
  sha256: string;
  size: number;
  mode: number;
  /** Who needs it (libraries: the binaries that link it). */
  neededBy?: string[];
}

export interface ImageSources {
  busybox: string;
  node: string;
  agentBundle: string;
  /** bin/run-cached.cjs (runs a bundle with its V8 code cache). */
  loader: string;
  helper: string;
  addon: string;
  /** guest/rootfs: `init` and `etc/`. */
  rootfsDir: string;
}

export interface ImagePlan {
  key: string;
  components: Component[];
  /** dest → target. */
  symlinks: Record<string, string>;
  dirs: string[];
}

export interface ImageManifest {
  key: string;
  builderVersion: string;
  format: "ext4";
  /** ISO time. */
  built: string;
  buildSeconds: number;
  image: string;
  imageBytes: number;
  /** Sum of the component sizes (what the files take before the file system's own overhead). */
  contentBytes: number;
  /** node, busybox: their version strings; libraries: their Debian package and version when known. */
  versions: Record<string, string>;
  components: Component[];
  symlinks: Record<string, string>;
  /** Whether node was stripped of its symbol tables (binutils `strip` present at build time). */
  nodeStripped: boolean;
}

export interface ImagePaths {
  dir: string;
  image: string;
  manifest: string;
  /** The configured default path: a symlink to the current build's image. */
  current: string;
}

export function imagePaths(key: string, cacheDir = GUEST_ASSET_DIR): ImagePaths {
  const dir = join(cacheDir, "images", key);
  return {
    dir,
    image: join(dir, IMAGE_FILE),
    manifest: join(dir, MANIFEST_FILE),
    current: join(cacheDir, IMAGE_FILE),
  };
}

/** The repository (or installed tree) holding guest/rootfs/init, searched upward from `from`. */
export function findProjectRoot(from = __dirname): string | undefined {
  let dir = resolve(from);
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, "guest", "rootfs", "init"))) return dir;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}

/** The inputs as they sit in a built checkout: native/build, dist/, guest/rootfs; host busybox and node. */
export function defaultSources(root = findProjectRoot()): ImageSources {
  if (!root) throw new Error("guest image: guest/rootfs/init not found (run from the kata-ts checkout)");
  return {
    busybox: "/bin/busybox",
    node: "/usr/bin/node",
    agentBundle: join(root, "dist", "kata-agent.cjs"),
    loader: join(root, "bin", "run-cached.cjs"),
    helper: join(root, "native", "build", "kata-ts-helper"),
    addon: join(root, "native", "build", "kata_native.node"),
    rootfsDir: join(root, "guest", "rootfs"),
  };
}

/** What must exist before a build, each with the command that makes it. */
export function checkSources(s: ImageSources): void {
  const need: [string, string][] = [
    [s.busybox, "apt-get install -y busybox-static"],
    [s.node, "install Node.js 20"],
    [s.agentBundle, "build the guest agent: node scripts/build.mjs"],
    [s.loader, "bin/run-cached.cjs is part of the kata-ts source tree"],
    [s.helper, "make -C native"],
    [s.addon, "make -C native"],
    [join(s.rootfsDir, "init"), "guest/rootfs/init is part of the kata-ts source tree"],
  ];
  for (const [path, fix] of need) {
    if (!existsSync(path)) throw new Error(`guest image: ${path} is missing (${fix})`);
  }
}

// ---- ldd ----

export interface LddEntry {
  /** The name the binary asks for (soname, or the interpreter's path). */
  name: string;
  /** Where the host loader found it. */
  path: string;
}

/**
 * Parses `ldd` output: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the interpreter line
 * "/lib64/ld-linux-x86-64.so.2 (0x...)". The vDSO has no file; a "not found" library is an error.
 */
export function parseLdd(output: string, binary = "binary"): LddEntry[] {
  const out: LddEntry[] = [];
  for (const raw of output.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("linux-vdso") || line.startsWith("linux-gate")) continue;
    if (line === "statically linked" || line === "not a dynamic executable") continue;
    const arrow = line.match(/^(\S+)\s+=>\s+(.*?)(?:\s+\(0x[0-9a-f]+\))?$/);
    if (arrow) {
      if (arrow[2] === "not found")
        throw new Error(`guest image: ${binary} needs ${arrow[1]}, which is not found`);
      if (arrow[2].startsWith("/")) out.push({ name: arrow[1], path: arrow[2] });
      continue;
    }
    const interp = line.match(/^(\/\S+)\s+\(0x[0-9a-f]+\)$/);
    if (interp) out.push({ name: interp[1], path: interp[1] });
  }
  return out;
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      cmd,
      args,
      { encoding: "utf8", maxBuffer: 16 << 20, env: env ?? process.env },
      (err, stdout, stderr) => {
        if (err) {
          const why = (stderr || "").trim().split("\n").pop() || err.message;
          reject(new Error(`${cmd}: ${why}`));
        } else resolvePromise(stdout);
      },
    );
  });
}

/** stdout whatever the exit status ("" when the command cannot run). */
function runStdout(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolvePromise) => {
    execFile(cmd, args, { encoding: "utf8", maxBuffer: 16 << 20 }, (_err, stdout) =>
      resolvePromise(stdout ?? ""),
    );
  });
}

export async function lddOf(binary: string): Promise<LddEntry[]> {
  // ldd exits 1 for a static binary ("not a dynamic executable"): that is "no libraries".
  try {
    return parseLdd(await run("ldd", [binary]), binary);
  } catch (err) {
    if (/not a dynamic executable|statically linked/.test((err as Error).message)) return [];
    throw err;
  }
}

// ---- input hashing (remembered per file identity) ----

interface HashCacheEntry {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  sha256: string;
}

export class HashCache {
  private entries: Record<string, HashCacheEntry> = {};
  private dirty = false;
  constructor(private readonly file?: string) {
    if (file) {
      try {
        this.entries = JSON.parse(readFileSync(file, "utf8"));
      } catch {
        this.entries = {};
      }
    }
  }
  async sha256(path: string): Promise<{ sha256: string; size: number }> {
    const st = statSync(path);
    const e = this.entries[path];
    if (e && e.size === st.size && e.mtimeMs === st.mtimeMs && e.ctimeMs === st.ctimeMs && e.ino === st.ino)
      return { sha256: e.sha256, size: st.size };
    const sha256 = await fileSha256(path);
    this.entries[path] = { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino, sha256 };
    this.dirty = true;
    return { sha256, size: st.size };
  }
  save(): void {
    if (!this.file || !this.dirty) return;
    try {
      mkdirSync(dirname(this.file), { recursive: true });
      const tmp = `${this.file}.tmp.${process.pid}`;
      writeFileSync(tmp, JSON.stringify(this.entries));
      renameSync(tmp, this.file);
      this.dirty = false;
    } catch {
      // only a speed-up: a read-only cache just means hashing again next time
    }
  }
}

export function fileSha256(path: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const h = sha256();
    createReadStream(path, { highWaterMark: 1 << 20 })
      .on("data", (c) => h.update(c))
      .on("error", reject)
      .on("end", () => resolvePromise(h.digest("hex")));
  });
}

// ---- the plan: every file, link and directory of the image, and the key ----

/** Directories every image has (mount points and the places the engine writes under tmpfs). */
export const IMAGE_DIRS = [
  "/bin",
  "/sbin",
  "/usr/bin",
  "/usr/sbin",
  "/lib",
  "/lib64",
  "/etc",
  "/opt/kata-ts",
  "/proc",
  "/sys",
  "/dev",
  "/run",
  "/tmp",
  "/mnt",
  "/root",
  "/var",
];

/** Applets that must not get a link: the kernel runs /sbin/init, which is our /init, not busybox's. */
const APPLET_EXCLUDE = new Set(["sbin/init", "linuxrc"]);

/** The busybox applet links, from `busybox --list-full` (paths without a leading slash). */
export function appletLinks(listFull: string): Record<string, string> {
  const links: Record<string, string> = {};
  for (const raw of listFull.split("\n")) {
    const rel = raw.trim();
    if (!rel || APPLET_EXCLUDE.has(rel)) continue;
    links[`/${rel}`] = "/bin/busybox";
  }
  delete links["/bin/busybox"];
  return links;
}

/** The key: builder version, then every component (dest, mode, sha256) and link, in a fixed order. */
export function imageKey(components: Component[], symlinks: Record<string, string>): string {
  const parts: string[] = [`kata-ts-guest-image v${IMAGE_BUILDER_VERSION} ext4`];
  for (const c of [...components].sort((a, b) => a.dest.localeCompare(b.dest)))
    parts.push(`f ${c.dest} ${c.mode.toString(8)} ${c.sha256}`);
  for (const d of Object.keys(symlinks).sort()) parts.push(`l ${d} ${symlinks[d]}`);
  return contentKey(...parts);
}

export interface PlanOptions {
  hashCache?: HashCache;
  onProgress?: ProgressFn;
}

export type ProgressFn = (e: ProgressEvent) => void;

export interface ProgressEvent {
  phase: "inputs" | "copy" | "mkfs" | "publish";
  /** Short description of the current step. */
  label: string;
  /** Bytes (copy) or items done / total; total 0 = indeterminate. */
  done: number;
  total: number;
}

function listRootfs(dir: string): { rel: string; abs: string }[] {
  const out: { rel: string; abs: string }[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const abs = join(d, name);
      const st = lstatSync(abs);
      if (st.isDirectory()) walk(abs);
      else if (st.isFile()) out.push({ rel: `/${relative(dir, abs)}`, abs });
    }
  };
  walk(dir);
  return out;
}

/** Resolves every input (ldd, applets, rootfs files), hashes them and computes the key. No writes. */
export async function planImage(sources: ImageSources, opts: PlanOptions = {}): Promise<ImagePlan> {
  checkSources(sources);
  const hashes = opts.hashCache ?? new HashCache();
  const progress = opts.onProgress ?? (() => {});
  const components: Component[] = [];
  const byDest = new Map<string, Component>();
  const add = async (role: ComponentRole, source: string, dest: string, mode: number, neededBy?: string) => {
    const real = realpathSync(source);
    const prev = byDest.get(dest);
    if (prev) {
      if (prev.source !== real)
        throw new Error(`guest image: ${dest} would come from both ${prev.source} and ${real}`);
      if (neededBy && !prev.neededBy?.includes(neededBy))
        prev.neededBy = [...(prev.neededBy ?? []), neededBy];
      return;
    }
    progress({ phase: "inputs", label: `hashing ${dest}`, done: components.length, total: 0 });
    const { sha256, size } = await hashes.sha256(real);
    const c: Component = { role, source: real, dest, sha256, size, mode };
    if (neededBy) c.neededBy = [neededBy];
    components.push(c);
    byDest.set(dest, c);
  };

  const binaries: [ComponentRole, string, string][] = [
    ["node", sources.node, GUEST_NODE_PATH],
    ["helper", sources.helper, GUEST_HELPER_PATH],
    ["addon", sources.addon, GUEST_ADDON_PATH],
  ];
  // The external commands run in parallel: they are most of what an up-to-date check costs.
  const [libsOf, applets] = await Promise.all([
    Promise.all(binaries.map(([, src]) => lddOf(src))),
    run(sources.busybox, ["--list-full"]),
  ]);
  await add("busybox", sources.busybox, "/bin/busybox", 0o755);
  for (const [i, [role, src, dest]] of binaries.entries()) {
    await add(role, src, dest, role === "addon" ? 0o644 : 0o755);
    // Each library goes where ldd found it on the host, so the guest's loader (same glibc) finds it
    // on its default search path without an ld.so.cache.
    for (const lib of libsOf[i]) await add("lib", lib.path, lib.path, 0o755, dest);
  }
  await add("agent", sources.agentBundle, GUEST_AGENT_PATH, 0o644);
  const map = `${sources.agentBundle}.map`;
  if (existsSync(map)) await add("agent", map, `${GUEST_AGENT_PATH}.map`, 0o644);
  await add("agent", sources.loader, GUEST_LOADER_PATH, 0o644);
  await add("init", join(sources.rootfsDir, "init"), "/init", 0o755);
  for (const f of listRootfs(sources.rootfsDir)) {
    if (f.rel === "/init") continue;
    await add(f.rel.startsWith("/etc/") ? "etc" : "init", f.abs, f.rel, statSync(f.abs).mode & 0o777);
  }
  hashes.save();

  const symlinks: Record<string, string> = appletLinks(applets);
  symlinks["/sbin/init"] = "/init";
  symlinks["/etc/mtab"] = "/proc/self/mounts";
  for (const c of components) delete symlinks[c.dest];

  const dirs = new Set(IMAGE_DIRS);
  for (const p of [...components.map((c) => c.dest), ...Object.keys(symlinks)]) {
    for (let d = dirname(p); d !== "/"; d = dirname(d)) dirs.add(d);
  }
  return {
    key: imageKey(components, symlinks),
    components,
    symlinks,
    dirs: [...dirs].sort(),
  };
}

// ---- building ----

/** Lays the plan out as a directory tree under `root` (owned by the caller; root only for uid 0 files). */
export async function writeTree(
  plan: ImagePlan,
  root: string,
  opts: { stripNode?: boolean; onProgress?: ProgressFn } = {},
): Promise<{ nodeStripped: boolean }> {
  const progress = opts.onProgress ?? (() => {});
  const at = (p: string) => join(root, p);
  for (const d of plan.dirs) mkdirSync(at(d), { recursive: true, mode: 0o755 });
  chmodSync(at("/tmp"), 0o1777);
  chmodSync(at("/root"), 0o700);
  const total = plan.components.reduce((n, c) => n + c.size, 0);
  let done = 0;
  let nodeStripped = false;
  for (const c of plan.components) {
    progress({ phase: "copy", label: c.dest, done, total });
    if (c.role === "node" && opts.stripNode !== false && (await hasCommand("strip"))) {
      // The symbol tables (~13 MB of node's 99 MB) are never mapped at run time: dropping them only
      // makes the image smaller. Debug info stays on the host binary.
      await run("strip", ["--strip-all", "-o", at(c.dest), c.source]);
      nodeStripped = true;
    } else {
      copyFileSync(c.source, at(c.dest));
    }
    chmodSync(at(c.dest), c.mode);
    utimesSync(at(c.dest), 0, 0);
    done += c.size;
  }
  progress({ phase: "copy", label: "links", done, total });
  for (const [dest, target] of Object.entries(plan.symlinks)) {
    const linkPath = at(dest);
    rmSync(linkPath, { force: true });
    // Relative targets: the tree is correct wherever it is mounted (and while it is still a directory).
    symlinkSync(relative(dirname(dest), target) || ".", linkPath);
    lutimesSync(linkPath, 0, 0);
  }
  writeAgentCodeCache(root);
  // Fixed times everywhere (directories last: creating entries touches them): same inputs, same bytes.
  for (const d of [...plan.dirs].reverse()) utimesSync(at(d), 0, 0);
  return { nodeStripped };
}

/**
 * The agent's V8 code cache, next to its bundle in the tree: the tree's own node (the guest's binary, so
 * V8 accepts the cache there) runs the bundle's build-time warm-up through the loader, which writes
 * BUNDLE.v8cache at exit. V8's cache bytes differ from run to run, so it is derived here from inputs
 * that are already in the key rather than being an input itself. Without it the agent just compiles.
 */
function writeAgentCodeCache(root: string): void {
  const loader = join(root, GUEST_LOADER_PATH);
  const agent = join(root, GUEST_AGENT_PATH);
  if (!existsSync(loader) || !existsSync(agent)) return;
  const r = spawnSync(join(root, GUEST_NODE_PATH), [...agentNodeFlags(root), loader, agent], {
    env: { ...process.env, KATA_TS_WRITE_CODE_CACHE: "1", KATA_TS_AGENT_WARMUP: "1" },
    stdio: "ignore",
    timeout: 60_000,
  });
  const cache = `${agent}.v8cache`;
  if (r.status !== 0 || !existsSync(cache)) {
    rmSync(cache, { force: true });
    return;
  }
  chmodSync(cache, 0o644);
  utimesSync(cache, 0, 0);
}

/** The flags the init gives the agent's node in this tree (none without the file). */
export function agentNodeFlags(root: string): string[] {
  try {
    return readFileSync(join(root, GUEST_AGENT_FLAGS_PATH), "utf8")
      .split("\n")[0]
      .split(/\s+/)
      .filter(Boolean);
  } catch {
    return [];
  }
}

/** The sizes of the files as written (node shrinks when stripped). */
function treeBytes(plan: ImagePlan, tree: string): number[] {
  return plan.components.map((c) => statSync(join(tree, c.dest)).size);
}

async function hasCommand(cmd: string): Promise<boolean> {
  try {
    await run("sh", ["-c", `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

/** Bytes a tree needs as ext4 with 4 KiB blocks, with room for metadata, rounded up to 2 MiB (pmem). */
export function ext4SizeFor(plan: ImagePlan, fileSizes = plan.components.map((c) => c.size)): number {
  const block = 4096;
  const data = fileSizes.reduce((n, size) => n + Math.ceil(size / block) * block, 0);
  const inodes = plan.components.length + Object.keys(plan.symlinks).length + plan.dirs.length;
  const est = data * 1.04 + inodes * 256 + plan.dirs.length * block + (8 << 20);
  const align = 2 << 20;
  return Math.ceil(est / align) * align;
}

/** A stable UUID from the key, so the same inputs give the same file system identity. */
export function uuidFromKey(key: string): string {
  const h = sha256Hex(`kata-ts-guest ${key}`);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** mkfs.ext4 -d: an ext4 image holding `tree`, without a journal (it is mounted read-only). */
export async function makeExt4(tree: string, image: string, sizeBytes: number, key: string): Promise<void> {
  const uuid = uuidFromKey(key);
  const args = [
    "-q",
    "-F",
    "-t",
    "ext4",
    "-b",
    "4096",
    "-m",
    "0",
    "-L",
    "kata-ts-guest",
    "-U",
    uuid,
    "-O",
    "^has_journal,^resize_inode,^metadata_csum_seed",
    "-E",
    `root_owner=0:0,hash_seed=${uuid},lazy_itable_init=0,nodiscard`,
    "-d",
    tree,
    image,
    `${Math.floor(sizeBytes / 1024)}k`,
  ];
  // Fixed timestamps: the same inputs give the same bytes (e2fsprogs 1.47 honours this variable).
  await run("mkfs.ext4", args, { ...process.env, E2FSPROGS_FAKE_TIME: "1" });
}

export interface BuildOptions {
  sources?: ImageSources;
  cacheDir?: string;
  /** Rebuild even when the cache has this key. */
  force?: boolean;
  onProgress?: ProgressFn;
  /** Point <cache>/kata-ts-guest.img at the result (default true). */
  link?: boolean;
}

export interface BuildResult {
  status: "built" | "up-to-date";
  key: string;
  paths: ImagePaths;
  manifest: ImageManifest;
  seconds: number;
}

function readManifest(path: string): ImageManifest | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as ImageManifest;
  } catch {
    return undefined;
  }
}

/** Points <cache>/kata-ts-guest.img at `image` atomically (symlink + rename). */
export function linkCurrent(paths: ImagePaths): void {
  const tmp = `${paths.current}.tmp.${process.pid}`;
  rmSync(tmp, { force: true });
  symlinkSync(relative(dirname(paths.current), paths.image), tmp);
  renameSync(tmp, paths.current);
}

/** Debian package and version of each host file (best effort: files outside dpkg are left out). */
async function packageVersions(files: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  // dpkg-query exits 1 when some file is unowned (a symlink dpkg does not list): the rest still counts.
  const owners = await runStdout("dpkg-query", ["-S", ...files]);
  const pkgs = new Map<string, string>();
  for (const line of owners.split("\n")) {
    const m = line.match(/^([^:\s,]+(?::[a-z0-9_]+)?):\s+(\/.*)$/);
    if (m) pkgs.set(m[2], m[1]);
  }
  if (pkgs.size === 0) return out;
  const names = [...new Set(pkgs.values())];
  let versions = "";
  try {
    versions = await run("dpkg-query", ["-W", `-f=${"$"}{binary:Package} ${"$"}{Version}\n`, ...names]);
  } catch {
    return out;
  }
  const ver = new Map<string, string>();
  for (const line of versions.split("\n")) {
    const [p, v] = line.split(" ");
    if (p && v) {
      ver.set(p, v);
      ver.set(p.replace(/:.*$/, ""), v);
    }
  }
  for (const [file, pkg] of pkgs) {
    const v = ver.get(pkg) ?? ver.get(pkg.replace(/:.*$/, ""));
    if (v) out[file] = `${pkg.replace(/:.*$/, "")} ${v}`;
  }
  return out;
}

async function versionsOf(plan: ImagePlan, sources: ImageSources): Promise<Record<string, string>> {
  const versions: Record<string, string> = {};
  try {
    versions[GUEST_NODE_PATH] = `node ${(await run(sources.node, ["--version"])).trim()}`;
  } catch {
    // no version to record: the image is still valid without it
  }
  try {
    // `busybox` alone prints "BusyBox v1.35.0 (Debian ...) multi-call binary." first.
    const first = firstLine(await run(sources.busybox, ["--help"]).catch((e: Error) => e.message));
    const m = first.match(/BusyBox (v\S+(?: \([^)]*\))?)/);
    if (m) versions["/bin/busybox"] = `busybox ${m[1]}`;
  } catch {
    // no version to record: the image is still valid without it
  }
  const libs = plan.components.filter((c) => c.role === "lib");
  const pkgs = await packageVersions([...new Set(libs.flatMap((c) => [c.dest, c.source]))]);
  for (const c of libs) {
    const v = pkgs[c.dest] ?? pkgs[c.source];
    if (v) versions[c.dest] = v;
  }
  return versions;
}

/**
 * Builds the image for the current inputs unless the cache already has it. Returns quickly (no file
 * reads beyond stat and ldd) when it is up to date.
 */
export async function buildImage(opts: BuildOptions = {}): Promise<BuildResult> {
  const t0 = performance.now();
  const cacheDir = opts.cacheDir ?? GUEST_ASSET_DIR;
  const sources = opts.sources ?? defaultSources();
  const progress = opts.onProgress ?? (() => {});
  const hashCache = new HashCache(join(cacheDir, "images", "input-hashes.json"));
  const plan = await planImage(sources, { hashCache, onProgress: progress });
  const paths = imagePaths(plan.key, cacheDir);
  const link = opts.link !== false;

  const existing = readManifest(paths.manifest);
  if (!opts.force && existing && existsSync(paths.image)) {
    if (link) linkCurrent(paths);
    return {
      status: "up-to-date",
      key: plan.key,
      paths,
      manifest: existing,
      seconds: (performance.now() - t0) / 1000,
    };
  }

  // Build in a private directory and rename it into place: a reader sees a complete image or none,
  // and two concurrent builds of the same key just race to an identical result.
  const stage = join(cacheDir, "images", `.build-${plan.key}-${process.pid}`);
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  try {
    const tree = join(stage, "tree");
    const { nodeStripped } = await writeTree(plan, tree, { onProgress: progress });
    const image = join(stage, IMAGE_FILE);
    let size = ext4SizeFor(plan, treeBytes(plan, tree));
    progress({ phase: "mkfs", label: `mkfs.ext4 (${(size / 2 ** 20).toFixed(0)} MiB)`, done: 0, total: 1 });
    try {
      await makeExt4(tree, image, size, plan.key);
    } catch (err) {
      // The estimate was short (more metadata than expected): one retry with a quarter more room.
      if (!/space|full|could not allocate/i.test((err as Error).message)) throw err;
      size = Math.ceil((size * 1.25) / (2 << 20)) * (2 << 20);
      await makeExt4(tree, image, size, plan.key);
    }
    progress({ phase: "mkfs", label: "mkfs.ext4", done: 1, total: 1 });
    progress({ phase: "publish", label: paths.dir, done: 0, total: 1 });
    rmSync(tree, { recursive: true, force: true });
    const manifest: ImageManifest = {
      key: plan.key,
      builderVersion: IMAGE_BUILDER_VERSION,
      format: "ext4",
      built: new Date().toISOString(),
      buildSeconds: 0,
      image: paths.image,
      imageBytes: statSync(image).size,
      contentBytes: plan.components.reduce((n, c) => n + c.size, 0),
      versions: await versionsOf(plan, sources),
      components: plan.components,
      symlinks: plan.symlinks,
      nodeStripped,
    };
    manifest.buildSeconds = Math.round((performance.now() - t0) / 10) / 100;
    writeFileSync(join(stage, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
    chmodSync(image, 0o444);
    rmSync(paths.dir, { recursive: true, force: true });
    mkdirSync(dirname(paths.dir), { recursive: true });
    renameSync(stage, paths.dir);
    if (link) linkCurrent(paths);
    progress({ phase: "publish", label: paths.dir, done: 1, total: 1 });
    return { status: "built", key: plan.key, paths, manifest, seconds: manifest.buildSeconds };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

export interface InspectResult {
  /** The configured path inspected (normally <cache>/kata-ts-guest.img). */
  path: string;
  /** Where it points. */
  resolved?: string;
  manifest?: ImageManifest;
  /** The key the current inputs would build under (undefined when inputs are missing). */
  currentKey?: string;
  inputsError?: string;
}

/** What the image at `path` holds (its manifest next to it) and whether the current inputs match it. */
export async function inspectImage(
  opts: { path?: string; cacheDir?: string; sources?: ImageSources } = {},
): Promise<InspectResult> {
  const cacheDir = opts.cacheDir ?? GUEST_ASSET_DIR;
  const path = opts.path ?? join(cacheDir, IMAGE_FILE);
  const res: InspectResult = { path };
  if (existsSync(path)) {
    res.resolved = realpathSync(path);
    res.manifest = readManifest(join(dirname(res.resolved), MANIFEST_FILE));
  } else if (isDanglingLink(path)) {
    res.resolved = resolve(dirname(path), readlinkSync(path));
  }
  try {
    const hashCache = new HashCache(join(cacheDir, "images", "input-hashes.json"));
    res.currentKey = (await planImage(opts.sources ?? defaultSources(), { hashCache })).key;
  } catch (err) {
    res.inputsError = (err as Error).message;
  }
  return res;
}

function isDanglingLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}
