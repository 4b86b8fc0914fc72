// The fuzz driver (runs in the host's namespaces): starts a worker in throw-away namespaces, hands it
// one case at a time, and checks from outside what the worker cannot be trusted to see of itself:
//   - the caller (the worker) keeps its root, cwd, mount table and namespaces (/proc/PID/root, cwd,
//     mountinfo, ns/*, and a sentinel file only its root holds);
//   - host files kata-ts might touch keep their owner, mode and device numbers (/dev/null, /dev/tty, ...),
//     the host's sysctls and hostname keep their values.
// A damaged, hung or dead worker is killed (its namespaces go with it) and a fresh one starts.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface, type Interface } from "node:readline";
import { findLeaks, snapshotHost } from "../leaks";
import type { FuzzCase } from "./gen";
import { GLOBAL_SYSCTLS } from "./gen";
import type { StepResult } from "./output";
import type { CaseReply, CaseRequest } from "./worker";

const REPO = resolve(__dirname, "..", "..");

const HOST_FILES = [
  "/dev/null",
  "/dev/zero",
  "/dev/full",
  "/dev/random",
  "/dev/urandom",
  "/dev/tty",
  "/dev/ptmx",
  "/dev/console",
  "/dev/net/tun",
  "/dev/kvm",
  "/dev/fuzz0",
  "/dev/a",
  "/etc/hostname",
  "/etc/hosts",
  "/etc/resolv.conf",
  "/etc/passwd",
];

export interface CaseResult {
  index: number;
  token: string;
  case: FuzzCase;
  steps: StepResult[];
  violations: string[];
  ms: number;
}

export interface DriverOptions {
  mode: "host" | "vm";
  /** configuration.toml (written by the caller for VM mode; host mode gets hypervisor = "none") */
  config?: string;
  /** a short string unique to this run (tokens, cgroup names) */
  runId: string;
}

function hostFacts(): Map<string, string> {
  const m = new Map<string, string>();
  for (const f of HOST_FILES) {
    try {
      const st = lstatSync(f);
      m.set(f, `${st.mode.toString(8)} ${st.uid}:${st.gid} rdev=${st.rdev} ino=${st.ino}`);
    } catch {
      m.set(f, "absent");
    }
  }
  // Only the global (not namespaced) keys: the worker's own namespaces hide the others from kata-ts, and
  // other programs on this machine may change the host's net.* values meanwhile.
  for (const k of GLOBAL_SYSCTLS) {
    try {
      m.set(`sysctl ${k}`, readFileSync(`/proc/sys/${k.replaceAll(".", "/")}`, "utf8").trim());
    } catch {
      m.set(`sysctl ${k}`, "<none>");
    }
  }
  m.set("hostname", hostname());
  return m;
}

/** What makes a process "the same caller": its root, cwd, mounts, namespaces. */
function callerView(pid: number, sentinel: string): Map<string, string> {
  const m = new Map<string, string>();
  const st = (p: string) => {
    try {
      const s = statSync(p);
      return `${s.dev}:${s.ino}`;
    } catch (e) {
      return `error ${(e as NodeJS.ErrnoException).code}`;
    }
  };
  m.set("root", st(`/proc/${pid}/root/`));
  m.set("cwd", st(`/proc/${pid}/cwd/`));
  m.set("sentinel", st(`/proc/${pid}/root${sentinel}`));
  try {
    m.set("mountinfo", readFileSync(`/proc/${pid}/mountinfo`, "utf8"));
  } catch {
    m.set("mountinfo", "<gone>");
  }
  let ns: string[] = [];
  try {
    ns = readdirSync(`/proc/${pid}/ns`);
  } catch {}
  for (const n of ns) {
    try {
      m.set(`ns ${n}`, readlinkSync(`/proc/${pid}/ns/${n}`));
    } catch {}
  }
  return m;
}

function hostMountPoints(): Set<string> {
  return new Set(
    readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .map((l) => l.split(" ")[4]),
  );
}

function diffMaps(what: string, a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of a) {
    const w = b.get(k) ?? "<missing>";
    if (w === v) continue;
    if (k === "mountinfo") {
      const before = new Set(v.split("\n"));
      const after = new Set(w.split("\n"));
      const added = [...after]
        .filter((l) => !before.has(l))
        .map((l) => `+${l.split(" ").slice(3, 5).join(" ")}`);
      // Removing a directory that is a mount point elsewhere unmounts it in every namespace (Linux
      // 3.18+): other programs cleaning up their own mounts shrink the worker's table too. A mount gone
      // from the worker counts only while the host still has that mount point.
      const host = hostMountPoints();
      const gone = [...before]
        .filter((l) => !after.has(l) && host.has(l.split(" ")[4]))
        .map((l) => `-${l.split(" ").slice(3, 5).join(" ")}`);
      if (added.length || gone.length)
        out.push(`${what} mount table changed: ${[...added, ...gone].slice(0, 6).join(", ")}`);
    } else out.push(`${what} ${k} changed: ${v.slice(0, 80)} -> ${w.slice(0, 80)}`);
  }
  return out;
}

export class FuzzDriver {
  private worker?: ChildProcess;
  private lines?: Interface;
  private pending?: (line: string | undefined) => void;
  private base: string;
  private config: string;
  private sentinel: string;
  private workerPid = 0;
  restarts = 0;

  constructor(private opts: DriverOptions) {
    this.base = mkdtempSync(join(tmpdir(), `kata-fuzz-${opts.runId}-`));
    this.sentinel = join(tmpdir(), `kata-fuzz-sentinel-${opts.runId}-${process.pid}`);
    writeFileSync(this.sentinel, "the fuzz worker's root\n");
    if (opts.config) this.config = opts.config;
    else {
      this.config = join(tmpdir(), `kata-fuzz-${opts.runId}-${process.pid}.toml`);
      writeFileSync(this.config, '[runtime]\nhypervisor = "none"\n');
    }
  }

  /** The current worker's directory (its tmpfs, seen only in its own mount namespace). */
  private workerDir(): string {
    return join(this.base, `w${this.restarts}`);
  }

  private async start(): Promise<void> {
    const w = spawn(
      "unshare",
      [
        "-m",
        "-u",
        "-i",
        "-n",
        "--propagation",
        "private",
        "--",
        process.execPath,
        "--import",
        "tsx",
        join(__dirname, "worker.ts"),
        this.workerDir(),
      ],
      { cwd: REPO, stdio: ["pipe", "pipe", "inherit"] },
    );
    this.worker = w;
    this.lines = createInterface({ input: w.stdout! });
    // Events of a worker already replaced (its exit comes late) must not answer the new one's wait.
    this.lines.on("line", (l) => {
      if (this.worker !== w) return;
      const p = this.pending;
      this.pending = undefined;
      p?.(l);
    });
    w.on("exit", () => {
      if (this.worker !== w) return;
      const p = this.pending;
      this.pending = undefined;
      p?.(undefined);
    });
    const ready = await this.next(120_000);
    if (!ready) throw new Error("fuzz worker did not start");
    this.workerPid = JSON.parse(ready).pid;
  }

  private next(ms: number): Promise<string | undefined> {
    return new Promise((res) => {
      const t = setTimeout(() => {
        this.pending = undefined;
        res(undefined);
      }, ms);
      this.pending = (l) => {
        clearTimeout(t);
        res(l);
      };
    });
  }

  private kill(): void {
    if (this.worker && this.worker.exitCode === null) this.worker.kill("SIGKILL");
    this.lines?.close();
    this.worker = undefined;
    this.restarts++;
  }

  async runCase(c: FuzzCase, index: number): Promise<CaseResult> {
    if (!this.worker) await this.start();
    const token = `${this.opts.runId}x${index}`;
    const req: CaseRequest = { index, token, case: c, mode: this.opts.mode, config: this.config };
    const t0 = Date.now();
    const host0 = hostFacts();
    const view0 = callerView(this.workerPid, this.sentinel);
    this.worker!.stdin!.write(`${JSON.stringify(req)}\n`);
    const line = await this.next(this.opts.mode === "vm" ? 1_500_000 : 400_000);
    const violations: string[] = [];
    let steps: StepResult[] = [];
    if (line === undefined) {
      violations.push("case hung or killed the worker");
      const dir = this.workerDir();
      this.kill();
      sweep(dir, token);
    } else {
      const reply = JSON.parse(line) as CaseReply;
      steps = reply.steps;
      if (process.env.KATA_FUZZ_TIMING) console.log(`overhead ${reply.overheadMs} ms`);
      violations.push(...reply.violations);
      const view1 = callerView(this.workerPid, this.sentinel);
      const damage = diffMaps("caller's", view0, view1);
      violations.push(...damage);
      if (damage.length) {
        const dir = this.workerDir();
        this.kill(); // its namespaces are no longer a clean caller
        sweep(dir, token);
      }
    }
    const host1 = hostFacts();
    violations.push(...diffMaps("host", host0, host1));
    restoreHost(host0, host1);
    return { index, token, case: c, steps, violations, ms: Date.now() - t0 };
  }

  close(): void {
    if (this.worker) {
      this.worker.stdin?.end();
      const w = this.worker;
      setTimeout(() => w.exitCode === null && w.kill("SIGKILL"), 10_000).unref();
    }
    sweep(this.base, this.opts.runId);
    // The tmpfs lived in the worker's mount namespace only: here the directories are empty.
    spawnSync("rm", ["-rf", "--one-file-system", this.base]);
    rmSync(this.sentinel, { force: true });
    if (!this.opts.config) rmSync(this.config, { force: true });
  }
}

/**
 * What a replaced worker's case (or the whole run, by run id) left: processes and cgroups that carry
 * the token (the worker can no longer scrub them). Found by the leak scanner, seen from the host.
 */
function sweep(base: string, token: string): void {
  const leaks = findLeaks(snapshotHost(), { root: base, bundle: base, id: token });
  for (const l of leaks) {
    const pid = /^process (\d+)/.exec(l)?.[1];
    if (pid)
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {}
  }
  for (const l of leaks.sort((a, b) => b.length - a.length)) {
    const cg = /^cgroup (.*)$/.exec(l)?.[1];
    if (cg) spawnSync("sh", ["-c", 'find "$1" -depth -type d -exec rmdir {} + 2>/dev/null', "sh", cg]);
  }
}

/** A host sysctl a defect changed is put back at once (the machine is shared). */
function restoreHost(before: Map<string, string>, after: Map<string, string>): void {
  for (const [k, v] of before) {
    if (!k.startsWith("sysctl ") || after.get(k) === v || v === "<none>") continue;
    try {
      writeFileSync(`/proc/sys/${k.slice(7).replaceAll(".", "/")}`, v);
    } catch {}
  }
  for (const f of HOST_FILES) {
    const was = before.get(f);
    if (was === after.get(f) || !f.startsWith("/dev/")) continue;
    if (was === "absent") rmSync(f, { force: true, recursive: true });
    else if (was) {
      const [mode, owner] = was.split(" ");
      spawnSync("chown", [owner, f]);
      spawnSync("chmod", [(Number.parseInt(mode, 8) & 0o7777).toString(8), f]);
    }
  }
}
