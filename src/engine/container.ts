// The container driver: the one place that makes a container's init (plan, helper, id maps, oom score,
// cgroup, the creating-state handshake), releases it at `start` (the exec fifo), and reports its OCI
// state. The host runtime (hypervisor = "none") and the guest agent both drive containers through it;
// what differs between them (where the state lives, how stdio is wired, what a failure unwinds) stays
// with the caller.
import { closeSync, constants, openSync, readSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { KataError } from "../errors";
import type { Spec } from "../oci/spec";
import { ociState, type Status } from "../oci/state";
import { type CgroupManager, withJoinPriming } from "./cgroups";
import { cgroupMountRecords, hostFacts } from "./host";
import { type Launched, type LaunchOptions, launch } from "./launcher";
import { buildInitPlan, type InitPlan } from "./plan";

/** The fifo the init blocks on until `start` (in the container's state directory). */
export const EXEC_FIFO = "exec.fifo";

/** `start` on a container whose init is gone: runc's wording. */
export class InitStopped extends KataError {
  constructor() {
    super("cannot start a container that has stopped");
  }
}

/** The init did not read the fifo in time (it is alive but stuck). */
export class InitTimeout extends KataError {
  constructor() {
    super("timed out waiting for the container init to read the exec fifo");
  }
}

/** The facts of a container the OCI state is made of. */
export interface ContainerFacts {
  id: string;
  bundle: string;
  spec: Spec;
  annotations?: Record<string, string>;
}

/** The OCI state JSON of a container (what hooks and the helper's phase 2 get). */
export function containerState(c: ContainerFacts, status: Status, pid: number): string {
  return JSON.stringify(
    ociState({
      id: c.id,
      status,
      pid,
      bundle: c.bundle,
      annotations: c.annotations ?? c.spec.annotations,
      ociVersion: c.spec.ociVersion,
    }),
  );
}

export interface CreateInitOptions extends ContainerFacts {
  rootfs: string;
  /** The container's state directory: the exec fifo goes there. */
  stateDir: string;
  /** Created here (before the plan, whose mounts name its paths); destroying it is the caller's. */
  cgroup: CgroupManager;
  /** `wait`: the helper stays the init's parent (its exit is the workload's exit). */
  wait: boolean;
  consoleSocket?: string;
  /** The guest: the pty is made by the container and handed back on this fd. */
  consoleFd?: boolean;
  noPivot?: boolean;
  preserveFds?: number;
  sessionKeyring?: string;
  /** Gets the init's pid first thing (so that a failure after it knows what to kill). */
  noted?: (pid: number) => void;
  /**
   * Prime the kernel's cgroup migration lock from the moment the cgroups exist until the init has joined
   * them (primeCgroupJoin): the host's CLI does; the guest's cgroup2 is mounted with favordynmods.
   */
  primeJoin?: boolean;
  /** Runs with the init's pid once it is in its cgroup, before it proceeds (hooks, the record). */
  onPid?: (pid: number, plan: InitPlan) => Promise<void> | void;
  /** How the helper is launched (the guest wires stdio to its streams); default: launch() as is. */
  launch?: (
    o: Pick<LaunchOptions, "phase1" | "expectReady" | "onPid" | "preserveFds" | "wait">,
  ) => Promise<Launched>;
}

/**
 * create: everything up to the init blocking on the exec fifo. On failure the init (if any) is the
 * caller's to kill: the caller knows how to wait for it.
 */
export async function createInit(o: CreateInitOptions): Promise<Launched> {
  const { spec, cgroup: cg } = o;
  cg.create();
  // After the mkdirs: a priming write holds cgroup_mutex through its RCU wait, which a mkdir would queue on.
  return withJoinPriming(o.primeJoin === true, async (joined) => {
    const plan = initPlan(o);
    return (o.launch ?? launch)({
      phase1: plan.phase1,
      preserveFds: o.preserveFds,
      wait: o.wait,
      expectReady: true,
      onPid: async (pid) => {
        o.noted?.(pid);
        if (plan.uidMappings) writeProcFile(pid, "uid_map", plan.uidMappings);
        if (plan.gidMappings) writeProcFile(pid, "gid_map", plan.gidMappings);
        // From outside, as runc's bootstrap does: inside a user namespace the file is not ours.
        setOomScoreAdj(pid, spec.process?.oomScoreAdj);
        cg.apply(pid);
        joined();
        cg.set(spec.linux?.resources ?? {});
        await o.onPid?.(pid, plan);
        return plan.phase2(containerState(o, "creating", pid));
      },
    });
  });
}

/** The init's plan, with the host facts it depends on (the cgroups already made). */
function initPlan(o: CreateInitOptions): InitPlan {
  const { spec, cgroup: cg } = o;
  const cgroupNs = spec.linux?.namespaces?.some((n) => n.type === "cgroup" && !n.path) ?? false;
  const facts = hostFacts(o.rootfs, (m, flags) => cgroupMountRecords(m, flags, cg.paths, cgroupNs));
  return buildInitPlan(
    {
      spec,
      bundle: o.bundle,
      rootfs: o.rootfs,
      fifo: join(o.stateDir, EXEC_FIFO),
      consoleSocket: o.consoleSocket,
      consoleFd: o.consoleFd,
      noPivot: o.noPivot,
      preserveFds: o.preserveFds,
      sessionKeyring: o.sessionKeyring,
      facts,
    },
    o.wait,
  );
}

/** Writes a /proc/PID file in one write: the kernel takes an id map only once and only whole. */
function writeProcFile(pid: number, file: string, text: string): void {
  try {
    const fd = openSync(`/proc/${pid}/${file}`, "w");
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    throw new KataError(`write /proc/${pid}/${file}: ${(err as Error).message}`);
  }
}

/** oom_score_adj of a new container process (init or exec), from outside. */
export function setOomScoreAdj(pid: number, adj: number | undefined): void {
  if (adj === undefined) return;
  try {
    writeFileSync(`/proc/${pid}/oom_score_adj`, String(adj));
  } catch (err) {
    throw new KataError(
      `set oom_score_adj of ${pid} to ${adj}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
}

/**
 * start: opens the exec fifo for reading, so the init's blocked open returns, it writes one byte and
 * execs. `alive` says whether the init still runs. Polls without blocking the event loop.
 */
export async function releaseInit(stateDir: string, alive: () => boolean, timeoutMs = 10_000): Promise<void> {
  let fd: number;
  try {
    fd = openSync(join(stateDir, EXEC_FIFO), constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    throw new InitStopped();
  }
  try {
    const buf = Buffer.alloc(1);
    const readByte = (): boolean => {
      try {
        return readSync(fd, buf, 0, 1, null) > 0;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
        return false;
      }
    };
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (readByte()) return;
      // A fast workload may write, exec and exit between our read and this check: the byte it wrote
      // is still in the fifo, so read once more before calling the container stopped.
      if (!alive()) {
        if (readByte()) return;
        throw new InitStopped();
      }
      if (Date.now() > end) throw new InitTimeout();
      await new Promise((r) => setTimeout(r, 1));
    }
  } finally {
    closeSync(fd);
  }
}
