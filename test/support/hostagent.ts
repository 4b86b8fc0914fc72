// A stand-in for the guest agent that runs each container's process directly on the host (no
// isolation at all). It exists so that the supervisor's own logic — stand-in registration, the stdio
// relay with backpressure, exit codes and signal forwarding — is testable without a VM; it is selected
// only by the test supervisor entry (./hostagent-supervisor.ts), never by the shipped bundle.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { release } from "node:os";
import { PassThrough } from "node:stream";
import type {
  AgentMethod,
  AgentRequest,
  AgentResponse,
  CreateContainerRequest,
  GuestDetails,
} from "../../src/agent/api";
import type { Process } from "../../src/oci/spec";
import type { ProcessStdio, SandboxAgent, StdioWanted } from "../../src/sandbox/agent";

interface HostProc {
  process: Process;
  stdio: ProcessStdio;
  child?: ChildProcess;
  exit: Promise<number>;
  setExit: (code: number) => void;
}

export class HostAgent implements SandboxAgent {
  private nextStream = 1;
  private streams = new Map<number, PassThrough>();
  private procs = new Map<string, HostProc>();
  private end!: () => void;
  readonly closed = new Promise<void>((r) => {
    this.end = r;
  });

  openStdio(w: StdioWanted): ProcessStdio {
    const mk = (want: boolean) => {
      if (!want) return { id: 0, s: undefined };
      const id = this.nextStream++;
      const s = new PassThrough();
      this.streams.set(id, s);
      return { id, s };
    };
    const i = mk(w.stdin);
    const o = mk(w.stdout);
    const e = mk(w.stderr && !w.terminal);
    return {
      streams: { terminal: w.terminal, stdin: i.id, stdout: o.id, stderr: e.id },
      stdin: i.s,
      stdout: o.s,
      stderr: e.s,
    };
  }

  private key(cid: string, execId: string) {
    return `${cid}/${execId}`;
  }

  private add(cid: string, execId: string, process: Process, streams: CreateContainerRequest["stdio"]) {
    let setExit!: (c: number) => void;
    const exit = new Promise<number>((r) => {
      setExit = r;
    });
    const s = (id: number) => (id ? this.streams.get(id) : undefined);
    const p: HostProc = {
      process,
      stdio: { streams, stdin: s(streams.stdin), stdout: s(streams.stdout), stderr: s(streams.stderr) },
      exit,
      setExit,
    };
    this.procs.set(this.key(cid, execId), p);
    return p;
  }

  private run(p: HostProc): number {
    // setpriv --pdeathsig: the workload dies with the supervisor, as a guest dies with its VM.
    const argv = ["--pdeathsig", "KILL", "--", ...(p.process.args?.length ? p.process.args : ["/bin/true"])];
    const child = spawn("setpriv", argv, {
      cwd: p.process.cwd || "/",
      env: Object.fromEntries(
        (p.process.env ?? []).map((kv) => [kv.split("=")[0], kv.slice(kv.indexOf("=") + 1)]),
      ),
      stdio: ["pipe", "pipe", "pipe"],
    });
    p.child = child;
    if (p.stdio.stdin) p.stdio.stdin.pipe(child.stdin!);
    else child.stdin!.end();
    child.stdin!.on("error", () => {});
    const out = p.stdio.stdout as PassThrough | undefined;
    const err = p.stdio.stderr as PassThrough | undefined;
    if (out) child.stdout!.pipe(out);
    else child.stdout!.resume();
    if (err) child.stderr!.pipe(err);
    else if (out) child.stderr!.pipe(out, { end: false });
    else child.stderr!.resume();
    child.on("error", () => p.setExit(127));
    child.on("close", (code, signal) => {
      const sig = signal ? (require("node:os").constants.signals[signal] as number) : 0;
      p.setExit(signal ? 128 + sig : (code ?? 0));
    });
    return child.pid ?? 0;
  }

  private get(cid: string, execId: string): HostProc {
    const p = this.procs.get(this.key(cid, execId));
    if (!p) throw new Error(`process ${execId || "init"} of container ${cid} not found`);
    return p;
  }

  async request<M extends AgentMethod>(method: M, req: AgentRequest<M>): Promise<AgentResponse<M>> {
    const r = req as Record<string, never>;
    const out = (v: unknown) => v as AgentResponse<M>;
    switch (method) {
      case "ping": {
        const d: GuestDetails = {
          kernelRelease: release(),
          bootId: "host",
          agentVersion: "host",
          readyAt: 0,
        };
        return out(d);
      }
      case "createContainer": {
        const c = req as CreateContainerRequest;
        this.add(
          c.containerId,
          "",
          c.spec.process ?? { args: ["/bin/true"], cwd: "/", user: { uid: 0, gid: 0 } },
          c.stdio,
        );
        return out({ guestPid: 0 });
      }
      case "startContainer":
        return out({ guestPid: this.run(this.get(r.containerId, "")) });
      case "execProcess": {
        const e = req as AgentRequest<"execProcess">;
        return out({ guestPid: this.run(this.add(e.containerId, e.execId, e.process, e.stdio)) });
      }
      case "signalProcess": {
        const s = req as AgentRequest<"signalProcess">;
        const targets = s.all
          ? [...this.procs.entries()].filter(([k]) => k.startsWith(`${s.containerId}/`)).map(([, p]) => p)
          : [this.get(s.containerId, s.execId)];
        for (const p of targets) p.child?.kill(s.signal);
        if (!s.all && !targets[0]?.child) targets[0]?.setExit(128 + s.signal);
        return out({});
      }
      case "waitProcess":
        return out({ exitStatus: await this.get(r.containerId, r.execId).exit });
      case "listProcesses": {
        const pids = [...this.procs.entries()]
          .filter(([k, p]) => k.startsWith(`${r.containerId}/`) && p.child?.exitCode === null)
          .map(([, p]) => p.child!.pid ?? 0);
        // Its processes are the host's: the host's ps is this "guest's".
        const psArgs = (req as AgentRequest<"listProcesses">).psArgs;
        if (!psArgs) return out({ pids });
        const ps = spawnSync("ps", psArgs.length ? psArgs : ["-ef"], { encoding: "utf8" });
        return out({ pids, table: ps.stdout });
      }
      case "removeContainer": {
        for (const [k, p] of this.procs) {
          if (!k.startsWith(`${r.containerId}/`)) continue;
          p.child?.kill("SIGKILL");
          p.setExit(137);
          this.procs.delete(k);
        }
        return out({});
      }
      case "pauseContainer":
      case "resumeContainer":
        for (const [k, p] of this.procs)
          if (k.startsWith(`${r.containerId}/`))
            p.child?.kill(method === "pauseContainer" ? "SIGSTOP" : "SIGCONT");
        return out({});
      case "statsContainer":
        return out({ data: {} });
      default:
        return out({});
    }
  }

  close(): void {
    for (const p of this.procs.values()) p.child?.kill("SIGKILL");
    this.end();
  }
}
