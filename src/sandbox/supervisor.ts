// The sandbox supervisor: one long-lived process per sandbox (VM). It owns QEMU (a child), the agent
// connection, the share directory, and the stdio of every container process through the stand-ins.
// The CLI talks to it over <sandbox>/supervisor.sock (./protocol); stand-ins connect to the same socket
// and pass their stdio fds. It exits after the sandbox's last container is deleted, or when the VM
// dies (after telling every stand-in, so engines see the containers exit).

import { existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import type { GuestDetails, GuestMount } from "../agent/api";
import { firstLine } from "../errors";
import { laps } from "../log/laps";
import { guestNetworkOp } from "../network";
import type { Spec } from "../oci/spec";
import { writeFileAtomic } from "../sys/files";
import { closeFd, isErrno, recvFds } from "../sys/native";
import { processStartTime } from "../sys/proc";
import type { ProcessStdio, SandboxAgent } from "./agent";
import { leaveSandboxCgroup } from "./cgroup";
import { cleanupSandboxDir } from "./cleanup";
import { guestSpec } from "./guestspec";
import { GUEST_SHARED_DIR, type SandboxPaths, sandboxPaths } from "./paths";
import type { ControlArgs, ControlOp, ControlRequest, ControlResult } from "./protocol";
import { type Relay, relayStdio } from "./relay";
import { guestShareMount, shareDir, shareFile, unshare } from "./share";
import { Standin, StandinRegistry, standinsTold } from "./standins";

export { guestNamespaces, guestSpec } from "./guestspec";

/** Exit code a stand-in gets when its supervisor cannot give it the real one (the sandbox died). */
export const EXIT_SANDBOX_DIED = 255;
/** An idle supervisor (no container ever arrived, e.g. its CLI was killed mid-create) gives up. */
export const IDLE_EXIT_MS = 60_000;

export interface VmHandle {
  pid: number;
  stop(timeoutMs?: number): Promise<unknown>;
  kill(): void;
  waitExit(): Promise<unknown>;
}

/** Where the agent sees the share, and the mount that makes it appear there (none: already visible). */
export interface GuestShare {
  dir: string;
  mount?: GuestMount;
}

export interface Booted {
  agent: SandboxAgent;
  vm?: VmHandle;
  /** Default: the 9p share at GUEST_SHARED_DIR. */
  share?: GuestShare;
  /** False when the agent is not this sandbox's (a test agent on the host): no `shutdown` call. */
  ownsAgent?: boolean;
}

export interface SupervisorOptions {
  root: string;
  sandboxId: string;
  /** Boots the VM and connects the agent; the host agent for tests returns no VM. */
  boot(paths: SandboxPaths): Promise<Booted>;
  log?: (msg: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A control operation's handler: its typed arguments in, its typed result out. */
type ControlHandler<O extends ControlOp> = (
  args: ControlArgs<O>,
  /** Work to run after the answer went out (the last delete stops the sandbox). */
  later: (fn: () => void) => void,
) => Promise<ControlResult<O>>;

/** One handler per control operation (src/sandbox/protocol.ts ControlOps). */
type ControlHandlers = { [O in ControlOp]: ControlHandler<O> };

/** Splits a socket's text into lines: each complete line goes to onLine, the rest waits for more. */
function lineReader(onLine: (line: string) => void): (chunk: string) => void {
  let buf = "";
  return (chunk) => {
    buf += chunk;
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      onLine(line);
    }
  };
}

/** Operations a stopping sandbox still answers. */
const WHILE_STOPPING: ReadonlySet<ControlOp> = new Set(["ping", "delete", "shutdown"]);

interface Proc {
  execId: string;
  standin: Standin;
  stdio: ProcessStdio;
  relay?: Relay;
  exitStatus?: number;
  exited: Promise<number>;
}

interface Container {
  id: string;
  procs: Map<string, Proc>;
  /** The init's pid in the guest (pod containers join the sandbox container's namespaces by it). */
  guestPid?: number;
}

/** The default share: 9p (the supervisor's boot says when it is virtio-fs). */
export const SANDBOX_SHARE: GuestMount = guestShareMount("virtio-9p");

export class Supervisor {
  readonly paths: SandboxPaths;
  private agent!: SandboxAgent;
  private vm?: VmHandle;
  private share: GuestShare = { dir: GUEST_SHARED_DIR, mount: SANDBOX_SHARE };
  private ownsAgent = true;
  private guest?: GuestDetails;
  private server?: Server;
  private containers = new Map<string, Container>();
  private standins = new StandinRegistry();
  private shareMounted = false;
  private stopping = false;
  private vmDead = false;
  private idleTimer?: NodeJS.Timeout;
  private log: (msg: string) => void;

  constructor(private readonly opts: SupervisorOptions) {
    this.paths = sandboxPaths(opts.root, opts.sandboxId);
    this.log = opts.log ?? ((m) => process.stderr.write(`${new Date().toISOString()} ${m}\n`));
  }

  /** Boots the sandbox and listens; resolves when the CLI may connect. */
  async start(): Promise<void> {
    const p = this.paths;
    // The CLI made the directory before spawning us; if it is gone, a `delete --force` cleaned up after
    // a killed create: recreating it would leave an idle sandbox nobody knows about.
    if (!existsSync(p.dir)) throw new Error(`sandbox directory ${p.dir} was removed while starting`);
    mkdirSync(p.shared, { recursive: true, mode: 0o711 });
    mkdirSync(p.sockDir, { recursive: true, mode: 0o700 });
    writeFileAtomic(p.pidFile, `${process.pid} ${processStartTime(process.pid) ?? 0}\n`);
    const booted = await this.opts.boot(p);
    this.agent = booted.agent;
    this.vm = booted.vm;
    if (booted.share) this.share = booted.share;
    this.ownsAgent = booted.ownsAgent ?? true;
    this.writeInfo();
    this.guest = await this.agent.request("ping", {});
    const g = this.guest;
    this.log(
      `sandbox ${this.opts.sandboxId}: agent ready (guest ${g.kernelRelease}, up ${g.readyAt} s, node flags ${g.nodeFlags?.join(" ") || "none"}, code cache ${g.codeCache ?? "none"})`,
    );
    void this.agent.closed.then(() => this.onVmGone("agent connection closed"));
    void this.vm?.waitExit().then(() => this.onVmGone("QEMU exited"));
    rmSync(p.socket, { force: true });
    const server = createServer({ pauseOnConnect: true }, (s) => void this.onConnection(s));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(p.socket, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.armIdle();
  }

  private writeInfo(): void {
    const info = {
      sandboxId: this.opts.sandboxId,
      supervisorPid: process.pid,
      supervisorStart: processStartTime(process.pid) ?? 0,
      vmPid: this.vm?.pid ?? 0,
      vmStart: this.vm ? (processStartTime(this.vm.pid) ?? 0) : 0,
      sockDir: this.paths.sockDir,
      vmDir: this.paths.vmDir,
    };
    writeFileAtomic(this.paths.info, `${JSON.stringify(info)}\n`, 0o644);
  }

  private armIdle(): void {
    clearTimeout(this.idleTimer);
    if (this.containers.size > 0 || this.standins.size > 0) return;
    this.idleTimer = setTimeout(() => {
      this.log("no containers: shutting down");
      void this.shutdown(0);
    }, IDLE_EXIT_MS);
    this.idleTimer.unref();
  }

  // ── connections ────────────────────────────────────────────────────────────────────────────────

  /**
   * The first message of a connection is read with recvmsg (fds may ride on it) while Node's own
   * reader is paused; what follows goes through the socket as usual.
   */
  private async onConnection(sock: Socket): Promise<void> {
    sock.on("error", () => {});
    const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (fd === undefined || fd < 0) {
      sock.destroy();
      return;
    }
    let data = Buffer.alloc(0);
    const fds: number[] = [];
    const deadline = Date.now() + 10_000;
    let delay = 0;
    while (!data.includes(10)) {
      try {
        const r = recvFds(fd, 3, 65536);
        fds.push(...r.fds);
        if (r.data.length === 0) {
          for (const f of fds) closeFd(f);
          sock.destroy();
          return;
        }
        data = Buffer.concat([data, r.data]);
        delay = 0;
      } catch (err) {
        if (!isErrno(err, "EAGAIN") || Date.now() > deadline) {
          for (const f of fds) closeFd(f);
          sock.destroy();
          return;
        }
        await sleep(delay);
        delay = Math.min(delay * 2 + 1, 20);
      }
    }
    const nl = data.indexOf(10);
    const first = data.subarray(0, nl).toString();
    const rest = data.subarray(nl + 1).toString();
    if (first.startsWith("standin ")) this.onStandin(sock, first, rest, fds);
    else {
      for (const f of fds) closeFd(f);
      this.onControl(sock, `${first}\n${rest}`);
    }
  }

  private onStandin(sock: Socket, hello: string, rest: string, fds: number[]): void {
    const [, cid, exec, term] = hello.split(" ");
    const execId = exec === "-" ? "" : (exec ?? "");
    const s = new Standin(sock, cid ?? "", execId, term === "1", fds);
    this.log(`stand-in for ${s.containerId}/${execId || "init"} connected with ${fds.length} fds`);
    const onLines = lineReader((line) => void this.onStandinLine(s, line));
    sock.setEncoding("utf8");
    sock.on("data", onLines);
    sock.on("close", () => this.onStandinGone(s));
    sock.resume();
    this.standins.arrived(s);
    clearTimeout(this.idleTimer);
    if (rest) onLines(rest);
  }

  private proc(cid: string, execId: string): Proc | undefined {
    return this.containers.get(cid)?.procs.get(execId);
  }

  private async onStandinLine(s: Standin, line: string): Promise<void> {
    const [word, a, b] = line.split(" ");
    const p = this.proc(s.containerId, s.execId);
    if (!p || p.standin !== s) return;
    try {
      if (word === "signal") {
        await this.agent.request("signalProcess", {
          containerId: s.containerId,
          execId: s.execId,
          signal: Number(a),
          all: false,
        });
      } else if (word === "resize") {
        await this.agent.request("resizeTerminal", {
          containerId: s.containerId,
          execId: s.execId,
          rows: Number(a),
          cols: Number(b),
        });
      }
    } catch (err) {
      this.log(`stand-in ${s.containerId}/${s.execId || "init"}: ${line}: ${(err as Error).message}`);
    }
  }

  /** A stand-in that goes before its process exited was killed: the workload follows it, as with runc. */
  private onStandinGone(s: Standin): void {
    if (this.standins.forget(s)) {
      this.armIdle();
      return;
    }
    const p = this.proc(s.containerId, s.execId);
    if (!p || p.standin !== s || s.told || p.exitStatus !== undefined || this.stopping) return;
    this.log(`stand-in of ${s.containerId}/${s.execId || "init"} went away: killing the process`);
    s.told = true;
    this.agent
      .request("signalProcess", {
        containerId: s.containerId,
        execId: s.execId,
        signal: 9,
        all: s.execId === "",
      })
      .catch(() => {});
  }

  private onControl(sock: Socket, initial: string): void {
    const onData = lineReader((line) => {
      if (line.trim()) void this.handle(sock, line);
    });
    sock.setEncoding("utf8");
    sock.on("data", onData);
    sock.resume();
    onData(initial);
  }

  private async handle(sock: Socket, line: string): Promise<void> {
    let req: ControlRequest;
    try {
      req = JSON.parse(line) as ControlRequest;
    } catch {
      sock.write(`${JSON.stringify({ id: 0, ok: false, error: "control: malformed request" })}\n`);
      return;
    }
    let after: (() => void) | undefined;
    try {
      const result = await this.dispatch(req, (fn) => {
        after = fn;
      });
      if (!sock.destroyed) sock.write(`${JSON.stringify({ id: req.id, ok: true, result })}\n`);
    } catch (err) {
      const msg = firstLine((err as Error).message ?? String(err));
      if (!sock.destroyed) sock.write(`${JSON.stringify({ id: req.id, ok: false, error: msg })}\n`);
    }
    // Work that must follow the answer (the last delete stops the sandbox): the answer goes out first.
    if (after) sock.end(after);
  }

  // ── operations ─────────────────────────────────────────────────────────────────────────────────

  private container(cid: string): Container {
    const c = this.containers.get(cid);
    if (!c) throw new Error(`container ${cid} is not in sandbox ${this.opts.sandboxId}`);
    return c;
  }

  /** Runs one request through the handler of its operation. */
  private async dispatch(req: ControlRequest, later: (fn: () => void) => void): Promise<unknown> {
    const op = req.op;
    if (!Object.hasOwn(this.handlers, op))
      throw new Error(`control: unknown operation ${JSON.stringify(op)}`);
    if (this.stopping && !WHILE_STOPPING.has(op))
      throw new Error(`sandbox ${this.opts.sandboxId} is stopping`);
    return this.run(op, req as unknown as ControlArgs<typeof op>, later);
  }

  private run<O extends ControlOp>(op: O, args: ControlArgs<O>, later: (fn: () => void) => void) {
    const handler: ControlHandler<O> = this.handlers[op];
    return handler(args, later);
  }

  private readonly handlers: ControlHandlers = {
    ping: async () => ({
      sandboxId: this.opts.sandboxId,
      pid: process.pid,
      vmPid: this.vm?.pid ?? 0,
      guest: this.guest!,
      containers: [...this.containers.keys()],
    }),
    createContainer: (a) => this.createContainer(a.containerId, a.spec, a.rootfs, a.standinTimeoutMs),
    startContainer: async (a) => {
      this.container(a.containerId);
      await this.agent.request("startContainer", { containerId: a.containerId });
      return {};
    },
    exec: (a) => this.exec(a.containerId, a.execId, a.process, a.standinTimeoutMs),
    kill: async (a) => {
      this.container(a.containerId);
      await this.agent.request("signalProcess", {
        containerId: a.containerId,
        execId: a.execId ?? "",
        signal: a.signal,
        all: Boolean(a.all),
      });
      return {};
    },
    wait: async (a) => {
      const p = this.container(a.containerId).procs.get(a.execId ?? "");
      if (!p) throw new Error(`process ${a.execId || "init"} of ${a.containerId} not found`);
      return { exitStatus: await p.exited };
    },
    pause: async (a) => {
      this.container(a.containerId);
      await this.agent.request("pauseContainer", { containerId: a.containerId });
      return {};
    },
    resume: async (a) => {
      this.container(a.containerId);
      await this.agent.request("resumeContainer", { containerId: a.containerId });
      return {};
    },
    update: async (a) => {
      this.container(a.containerId);
      await this.agent.request("updateContainer", { containerId: a.containerId, resources: a.resources });
      return {};
    },
    stats: async (a) => {
      this.container(a.containerId);
      return this.agent.request("statsContainer", { containerId: a.containerId });
    },
    ps: async (a) => {
      this.container(a.containerId);
      return this.agent.request("listProcesses", { containerId: a.containerId, psArgs: a.psArgs });
    },
    delete: async (a, later) => {
      // The sandbox container goes last, as Kata's DeleteSandbox does: its members are stopped first
      // (their stand-ins die of SIGKILL, so engines see 137), then the VM. When our QEMU stops right
      // after (the sandbox container, or the last container), the guest is not asked to clean up: its
      // processes, mounts and cgroups end with it, and under TCG that call cost a delete ~0.1 s.
      const vmStops =
        this.vm !== undefined &&
        (a.containerId === this.opts.sandboxId ||
          (this.containers.size === 1 && this.containers.has(a.containerId)));
      if (a.containerId === this.opts.sandboxId)
        for (const member of [...this.containers.keys()])
          if (member !== a.containerId) await this.deleteContainer(member, vmStops);
      await this.deleteContainer(a.containerId, vmStops);
      const empty = this.containers.size === 0;
      if (empty) later(() => void this.shutdown(0));
      return { sandboxEmpty: empty };
    },
    network: (a) => guestNetworkOp(this.agent, a.action, a.routes),
    shutdown: async (_a, later) => {
      later(() => void this.shutdown(0));
      return {};
    },
  };

  /**
   * The sandbox container of a pod container `cid`: the one whose id is the sandbox's (else the first
   * created, for engines whose sandbox id is not a container id). None for the sandbox container itself.
   */
  private sandboxContainer(cid: string): Container | undefined {
    const first = this.containers.get(this.opts.sandboxId) ?? this.containers.values().next().value;
    return first && first.id !== cid ? first : undefined;
  }

  private async createContainer(
    cid: string,
    spec: Spec,
    rootfs: string,
    standinTimeoutMs = 10_000,
  ): Promise<{ guestPid: number }> {
    if (this.containers.has(cid)) throw new Error(`container ${cid} already exists in the sandbox`);
    const c: Container = { id: cid, procs: new Map() };
    this.containers.set(cid, c);
    clearTimeout(this.idleTimer);
    let stdio: ProcessStdio | undefined;
    let standin: Standin | undefined;
    const took = laps();
    try {
      standin = await this.standins.claim(cid, "", standinTimeoutMs);
      took.lap("stand-in");
      const { spec: g, binds } = guestSpec(spec, cid, this.share.dir, this.sandboxContainer(cid)?.guestPid);
      // Always read-write, as runc sees the rootfs: the engine in the guest makes mount points in it
      // (/proc, /dev, ...) and only then applies root.readonly itself.
      shareDir(this.paths.shared, `${cid}/rootfs`, rootfs, false);
      for (const b of binds) {
        const m = spec.mounts?.[b.index];
        const ro = (m?.options ?? []).includes("ro");
        let isDir = true;
        try {
          isDir = statSync(b.source).isDirectory();
        } catch {
          throw new Error(`mount source ${b.source} does not exist`);
        }
        if (isDir) shareDir(this.paths.shared, b.rel, b.source, ro);
        else shareFile(this.paths.shared, b.rel, b.source, ro);
      }
      // The share is mounted once per sandbox, outside any container: the agent unmounts a container's
      // own mounts when it is removed, and the other containers of the pod still need the share.
      took.lap("host share");
      if (!this.shareMounted && this.share.mount) {
        await this.agent.request("addMount", this.share.mount);
        this.shareMounted = true;
        took.lap("guest share mount");
      }
      const terminal = Boolean(spec.process?.terminal);
      stdio = this.agent.openStdio({ terminal, stdin: true, stdout: true, stderr: !terminal });
      const started = await this.agent.request("createContainer", {
        containerId: cid,
        spec: g,
        mounts: [],
        stdio: stdio.streams,
      });
      c.guestPid = started.guestPid;
      this.track(c, "", standin, stdio);
      took.lap("guest create");
      this.log(`container ${cid} created (${took})`);
      return started;
    } catch (err) {
      this.containers.delete(cid);
      stdio?.stdin?.destroy();
      stdio?.stdout?.destroy();
      stdio?.stderr?.destroy();
      // The CLI kills the stand-in when it sees this error (telling it here would race the answer);
      // until then it waits as unclaimed, so a delete or shutdown still ends it.
      if (standin) this.standins.putBack(standin);
      try {
        unshare(this.paths.shared, cid);
      } catch (e) {
        this.log(`unshare ${cid}: ${(e as Error).message}`);
      }
      this.armIdle();
      throw err;
    }
  }

  private async exec(
    cid: string,
    execId: string,
    process: NonNullable<Spec["process"]>,
    standinTimeoutMs = 10_000,
  ): Promise<{ guestPid: number }> {
    const c = this.container(cid);
    if (!execId) throw new Error("exec: an exec id is required");
    if (c.procs.has(execId)) throw new Error(`exec id ${execId} is already in use in ${cid}`);
    const took = laps();
    const standin = await this.standins.claim(cid, execId, standinTimeoutMs);
    took.lap("stand-in");
    const terminal = Boolean(process.terminal);
    const stdio = this.agent.openStdio({ terminal, stdin: true, stdout: true, stderr: !terminal });
    try {
      const started = await this.agent.request("execProcess", {
        containerId: cid,
        execId,
        process,
        stdio: stdio.streams,
      });
      this.track(c, execId, standin, stdio);
      took.lap("guest exec");
      this.log(`process ${cid}/${execId} started (${took})`);
      return started;
    } catch (err) {
      stdio.stdin?.destroy();
      stdio.stdout?.destroy();
      stdio.stderr?.destroy();
      this.standins.putBack(standin);
      throw err;
    }
  }

  /** Relays a process's stdio and, when it exits, its exit status to the stand-in. */
  private track(c: Container, execId: string, standin: Standin, stdio: ProcessStdio): void {
    const relay = relayStdio(standin.fds, standin.terminal, stdio);
    standin.fds = [];
    let resolveExit!: (n: number) => void;
    const p: Proc = {
      execId,
      standin,
      stdio,
      relay,
      exited: new Promise<number>((r) => {
        resolveExit = r;
      }),
    };
    c.procs.set(execId, p);
    void (async () => {
      let status: number;
      try {
        status = (await this.agent.request("waitProcess", { containerId: c.id, execId }, 0)).exitStatus;
      } catch (err) {
        if (!this.vmDead) this.log(`wait ${c.id}/${execId || "init"}: ${(err as Error).message}`);
        status = this.vmDead ? 128 + 9 : EXIT_SANDBOX_DIED;
      }
      // Output first, exit second: an engine that sees the exit must have had every byte already.
      await Promise.race([relay.drained, sleep(2000)]);
      relay.close();
      p.exitStatus = status;
      resolveExit(status);
      standin.tell(this.vmDead ? "kill 9" : `exit ${status}`);
      this.log(`${c.id}/${execId || "init"} exited with ${status}`);
    })();
  }

  private async deleteContainer(cid: string, vmStops = false): Promise<void> {
    const c = this.containers.get(cid);
    if (c && !this.vmDead && !vmStops) {
      try {
        await this.agent.request("removeContainer", { containerId: cid }, 30_000);
      } catch (err) {
        this.log(`removeContainer ${cid}: ${(err as Error).message}`);
      }
    }
    for (const p of c?.procs.values() ?? []) {
      p.relay?.close();
      p.standin.tell("kill 9");
      p.standin.sock.end();
    }
    this.standins.killUnclaimed(cid);
    this.containers.delete(cid);
    unshare(this.paths.shared, cid);
  }

  private onVmGone(why: string): void {
    if (this.stopping) return;
    this.vmDead = true;
    this.log(`sandbox ${this.opts.sandboxId}: ${why}: telling every stand-in`);
    // Waiters fail (the agent is gone) and tell their stand-ins; unclaimed ones are told here.
    this.standins.tellAll("kill 9");
    for (const c of this.containers.values())
      for (const p of c.procs.values()) if (p.exitStatus === undefined) p.standin.tell("kill 9");
    setTimeout(() => void this.shutdown(1), 200);
  }

  /** Stops everything this sandbox owns and exits the process. */
  async shutdown(code: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.idleTimer);
    this.server?.close();
    for (const c of this.containers.values())
      for (const p of c.procs.values()) {
        p.relay?.close();
        p.standin.tell("kill 9");
      }
    this.standins.killUnclaimed();
    // With a VM of our own, QEMU is simply stopped: the guest holds nothing worth an orderly shutdown
    // (its root is read-only, and container writes to the share are on the host already: 9p caches only
    // mmap'd pages and writes them back when the mapping closes; virtio-fs has no writeback cache),
    // and the agent's shutdown (cleanup, sync, power-off) made `delete` 0.1-0.5 s slower.
    try {
      if (!this.vmDead && this.agent && this.ownsAgent && !this.vm)
        await Promise.race([this.agent.request("shutdown", {}, 1000), sleep(1000)]);
    } catch {
      // the agent is going anyway: QEMU is stopped next
    }
    this.agent?.close();
    if (this.vm) {
      try {
        await this.vm.stop(3000);
      } catch {
        this.vm.kill();
      }
    }
    // The cgroup's record goes with the directory: remove the cgroup first (a `delete` that read the
    // record earlier removes it too, whichever comes first).
    if (code === 0) {
      const err = await leaveSandboxCgroup(this.paths);
      if (err) this.log(`sandbox ${this.opts.sandboxId}: ${err}`);
    }
    cleanupSandboxDir(this.paths, code === 0);
    this.log(`sandbox ${this.opts.sandboxId}: stopped`);
    // The log is a file (written synchronously); what the stand-ins were told may still be in their
    // sockets: exit once it is out (at most 50 ms; a blind 50 ms wait was on every delete's path).
    await standinsTold(50);
    process.exit(code);
  }
}

/**
 * Starts a supervisor and tells the `create` waiting for it: "ok", or "error: <one line>" after the
 * supervisor has shut down again. SIGTERM and SIGINT end the sandbox. `report` is the supervisor's fd 3
 * (src/sandbox/daemon.ts) or, for a cached VM, the connection of the `create` that took it (slot.ts).
 */
export async function serveSandbox(
  sup: Supervisor,
  log: (m: string) => void,
  report: (line: string) => void,
): Promise<void> {
  process.removeAllListeners("SIGTERM");
  process.removeAllListeners("SIGINT");
  process.on("SIGTERM", () => void sup.shutdown(0));
  process.on("SIGINT", () => void sup.shutdown(0));
  try {
    await sup.start();
  } catch (err) {
    const msg = firstLine((err as Error).message ?? String(err));
    log(`start failed: ${msg}`);
    report(`error: ${msg}`);
    await sup.shutdown(1);
    return;
  }
  report("ok");
}
