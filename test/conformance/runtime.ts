// The OCI runtime under test, given as a binary path. kata-ts is run with its own --root and a
// --config that selects hypervisor = "none" (containers directly on the host, like runc); any other
// binary (runc, crun, ...) is run as `<bin> --root <tmp>`. A --config with hypervisor = "qemu" runs the
// suite in VM mode (Runtime.vm; see docs/conformance.md "VM mode").
//
//   KATA_TS_CONFORMANCE_RUNTIME   binary of the runtime under test (default: <repo>/bin/kata-ts)
//   KATA_TS_CONFORMANCE_CONFIG    configuration.toml for kata-ts (default: a temp file, hypervisor none)
import { type SpawnSyncReturns, spawn, spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { loadConfig } from "../../src/config/config";

export const REPO = resolve(__dirname, "..", "..");
export const KATA_TS_BIN = join(REPO, "bin", "kata-ts");
export const RUNC_BIN = "/usr/sbin/runc";

export interface Result {
  code: number;
  /** the signal that ended the runtime process itself, if any */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ContainerState {
  id: string;
  pid: number;
  status: string;
  bundle: string;
}

export class Runtime {
  /** short name for messages and test titles */
  readonly name: string;
  /** global flags put before every verb */
  readonly globalArgs: string[];
  /** the --root directory (state of this runtime instance) */
  readonly root: string;
  /**
   * kata-ts with a hypervisor (the configuration's `[runtime] hypervisor` is not "none"): every
   * container runs under a guest kernel in its own VM. Cases declare what differs there
   * (ConformanceCase.vmHostOnly / vmAdapted).
   */
  readonly vm: boolean;
  private readonly tmp: string;

  constructor(
    readonly bin: string,
    /** config: a configuration file; configText: its content, written into the runtime's temp dir. */
    opts: { config?: string; configText?: string; name?: string } = {},
  ) {
    this.tmp = mkdtempSync(join(tmpdir(), "kata-ts-rt-"));
    this.root = join(this.tmp, "root");
    this.globalArgs = ["--root", this.root];
    const isKata = basename(bin).startsWith("kata");
    let vm = false;
    if (isKata) {
      let config = opts.config;
      if (!config) {
        config = join(this.tmp, "configuration.toml");
        writeFileSync(config, opts.configText ?? '[runtime]\nhypervisor = "none"\n');
      }
      this.globalArgs.push("--config", config);
      vm = loadConfig({ explicitPath: config }).config.runtime.hypervisor !== "none";
    }
    this.vm = vm;
    this.name = opts.name ?? basename(bin);
  }

  argv(args: string[]): string[] {
    return [...this.globalArgs, ...args];
  }

  /** Runs one verb to completion (stdin /dev/null, output captured). */
  exec(args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Result {
    const r: SpawnSyncReturns<string> = spawnSync(this.bin, this.argv(args), {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: opts.timeoutMs ?? 60_000,
      cwd: opts.cwd,
      killSignal: "SIGKILL",
    });
    // A missing or unexecutable binary is a failed call (127/126, as a shell reports it), not an
    // exception: a suite run against an unbuilt kata-ts must fail case by case and still clean up.
    const err = r.error as NodeJS.ErrnoException | undefined;
    if (err && err.code !== "ETIMEDOUT") {
      return {
        code: err.code === "ENOENT" ? 127 : 126,
        signal: null,
        stdout: "",
        stderr: `${this.bin}: ${err.message}`,
      };
    }
    return { code: r.status ?? -1, signal: r.signal, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
  }

  /** Runs one verb without blocking the event loop. */
  execAsync(args: string[], opts: { timeoutMs?: number } = {}): Promise<Result> {
    return new Promise((resolvePromise) => {
      const child = spawn(this.bin, this.argv(args), { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (d) => {
        stdout += d;
      });
      child.stderr.setEncoding("utf8").on("data", (d) => {
        stderr += d;
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
      child.on("error", (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolvePromise({
          code: e.code === "ENOENT" ? 127 : 126,
          signal: null,
          stdout,
          stderr: `${this.bin}: ${e.message}`,
        });
      });
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        resolvePromise({ code: code ?? -1, signal, stdout, stderr });
      });
    });
  }

  /**
   * `create` without blocking: the container gets /dev/null as stdin and stdout and `stderrFile` as
   * stderr (a detached container keeps the create process's stdio, so pipes would never close).
   * Resolves when the create process exits.
   */
  createAsync(bundle: string, id: string, opts: { pidFile?: string; stderrFile: string }): Promise<Result> {
    const args = ["create", "--bundle", bundle];
    if (opts.pidFile) args.push("--pid-file", opts.pidFile);
    args.push(id);
    const e = openSync(opts.stderrFile, "w");
    return new Promise((resolvePromise) => {
      const child = spawn(this.bin, this.argv(args), { stdio: ["ignore", "ignore", e] });
      closeSync(e);
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      child.on("error", (err) => {
        clearTimeout(timer);
        resolvePromise({ code: 127, signal: null, stdout: "", stderr: `${this.bin}: ${err.message}` });
      });
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        resolvePromise({
          code: code ?? -1,
          signal,
          stdout: "",
          stderr: readFileSync(opts.stderrFile, "utf8"),
        });
      });
    });
  }

  /** `run --bundle B ID`: the container's stdout/stderr are the runtime's. */
  run(bundle: string, id: string, timeoutMs = 60_000): Result {
    return this.exec(["run", "--bundle", bundle, id], { timeoutMs });
  }

  /**
   * `create` with the container's stdout and stderr going to files (a detached container keeps the
   * create process's stdio), so they can be read after it exits.
   */
  create(bundle: string, id: string, out: { stdout: string; stderr: string }, pidFile?: string): Result {
    const o = openSync(out.stdout, "w");
    const e = openSync(out.stderr, "w");
    try {
      const args = ["create", "--bundle", bundle];
      if (pidFile) args.push("--pid-file", pidFile);
      args.push(id);
      const r = spawnSync(this.bin, this.argv(args), { stdio: ["ignore", o, e], timeout: 60_000 });
      if (r.error) return { code: 127, signal: null, stdout: "", stderr: `${this.bin}: ${r.error.message}` };
      return {
        code: r.status ?? -1,
        signal: r.signal,
        stdout: readFileSync(out.stdout, "utf8"),
        stderr: readFileSync(out.stderr, "utf8"),
      };
    } finally {
      closeSync(o);
      closeSync(e);
    }
  }

  state(id: string): ContainerState | undefined {
    const r = this.exec(["state", id]);
    if (r.code !== 0) return undefined;
    return JSON.parse(r.stdout) as ContainerState;
  }

  /**
   * Polls `state` until the container reaches `status`; returns the last state seen (undefined when
   * the container never showed up). A container that does not exist yet is waited for.
   */
  async waitStatus(id: string, status: string, timeoutMs = 20_000): Promise<ContainerState | undefined> {
    const deadline = Date.now() + timeoutMs;
    let st: ContainerState | undefined;
    for (;;) {
      const r = await this.execAsync(["state", id]);
      if (r.code === 0) st = JSON.parse(r.stdout) as ContainerState;
      if (st?.status === status || Date.now() > deadline) return st;
      await new Promise((res) => setTimeout(res, 20));
    }
  }

  /** `list --format json` parsed (runc prints `null` for an empty list). */
  list(): unknown[] {
    const r = this.exec(["list", "--format", "json"]);
    if (r.code !== 0) throw new Error(`${this.name} list failed (${r.code}): ${r.stderr.trim()}`);
    return (JSON.parse(r.stdout.trim() || "null") as unknown[] | null) ?? [];
  }

  /** Removes this instance's temp directory (state root and generated config). */
  cleanup(): void {
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** The runtime named by KATA_TS_CONFORMANCE_RUNTIME, or kata-ts in none mode. */
export function runtimeUnderTest(): Runtime {
  const bin = process.env.KATA_TS_CONFORMANCE_RUNTIME || KATA_TS_BIN;
  return new Runtime(bin, { config: process.env.KATA_TS_CONFORMANCE_CONFIG || undefined });
}
