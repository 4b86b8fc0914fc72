// The one seam between the verbs and where a container runs. lifecycle.ts and operations.ts write every
// verb once (locks, state transitions, hooks, pid files, waiting) and ask a Backend for the part that
// differs: the host engine (host.ts, hypervisor = "none", as runc) or a VM sandbox (vm.ts). The backend
// is picked once per call: from the configuration for a new container, from its record afterwards.
import type { CgroupStats } from "../engine/cgroups";
import type { LinuxResources } from "../oci/spec";
import type { AttachedConsole } from "./console";
import type { CreateOptions, ExecOptions, RuntimeContext } from "./options";
import type { ContainerStatus } from "./status";
import type { ContainerRecord, HypervisorKind, StateStore } from "./store";

/** A process of the container this CLI call started and may wait for (the init, or an exec). */
export interface Started {
  /** The host pid engines get (--pid-file): the init, the exec'd process, or its stand-in. */
  pid: number;
  /** The process our signals are relayed to while we wait (the helper or the stand-in). */
  signalPid: number;
  /** Resolves with the workload's exit code (128+signal when killed). */
  exited: Promise<number>;
  /** Keeps this process alive until it exits (run in the foreground). */
  hold(): void;
  /** Lets this process exit without it (detached exec). */
  release(): void;
  /** A foreground process on a pty this CLI holds (VM mode, no --console-socket): the caller's terminal. */
  console?: AttachedConsole;
  /** What --debug lines name the process by (pid; exec id and stand-in in VM mode). */
  fields: Record<string, string | number>;
}

/** The create-time host hooks of the kinds given (default both, runc's order), with `pid` in their state. */
export type CreateHooks = (pid?: number, kinds?: readonly CreateHookKind[]) => Promise<void>;
export type CreateHookKind = "prestart" | "createRuntime";

/** One create in progress: made in the container's lock, unwound if anything after it fails. */
export interface Creation {
  /**
   * Makes the container up to its init waiting for `start`; sets record.pid and record.engine and runs
   * `createHooks` (prestart, createRuntime), each kind once, in that order: the host backend once the
   * init's pid is known, the VM backend a sandbox's prestart hooks before its VM (docs/sandbox.md).
   * `foreground`: `run` without --detach (this CLI waits for the init and may hold its terminal).
   */
  make(store: StateStore, foreground: boolean, createHooks: CreateHooks): Promise<Started>;
  /** Undoes whatever make() did (the state directory is the caller's). */
  unwind(): Promise<void>;
}

export interface Backend {
  readonly kind: HypervisorKind;
  /** Checks and set-up that must fail before anything is made (the record is not stored yet). */
  prepare(ctx: RuntimeContext, record: ContainerRecord, o: CreateOptions): Creation;
  /** start: lets the init exec the workload. */
  start(ctx: RuntimeContext, store: StateStore, record: ContainerRecord): Promise<void>;
  /** kill: one signal to the init, or with `all` to every process of the container. */
  kill(
    ctx: RuntimeContext,
    record: ContainerRecord,
    sig: number,
    all: boolean,
    status: ContainerStatus,
  ): Promise<void>;
  /** delete: kills what is left and removes what the container holds outside its state directory. */
  destroy(ctx: RuntimeContext, record: ContainerRecord): Promise<void>;
  /** exec: a new process in the running container. */
  exec(ctx: RuntimeContext, record: ContainerRecord, o: ExecOptions): Promise<Started>;
  /** Host pids engines take for the container's processes (`ps --format json`). */
  pids(ctx: RuntimeContext, record: ContainerRecord): number[];
  /** The `ps` table of the container's processes. */
  psTable(ctx: RuntimeContext, record: ContainerRecord, psArgs: readonly string[]): string;
  /** pause (true) / resume (false). */
  freeze(ctx: RuntimeContext, record: ContainerRecord, pause: boolean): Promise<void>;
  /** Applies (non-zero, device-free) resources to the live container. */
  update(ctx: RuntimeContext, record: ContainerRecord, resources: LinuxResources): Promise<void>;
  /** runc's stats object; the synchronous form serves `events --stats`. */
  stats(ctx: RuntimeContext, record: ContainerRecord): Promise<CgroupStats>;
  statsSync(ctx: RuntimeContext, record: ContainerRecord): CgroupStats;
  /** OOM kills so far, for `events`; undefined when the backend cannot see them. */
  oomKills(ctx: RuntimeContext, record: ContainerRecord): Promise<number | undefined>;
}
