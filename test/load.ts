// Load and kill-point drivers for the real CLI, shared by the CI short forms
// (test/integration/load.test.ts) and the full runs anyone can repeat (bench/load.sh).
//
//   runLoad      N create/start[/exec]/delete --force cycles, W at a time, on one --root, while a
//                sampler runs `list --format json` all along; afterwards every list is checked against
//                what was known to exist (or known gone) when it ran. Per-verb latencies are kept.
//   runKillPoint one container; kill -9 of the CLI, the supervisor, QEMU or the stand-in some ms into
//                create, start, exec or delete; then `delete --force` must succeed and leave nothing.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { cgroupHierarchies } from "./helpers";
import { findLeaks, snapshotHost } from "./leaks";

/** How to call the CLI: the binary, its global flags (--root, --config) and environment. */
export interface Cli {
  bin: string;
  root: string;
  config: string;
  env?: NodeJS.ProcessEnv;
}

const REPO = resolve(__dirname, "..");

/**
 * The CLIs a load or kill run uses, all on one --root under `dir`: host mode (hypervisor = "none"),
 * VM mode with the supervisor's host agent (no VM; the configuration still names a kernel and an image
 * that exist, empty files here) and, when `vm` gives them, VM mode with that kernel and image.
 */
export function loadClis(
  dir: string,
  vm?: { kernel: string; image: string },
): { root: string; host: Cli; hostAgent: Cli; vm: Cli } {
  const root = join(dir, "root");
  mkdirSync(root, { recursive: true });
  const bin = join(REPO, "bin", "kata-ts");
  const env = {
    ...process.env,
    KATA_TS_SUPERVISOR: join(REPO, "dist", "kata-supervisor.cjs"),
    KATA_TS_NATIVE_DIR: join(REPO, "native", "build"),
  };
  const qemu = (kernel: string, image: string) =>
    `[hypervisor.qemu]\nkernel = "${kernel}"\nimage = "${image}"\ndefault_memory = 512\n[runtime]\nhypervisor = "qemu"\n`;
  for (const f of ["vmlinux", "image"]) writeFileSync(join(dir, f), "");
  writeFileSync(join(dir, "host.toml"), '[runtime]\nhypervisor = "none"\n');
  writeFileSync(join(dir, "host-agent.toml"), qemu(join(dir, "vmlinux"), join(dir, "image")));
  writeFileSync(join(dir, "vm.toml"), vm ? qemu(vm.kernel, vm.image) : "");
  // The supervisor with its VM replaced by host processes: a test-only bundle, never in dist/.
  const hostAgentSupervisor = join(dir, "host-agent", "kata-supervisor.cjs");
  execFileSync(join(REPO, "node_modules", ".bin", "esbuild"), [
    join(REPO, "test", "support", "hostagent-supervisor.ts"),
    "--bundle",
    "--platform=node",
    "--format=cjs",
    "--log-level=warning",
    `--outfile=${hostAgentSupervisor}`,
  ]);
  return {
    root,
    host: { bin, root, config: join(dir, "host.toml") },
    hostAgent: {
      bin,
      root,
      config: join(dir, "host-agent.toml"),
      env: { ...env, KATA_TS_SUPERVISOR: hostAgentSupervisor },
    },
    vm: { bin, root, config: join(dir, "vm.toml"), env },
  };
}

export interface CallResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface Call {
  child: ChildProcess;
  done: Promise<CallResult>;
}

/**
 * Starts one CLI call. Its stdout/stderr go to files when `outFile` is given (`create`: the container
 * keeps the CLI's stdio, so a pipe would not close), else to pipes. Killed with SIGKILL at `timeoutMs`.
 */
export function startCall(
  cli: Cli,
  args: string[],
  opts: { outFile?: string; timeoutMs?: number } = {},
): Call {
  const t0 = performance.now();
  const fd = opts.outFile ? openSync(opts.outFile, "w") : undefined;
  const child = spawn(cli.bin, ["--root", cli.root, "--config", cli.config, ...args], {
    env: cli.env ?? process.env,
    stdio: ["ignore", fd ?? "pipe", fd ?? "pipe"],
  });
  if (fd !== undefined) closeSync(fd);
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (d) => {
    stdout += d;
  });
  child.stderr?.setEncoding("utf8").on("data", (d) => {
    stderr += d;
  });
  const done = new Promise<CallResult>((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
    const finish = (code: number, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      if (opts.outFile) stderr += readText(opts.outFile) ?? "";
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    };
    child.on("error", (e) => {
      stderr += e.message;
      finish(127, null);
    });
    child.on("close", (code, signal) => finish(code ?? 128, signal));
  });
  return { child, done };
}

export const call = (cli: Cli, args: string[], opts: { outFile?: string; timeoutMs?: number } = {}) =>
  startCall(cli, args, opts).done;

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Nearest-rank percentile (p in 0..100) of `xs`; NaN when empty. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** A deterministic PRNG (mulberry32): the same seed gives the same kill points. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The containers of a `list --format json` call, or undefined when it failed or printed no JSON array. */
function listed(r: CallResult): { id: string; status: string }[] | undefined {
  if (r.code !== 0) return undefined;
  try {
    const v = JSON.parse(r.stdout) ?? [];
    return Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

// ---- load ----

export interface LoadOptions {
  cli: Cli;
  bundle: string;
  /** total cycles and how many run at once */
  cycles: number;
  width: number;
  /** also `exec ID true` in every cycle */
  exec?: boolean;
  /** distinctive id prefix (the leak scan matches every container by it) */
  prefix: string;
  /** directory for the create calls' output files */
  work: string;
  /** pause between two `list` samples */
  listEveryMs?: number;
  /** per-call timeout */
  timeoutMs?: number;
}

interface Sample {
  t0: number;
  t1: number;
  ids: Set<string>;
}

interface Life {
  createStart?: number;
  createEnd?: number;
  createOk?: boolean;
  deleteStart?: number;
  deleteEnd?: number;
}

export interface LoadResult {
  totalMs: number;
  /** per verb (create, start, exec, delete, list): each call's wall time in ms */
  times: Record<string, number[]>;
  /** every failed call, lock complaint, wrong list or leftover, one line each */
  failures: string[];
  /** how many `list` samples were checked */
  lists: number;
}

/** A failed call, or one that complained about a lock even when it succeeded. */
function callProblem(id: string, verb: string, r: CallResult): string | undefined {
  const text = r.stderr.trim().split("\n").slice(-1)[0] ?? "";
  if (r.code !== 0) return `${id} ${verb}: exit ${r.code}${r.signal ? ` (${r.signal})` : ""}: ${text}`;
  if (/lock/i.test(r.stderr)) return `${id} ${verb}: lock message: ${text}`;
  return undefined;
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const times: Record<string, number[]> = { create: [], start: [], delete: [], list: [] };
  if (o.exec) times.exec = [];
  const failures: string[] = [];
  const lives = new Map<string, Life>();
  const samples: Sample[] = [];
  const ids = Array.from({ length: o.cycles }, (_, i) => `${o.prefix}${i}`);
  const timeoutMs = o.timeoutMs ?? 120_000;
  const before = snapshotHost();
  const t0 = performance.now();

  async function verb(id: string, name: string, args: string[], outFile?: string): Promise<boolean> {
    const r = await call(o.cli, args, { outFile, timeoutMs });
    times[name]!.push(r.ms);
    const p = callProblem(id, name, r);
    if (p) failures.push(p);
    return !p || r.code === 0;
  }

  async function cycle(id: string): Promise<void> {
    const life: Life = { createStart: performance.now() };
    lives.set(id, life);
    life.createOk = await verb(id, "create", ["create", "--bundle", o.bundle, id], join(o.work, `${id}.out`));
    life.createEnd = performance.now();
    if (life.createOk) {
      if (await verb(id, "start", ["start", id]))
        if (o.exec) await verb(id, "exec", ["exec", id, "/bin/true"]);
    }
    life.deleteStart = performance.now();
    await verb(id, "delete", ["delete", "--force", id]);
    life.deleteEnd = performance.now();
  }

  let running = true;
  const sampler = (async () => {
    while (running) {
      const s0 = performance.now();
      const r = await call(o.cli, ["list", "--format", "json"], { timeoutMs });
      const s1 = performance.now();
      times.list!.push(r.ms);
      const arr = listed(r);
      if (!arr) failures.push(`list: exit ${r.code}: ${r.stderr.trim() || r.stdout.slice(0, 200)}`);
      else samples.push({ t0: s0, t1: s1, ids: new Set(arr.map((c) => c.id)) });
      await sleep(o.listEveryMs ?? 100);
    }
  })();

  let next = 0;
  const lane = async () => {
    while (next < ids.length) await cycle(ids[next++]!);
  };
  await Promise.all(Array.from({ length: o.width }, lane));
  running = false;
  await sampler;
  const totalMs = performance.now() - t0;

  // Every sample against what was certain while it ran: created before it began and not yet being
  // deleted when it ended must be listed; deleted before it began, or not yet being created when it
  // ended, must not be.
  for (const s of samples) {
    for (const [id, l] of lives) {
      const mustHave = l.createOk && l.createEnd! < s.t0 && (l.deleteStart ?? Infinity) > s.t1;
      const mustNot = (l.deleteEnd ?? Infinity) < s.t0 || l.createStart! > s.t1;
      if (mustHave && !s.ids.has(id)) failures.push(`list at +${Math.round(s.t0 - t0)} ms misses ${id}`);
      if (mustNot && s.ids.has(id)) failures.push(`list at +${Math.round(s.t0 - t0)} ms shows deleted ${id}`);
    }
    for (const id of s.ids)
      if (!lives.has(id)) failures.push(`list at +${Math.round(s.t0 - t0)} ms shows unknown ${id}`);
  }

  const final = await call(o.cli, ["list", "--format", "json"]);
  const left = listed(final);
  if (!left)
    failures.push(`final list: exit ${final.code}: ${final.stderr.trim() || final.stdout.slice(0, 200)}`);
  for (const c of left ?? []) failures.push(`left in list: ${c.id}`);
  // Every container matches the prefix: one scan covers them all.
  for (const l of findLeaks(before, { root: o.cli.root, bundle: o.bundle, id: o.prefix }))
    failures.push(`leak: ${l}`);
  return { totalMs, times, failures, lists: samples.length };
}

/** "verb  n  p50  p99  max" lines for a report. */
export function formatTimes(r: LoadResult): string[] {
  const out = ["verb      calls    p50 ms    p99 ms    max ms"];
  for (const [verb, xs] of Object.entries(r.times)) {
    if (!xs.length) continue;
    const f = (x: number) => x.toFixed(0).padStart(9);
    out.push(
      `${verb.padEnd(8)}${String(xs.length).padStart(7)} ${f(percentile(xs, 50))} ${f(percentile(xs, 99))} ${f(Math.max(...xs))}`,
    );
  }
  return out;
}

// ---- kill points ----

export type KillVerb = "create" | "start" | "exec" | "delete";
export type Victim = "cli" | "supervisor" | "qemu" | "standin";

export interface KillPoint {
  verb: KillVerb;
  victim: Victim;
  delayMs: number;
}

/** `count` kill points drawn from verbs × victims with delays in [0, maxDelayMs), reproducible by seed. */
export function pickKillPoints(
  seed: number,
  verbs: KillVerb[],
  victims: Victim[],
  maxDelayMs: number,
  count?: number,
): KillPoint[] {
  const rnd = seededRandom(seed);
  const all = verbs.flatMap((verb) => victims.map((victim) => ({ verb, victim })));
  // Every combination once (shuffled), then more at random if more are asked for.
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  const n = count ?? all.length;
  return Array.from({ length: n }, (_, i) => ({
    ...(i < all.length ? all[i]! : all[Math.floor(rnd() * all.length)]!),
    delayMs: Math.floor(rnd() * maxDelayMs),
  }));
}

/** Pids whose cmdline (NUL → space) satisfies `pred`. */
function pidsWhere(pred: (cmdline: string, comm: string) => boolean): number[] {
  const out: number[] = [];
  for (const n of readdirSync("/proc")) {
    if (!/^\d+$/.test(n)) continue;
    const cmd = readText(`/proc/${n}/cmdline`)?.replace(/\0/g, " ");
    const comm = readText(`/proc/${n}/comm`)?.trim() ?? "";
    if (cmd && pred(cmd, comm)) out.push(Number(n));
  }
  return out;
}

/** The victim's pids right now (none when it does not exist yet, or no more). */
export function victimPids(victim: Victim, cli: Cli, id: string, call?: Call): number[] {
  switch (victim) {
    case "cli":
      return call?.child.pid && call.child.exitCode === null ? [call.child.pid] : [];
    case "supervisor":
      return pidsWhere((c) => c.includes("kata-supervisor") && c.includes(cli.root) && c.includes(` ${id}`));
    case "standin":
      return pidsWhere(
        (c, comm) =>
          (comm.startsWith("kata-ts-standin") || c.includes("kata-ts-standin")) && c.includes(` ${id}`),
      );
    case "qemu":
      return pidsWhere((c, comm) => comm.startsWith("qemu-system") && c.includes(id));
  }
}

export interface KillOutcome {
  point: KillPoint;
  /** the victim existed and was killed */
  killed: boolean;
  /** ... while the verb still ran (else just after it) */
  during: boolean;
  /** ms into the verb at the kill */
  killedAtMs?: number;
  /** what the interrupted verb returned */
  verbCode: number;
  problems: string[];
}

/**
 * One kill point on container `id`: prepares it up to the verb (create, then start for exec/delete),
 * runs the verb, kills the victim `delayMs` into it, waits for the verb's CLI, then `delete --force`
 * and the checks: exit 0, not in `list`, no sandbox or state dir, nothing in the leak scan.
 */
export async function runKillPoint(
  cli: Cli,
  bundle: string,
  id: string,
  p: KillPoint,
  work: string,
  opts: { timeoutMs?: number; allowNetns?: string[] } = {},
): Promise<KillOutcome> {
  const problems: string[] = [];
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const before = snapshotHost();
  const prep = async (args: string[], outFile?: string) => {
    const r = await call(cli, args, { outFile, timeoutMs });
    if (r.code !== 0) problems.push(`${args[0]} before the kill: exit ${r.code}: ${r.stderr.trim()}`);
    return r.code === 0;
  };
  const outFile = join(work, `${id}.out`);
  let ready = true;
  if (p.verb !== "create") ready = await prep(["create", "--bundle", bundle, id], outFile);
  if (ready && (p.verb === "exec" || p.verb === "delete")) ready = await prep(["start", id]);

  let killed = false;
  let killedAtMs: number | undefined;
  let during = false;
  let verbCode = -1;
  if (ready) {
    const args: Record<KillVerb, string[]> = {
      create: ["create", "--bundle", bundle, id],
      start: ["start", id],
      exec: ["exec", id, "/bin/sh", "-c", "sleep 2"],
      delete: ["delete", "--force", id],
    };
    const c = startCall(cli, args[p.verb], { outFile: p.verb === "create" ? outFile : undefined, timeoutMs });
    // The delay counts from the moment the victim exists (the CLI at once; the supervisor, QEMU or a
    // stand-in once the verb or an earlier one started it), and the kill must land while the verb runs.
    const t0 = performance.now();
    const running = () => c.child.exitCode === null && c.child.signalCode === null;
    while (running() && victimPids(p.victim, cli, id, c).length === 0) await sleep(5);
    const at = performance.now() + p.delayMs;
    while (performance.now() < at && running()) await sleep(5);
    // A verb that ended before the moment still gets its victim killed: a kill just after the verb.
    during = running();
    for (const pid of victimPids(p.victim, cli, id, c)) {
      try {
        process.kill(pid, "SIGKILL");
        killed = true;
        killedAtMs = Math.round(performance.now() - t0);
      } catch {}
    }
    // The interrupted verb must end by itself (an error is fine; hanging is not).
    const r = await Promise.race([c.done, sleep(60_000).then(() => undefined)]);
    if (!r) {
      problems.push(`${p.verb} did not end within 60 s after the kill`);
      c.child.kill("SIGKILL");
      verbCode = (await c.done).code;
    } else verbCode = r.code;
  }

  problems.push(
    ...(await deleteAndCheck(cli, bundle, id, before, { timeoutMs, allowNetns: opts.allowNetns })),
  );
  return { point: p, killed, during, killedAtMs, verbCode, problems };
}

/** `delete --force` of a container whose verb was killed, then: exit 0, not listed, nothing left. */
async function deleteAndCheck(
  cli: Cli,
  bundle: string,
  id: string,
  before: ReturnType<typeof snapshotHost>,
  opts: { timeoutMs: number; allowNetns?: string[] },
): Promise<string[]> {
  const problems: string[] = [];
  const { timeoutMs } = opts;
  const d = await call(cli, ["delete", "--force", id], { timeoutMs });
  if (d.code !== 0)
    problems.push(`delete --force: exit ${d.code}${d.signal ? ` (${d.signal})` : ""}: ${d.stderr.trim()}`);
  const l = await call(cli, ["list", "--format", "json"]);
  const ls = listed(l);
  if (!ls) problems.push(`list: exit ${l.code}: ${l.stderr.trim() || l.stdout.slice(0, 200)}`);
  else if (ls.some((x) => x.id === id)) problems.push("still in list");
  for (const dir of [join(cli.root, id), join(cli.root, "sandboxes", id)])
    if (existsSync(dir)) problems.push(`left: ${dir}`);
  // The processes may need a moment to be reaped after delete returned.
  let leaks: string[] = [];
  for (let i = 0; i < 20; i++) {
    leaks = findLeaks(before, { root: cli.root, bundle, id, allowNetns: opts.allowNetns });
    if (leaks.length === 0) break;
    await sleep(100);
  }
  problems.push(...leaks);
  return problems;
}

const sleepImmediate = () => new Promise<void>((r) => setImmediate(r));

/** The pids in container `id`'s own cgroup (host mode, no cgroupsPath: <hierarchy>/<id>), any hierarchy. */
function cgroupPids(id: string): number[] {
  for (const h of [...cgroupHierarchies(), "/sys/fs/cgroup"]) {
    const t = readText(join(h, id, "cgroup.procs"));
    if (t?.trim()) return t.trim().split("\n").map(Number);
  }
  return [];
}

/**
 * Host mode: `create`, and kill -9 of its CLI the moment the container's init blocks on the exec fifo
 * (its wchan is the fifo's wait_for_partner): the narrowest point after the init left the CLI's hands,
 * where the state record must already name it. Then `delete --force` and the checks of runKillPoint.
 * Returns the problems, and whether the CLI was still running when it was killed.
 */
export async function killCreateAtReady(
  cli: Cli,
  bundle: string,
  id: string,
  work: string,
): Promise<{ during: boolean; problems: string[] }> {
  const before = snapshotHost();
  const c = startCall(cli, ["create", "--bundle", bundle, id], { outFile: join(work, `${id}.out`) });
  const running = () => c.child.exitCode === null && c.child.signalCode === null;
  let during = false;
  const deadline = performance.now() + 60_000;
  while (running() && performance.now() < deadline) {
    const waiting = cgroupPids(id).some((p) => readText(`/proc/${p}/wchan`) === "wait_for_partner");
    if (waiting) {
      during = running();
      c.child.kill("SIGKILL");
      break;
    }
    await sleepImmediate();
  }
  await c.done;
  return { during, problems: await deleteAndCheck(cli, bundle, id, before, { timeoutMs: 120_000 }) };
}
