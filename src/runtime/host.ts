// The host backend (hypervisor = "none"): containers run on this machine as runc runs them, through the
// container driver (src/engine/container.ts). What a container holds outside its state directory is its
// init and its cgroups; the cgroup manager is rebuilt from what create saved (record.engine.cgroup).
import { spawnSync } from "node:child_process";
import { readlinkSync } from "node:fs";
import { resolve } from "node:path";
import {
  type CgroupManager,
  type CgroupStats,
  cgroupManagerFor,
  cgroupManagerFromState,
  checkUnifiedSupported,
  subCgroupDirs,
  withJoinPriming,
  writeValue,
} from "../engine/cgroups";
import { createInit, releaseInit, setOomScoreAdj } from "../engine/container";
import { capLastCap, containerPasswd } from "../engine/host";
import { type Launched, launch, namespacesToJoin } from "../engine/launcher";
import { buildExecPlan } from "../engine/plan";
import { KataError } from "../errors";
import { span } from "../log/tracing";
import { processAlive, processStartTime } from "../sys/proc";
import type { Backend, Creation, Started } from "./backend";
import { stateJson } from "./container";
import type { RuntimeContext } from "./options";
import type { ContainerRecord } from "./store";

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Waits until pid (with its start time) is gone or a zombie. */
function waitGone(pid: number, startTime: number, timeoutMs = 10_000): boolean {
  const end = Date.now() + timeoutMs;
  while (processAlive(pid, startTime)) {
    if (Date.now() > end) return false;
    sleepMs(2);
  }
  return true;
}

function killQuietly(pid: number, sig: NodeJS.Signals | number = "SIGKILL"): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone: nothing to kill
  }
}

function started(l: Launched): Started {
  return {
    pid: l.pid,
    signalPid: l.helper.pid ?? 0,
    exited: l.exited,
    hold: () => l.helper.ref(),
    release: () => {},
    fields: { pid: l.pid },
  };
}

/** The pid namespace of a process (its /proc link), if it can be read. */
function pidNs(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    // gone, or not ours to read: no namespace to compare
    return undefined;
  }
}

/** The container's cgroups as create saved them (an error naming the container when there are none). */
function managerOf(record: ContainerRecord, warn?: (m: string) => void): CgroupManager {
  try {
    return cgroupManagerFromState(record.engine.cgroup, warn);
  } catch {
    throw new KataError(
      `container ${record.id} has no cgroup recorded (created by another runtime version?)`,
    );
  }
}

/** The container's cgroups for cleanup: from the record, else from the config (create killed early). */
function cgroupOf(record: ContainerRecord, ctx: RuntimeContext): CgroupManager | undefined {
  try {
    if (record.engine.cgroup) return cgroupManagerFromState(record.engine.cgroup, ctx.warn);
    return cgroupManagerFor({
      id: record.id,
      cgroupsPath: record.config.linux?.cgroupsPath,
      systemd: ctx.systemdCgroup,
      warn: ctx.warn,
    });
  } catch {
    // no usable cgroup path: there is nothing of ours to clean up there
    return undefined;
  }
}

export const hostBackend: Backend = {
  kind: "none",

  prepare(ctx, record, o): Creation {
    const spec = record.config;
    const cgroup = cgroupManagerFor({
      id: record.id,
      cgroupsPath: spec.linux?.cgroupsPath,
      systemd: ctx.systemdCgroup,
      resources: spec.linux?.resources,
      warn: ctx.warn,
    });
    // Refused before anything exists (runc's validator does the same, in its words).
    checkUnifiedSupported(cgroup.mode, spec.linux?.resources);
    ctx.debug?.("creating container", {
      id: record.id,
      bundle: record.bundle,
      cgroup: Object.values(cgroup.paths)[0] ?? "",
    });
    return {
      async make(store, wait, createHooks) {
        // Once the id is ours (a second create of a live id fails on the id alone, with one line).
        // runc 1.1 warns and goes on (1.2 refuses): the container then shares its cgroup's limits and kills.
        const already = cgroup.pids().length;
        if (already) ctx.warn?.(`container's cgroup is not empty: ${already} process(es) found`);
        const launched = await span("engine.launch", { container: record.id }, () =>
          createInit({
            id: record.id,
            spec,
            bundle: record.bundle,
            rootfs: record.rootfs,
            annotations: record.annotations,
            stateDir: store.dir(record.id),
            cgroup,
            wait,
            consoleSocket: o.consoleSocket ? resolve(o.consoleSocket) : undefined,
            noPivot: o.noPivot,
            preserveFds: o.preserveFds,
            launch: o.stdio ? (lo) => launch({ ...lo, stdio: o.stdio }) : undefined,
            sessionKeyring: o.noNewKeyring ? undefined : `_ses.${record.id}`,
            primeJoin: true,
            noted: (pid) => {
              record.pid = pid;
              record.pidStartTime = processStartTime(pid) ?? 0;
            },
            onPid: async (_pid, plan) => {
              record.engine.cgroup = cgroup.save();
              record.engine.namespaces = plan.namespaces;
              // The record names the pid before phase 2 goes out: from then on the init can finish its
              // setup and wait on the exec fifo without us, and a create killed after this point must
              // leave `delete` a pid to kill (before it, the init dies on the closed sync socket).
              // Hooks need it too: a hook may call `state`.
              store.write(record);
              await createHooks(_pid);
            },
          }),
        );
        ctx.debug?.("container created", { id: record.id, pid: record.pid });
        return started(launched);
      },
      async unwind() {
        if (record.pid > 0) {
          killQuietly(record.pid);
          waitGone(record.pid, record.pidStartTime, 2000);
        }
        try {
          cgroup.destroy();
        } catch {
          // never created, or already gone: nothing left to remove
        }
      },
    };
  },

  async start(_ctx, store, record) {
    await releaseInit(store.dir(record.id), () => processAlive(record.pid, record.pidStartTime));
  },

  async kill(ctx, record, sig, all, status) {
    if (all) {
      const cg = cgroupOf(record, ctx);
      for (const p of cg ? cg.pids() : [record.pid]) killQuietly(p, sig);
      if (status === "paused" && sig === 9) cg?.thaw();
      return;
    }
    try {
      process.kill(record.pid, sig);
    } catch (err) {
      throw new KataError(
        `kill container ${record.id}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
  },

  /**
   * SIGKILL to everything left in the container, then its cgroups go. With a pid namespace of its own,
   * the container's processes are exactly that namespace's (the kernel kills them with the init); others
   * in its cgroup are a neighbour's (a shared cgroupsPath, which create warns about) and are left alone,
   * as runc does. Without one, everything in the cgroup goes.
   */
  async destroy(ctx, record) {
    const cg = cgroupOf(record, ctx);
    const ownPidNs = record.config.linux?.namespaces?.some((n) => n.type === "pid" && !n.path) ?? false;
    const initAlive = processAlive(record.pid, record.pidStartTime);
    const ns = ownPidNs && initAlive ? pidNs(record.pid) : undefined;
    const ours = (pid: number) => !ownPidNs || (ns !== undefined && pidNs(pid) === ns);
    if (initAlive) killQuietly(record.pid);
    if (cg) {
      for (let round = 0; round < 3; round++) {
        const pids = cg.pids().filter(ours);
        if (pids.length === 0) break;
        for (const p of pids) killQuietly(p);
        if (round === 0 && cg.frozen()) cg.thaw();
        sleepMs(5);
      }
    }
    waitGone(record.pid, record.pidStartTime);
    const foreign = cg ? cg.pids().filter((p) => !ours(p)).length : 0;
    try {
      // A neighbour's processes keep the cgroup busy: say so instead of retrying rmdir for seconds.
      if (foreign)
        ctx.warn?.(`cgroups of ${record.id} left in place: ${foreign} process(es) of others in them`);
      else cg?.destroy();
    } catch (err) {
      ctx.warn?.(`remove cgroups of ${record.id}: ${(err as Error).message}`);
    }
  },

  async exec(ctx, record, o) {
    const cg = cgroupOf(record, ctx);
    // Validated before anything runs: an unknown controller or a path outside the container's cgroup.
    const subDirs = o.subCgroups && cg ? subCgroupDirs(cg.mode, cg.paths, o.subCgroups) : undefined;
    const plan = buildExecPlan({
      process: o.process,
      joins: namespacesToJoin(record.pid),
      seccomp: record.config.linux?.seccomp,
      consoleSocket: o.consoleSocket ? resolve(o.consoleSocket) : undefined,
      preserveFds: o.preserveFds,
      detach: Boolean(o.detach),
      capLastCap: capLastCap(),
      passwd: containerPasswd(record.rootfs),
      state: stateJson(record, "running"),
    });
    // The process's cgroup join is the helper's spawn away: its lock's RCU wait is paid meanwhile.
    const launched = await withJoinPriming(cg !== undefined, (joined) =>
      launch({
        phase1: plan.phase1,
        preserveFds: o.preserveFds,
        stdio: o.stdio,
        wait: !o.detach,
        expectReady: false,
        onPid: (pid) => {
          setOomScoreAdj(pid, o.process.oomScoreAdj);
          if (subDirs) {
            ctx.debug?.("joining sub-cgroups", { pid, cgroups: subDirs.join(",") });
            for (const d of subDirs) writeValue(d, "cgroup.procs", String(pid));
          } else cg?.apply(pid);
          joined();
          return plan.phase2(pid);
        },
      }),
    );
    return started(launched);
  },

  pids: (ctx, record) => managerOf(record, ctx.warn).pids(),
  psTable: (ctx, record, psArgs) => psTable(managerOf(record, ctx.warn).pids(), psArgs),
  async freeze(ctx, record, pause) {
    const m = managerOf(record, ctx.warn);
    if (pause) m.freeze();
    else m.thaw();
  },
  async update(ctx, record, resources) {
    managerOf(record, ctx.warn).update(resources);
  },
  stats: async (ctx, record) => managerOf(record, ctx.warn).stats(),
  statsSync: (ctx, record): CgroupStats => managerOf(record, ctx.warn).stats(),
  oomKills: async (ctx, record) => managerOf(record, ctx.warn).oomKills(),
};

/** runc's ps table: run `ps` with the given arguments (default -ef) and keep the header and our pids. */
export function psTable(pids: readonly number[], psArgs: readonly string[]): string {
  const args = psArgs.length ? [...psArgs] : ["-ef"];
  const r = spawnSync("ps", args, { encoding: "utf8" });
  if (r.error) throw new KataError(`ps: ${r.error.message}`);
  if (r.status !== 0)
    throw new KataError(`ps ${args.join(" ")}: exit status ${r.status}: ${(r.stderr || r.stdout).trim()}`);
  return filterPsOutput(r.stdout, pids);
}

export function filterPsOutput(output: string, pids: readonly number[]): string {
  const lines = output.split("\n");
  const header = lines[0] ?? "";
  const pidIndex = header.trim().split(/\s+/).indexOf("PID");
  if (pidIndex < 0) throw new KataError("couldn't find PID field in ps output");
  const want = new Set(pids);
  const out = [header];
  for (const line of lines.slice(1)) {
    if (!line.trim()) continue;
    const p = Number(line.trim().split(/\s+/)[pidIndex]);
    if (want.has(p)) out.push(line);
  }
  return `${out.join("\n")}\n`;
}
