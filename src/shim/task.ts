// containerd.task.v2.Task over the runtime library: one long-lived shim serves every container of a pod
// (or one container), and drives the sandbox in-process — no kata-ts CLI process runs per call.
// Each container's init and each exec is a Proc: its stdio (io.ts), its host pid (the stand-in's in VM
// mode, the workload's in host mode), its exit. Exits are published as /tasks/exit before Wait answers,
// as runc's shim does, so containerd sees the event first.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { KataError } from "../errors";
import type { LinuxResources, Process } from "../oci/spec";
import type { Started } from "../runtime/backend";
import {
  createContainer,
  deleteContainer,
  killContainer,
  type RuntimeContext,
  startContainer,
  startExec,
} from "../runtime/lifecycle";
import {
  containerOomKills,
  containerPids,
  containerStats,
  pauseContainer,
  resumeContainer,
  updateContainer,
} from "../runtime/operations";
import { containerStatus } from "../runtime/status";
import { StateStore } from "../runtime/store";
import {
  type AnyMessage,
  Code,
  type ProtoObject as Msg,
  packAny,
  TtrpcError as ShimError,
  timestamp,
  unpackAny,
} from "../ttrpc";
import { VERSION } from "../version";
import type { EventPublisher } from "./events";
import { ProcessIo, type StdioPaths } from "./io";
import { metricsOf } from "./metrics";

/** containerd's task status enum (api/types/task). */
export const Status = { UNKNOWN: 0, CREATED: 1, RUNNING: 2, STOPPED: 3, PAUSED: 4, PAUSING: 5 } as const;

interface Exit {
  status: number;
  at: Date;
}

interface Proc {
  containerId: string;
  /** "" for the container's init. */
  execId: string;
  paths: StdioPaths;
  pid: number;
  io?: ProcessIo;
  started?: Started;
  /** The exec's process, kept from Exec until Start. */
  spec?: Process;
  exit?: Exit;
  exited: Promise<Exit>;
  onExit: (e: Exit) => void;
}

interface Task {
  id: string;
  bundle: string;
  init: Proc;
  execs: Map<string, Proc>;
  /** CreateTaskRequest.rootfs was mounted by us at <bundle>/rootfs: unmounted on Delete. */
  rootfsMounted?: string;
  oomKills: number;
}

function newProc(containerId: string, execId: string, paths: StdioPaths): Proc {
  let onExit: (e: Exit) => void = () => {};
  const exited = new Promise<Exit>((r) => {
    onExit = r;
  });
  return { containerId, execId, paths, pid: 0, exited, onExit: (e) => onExit(e) };
}

const OOM_POLL_MS = 1000;

export class TaskService {
  private tasks = new Map<string, Task>();
  private oomTimer?: NodeJS.Timeout;

  constructor(
    private readonly ctx: RuntimeContext,
    private readonly events: EventPublisher,
    /** A private directory for console sockets. */
    private readonly runDir: string,
    /** Called once Shutdown says the shim may go. */
    private readonly onShutdown: () => void,
  ) {
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
  }

  /** The method table for the ttrpc server (containerd.task.v2.Task). */
  methods(): Record<string, (req: Msg) => Promise<Msg>> {
    return {
      State: (r) => this.state(r),
      Create: (r) => this.create(r),
      Start: (r) => this.start(r),
      Delete: (r) => this.delete(r),
      Pids: (r) => this.pids(r),
      Pause: (r) => this.pause(r, true),
      Resume: (r) => this.pause(r, false),
      Checkpoint: async () => {
        throw new ShimError(
          Code.UNIMPLEMENTED,
          "checkpoint is not supported by kata-ts: a container's memory lives in its VM",
        );
      },
      Kill: (r) => this.kill(r),
      Exec: (r) => this.exec(r),
      ResizePty: async (r) => {
        this.proc(r.id, r.exec_id).io?.resize(r.width, r.height);
        return {};
      },
      CloseIO: async (r) => {
        if (r.stdin) this.proc(r.id, r.exec_id).io?.closeStdin();
        return {};
      },
      Update: (r) => this.update(r),
      Wait: (r) => this.wait(r),
      Stats: (r) => this.stats(r),
      Connect: async (r) => ({
        shim_pid: process.pid,
        task_pid: this.tasks.get(r.id)?.init.pid ?? 0,
        version: `kata-ts ${VERSION.version}`,
      }),
      Shutdown: (r) => this.shutdown(r),
    };
  }

  private task(id: string): Task {
    const t = this.tasks.get(id);
    if (!t) throw new ShimError(Code.NOT_FOUND, `container ${id}: not found`);
    return t;
  }

  private proc(id: string, execId: string): Proc {
    const t = this.task(id);
    if (!execId) return t.init;
    const p = t.execs.get(execId);
    if (!p) throw new ShimError(Code.NOT_FOUND, `exec ${execId} of container ${id}: not found`);
    return p;
  }

  private async create(r: Msg): Promise<Msg> {
    const id: string = r.id;
    if (this.tasks.has(id)) throw new ShimError(Code.ALREADY_EXISTS, `container ${id}: already exists`);
    const paths: StdioPaths = {
      stdin: r.stdin,
      stdout: r.stdout,
      stderr: r.stderr,
      terminal: Boolean(r.terminal),
    };
    if (r.checkpoint) throw new ShimError(Code.UNIMPLEMENTED, "restoring from a checkpoint is not supported");
    this.adoptOptions(r.options);
    const task: Task = { id, bundle: r.bundle, init: newProc(id, "", paths), execs: new Map(), oomKills: 0 };
    const rootfs = join(r.bundle, "rootfs");
    let io: ProcessIo | undefined;
    try {
      if (r.rootfs?.length) {
        mountRootfs(r.rootfs, rootfs);
        task.rootfsMounted = rootfs;
      }
      io = await ProcessIo.open(paths, this.runDir, id);
      const { init } = await createContainer(
        this.ctx,
        { id, bundle: r.bundle, consoleSocket: io.consoleSocket, stdio: io.stdio },
        true,
      );
      io.closeChildSide();
      this.track(task.init, init, io);
    } catch (err) {
      io?.close();
      if (task.rootfsMounted) unmount(task.rootfsMounted);
      throw err;
    }
    this.tasks.set(id, task);
    await this.events.publish("/tasks/create", "containerd.events.TaskCreate", {
      container_id: id,
      bundle: r.bundle,
      rootfs: r.rootfs ?? [],
      io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: Boolean(r.terminal) },
      pid: task.init.pid,
    });
    this.watchOom();
    return { pid: task.init.pid };
  }

  /**
   * The CRI plugin passes a handler's `ConfigPath` as runtimeoptions.v1.Options. A shim serves one pod of
   * one handler, so the first path it is given is the configuration for every later call.
   */
  private adoptOptions(options: AnyMessage | undefined): void {
    if (!options?.type_url || this.ctx.configPath) return;
    if (!options.type_url.endsWith("runtimeoptions.v1.Options")) return;
    const o = unpackAny<{ config_path?: string }>(options);
    if (o.config_path) this.ctx.configPath = o.config_path;
  }

  /** Follows a started process to its exit: /tasks/exit goes out before any Wait answers. */
  private track(p: Proc, s: Started, io: ProcessIo): void {
    p.started = s;
    p.pid = s.pid;
    p.io = io;
    void s.exited.then(async (status) => {
      await io.drained();
      const exit = { status, at: new Date() };
      p.exit = exit;
      await this.events.publish("/tasks/exit", "containerd.events.TaskExit", {
        container_id: p.containerId,
        id: p.execId || p.containerId,
        pid: p.pid,
        exit_status: status,
        exited_at: timestamp(exit.at),
      });
      p.onExit(exit);
    });
  }

  private async start(r: Msg): Promise<Msg> {
    const t = this.task(r.id);
    if (!r.exec_id) {
      await startContainer(this.ctx, t.id);
      await this.events.publish("/tasks/start", "containerd.events.TaskStart", {
        container_id: t.id,
        pid: t.init.pid,
      });
      return { pid: t.init.pid };
    }
    const p = this.proc(r.id, r.exec_id);
    if (p.started) throw new ShimError(Code.FAILED_PRECONDITION, `exec ${r.exec_id} was already started`);
    const io = await ProcessIo.open(p.paths, this.runDir, `${t.id}-${r.exec_id}`);
    try {
      const s = await startExec(this.ctx, {
        id: t.id,
        process: { ...(p.spec as Process), terminal: p.paths.terminal },
        consoleSocket: io.consoleSocket,
        stdio: io.stdio,
      });
      io.closeChildSide();
      this.track(p, s, io);
    } catch (err) {
      io.close();
      throw err;
    }
    await this.events.publish("/tasks/exec-started", "containerd.events.TaskExecStarted", {
      container_id: t.id,
      exec_id: r.exec_id,
      pid: p.pid,
    });
    return { pid: p.pid };
  }

  private async exec(r: Msg): Promise<Msg> {
    const t = this.task(r.id);
    if (t.execs.has(r.exec_id)) throw new ShimError(Code.ALREADY_EXISTS, `exec ${r.exec_id}: already exists`);
    const spec = unpackAny<Process>(r.spec as AnyMessage);
    const p = newProc(t.id, r.exec_id, {
      stdin: r.stdin,
      stdout: r.stdout,
      stderr: r.stderr,
      terminal: Boolean(r.terminal),
    });
    p.spec = spec;
    t.execs.set(r.exec_id, p);
    await this.events.publish("/tasks/exec-added", "containerd.events.TaskExecAdded", {
      container_id: t.id,
      exec_id: r.exec_id,
    });
    return {};
  }

  private status(p: Proc): number {
    if (p.exit) return Status.STOPPED;
    if (p.execId) return p.started ? Status.RUNNING : Status.CREATED;
    const store = new StateStore(this.ctx.root);
    try {
      const s = containerStatus(store, store.read(p.containerId));
      return (
        { creating: Status.CREATED, created: Status.CREATED, running: Status.RUNNING, paused: Status.PAUSED }[
          s as "created"
        ] ?? Status.STOPPED
      );
    } catch {
      return Status.UNKNOWN;
    }
  }

  private async state(r: Msg): Promise<Msg> {
    const t = this.task(r.id);
    const p = this.proc(r.id, r.exec_id);
    return {
      id: p.execId || t.id,
      bundle: t.bundle,
      pid: p.pid,
      status: this.status(p),
      stdin: p.paths.stdin ?? "",
      stdout: p.paths.stdout ?? "",
      stderr: p.paths.stderr ?? "",
      terminal: p.paths.terminal,
      exit_status: p.exit?.status ?? 0,
      exited_at: p.exit ? timestamp(p.exit.at) : undefined,
      exec_id: p.execId,
    };
  }

  private async kill(r: Msg): Promise<Msg> {
    const p = this.proc(r.id, r.exec_id);
    if (p.exit && !r.all) throw new ShimError(Code.NOT_FOUND, "process already finished");
    if (!p.execId) {
      // containerd's Delete(WithProcessKill) kills with `all` after the exit, and accepts only NOT_FOUND
      // for a process that has gone (as runc's shim answers): the CRI retries anything else forever.
      await killContainer(this.ctx, r.id, String(r.signal), Boolean(r.all)).catch((err: Error) => {
        if (p.exit || /not running|stopped/.test(err.message))
          throw new ShimError(Code.NOT_FOUND, "process already finished");
        throw err;
      });
    } else if (p.started) {
      try {
        process.kill(p.started.signalPid, r.signal);
      } catch {
        throw new ShimError(Code.NOT_FOUND, "process already finished");
      }
    } else throw new ShimError(Code.FAILED_PRECONDITION, `exec ${r.exec_id} is not started`);
    return {};
  }

  private async wait(r: Msg): Promise<Msg> {
    const e = await this.proc(r.id, r.exec_id).exited;
    return { exit_status: e.status, exited_at: timestamp(e.at) };
  }

  private async delete(r: Msg): Promise<Msg> {
    const t = this.task(r.id);
    const p = this.proc(r.id, r.exec_id);
    if (p.execId) {
      if (p.started && !p.exit)
        throw new ShimError(Code.FAILED_PRECONDITION, `exec ${p.execId} is still running`);
      t.execs.delete(p.execId);
      p.io?.close();
      return { pid: p.pid, exit_status: p.exit?.status ?? 0, exited_at: timestamp(p.exit?.at ?? new Date()) };
    }
    if (this.status(p) === Status.RUNNING || this.status(p) === Status.PAUSED)
      throw new ShimError(Code.FAILED_PRECONDITION, `container ${t.id} is still running: kill it first`);
    await deleteContainer(this.ctx, t.id, true);
    // A container deleted before it ran has no exit of its own: deleting it is its end.
    if (!p.exit) {
      const exit = { status: 137, at: new Date() };
      p.exit = exit;
      p.onExit(exit);
    }
    p.io?.close();
    for (const e of t.execs.values()) e.io?.close();
    if (t.rootfsMounted) unmount(t.rootfsMounted);
    this.tasks.delete(t.id);
    const exit = p.exit;
    await this.events.publish("/tasks/delete", "containerd.events.TaskDelete", {
      container_id: t.id,
      pid: p.pid,
      exit_status: exit.status,
      exited_at: timestamp(exit.at),
      id: t.id,
    });
    return { pid: p.pid, exit_status: exit.status, exited_at: timestamp(exit.at) };
  }

  private async pids(r: Msg): Promise<Msg> {
    this.task(r.id);
    return { processes: containerPids(this.ctx, r.id).map((pid) => ({ pid })) };
  }

  private async pause(r: Msg, pause: boolean): Promise<Msg> {
    this.task(r.id);
    await (pause ? pauseContainer : resumeContainer)(this.ctx, r.id);
    const [topic, type] = pause
      ? ["/tasks/paused", "containerd.events.TaskPaused"]
      : ["/tasks/resumed", "containerd.events.TaskResumed"];
    await this.events.publish(topic, type, { container_id: r.id });
    return {};
  }

  private async update(r: Msg): Promise<Msg> {
    this.task(r.id);
    const resources = r.resources?.type_url ? unpackAny<LinuxResources>(r.resources) : undefined;
    if (resources) await updateContainer(this.ctx, r.id, resources);
    return {};
  }

  private async stats(r: Msg): Promise<Msg> {
    this.task(r.id);
    return {
      stats: packAny("io.containerd.cgroups.v1.Metrics", metricsOf(await containerStats(this.ctx, r.id))),
    };
  }

  private async shutdown(r: Msg): Promise<Msg> {
    if (this.tasks.size > 0 && !r.now) return {};
    if (this.oomTimer) clearInterval(this.oomTimer);
    for (const t of this.tasks.values()) await deleteContainer(this.ctx, t.id, true).catch(() => {});
    rmSync(this.runDir, { recursive: true, force: true });
    // After the answer has gone out.
    setImmediate(this.onShutdown);
    return {};
  }

  /** The guest's (or the cgroup's) OOM kills, turned into /tasks/oom events. */
  private watchOom(): void {
    if (this.oomTimer) return;
    this.oomTimer = setInterval(async () => {
      for (const t of this.tasks.values()) {
        if (t.init.exit || !t.init.started) continue;
        let n: number | undefined;
        try {
          n = await containerOomKills(this.ctx, t.id);
        } catch {
          continue;
        }
        if (n !== undefined && n > t.oomKills) {
          t.oomKills = n;
          void this.events.publish("/tasks/oom", "containerd.events.TaskOOM", { container_id: t.id });
        }
      }
    }, OOM_POLL_MS);
    this.oomTimer.unref();
  }
}

/** CreateTaskRequest.rootfs: the snapshot's mounts, mounted where the bundle's root.path points. */
function mountRootfs(mounts: Msg[], target: string): void {
  mkdirSync(target, { recursive: true });
  for (const m of mounts) {
    const opts = (m.options ?? []).join(",");
    try {
      execFileSync("mount", ["-t", m.type, ...(opts ? ["-o", opts] : []), m.source, target], {
        stdio: ["ignore", "ignore", "pipe"],
      });
    } catch (err) {
      const e = err as { stderr?: Buffer };
      throw new KataError(
        `rootfs mount (${m.type} ${m.source}): ${e.stderr?.toString().trim() || String(err)}`,
      );
    }
  }
}

export function unmount(target: string): void {
  try {
    execFileSync("umount", [target], { stdio: "ignore" });
  } catch {
    // not mounted (any more)
  }
}
