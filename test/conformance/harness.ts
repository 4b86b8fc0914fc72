// Runs a conformance case against a runtime: makes the bundle, runs the container (attached `run`, or
// detached create/inspect/start/wait/delete), parses the report, checks for leaks.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findLeaks, snapshotHost } from "../leaks";
import { type Bundle, makeBundle, type Overrides, REPORT_ARGS } from "./bundle";
import type { Result, Runtime } from "./runtime";

/** A parsed report: `key=value` lines; keys that repeat (mount=, cgroup.self=) keep every value. */
export class Report {
  readonly lines: string[];
  private readonly map = new Map<string, string[]>();

  constructor(text: string) {
    this.lines = text.split("\n").filter((l) => l.includes("="));
    for (const l of this.lines) {
      const i = l.indexOf("=");
      const k = l.slice(0, i);
      const list = this.map.get(k) ?? [];
      list.push(l.slice(i + 1));
      this.map.set(k, list);
    }
  }

  /** The (last) value of a key; undefined when absent. */
  get(key: string): string | undefined {
    const l = this.map.get(key);
    return l ? l[l.length - 1] : undefined;
  }

  all(key: string): string[] {
    return this.map.get(key) ?? [];
  }

  keys(prefix = ""): string[] {
    return [...this.map.keys()].filter((k) => k.startsWith(prefix));
  }

  /** The mount line for a mount point (the last one: mounts stack). */
  mount(
    point: string,
  ): { root: string; type: string; opts: string[]; prop: string; superOpts: string[] } | undefined {
    const line = this.all("mount")
      .filter((m) => m.startsWith(`${point} `))
      .pop();
    if (!line) return undefined;
    const f = Object.fromEntries(
      line
        .split(" ")
        .slice(1)
        .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
    );
    return {
      root: f.root,
      type: f.type,
      opts: f.opts.split(","),
      prop: f.prop,
      superOpts: f.super.split(","),
    };
  }

  /** A report is complete when the script reached its last line. */
  get complete(): boolean {
    return this.get("report.end") === "1";
  }
}

/** The host's namespace inodes (of this test process), by /proc/self/ns name. */
export function hostNamespaces(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of readdirSync("/proc/self/ns")) {
    out[n] = readlinkSync(`/proc/self/ns/${n}`).replace(/.*\[(\d+)\]/, "$1");
  }
  return out;
}

export interface CaseContext {
  /** container id (distinctive: ktc-<hex>) */
  id: string;
  /** a scratch directory on the host for the case's fixtures (bind sources, ...) */
  host: string;
  /** values a case's setup wants to pass to its spec/check (e.g. a netns path) */
  vars: Record<string, string>;
  /** inodes with a label for the differential normaliser (e.g. a joined netns) */
  knownInodes: Record<string, string>;
}

export interface Outcome {
  /** exit code of `run` (attached) or of the workload as far as the runtime reports it */
  code: number;
  stdout: string;
  stderr: string;
  report: Report;
  /** host-side observations made while the container was created (detached mode) */
  host: Record<string, string>;
  bundle: Bundle;
  leaks: string[];
}

/** How the runtime under test runs containers, for checks that differ in a VM. */
export interface RunEnv {
  /** every container runs under its own guest kernel (kata-ts, hypervisor != "none") */
  vm: boolean;
}

export interface ConformanceCase {
  name: string;
  /** the OCI config field(s) the case covers */
  field: string;
  /** spec overrides, deep-merged into the base spec */
  spec(ctx: CaseContext): Overrides;
  /** report probes (see report.sh) */
  probes?: string[];
  /** replaces the workload entirely (then there is no report) */
  args?: string[];
  /** attached `run` (default), or create + inspect + start + wait + delete */
  mode?: "run" | "detached" | "kill";
  setup?(ctx: CaseContext): void;
  teardown?(ctx: CaseContext): void;
  /** host-side reads while the container exists (detached mode), keyed for Outcome.host */
  inspect?(pid: number, ctx: CaseContext, env: RunEnv): Record<string, string>;
  check(o: Outcome, ctx: CaseContext, env: RunEnv): void;
  /** leave out of the differential comparison (with the reason) */
  noDiff?: string;
  /**
   * Runtimes (by name: runc, crun) known not to implement the field, with the reason. The case is
   * skipped for them only; kata-ts must pass it.
   */
  unsupportedBy?: Record<string, string>;
  /**
   * VM mode: the case is skipped, with this reason. Only for fields that exist host-side by nature
   * (the guest kernel cannot see or enter the host's objects), never for a bug.
   */
  vmHostOnly?: string;
  /**
   * VM mode: what the check asserts differently in a VM and why (the check branches on `env.vm`).
   * Listed in docs/conformance.md "VM mode".
   */
  vmAdapted?: string;
}

export function newContext(): CaseContext {
  return {
    id: `ktc-${randomBytes(5).toString("hex")}`,
    host: mkdtempSync(join(tmpdir(), "kata-ts-conf-host-")),
    vars: {},
    knownInodes: {},
  };
}

/** Host cgroup directory of a process for a v1 controller (or "" for the unified tree). */
export function hostCgroupDir(pid: number, controller: string): string | undefined {
  for (const l of readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n")) {
    const [, ctrls, path] = l.split(":");
    if (ctrls === undefined) continue;
    if (controller === "" ? ctrls === "" : ctrls.split(",").includes(controller)) {
      const mount = controller === "" ? "/sys/fs/cgroup/unified" : `/sys/fs/cgroup/${controller}`;
      return join(mount, path);
    }
  }
  return undefined;
}

function readOr(path: string): string {
  try {
    return readFileSync(path, "utf8").trim();
  } catch (e) {
    return `<${(e as NodeJS.ErrnoException).code}>`;
  }
}

export function readHostFile(path: string): string {
  return readOr(path);
}

/**
 * Runs one case against a runtime; always deletes the container, the bundle and the case's host
 * fixtures. With `check`, the case's assertions and the leak assertion run once the container is
 * gone but before its fixtures are removed (a failure is rethrown after cleanup).
 */
export async function runCase(
  rt: Runtime,
  c: ConformanceCase,
  opts: { check?: boolean; ctx?: CaseContext } = {},
): Promise<Outcome> {
  const ctx = opts.ctx ?? newContext();
  let bundle: Bundle | undefined;
  let failure: unknown;
  let out: Outcome | undefined;
  const env: RunEnv = { vm: rt.vm };
  try {
    c.setup?.(ctx);
    const before = snapshotHost();
    const overrides = c.spec(ctx);
    const args = c.args ?? [...REPORT_ARGS, ...(c.probes ?? [])];
    bundle = makeBundle({ ...overrides, process: { ...((overrides.process as Overrides) ?? {}), args } });
    out = { code: -1, stdout: "", stderr: "", report: new Report(""), host: {}, bundle, leaks: [] };
    try {
      await drive(rt, c, ctx, bundle, out, env);
      out.report = new Report(out.stdout);
    } finally {
      // Whatever happened, the container must go (a failed case must not poison the next one).
      if (existsSync(join(rt.root, ctx.id))) rt.exec(["delete", "--force", ctx.id]);
      out.leaks = findLeaks(before, { root: rt.root, bundle: bundle.dir, id: ctx.id });
    }
    if (opts.check) {
      c.check(out, ctx, env);
      assert.deepEqual(out.leaks, [], `leaks after delete:\n  ${out.leaks.join("\n  ")}`);
    }
  } catch (e) {
    failure = e;
  } finally {
    // Host fixtures (a netns, bind sources) and the bundle go even when the runtime or a check threw.
    try {
      c.teardown?.(ctx);
    } finally {
      bundle?.cleanup();
      rmSync(ctx.host, { recursive: true, force: true });
    }
  }
  if (failure || !out) throw failure;
  return out;
}

/** Runs the container the way the case asks; fills `out` with what happened. */
async function drive(
  rt: Runtime,
  c: ConformanceCase,
  ctx: CaseContext,
  bundle: Bundle,
  out: Outcome,
  env: RunEnv,
) {
  const mode = c.mode ?? "run";
  if (mode === "run") {
    const r = rt.run(bundle.dir, ctx.id);
    Object.assign(out, { code: r.code, stdout: r.stdout, stderr: r.stderr });
  } else if (mode === "kill") {
    // `run` in the background, SIGKILL from the outside once it runs: run exits 128+9.
    const running = rt.execAsync(["run", "--bundle", bundle.dir, ctx.id]);
    const st = await rt.waitStatus(ctx.id, "running");
    out.host.statusBeforeKill = st?.status ?? "<none>";
    const k = rt.exec(["kill", ctx.id, "9"]);
    out.host.killCode = String(k.code);
    const r: Result = await running;
    Object.assign(out, { code: r.code, stdout: r.stdout, stderr: r.stderr });
  } else {
    const files = { stdout: join(ctx.host, "stdout"), stderr: join(ctx.host, "stderr") };
    const pidFile = join(ctx.host, "pid");
    const cr = rt.create(bundle.dir, ctx.id, files, pidFile);
    out.host.createCode = String(cr.code);
    out.host.createStderr = cr.stderr;
    if (cr.code !== 0) {
      out.code = cr.code;
      out.stderr = cr.stderr;
      return;
    }
    const pid = Number(readOr(pidFile));
    const st = rt.state(ctx.id);
    out.host.status = st?.status ?? "<none>";
    out.host.statePid = String(st?.pid);
    out.host.pidFile = String(pid);
    Object.assign(out.host, c.inspect?.(pid, ctx, env) ?? {});
    const s = rt.exec(["start", ctx.id]);
    out.host.startCode = String(s.code);
    const after = await rt.waitStatus(ctx.id, "stopped");
    out.host.finalStatus = after?.status ?? "<none>";
    const d = rt.exec(["delete", ctx.id]);
    out.host.deleteCode = String(d.code);
    out.code = s.code;
    out.stdout = readOr(files.stdout);
    out.stderr = readOr(files.stderr);
  }
}

/**
 * A report with run-specific values replaced, for comparing two runtimes: paths of the bundle, the
 * host fixtures and the state root, the id, namespace inodes (host / new / a labelled known inode)
 * and host pids.
 */
export function normaliseReport(
  o: Outcome,
  ctx: CaseContext,
  rt: Runtime,
  host: Record<string, string> = hostNamespaces(),
): string[] {
  const hostInodes = new Set(Object.values(host));
  return o.report.lines.map((line) => {
    let l = line
      .split(o.bundle.dir)
      .join("<BUNDLE>")
      .split(ctx.host)
      .join("<HOST>")
      .split(rt.root)
      .join("<ROOT>")
      .split(ctx.id)
      .join("<ID>");
    const eq = l.indexOf("=");
    const key = l.slice(0, eq);
    const value = l.slice(eq + 1);
    if (key.startsWith("ns.")) {
      l = `${key}=${ctx.knownInodes[value] ?? (hostInodes.has(value) ? "<host>" : "<new>")}`;
    } else if (key === "pid.self" && value !== "1") {
      l = `${key}=<host-pid>`;
    }
    return l;
  });
}
