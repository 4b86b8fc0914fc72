// The sandbox supervisor: one long-lived process per sandbox (VM). It owns QEMU (a child), the agent
// connection, the share directory, and the stdio of every container process through the stand-ins.
// The CLI talks to it over <sandbox>/supervisor.sock (./protocol); stand-ins connect to the same socket
// and pass their stdio fds. It exits after the sandbox's last container is deleted, or when the VM
// dies (after telling every stand-in, so engines see the containers exit).
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { dirname, isAbsolute, join } from "node:path";
import type { GuestDetails, GuestMount } from "../agent/api";
import { guestNetworkOp, teardownSandboxNetwork } from "../network";
import type { Mount, Namespace, Spec } from "../oci/spec";
import { processStartTime } from "../runtime/status";
import { closeFd, isErrno, recvFds } from "../sys/native";
import type { ProcessStdio, SandboxAgent } from "./agent";
import { leaveSandboxCgroup } from "./cgroup";
import { GUEST_SHARED_DIR, guestRootfs, type SandboxPaths, sandboxPaths } from "./paths";
import type { ControlOp, ControlRequest } from "./protocol";
import { type Relay, relayStdio } from "./relay";
import { guestShareMount, mountsUnder, shareDir, shareFile, unmountTree, unshare } from "./share";

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

/** One stand-in connection: the host face of one container process. */
class Standin {
  told = false;
  constructor(
    readonly sock: Socket,
    readonly containerId: string,
    readonly execId: string,
    readonly terminal: boolean,
    public fds: number[],
  ) {}
  /** Last word to the stand-in: "exit N" or "kill SIG"; it exits on it. */
  tell(line: string): void {
    if (this.told) return;
    this.told = true;
    if (!this.sock.destroyed) this.sock.write(`${line}\n`);
  }
  closeFds(): void {
    for (const fd of this.fds) {
      try {
        closeFd(fd);
      } catch {}
    }
    this.fds = [];
  }
}

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

function key(cid: string, execId: string): string {
  return `${cid}\0${execId}`;
}

/** Namespaces a pod container shares with its sandbox container when the engine names them by path. */
const POD_SHARED_NAMESPACES = new Set(["ipc", "uts", "pid"]);

/**
 * The guest's view of the spec's namespaces, as Kata's agent maps them. A path names a namespace of the
 * host kernel, which the guest cannot enter; what the engine meant by it is "the pod's":
 * - network by path: the pod's network, which is the VM's (the guest's root netns): no entry at all;
 * - ipc/uts/pid by path in a pod container: the sandbox container's, `/proc/<its guest pid>/ns/<type>`;
 * - every other path (and all of them in a container that is its own sandbox): a fresh namespace.
 * A namespace without a path stays a fresh one.
 */
export function guestNamespaces(namespaces: readonly Namespace[], sandboxGuestPid?: number): Namespace[] {
  const out: Namespace[] = [];
  for (const n of namespaces) {
    if (!n.path) out.push({ type: n.type });
    else if (n.type === "network") continue;
    else if (sandboxGuestPid && POD_SHARED_NAMESPACES.has(n.type))
      out.push({ type: n.type, path: `/proc/${sandboxGuestPid}/ns/${n.type}` });
    else out.push({ type: n.type });
  }
  return out;
}

/**
 * What a container spec becomes inside the guest, and which host paths must be shared for it.
 * `sandboxGuestPid`: the guest pid of the sandbox container's init, for a pod container.
 */
export function guestSpec(
  spec: Spec,
  containerId: string,
  sharedDir = GUEST_SHARED_DIR,
  sandboxGuestPid?: number,
): { spec: Spec; binds: { index: number; source: string; rel: string }[] } {
  const g = structuredClone(spec);
  g.root = {
    path: sharedDir === GUEST_SHARED_DIR ? guestRootfs(containerId) : `${sharedDir}/${containerId}/rootfs`,
    readonly: spec.root?.readonly,
  };
  // Hooks run on the host (the CLI runs them); host namespace paths mean nothing in the guest.
  delete g.hooks;
  if (g.linux?.namespaces) g.linux.namespaces = guestNamespaces(g.linux.namespaces, sandboxGuestPid);
  const binds: { index: number; source: string; rel: string }[] = [];
  g.mounts = (spec.mounts ?? []).map((m: Mount, index) => {
    const bind = m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
    // Device nodes and kernel filesystems are the guest's own; only host files and directories travel.
    if (!bind || !m.source || !isAbsolute(m.source) || /^\/(dev|proc|sys)(\/|$)/.test(m.source))
      return { ...m };
    const rel = `${containerId}/mounts/${index}`;
    binds.push({ index, source: m.source, rel });
    return { ...m, source: `${sharedDir}/${rel}` };
  });
  return { spec: g, binds };
}

export class Supervisor {
  readonly paths: SandboxPaths;
  private agent!: SandboxAgent;
  private vm?: VmHandle;
  private share: GuestShare = { dir: GUEST_SHARED_DIR, mount: SANDBOX_SHARE };
  private ownsAgent = true;
  private guest?: GuestDetails;
  private server?: Server;
  private containers = new Map<string, Container>();
  private unclaimed = new Map<string, Standin>();
  private standinWaiters = new Map<string, (s: Standin) => void>();
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
    writeFileSync(p.pidFile, `${process.pid} ${processStartTime(process.pid) ?? 0}\n`);
    const booted = await this.opts.boot(p);
    this.agent = booted.agent;
    this.vm = booted.vm;
    if (booted.share) this.share = booted.share;
    this.ownsAgent = booted.ownsAgent ?? true;
    this.writeInfo();
    this.guest = await this.agent.request("ping", {});
    const g = this.guest;
    this.log(
      `sandbox ${this.opts.sandboxId}: agent ready (guest ${g.kernelRelease}, up ${g.readyAt} s, code cache ${g.codeCache ?? "none"})`,
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
    writeFileSync(this.paths.info, `${JSON.stringify(info)}\n`);
  }

  private armIdle(): void {
    clearTimeout(this.idleTimer);
    if (this.containers.size > 0 || this.unclaimed.size > 0) return;
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
    const k = key(s.containerId, execId);
    this.log(`stand-in for ${s.containerId}/${execId || "init"} connected with ${fds.length} fds`);
    let buf = "";
    const onLines = (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        void this.onStandinLine(s, line);
      }
    };
    sock.setEncoding("utf8");
    sock.on("data", onLines);
    sock.on("close", () => this.onStandinGone(s));
    sock.resume();
    const waiter = this.standinWaiters.get(k);
    if (waiter) {
      this.standinWaiters.delete(k);
      waiter(s);
    } else {
      this.unclaimed.get(k)?.sock.destroy();
      this.unclaimed.set(k, s);
    }
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
    const k = key(s.containerId, s.execId);
    if (this.unclaimed.get(k) === s) {
      this.unclaimed.delete(k);
      s.closeFds();
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

  private claimStandin(cid: string, execId: string, timeoutMs: number): Promise<Standin> {
    const k = key(cid, execId);
    const ready = this.unclaimed.get(k);
    if (ready) {
      this.unclaimed.delete(k);
      return Promise.resolve(ready);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.standinWaiters.delete(k);
        reject(
          new Error(`the stand-in of ${cid}/${execId || "init"} did not connect within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.standinWaiters.set(k, (s) => {
        clearTimeout(timer);
        resolve(s);
      });
    });
  }

  private onControl(sock: Socket, initial: string): void {
    let buf = "";
    const onData = (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) void this.handle(sock, line);
      }
    };
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
      const result = await this.dispatch(req.op, req as never, (fn) => {
        after = fn;
      });
      if (!sock.destroyed) sock.write(`${JSON.stringify({ id: req.id, ok: true, result })}\n`);
    } catch (err) {
      const msg = ((err as Error).message ?? String(err)).split("\n")[0];
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

  private async dispatch(
    op: ControlOp,
    a: Record<string, never>,
    later: (fn: () => void) => void,
  ): Promise<unknown> {
    if (this.stopping && op !== "ping" && op !== "delete" && op !== "shutdown")
      throw new Error(`sandbox ${this.opts.sandboxId} is stopping`);
    switch (op) {
      case "ping":
        return {
          sandboxId: this.opts.sandboxId,
          pid: process.pid,
          vmPid: this.vm?.pid ?? 0,
          guest: this.guest,
          containers: [...this.containers.keys()],
        };
      case "createContainer":
        return this.createContainer(a.containerId, a.spec, a.rootfs, a.standinTimeoutMs);
      case "startContainer":
        this.container(a.containerId);
        await this.agent.request("startContainer", { containerId: a.containerId });
        return {};
      case "exec":
        return this.exec(a.containerId, a.execId, a.process, a.standinTimeoutMs);
      case "kill":
        this.container(a.containerId);
        await this.agent.request("signalProcess", {
          containerId: a.containerId,
          execId: a.execId ?? "",
          signal: a.signal,
          all: Boolean(a.all),
        });
        return {};
      case "wait": {
        const p = this.container(a.containerId).procs.get(a.execId ?? "");
        if (!p) throw new Error(`process ${a.execId || "init"} of ${a.containerId} not found`);
        return { exitStatus: await p.exited };
      }
      case "pause":
      case "resume":
        this.container(a.containerId);
        await this.agent.request(op === "pause" ? "pauseContainer" : "resumeContainer", {
          containerId: a.containerId,
        });
        return {};
      case "update":
        this.container(a.containerId);
        await this.agent.request("updateContainer", { containerId: a.containerId, resources: a.resources });
        return {};
      case "stats":
        this.container(a.containerId);
        return this.agent.request("statsContainer", { containerId: a.containerId });
      case "ps":
        this.container(a.containerId);
        return this.agent.request("listProcesses", { containerId: a.containerId, psArgs: a.psArgs });
      case "delete": {
        // The sandbox container goes last, as Kata's DeleteSandbox does: its members are stopped first
        // (their stand-ins die of SIGKILL, so engines see 137), then the VM.
        if (a.containerId === this.opts.sandboxId)
          for (const member of [...this.containers.keys()])
            if (member !== a.containerId) await this.deleteContainer(member);
        await this.deleteContainer(a.containerId);
        const empty = this.containers.size === 0;
        if (empty) later(() => void this.shutdown(0));
        return { sandboxEmpty: empty };
      }
      case "network":
        return guestNetworkOp(this.agent, a.action, a.routes);
      case "shutdown":
        later(() => void this.shutdown(0));
        return {};
      default:
        throw new Error(`control: unknown operation ${JSON.stringify(op)}`);
    }
  }

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
    try {
      standin = await this.claimStandin(cid, "", standinTimeoutMs);
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
      if (!this.shareMounted && this.share.mount) {
        await this.agent.request("addMount", this.share.mount);
        this.shareMounted = true;
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
      return started;
    } catch (err) {
      this.containers.delete(cid);
      stdio?.stdin?.destroy();
      stdio?.stdout?.destroy();
      stdio?.stderr?.destroy();
      // The CLI kills the stand-in when it sees this error (telling it here would race the answer);
      // until then it waits as unclaimed, so a delete or shutdown still ends it.
      if (standin) {
        standin.closeFds();
        this.unclaimed.set(key(cid, ""), standin);
      }
      try {
        unshare(this.paths.shared, cid);
      } catch {}
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
    const standin = await this.claimStandin(cid, execId, standinTimeoutMs);
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
      return started;
    } catch (err) {
      stdio.stdin?.destroy();
      stdio.stdout?.destroy();
      stdio.stderr?.destroy();
      standin.closeFds();
      this.unclaimed.set(key(cid, execId), standin);
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

  private async deleteContainer(cid: string): Promise<void> {
    const c = this.containers.get(cid);
    if (c && !this.vmDead) {
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
    for (const [k, s] of this.unclaimed) {
      if (s.containerId !== cid) continue;
      this.unclaimed.delete(k);
      s.closeFds();
      s.tell("kill 9");
    }
    this.containers.delete(cid);
    unshare(this.paths.shared, cid);
  }

  private onVmGone(why: string): void {
    if (this.stopping) return;
    this.vmDead = true;
    this.log(`sandbox ${this.opts.sandboxId}: ${why}: telling every stand-in`);
    // Waiters fail (the agent is gone) and tell their stand-ins; unclaimed ones are told here.
    for (const s of this.unclaimed.values()) s.tell("kill 9");
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
    for (const s of this.unclaimed.values()) {
      s.closeFds();
      s.tell("kill 9");
    }
    // With a VM of our own, QEMU is simply stopped: the guest holds nothing worth an orderly shutdown
    // (its root is read-only, the share is cache=none so container writes are on the host already),
    // and the agent's shutdown (cleanup, sync, power-off) made `delete` 0.1-0.5 s slower.
    try {
      if (!this.vmDead && this.agent && this.ownsAgent && !this.vm)
        await Promise.race([this.agent.request("shutdown", {}, 1000), sleep(1000)]);
    } catch {}
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
    // Let the last log line and the stand-ins' messages go out.
    setTimeout(() => process.exit(code), 50);
  }
}

/**
 * Removes what a sandbox left on the host: mounts under its directory, sockets, the short socket
 * directory. With `all` the sandbox directory goes too; otherwise the logs stay for whoever deletes it.
 */
export function cleanupSandboxDir(p: SandboxPaths, all: boolean): void {
  // Taps and tc qdiscs in the pod's netns (recorded in the sandbox dir; QEMU is gone by now).
  teardownSandboxNetwork(p.dir);
  unmountTree(p.dir);
  if (p.sockDir !== p.dir) rmSync(p.sockDir, { recursive: true, force: true });
  // Never recurse into a directory that still has a mount below it: that would delete a rootfs.
  if (mountsUnder(p.dir).length > 0) return;
  if (all) {
    rmSync(p.dir, { recursive: true, force: true });
    // <root>/sandboxes too once it is empty, so that a runtime root holds nothing after the last delete
    // (as runc's does); a concurrent create's recursive mkdir makes it again.
    try {
      rmdirSync(dirname(p.dir));
    } catch {}
    return;
  }
  rmSync(p.socket, { force: true });
  rmSync(p.shared, { recursive: true, force: true });
  if (existsSync(p.dir))
    for (const f of readdirSync(p.dir)) if (f.endsWith(".sock")) rmSync(join(p.dir, f), { force: true });
}
