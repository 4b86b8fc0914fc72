// Container management inside the guest: the same engine the host runs with hypervisor = "none" (plan
// builders, helper handshake, cgroups), driven from requests instead of a bundle on disk. The agent
// holds every process's stdio (real pipes it relays to channel streams, see stdio.ts) and keeps the helper in "wait" mode as
// each process's parent, so an exit arrives as the helper's own 'exit' event with the workload's code.

import { execFile } from "node:child_process";
import { mkdirSync, readlinkSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { promisify } from "node:util";
import type {
  ContainerRef,
  CreateContainerRequest,
  ExecProcessRequest,
  GuestMount,
  ListProcessesRequest,
  ListProcessesResponse,
  ProcessRef,
  ProcessStarted,
  ResizeRequest,
  SignalProcessRequest,
  SpareState,
  StatsContainerResponse,
  StdioStreams,
  UpdateContainerRequest,
} from "../agent/api";
import type { AgentStream } from "../agent/channel";
import { AgentError, Code } from "../agent/wire";
import { type CgroupManager, cgroupManagerFor, runcStatsData, stringifyExact } from "../engine/cgroups";
import {
  createInit,
  EXEC_FIFO,
  InitStopped,
  InitTimeout,
  releaseInit,
  setOomScoreAdj,
} from "../engine/container";
import { capLastCap, containerPasswd } from "../engine/host";
import {
  type Launched,
  type LaunchOptions,
  launch,
  namespacesToJoin,
  type SpareHelper,
  spareAlive,
  spawnSpareHelper,
} from "../engine/launcher";
import { MS, parseMountOptions } from "../engine/mountopts";
import { checkNamespacePaths } from "../engine/nsjoin";
import { buildExecPlan } from "../engine/plan";
import { firstLine } from "../errors";
import { laps } from "../log/laps";
import { validateContainerId } from "../oci/id";
import type { Spec } from "../oci/spec";
import { mount, mountFlagsOf, unmountOrDetach } from "../sys/native";
import { openPipes, openTerminal, type TerminalIo } from "./stdio";

const run = promisify(execFile);

export const DEFAULT_STATE_ROOT = "/run/kata-ts-agent";
/** After a process exits, how long waitProcess waits for its output to drain (a daemon may hold it). */
const OUTPUT_GRACE_MS = 2000;

interface ProcessIoState {
  /** The pipe to the process's stdin (closeStdin ends it); none with a terminal. */
  stdin?: Writable;
  /** Resolves when every output pipe ended (or the grace time after exit passed). */
  outputDone: Promise<void>;
  /** With a terminal: sets the pty's size. */
  resize?: (rows: number, cols: number) => void;
}

interface GuestProcess extends ProcessIoState {
  execId: string;
  pid: number;
  launched: Launched;
  exitStatus?: number;
}

interface GuestContainer {
  id: string;
  spec: Spec;
  dir: string;
  cgroup: CgroupManager;
  init: GuestProcess;
  execs: Map<string, GuestProcess>;
  /** Targets this container mounted, in mount order. */
  mounts: string[];
  started: boolean;
}

export interface ManagerOptions {
  stateRoot?: string;
  log?: (msg: string) => void;
  /** Keep one container helper started ahead of need (the agent does; see `refillSpare`). */
  spareHelper?: boolean;
}

/** How long the guest stays without a launch before the next spare helper is started. */
const SPARE_REFILL_MS = 1000;

function notFound(id: string): AgentError {
  return new AgentError(Code.notFound, `container ${id} not found`);
}

/**
 * Mounts one GuestMount (creating the target); returns the target to unmount later. With mount(2) from
 * the addon: a `mount` spawned from node costs ~0.1-0.25 s under TCG, and the share's mount is on the
 * critical path of every cold boot and template clone.
 */
export async function mountGuest(m: GuestMount): Promise<string> {
  mkdirSync(m.target, { recursive: true });
  const bind = m.fstype === "bind";
  // The options are the host's (the 9p share's transport, version, msize and cache: guestShareMount).
  const o = parseMountOptions(bind ? ["bind", ...m.options] : m.options);
  let mounted = false;
  try {
    mount(m.source, m.target, bind ? "" : m.fstype, o.flags, bind ? "" : o.data);
    mounted = true;
    // A bind mount takes its flags (ro, nosuid, ...) only from a remount, as mount(8) does it. The
    // remount sets the per-mount flags whole, so the source's own (a nodev, noexec mount under it)
    // are carried over rather than cleared, as runc does.
    const perMount = o.flags & ~(MS.BIND | MS.REC);
    if (bind && perMount)
      mount("", m.target, "", MS.REMOUNT | MS.BIND | perMount | mountFlagsOf(m.target), "");
    if (o.propagation) mount("", m.target, "", o.propagation, "");
  } catch (err) {
    if (mounted) unmountOrDetach(m.target);
    throw new AgentError(
      Code.internal,
      `mount ${m.source} on ${m.target} (${m.fstype}): ${firstLine((err as Error).message)}`,
    );
  }
  return m.target;
}

export async function unmount(target: string): Promise<void> {
  unmountOrDetach(target);
}

export class ContainerManager {
  readonly stateRoot: string;
  private containers = new Map<string, GuestContainer>();
  private sandboxMounts: string[] = [];
  private log: (msg: string) => void;
  private spareWanted: boolean;
  private spare?: SpareHelper;
  private refillTimer?: NodeJS.Timeout;
  private cloneAdopted = false;

  constructor(opts: ManagerOptions = {}) {
    this.stateRoot = opts.stateRoot ?? DEFAULT_STATE_ROOT;
    this.log = opts.log ?? (() => {});
    this.spareWanted = opts.spareHelper ?? false;
  }

  /**
   * Starts the spare helper if there is none: the next create or exec takes it instead of spawning
   * (under TCG a helper's spawn and re-exec is ~0.1 s). Called when the agent is ready, and a while
   * after each launch (`refillLater`).
   */
  refillSpare(): void {
    clearTimeout(this.refillTimer);
    if (!this.spareWanted || (this.spare && spareAlive(this.spare))) return;
    try {
      this.spare = spawnSpareHelper();
    } catch (err) {
      this.spare = undefined;
      this.log(`spare helper: ${(err as Error).message}`);
    }
  }

  /**
   * At each adoptClone. The first follows the restore: the spare the template was saved with executes
   * itself again before its first plan, so no process image from the template's time (its address
   * layout, its stack canary) is a clone's container's parent. Cheaper than a new spare: one exec of
   * the static helper, no fork of node. A later one (a cache slot adopts again for its sandbox) keeps
   * the spare started since.
   */
  adoptedClone(): void {
    if (!this.cloneAdopted && this.spare) this.spare.stale = true;
    this.cloneAdopted = true;
  }

  /**
   * After a launch the spare is started only once the guest has been quiet for a while: started at
   * once it ran beside the container's `start` on the same vCPU and slowed it by what it saved
   * (docs/guest.md). A launch meanwhile spawns its own helper and puts the refill off again.
   */
  private refillLater(): void {
    clearTimeout(this.refillTimer);
    this.refillTimer = setTimeout(() => this.refillSpare(), SPARE_REFILL_MS).unref();
  }

  /** Starts the spare now if there is none; where it is. */
  spareNow(): SpareState {
    this.refillSpare();
    if (!this.spareWanted) return "off";
    const pid = this.spare && spareAlive(this.spare) ? this.spare.helper.pid : undefined;
    try {
      // it waits once it runs from its sealed copy (its re-exec is the whole of its start)
      return pid && readlinkSync(`/proc/${pid}/exe`).startsWith("/memfd:") ? "waiting" : "starting";
    } catch {
      return "starting";
    }
  }

  /** No spare any more, and none later (the agent's shutdown). */
  private stopSpares(): void {
    this.spareWanted = false;
    clearTimeout(this.refillTimer);
    this.spare?.helper.kill("SIGKILL");
    this.spare = undefined;
  }

  /** launch() with the spare, if there is one; the next spare once the guest is quiet again. */
  private async launchHelper(o: LaunchOptions): Promise<Launched> {
    const spare = this.spare;
    this.spare = undefined;
    try {
      return await launch({ ...o, spare });
    } finally {
      this.refillLater();
    }
  }

  private get(id: string): GuestContainer {
    const c = this.containers.get(id);
    if (!c) throw notFound(id);
    return c;
  }

  private proc(ref: ProcessRef): GuestProcess {
    const c = this.get(ref.containerId);
    if (ref.execId === "") return c.init;
    const p = c.execs.get(ref.execId);
    if (!p) throw new AgentError(Code.notFound, `process ${ref.execId} not found in container ${c.id}`);
    return p;
  }

  async addMount(m: GuestMount): Promise<void> {
    this.sandboxMounts.push(await mountGuest(m));
  }

  /** Wires a process's pipes to the channel streams named in `stdio`. */
  private bindStdio(
    stdio: StdioStreams,
    pipes: { stdin: Writable | null; stdout: Readable | null; stderr: Readable | null },
    stream: (id: number) => AgentStream,
    exited: Promise<number>,
    terminal: boolean,
  ): ProcessIoState {
    if (stdio.stdin && pipes.stdin) {
      const s = stream(stdio.stdin);
      // A pty has no half-close: the end of the host's stdin must not end the relay (the output too).
      s.pipe(pipes.stdin, { end: !terminal });
      pipes.stdin.on("error", () => {}); // EPIPE after the workload exited
    }
    // stdout and stderr may share one stream: end it only when both sources ended.
    const outs = new Map<number, Readable[]>();
    if (stdio.stdout && pipes.stdout) outs.set(stdio.stdout, [pipes.stdout]);
    if (stdio.stderr && pipes.stderr)
      outs.set(stdio.stderr, [...(outs.get(stdio.stderr) ?? []), pipes.stderr]);
    const ends: Promise<void>[] = [];
    for (const [id, srcs] of outs) {
      const s = stream(id);
      let open = srcs.length;
      for (const src of srcs) {
        src.pipe(s, { end: false });
        ends.push(
          new Promise<void>((resolve) =>
            src.once("close", () => {
              if (--open === 0) s.end();
              resolve();
            }),
          ),
        );
      }
    }
    const outputDone = Promise.all(ends).then(() => {});
    const grace = exited.then(() => new Promise<void>((r) => setTimeout(r, OUTPUT_GRACE_MS).unref()));
    return {
      stdin: terminal ? undefined : (pipes.stdin ?? undefined),
      outputDone: Promise.race([outputDone, grace]),
    };
  }

  /**
   * Starts a process (the helper in wait mode) with its stdio relayed to the streams in `stdio`: pipes,
   * or with `terminal` the pty the container made (plan option consoleFd).
   */
  private async launchProcess(
    stdio: StdioStreams,
    terminal: boolean,
    stream: (id: number) => AgentStream,
    o: Pick<LaunchOptions, "phase1" | "expectReady" | "onPid">,
  ): Promise<{ launched: Launched; io: ProcessIoState }> {
    if (terminal) {
      const term = openTerminal();
      let launched: Launched;
      let tty: ReturnType<TerminalIo["attach"]>;
      try {
        // the helper's own 0-2 are /dev/null: the container replaces them with the pty slave
        launched = await this.launchHelper({
          ...o,
          wait: true,
          stdio: ["ignore", "ignore", "ignore"],
          consoleFd: term.consoleFd,
        });
      } catch (err) {
        term.close();
        throw err;
      }
      try {
        tty = term.attach();
      } catch (err) {
        try {
          process.kill(launched.pid, "SIGKILL");
        } catch {
          // the process is gone already
        }
        await launched.exited;
        throw err;
      }
      if (stdio.stderr) stream(stdio.stderr).end(); // a pty has one output: everything goes to stdout
      const io = this.bindStdio(
        { ...stdio, stderr: 0 },
        { stdin: tty.stdin, stdout: tty.stdout, stderr: null },
        stream,
        launched.exited,
        true,
      );
      return { launched, io: { ...io, resize: tty.resize } };
    }
    const pipes = openPipes(stdio);
    let launched: Launched;
    try {
      launched = await this.launchHelper({ ...o, wait: true, stdio: pipes.targets });
    } catch (err) {
      pipes.destroy();
      throw err;
    } finally {
      pipes.closeChildEnds();
    }
    return { launched, io: this.bindStdio(stdio, pipes, stream, launched.exited, false) };
  }

  async createContainer(
    req: CreateContainerRequest,
    stream: (id: number) => AgentStream,
  ): Promise<ProcessStarted> {
    const id = req.containerId;
    try {
      validateContainerId(id);
    } catch (err) {
      throw new AgentError(Code.invalidArgument, (err as Error).message);
    }
    if (this.containers.has(id)) throw new AgentError(Code.alreadyExists, `container ${id} already exists`);
    const terminal = req.stdio.terminal || Boolean(req.spec.process?.terminal);
    const spec: Spec = req.spec.process
      ? { ...req.spec, process: { ...req.spec.process, terminal } }
      : req.spec;
    const rootfs = spec.root?.path;
    if (!rootfs?.startsWith("/"))
      throw new AgentError(Code.invalidArgument, "spec.root.path must be an absolute guest path");
    // The same check as on the host, before anything is made here (the paths are the guest's).
    try {
      checkNamespacePaths(spec);
    } catch (err) {
      throw new AgentError(Code.invalidArgument, (err as Error).message);
    }
    const took = laps();
    const dir = join(this.stateRoot, id);
    mkdirSync(dir, { recursive: true, mode: 0o711 });
    const mounts: string[] = [];
    let cgroup: CgroupManager | undefined;
    let launched: Launched | undefined;
    try {
      for (const m of req.mounts) mounts.push(await mountGuest(m));
      try {
        if (!statSync(rootfs).isDirectory()) throw new Error();
      } catch {
        throw new AgentError(Code.invalidArgument, `rootfs ${rootfs} does not exist or is not a directory`);
      }
      writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
      took.lap("mounts");
      cgroup = cgroupManagerFor({
        id,
        cgroupsPath: spec.linux?.cgroupsPath,
        resources: spec.linux?.resources,
        warn: this.log,
      });
      let io: ProcessIoState | undefined;
      launched = await createInit({
        id,
        spec,
        bundle: dir,
        rootfs,
        stateDir: dir,
        cgroup,
        wait: true,
        consoleFd: terminal,
        launch: async (o) => {
          took.lap("cgroup and plan");
          const onPid = o.onPid;
          const started = await this.launchProcess(req.stdio, terminal, stream, {
            ...o,
            onPid: async (pid) => {
              took.lap("helper to init's pid");
              const phase2 = await onPid(pid);
              took.lap("maps, cgroup join, limits");
              return phase2;
            },
          });
          took.lap("init ready");
          io = started.io;
          return started.launched;
        },
      });
      const l = launched;
      const init: GuestProcess = { execId: "", pid: l.pid, launched: l, ...io! };
      l.exited.then((code) => {
        init.exitStatus = code;
        this.log(`container ${id}: init ${l.pid} exited with status ${code}`);
      });
      this.containers.set(id, { id, spec, dir, cgroup, init, execs: new Map(), mounts, started: false });
      took.lap("relays");
      this.log(`container ${id}: created (${took})`);
      return { guestPid: l.pid };
    } catch (err) {
      if (launched) {
        try {
          process.kill(launched.pid, "SIGKILL");
        } catch {
          // the init is gone already
        }
        await launched.exited;
      }
      try {
        cgroup?.destroy();
      } catch {
        // never created, or already removed
      }
      for (const t of [...mounts].reverse()) await unmount(t);
      rmSync(dir, { recursive: true, force: true });
      throw err instanceof AgentError ? err : new AgentError(Code.internal, (err as Error).message);
    }
  }

  async startContainer(ref: ContainerRef): Promise<void> {
    const c = this.get(ref.containerId);
    if (c.started) throw new AgentError(Code.failedPrecondition, `container ${c.id} is already started`);
    if (c.init.exitStatus !== undefined)
      throw new AgentError(Code.failedPrecondition, "cannot start a container that has stopped");
    try {
      await releaseInit(c.dir, () => c.init.exitStatus === undefined);
    } catch (err) {
      if (err instanceof InitStopped) throw new AgentError(Code.failedPrecondition, err.message);
      if (err instanceof InitTimeout) throw new AgentError(Code.deadlineExceeded, err.message);
      throw err;
    }
    c.started = true;
    try {
      unlinkSync(join(c.dir, EXEC_FIFO));
    } catch {
      // the init removed it already
    }
  }

  async execProcess(req: ExecProcessRequest, stream: (id: number) => AgentStream): Promise<ProcessStarted> {
    const c = this.get(req.containerId);
    if (!req.execId) throw new AgentError(Code.invalidArgument, "execId must not be empty");
    if (c.execs.has(req.execId))
      throw new AgentError(Code.alreadyExists, `process ${req.execId} already exists in container ${c.id}`);
    if (c.init.exitStatus !== undefined)
      throw new AgentError(Code.failedPrecondition, "cannot exec in a stopped container");
    const took = laps();
    const terminal = req.stdio.terminal || Boolean(req.process.terminal);
    const plan = buildExecPlan({
      process: { ...req.process, terminal },
      consoleFd: terminal,
      joins: namespacesToJoin(c.init.pid),
      seccomp: c.spec.linux?.seccomp,
      detach: false,
      capLastCap: capLastCap(),
      passwd: containerPasswd(c.spec.root?.path ?? "/"),
    });
    took.lap("plan");
    let started: { launched: Launched; io: ProcessIoState };
    try {
      started = await this.launchProcess(req.stdio, terminal, stream, {
        phase1: plan.phase1,
        expectReady: false,
        onPid: (pid) => {
          took.lap("helper to the process's pid");
          setOomScoreAdj(pid, req.process.oomScoreAdj);
          c.cgroup.apply(pid);
          took.lap("cgroup join");
          return plan.phase2(pid);
        },
      });
    } catch (err) {
      throw new AgentError(Code.internal, (err as Error).message);
    }
    const l = started.launched;
    const p: GuestProcess = { execId: req.execId, pid: l.pid, launched: l, ...started.io };
    l.exited.then((code) => {
      p.exitStatus = code;
    });
    c.execs.set(req.execId, p);
    took.lap("exec'd");
    this.log(`container ${c.id}: process ${req.execId} started (${took})`);
    return { guestPid: l.pid };
  }

  async signalProcess(req: SignalProcessRequest): Promise<void> {
    const c = this.get(req.containerId);
    if (req.all) {
      for (const pid of c.cgroup.pids())
        try {
          process.kill(pid, req.signal);
        } catch {
          // exited meanwhile: one fewer to signal
        }
      if (req.signal === 9 && c.cgroup.frozen()) c.cgroup.thaw();
      return;
    }
    const p = this.proc(req);
    if (p.exitStatus !== undefined) throw new AgentError(Code.notFound, "process already exited");
    try {
      process.kill(p.pid, req.signal);
    } catch (err) {
      throw new AgentError(Code.internal, `kill ${p.pid}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  }

  async waitProcess(ref: ProcessRef): Promise<{ exitStatus: number }> {
    const p = this.proc(ref);
    const exitStatus = await p.launched.exited;
    await p.outputDone;
    return { exitStatus };
  }

  async resizeTerminal(req: ResizeRequest): Promise<void> {
    const p = this.proc(req);
    if (!p.resize) throw new AgentError(Code.failedPrecondition, "the process has no terminal");
    p.resize(req.rows, req.cols);
  }

  async closeStdin(ref: ProcessRef): Promise<void> {
    this.proc(ref).stdin?.end();
  }

  async pause(ref: ContainerRef): Promise<void> {
    this.get(ref.containerId).cgroup.freeze();
  }

  async resume(ref: ContainerRef): Promise<void> {
    this.get(ref.containerId).cgroup.thaw();
  }

  async update(req: UpdateContainerRequest): Promise<void> {
    this.get(req.containerId).cgroup.update(req.resources);
  }

  async stats(ref: ContainerRef): Promise<StatsContainerResponse> {
    const cg = this.get(ref.containerId).cgroup;
    // stringifyExact keeps u64 values that are BigInts; JSON numbers beyond 2^53 lose precision here.
    return { data: JSON.parse(stringifyExact(runcStatsData(cg.stats()))), oomKills: cg.oomKills() };
  }

  async listProcesses(req: ListProcessesRequest): Promise<ListProcessesResponse> {
    const pids = this.get(req.containerId).cgroup.pids();
    if (!req.psArgs) return { pids };
    // The guest's own ps (busybox): its pids are the guest's, as `pids` are.
    try {
      const { stdout } = await run("ps", req.psArgs.length ? req.psArgs : ["-ef"]);
      return { pids, table: stdout };
    } catch (err) {
      const msg = firstLine((err as { stderr?: string }).stderr ?? (err as Error).message);
      throw new AgentError(Code.internal, `ps ${req.psArgs.join(" ")}: ${msg}`);
    }
  }

  /** Kills what is left (SIGKILL everything in the cgroup), waits for the helpers, removes it all. */
  async removeContainer(ref: ContainerRef): Promise<void> {
    const c = this.get(ref.containerId);
    const procs = [c.init, ...c.execs.values()];
    for (let round = 0; round < 5; round++) {
      const pids = new Set([
        ...c.cgroup.pids(),
        ...procs.filter((p) => p.exitStatus === undefined).map((p) => p.pid),
      ]);
      if (pids.size === 0) break;
      if (round === 0 && c.cgroup.frozen()) c.cgroup.thaw();
      for (const pid of pids)
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // exited meanwhile: one fewer to kill
        }
      await new Promise((r) => setTimeout(r, 10 * (round + 1)));
    }
    await Promise.race([
      Promise.all(procs.map((p) => p.launched.exited)),
      new Promise((r) => setTimeout(r, 5000).unref()),
    ]);
    for (const p of procs) p.stdin?.destroy();
    try {
      c.cgroup.destroy();
    } catch (err) {
      this.log(`remove cgroups of ${c.id}: ${(err as Error).message}`);
    }
    for (const t of [...c.mounts].reverse()) await unmount(t);
    rmSync(c.dir, { recursive: true, force: true });
    this.containers.delete(c.id);
  }

  /** Everything, for shutdown. */
  async removeAll(): Promise<void> {
    this.stopSpares();
    for (const id of [...this.containers.keys()])
      await this.removeContainer({ containerId: id }).catch(() => {});
    for (const t of this.sandboxMounts.reverse()) await unmount(t);
    this.sandboxMounts = [];
  }

  get size(): number {
    return this.containers.size;
  }
}
