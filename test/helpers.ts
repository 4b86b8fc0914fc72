// Shared helpers for tests: run the real CLI binary by path, make temp dirs, clean them up.
import { execFileSync, type SpawnSyncReturns, spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadConfig } from "../src/config/config";
import { defaultSpec } from "../src/oci/defaults";
import type { Spec } from "../src/oci/spec";
import { recvFds } from "../src/sys/native";

export const REPO = resolve(__dirname, "..");
export const BIN = join(REPO, "bin", "kata-ts");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs bin/kata-ts with the given arguments (the built bundle: run `npm run build` first). */
export function kata(
  args: string[],
  opts: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv } = {},
): CliResult {
  const r: SpawnSyncReturns<string> = spawnSync(BIN, args, {
    cwd: opts.cwd,
    input: opts.input,
    env: opts.env ?? process.env,
    encoding: "utf8",
    timeout: 120_000,
  });
  if (r.error) throw r.error;
  return { code: r.status ?? 128 + (r.signal ? 9 : 0), stdout: r.stdout, stderr: r.stderr };
}

/** A fresh temp directory removed by the returned cleanup function. */
export function tempDir(prefix = "kata-ts-test-"): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `fn` until it is true; fails naming `what` after `ms`. */
export async function until(what: string, fn: () => boolean, ms = 30_000, everyMs = 50): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A process's resident memory in kB (Rss of /proc/PID/smaps_rollup). */
export function rssKb(pid: number): number {
  return Number(/^Rss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1]);
}

/** The process exists and is neither a zombie nor dead. */
export function alive(pid: number): boolean {
  try {
    return !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** A busybox root filesystem at `dir`: the static busybox and a link per applet, root in /etc/passwd. */
export function busyboxRootfs(dir: string): void {
  for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc", "root"])
    mkdirSync(join(dir, d), { recursive: true });
  copyFileSync("/bin/busybox", join(dir, "bin", "busybox"));
  const applets = execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).trim().split("\n");
  for (const a of applets) if (a !== "busybox") symlinkSync("busybox", join(dir, "bin", a));
  writeFileSync(join(dir, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
}

/**
 * VM-mode tests: builds the native pieces, the bundles and a guest image of this tree (into `dir`/cache,
 * so the machine's shared image is left alone) and writes a configuration with `kernel`, that image,
 * a 512 MiB guest and the extra [hypervisor.qemu] lines. Returns the configuration's path.
 */
export async function writeVmTestConfig(dir: string, kernel: string, extra: string[] = []): Promise<string> {
  execFileSync("make", ["-s", "-C", join(REPO, "native")], { stdio: "inherit" });
  execFileSync(process.execPath, [join(REPO, "scripts", "build.mjs")], { cwd: REPO, stdio: "inherit" });
  const { buildImage, defaultSources } = await import("../src/image/image");
  const img = await buildImage({ sources: defaultSources(), cacheDir: join(dir, "cache") });
  const config = join(dir, "configuration.toml");
  const lines = [
    "[hypervisor.qemu]",
    `kernel = "${kernel}"`,
    `image = "${img.paths.image}"`,
    "default_memory = 512",
  ];
  writeFileSync(config, [...lines, ...extra, "[runtime]", 'hypervisor = "qemu"', ""].join("\n"));
  return config;
}

/**
 * Listens on `path` as a --console-socket receiver (as conmon does): the first connection's fd
 * (SCM_RIGHTS) and the name sent with it.
 */
export function receiveConsole(path: string): Promise<{ fd: number; name: string }> {
  return new Promise((resolveGot, reject) => {
    const server = createServer({ pauseOnConnect: true }, async (s) => {
      const fd = (s as unknown as { _handle: { fd: number } })._handle.fd;
      for (let i = 0; i < 1000; i++) {
        try {
          const r = recvFds(fd, 1, 256);
          server.close();
          s.destroy();
          return resolveGot({ fd: r.fds[0], name: r.data.toString() });
        } catch {
          await sleep(10);
        }
      }
      reject(new Error("no fd on the console socket"));
    });
    server.listen(path);
  });
}

/** The environment VM-mode tests run the CLI with: this tree's supervisor bundle and native build. */
export function vmTestEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    KATA_TS_SUPERVISOR: join(REPO, "dist", "kata-supervisor.cjs"),
    KATA_TS_NATIVE_DIR: join(REPO, "native", "build"),
  };
}

/**
 * `kata-ts create` (VM-mode environment) with the container's stdio on files in `dir` (<id>.out,
 * <id>.err): the stand-in keeps them open while the container runs, so a pipe would hold the call until
 * then. `stdout`/`stderr` are what the files held when create returned; `out` names the output file.
 */
export function createOnFiles(
  globalArgs: string[],
  bundle: string,
  id: string,
  dir: string,
  timeoutMs = 180_000,
): CliResult & { out: string } {
  const out = join(dir, `${id}.out`);
  const err = join(dir, `${id}.err`);
  const r = spawnSync(BIN, [...globalArgs, "create", "--bundle", bundle, id], {
    env: vmTestEnv(),
    stdio: ["ignore", openSync(out, "w"), openSync(err, "w")],
    timeout: timeoutMs,
  });
  return { code: r.status ?? 1, stdout: readFileSync(out, "utf8"), stderr: readFileSync(err, "utf8"), out };
}

/** Why VM-mode tests cannot run here (root, QEMU, the guest kernel, busybox), or false. */
export function vmTestSkip(kernel = vmTestKernel()): string | false {
  const missing = ["/usr/bin/qemu-system-x86_64", kernel, "/bin/busybox"].filter((f) => !existsSync(f));
  if (process.getuid?.() !== 0) return "needs root";
  return missing.length > 0 ? `missing ${missing.join(", ")}` : false;
}

/**
 * A bundle at `dir`: a busybox rootfs and the default spec running `sh -c script` without a terminal;
 * `edit` changes the spec before it is written.
 */
export function shellBundle(dir: string, script: string, edit: (spec: Spec) => void = () => {}): string {
  busyboxRootfs(join(dir, "rootfs"));
  const spec = defaultSpec();
  spec.process = {
    ...(spec.process as NonNullable<typeof spec.process>),
    terminal: false,
    args: ["/bin/sh", "-c", script],
  };
  spec.root = { path: "rootfs", readonly: false };
  edit(spec);
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

/** The guest kernel VM-mode tests boot: $KATA_TS_TEST_KERNEL, else the shipped configuration's. */
export function vmTestKernel(): string {
  if (process.env.KATA_TS_TEST_KERNEL) return process.env.KATA_TS_TEST_KERNEL;
  return loadConfig({ explicitPath: join(REPO, "config", "configuration.toml") }).config.hypervisor.kernel;
}

/** Every mounted cgroup hierarchy under /sys/fs/cgroup (v1 controllers, the hybrid layout's unified/). */
export function cgroupHierarchies(): string[] {
  return readdirSync("/sys/fs/cgroup")
    .map((h) => join("/sys/fs/cgroup", h))
    .filter((d) => existsSync(join(d, "cgroup.procs")));
}

/** Removes a cgroup directory tree bottom-up (rmdir only: it fails while a task or child is in it). */
export function removeCgroupTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true }))
    if (e.isDirectory()) removeCgroupTree(join(dir, e.name));
  try {
    rmdirSync(dir);
  } catch {
    // still in use: reported by the caller's check
  }
}

/**
 * Removes the parent cgroup `rel` ("/k8s.io") that a test's containers made in every hierarchy (runtimes,
 * runc too, remove only a container's own cgroup). Returns the hierarchies where it is still there.
 */
export function removeTestCgroupParent(rel: string): string[] {
  const left: string[] = [];
  for (const h of cgroupHierarchies()) {
    removeCgroupTree(join(h, rel));
    if (existsSync(join(h, rel))) left.push(join(h, rel));
  }
  return left;
}

/** Processes whose command line contains `text` (e.g. a template directory: VMs and supervisors), as "PID: CMDLINE". */
export function processesNaming(text: string): string[] {
  const out: string[] = [];
  for (const p of readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " ");
      if (cmd.includes(text)) out.push(`${p}: ${cmd}`);
    } catch {
      // gone while we looked
    }
  }
  return out;
}

/**
 * ms a move of a fresh `sleep` into the cgroup directory `cg` takes (the write to its cgroup.procs): on
 * hosts whose joins wait for an RCU grace period (src/engine/cgroups/prime.ts), 4-20 ms after a quiet
 * spell; the sleep is killed afterwards.
 */
export async function cgroupJoinMs(cg: string): Promise<number> {
  const child = spawn("sleep", ["5"], { stdio: "ignore" });
  await new Promise((r) => child.once("spawn", r));
  try {
    const t = process.hrtime.bigint();
    writeFileSync(join(cg, "cgroup.procs"), String(child.pid));
    return Number(process.hrtime.bigint() - t) / 1e6;
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
  }
}

/** The median of a non-empty list. */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
