// Engine integration harness: drives podman, ctr (containerd) and docker against a runtime binary that
// setup.sh registered under the name "kata-ts" (a logging wrapper around the real binary). The engine
// drivers here hide each CLI's spelling of the same operations so the scenarios in
// test/integration/engines.test.ts (and engines-vm.test.ts) are written once per behaviour.
import { type SpawnSyncReturns, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { it } from "node:test";

export const ENGINES_DIR = resolve(__dirname);
export const IMAGE = "localhost/busybox:latest";
export const CTR_NAMESPACE = "clients";

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export function shq(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

function toResult(r: SpawnSyncReturns<string>, t0: number): Result {
  if (r.error) throw new Error(`${r.error.message}`);
  const code = r.status ?? (r.signal ? 128 + signalNumber(r.signal) : 255);
  return { code, stdout: r.stdout ?? "", stderr: r.stderr ?? "", ms: Math.round(performance.now() - t0) };
}

function signalNumber(sig: string): number {
  return ({ SIGKILL: 9, SIGTERM: 15, SIGINT: 2, SIGHUP: 1 } as Record<string, number>)[sig] ?? 0;
}

/** Runs a command to completion (stdin is /dev/null unless `input` is given). */
export function sh(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Result {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, {
    env: opts.env ?? process.env,
    input: opts.input,
    stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    encoding: "utf8",
    timeout: opts.timeoutMs ?? 60_000,
    killSignal: "SIGKILL",
  });
  return toResult(r, t0);
}

/** Runs a command with a pseudo-terminal as its stdio (util-linux `script`, exit code passed through). */
export function shTty(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Result {
  const line = [cmd, ...args].map(shq).join(" ");
  return sh("script", ["-qec", line, "/dev/null"], { env, timeoutMs });
}

/** Starts a command in the background; `done` resolves with its result. */
export function shAsync(cmd: string, args: string[], env: NodeJS.ProcessEnv): { done: Promise<Result> } {
  const t0 = performance.now();
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const done = new Promise<Result>((res, rej) => {
    child.on("error", rej);
    child.on("close", (code, signal) =>
      res({
        code: code ?? (signal ? 128 + signalNumber(signal) : 255),
        stdout,
        stderr,
        ms: Math.round(performance.now() - t0),
      }),
    );
  });
  return { done };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `probe` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

export function check(r: Result, what: string): Result {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${(r.stderr || r.stdout).trim()}`);
  return r;
}

/** Reads KEY=VALUE pairs from BASE/env.sh (written by setup.sh; values are plain paths). */
export function engineEnv(base: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const line of readFileSync(join(base, "env.sh"), "utf8").split("\n")) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2];
  }
  return env;
}

// ---- host-side observations ----------------------------------------------------------------------------

/** The host cgroup v1 directory of `pid` for one controller (e.g. memory, freezer). */
export function cgroupDir(pid: number, controller: string): string {
  for (const line of readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n")) {
    const [, ctrls, path] = line.split(":");
    if (ctrls?.split(",").includes(controller)) return join("/sys/fs/cgroup", controller, path);
  }
  throw new Error(`pid ${pid} has no ${controller} cgroup`);
}

/** Every cgroup directory of `pid` (all v1 hierarchies plus the hybrid unified one) that exists. */
export function cgroupDirs(pid: number): string[] {
  const out: string[] = [];
  for (const line of readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m || m[2] === "/") continue;
    const hierarchy = m[1] === "" ? "unified" : m[1].split(",")[0].replace(/^name=/, "");
    const dir = join("/sys/fs/cgroup", hierarchy, m[2]);
    if (existsSync(dir)) out.push(dir);
  }
  return out;
}

export function readTrim(path: string): string {
  return readFileSync(path, "utf8").trim();
}

/** Mount points at or below `base` in this mount namespace. */
export function mountsUnder(base: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((mp): mp is string => !!mp && (mp === base || mp.startsWith(`${base}/`)))
    .sort();
}

export interface ProcInfo {
  pid: number;
  comm: string;
  cmdline: string;
  root: string;
}

/** Processes that run from `base`: their root dir is below it (container processes) or their
 *  command line names it (conmon, containerd-shim, daemons). */
export function processesUnder(base: string): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${e}/cmdline`, "utf8").replace(/\0/g, " ").trim();
      const root = safeReadlink(`/proc/${e}/root`);
      if (root.startsWith(`${base}/`) || cmdline.includes(`${base}/`)) {
        out.push({ pid: Number(e), comm: readTrim(`/proc/${e}/comm`), cmdline, root });
      }
    } catch {
      // the process exited while we looked
    }
  }
  return out;
}

function safeReadlink(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return "";
  }
}

/** Entries in a directory (empty if it does not exist). */
export function entries(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export function inode(path: string): number {
  return statSync(path).ino;
}

// ---- the runtime-invocation log (written by runtime-wrap.sh) --------------------------------------------

export interface RuntimeCall {
  seq: string;
  time: string;
  sub: string; // the subcommand (create, start, exec, kill, ...) as the wrapper parsed it
  caller: string;
  cwd: string;
  argv: string; // as the engine sent it, bash %q-quoted, space-joined
  injectedRoot?: string;
  rc?: number;
  ms?: number;
  lines: string[]; // stderr: / log: lines
}

export class RuntimeLog {
  constructor(readonly base: string) {}

  get path(): string {
    return join(this.base, "logs", "runtime.log");
  }

  /** Current end of the log, to read only what a scenario produced. */
  mark(): number {
    return existsSync(this.path) ? statSync(this.path).size : 0;
  }

  text(from = 0): string {
    if (!existsSync(this.path)) return "";
    return readFileSync(this.path).subarray(from).toString("utf8");
  }

  calls(from = 0): RuntimeCall[] {
    const bySeq = new Map<string, RuntimeCall>();
    for (const line of this.text(from).split("\n")) {
      const call = /^(\S+) #(\S+) call sub=(\S+) caller=(\S+) cwd=(\S+) argv: (.*)$/.exec(line);
      if (call) {
        bySeq.set(call[2], {
          seq: call[2],
          time: call[1],
          sub: call[3],
          caller: call[4],
          cwd: call[5],
          argv: call[6],
          lines: [],
        });
        continue;
      }
      const m = /^#(\S+) (root injected --root (.*)|done rc=(\d+) ms=(\d+)|(stderr|log): (.*))$/.exec(line);
      const c = m && bySeq.get(m[1]);
      if (!m || !c) continue;
      if (m[3] !== undefined) c.injectedRoot = m[3];
      else if (m[4] !== undefined) {
        c.rc = Number(m[4]);
        c.ms = Number(m[5]);
      } else c.lines.push(`${m[6]}: ${m[7]}`);
    }
    return [...bySeq.values()];
  }

  /** The JSON payload the wrapper saved for a call (config | process | resources). */
  dump(seq: string, kind: "config" | "process" | "resources"): unknown {
    const p = join(this.base, "logs", "dump", `${seq}.${kind}.json`);
    return existsSync(p) ? JSON.parse(readFileSync(p, "utf8")) : undefined;
  }

  /** Human-readable summary of calls since `from`, for failure messages. */
  describe(from = 0): string {
    const calls = this.calls(from);
    if (calls.length === 0) return "(no runtime calls)";
    return calls
      .map((c) => {
        const head = `${c.caller} -> ${c.argv}${c.injectedRoot ? ` [wrapper added --root ${c.injectedRoot}]` : ""}`;
        const tail = c.rc === undefined ? " (still running or killed)" : ` => rc=${c.rc} (${c.ms} ms)`;
        return [head + tail, ...c.lines.map((l) => `    ${l}`)].join("\n");
      })
      .join("\n");
  }
}

/** The argv shape of a call with ids, paths and temp-file numbers generalised (for the report). */
export function argvShape(argv: string, base: string, ids: string[]): string {
  let s = argv.split(base).join("$BASE");
  for (const id of ids) s = s.split(id).join("<id>");
  return s
    .replace(/\b[0-9a-f]{64}\b/g, "<id64>")
    .replace(/\b[0-9a-f]{12}\b/g, "<id12>")
    .replace(/(conmon-term\.|runc-process|pty|podman|exec-process-)[0-9A-Za-z]+/g, "$1N")
    .replace(/\/tmp\/ctd-checkpoint[0-9]+/g, "/tmp/ctd-checkpointN")
    .replace(/\/e[0-9]+\.pid\b/g, "/<execid>.pid");
}

// ---- scenario bookkeeping shared by the host-mode and VM-mode engine tests --------------------------

export interface Timing {
  engine: string;
  scenario: string;
  ms: number;
  ok: boolean;
}

/** Runs one of this directory's scripts (setup.sh, teardown.sh) to completion. */
export function runScript(name: string, args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Result {
  const t0 = performance.now();
  const r = spawnSync("bash", [join(ENGINES_DIR, name), ...args], {
    encoding: "utf8",
    timeout: timeoutMs,
    env: env ?? process.env,
  });
  if (r.error) throw r.error;
  return {
    code: r.status ?? 255,
    stdout: r.stdout,
    stderr: r.stderr,
    ms: Math.round(performance.now() - t0),
  };
}

/** A test whose failure message carries the runtime calls (and their stderr/log lines) it caused. */
export function scenarioTest(
  log: RuntimeLog,
  timings: Timing[],
  engine: string,
  name: string,
  fn: () => Promise<void> | void,
  opts: { skip?: string; timeout: number },
): void {
  it(name, { skip: opts.skip, timeout: opts.timeout }, async () => {
    const mark = log.mark();
    const t0 = performance.now();
    let ok = false;
    try {
      await fn();
      ok = true;
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      throw new Error(`${msg}\n--- runtime calls during this test ---\n${log.describe(mark)}`, { cause: e });
    } finally {
      timings.push({ engine, scenario: name, ms: Math.round(performance.now() - t0), ok });
    }
  });
}

export function formatTimings(title: string, timings: readonly Timing[]): string {
  const lines = timings.map(
    (t) => `  ${t.engine.padEnd(7)} ${String(t.ms).padStart(6)} ms  ${t.ok ? "" : "FAIL "}${t.scenario}`,
  );
  return `${title}:\n${lines.join("\n")}`;
}
