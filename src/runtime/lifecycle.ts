// The lifecycle verbs with hypervisor = "none": create, start, run, kill, delete, exec on the host, as
// runc does them (the same engine runs in the VM guest later). Every mutating verb holds the container's
// lock; state transitions and their runc wording live in one table (transitions.ts). Whatever a failed
// create made is unwound: the init is killed, cgroups and the state directory removed.
import {
  closeSync,
  constants,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { loadConfig } from "../config/config";
import {
  type CgroupManager,
  cgroupManagerFor,
  cgroupManagerFromState,
  checkUnifiedSupported,
  subCgroupDirs,
  writeValue,
} from "../engine/cgroups";
import { capLastCap, cgroupMountRecords, containerPasswd, hostFacts } from "../engine/host";
import { type Launched, launch, namespacesToJoin, signalNumber } from "../engine/launcher";
import { buildExecPlan, buildInitPlan } from "../engine/plan";
import { parseSignal, relaySignals } from "../engine/signals";
import { annotateSpan, span } from "../log/tracing";
import { validateContainerId } from "../oci/id";
import type { Process } from "../oci/spec";
import { parseConfigJson, validateProcess } from "../oci/validate";
import { hostHooks, newContainerRecord, stateJson, writePidFile } from "./container";
import { runPoststopHooks } from "./hooks";
import type { CreateOptions, ExecOptions, RunOptions, RuntimeContext } from "./options";
import { containerStatus, EXEC_FIFO, processAlive, processStartTime } from "./status";
import { ContainerNotFound, type ContainerRecord, StateStore } from "./store";
import { checkTransition } from "./transitions";
import { standinExit, vmCreate, vmDelete, vmExec, vmKill, vmRun, vmStart } from "./vm";

export type { CreateOptions, ExecOptions, RunOptions, RuntimeContext } from "./options";

/** New containers go to a VM sandbox (src/runtime/vm.ts) when the configuration says hypervisor = "qemu". */
function vmMode(ctx: RuntimeContext): boolean {
  return loadConfig({ explicitPath: ctx.configPath }).config.runtime.hypervisor === "qemu";
}

/** An existing container stays where it was created, whatever the configuration says now. */
function isVmContainer(ctx: RuntimeContext, id: string): boolean {
  try {
    return new StateStore(ctx.root).read(id).hypervisor === "qemu";
  } catch {
    return false;
  }
}

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

/** create: everything up to the init blocking on the exec fifo. `wait` keeps the helper as its parent. */
export async function createContainer(
  ctx: RuntimeContext,
  o: CreateOptions,
  wait = false,
): Promise<{ record: ContainerRecord; launched: Launched }> {
  validateContainerId(o.id);
  if (vmMode(ctx)) {
    const { record, standin } = await span("vm.create", { container: o.id }, () => vmCreate(ctx, o));
    annotateSpan({ sandbox: record.sandboxId });
    return { record, launched: { pid: record.pid, helper: standin, exited: standinExit(standin) } };
  }
  const record = newContainerRecord(o.id, o.bundle, "none");
  const { bundle, rootfs, config: spec } = record;
  annotateSpan({ sandbox: record.sandboxId });
  const store = new StateStore(ctx.root);
  const cgroup: CgroupManager = cgroupManagerFor({
    id: o.id,
    cgroupsPath: spec.linux?.cgroupsPath,
    systemd: ctx.systemdCgroup,
    resources: spec.linux?.resources,
    warn: ctx.warn,
  });
  // Refused before anything exists (runc's validator does the same, in its words).
  checkUnifiedSupported(cgroup.mode, spec.linux?.resources);
  const already = cgroup.pids().length;
  // runc 1.1 warns and goes on (1.2 refuses): the container then shares its cgroup's limits and kills.
  if (already) ctx.warn?.(`container's cgroup is not empty: ${already} process(es) found`);
  ctx.debug?.("creating container", { id: o.id, bundle, cgroup: Object.values(cgroup.paths)[0] ?? "" });
  store.create(record);
  let launched: Launched | undefined;
  try {
    return await store.withLock(o.id, async () => {
      cgroup.create();
      // Written with the pid (one fsync'd write fewer per create); until then a failure unwinds here.
      record.engine.cgroup = cgroup.save();
      const cg = cgroup;
      const cgroupNs = spec.linux?.namespaces?.some((n) => n.type === "cgroup" && !n.path) ?? false;
      const facts = hostFacts(rootfs, (m, flags) => cgroupMountRecords(m, flags, cg.paths, cgroupNs));
      const plan = buildInitPlan(
        {
          spec,
          bundle,
          rootfs,
          fifo: join(store.dir(o.id), EXEC_FIFO),
          consoleSocket: o.consoleSocket ? resolve(o.consoleSocket) : undefined,
          noPivot: o.noPivot,
          preserveFds: o.preserveFds,
          sessionKeyring: o.noNewKeyring ? undefined : `_ses.${o.id}`,
          facts,
        },
        wait,
      );
      record.engine.namespaces = plan.namespaces;
      launched = await span("engine.launch", { container: o.id }, () =>
        launch({
          phase1: plan.phase1,
          preserveFds: o.preserveFds,
          wait,
          expectReady: true,
          onPid: async (pid) => {
            record.pid = pid;
            record.pidStartTime = processStartTime(pid) ?? 0;
            if (plan.uidMappings) writeMap(pid, "uid_map", plan.uidMappings);
            if (plan.gidMappings) writeMap(pid, "gid_map", plan.gidMappings);
            // From outside, as runc's bootstrap does: inside a user namespace the file is not ours.
            setOomScoreAdj(pid, spec.process?.oomScoreAdj);
            cg.apply(pid);
            cg.set(spec.linux?.resources ?? {});
            // The record must name the pid before hooks run: a hook may call `state`.
            if (spec.hooks?.prestart?.length || spec.hooks?.createRuntime?.length) store.write(record);
            await hostHooks("prestart", record, "created", pid);
            await hostHooks("createRuntime", record, "created", pid);
            return plan.phase2(stateJson(record, "creating", pid));
          },
        }),
      );
      store.write(record);
      writePidFile(o.pidFile, record.pid);
      ctx.debug?.("container created", { id: o.id, pid: record.pid });
      return { record, launched };
    });
  } catch (err) {
    if (record.pid > 0) {
      try {
        process.kill(record.pid, "SIGKILL");
      } catch {}
      waitGone(record.pid, record.pidStartTime, 2000);
    }
    try {
      cgroup.destroy();
    } catch {}
    store.remove(o.id);
    throw err;
  }
}

function setOomScoreAdj(pid: number, adj: number | undefined): void {
  if (adj === undefined) return;
  try {
    writeFileSync(`/proc/${pid}/oom_score_adj`, String(adj));
  } catch (err) {
    throw new Error(
      `set oom_score_adj of ${pid} to ${adj}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
}

function writeMap(pid: number, file: string, text: string): void {
  try {
    // One write: the kernel accepts a map only once and only whole.
    const fd = openSync(`/proc/${pid}/${file}`, "w");
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    throw new Error(`write /proc/${pid}/${file}: ${(err as Error).message}`);
  }
}

/** Opens the exec fifo for reading: the init's blocked open returns, it writes one byte and execs. */
function releaseInit(fifo: string, record: ContainerRecord): void {
  let fd: number;
  try {
    fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    throw new Error("cannot start a container that has stopped");
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
    const end = Date.now() + 10_000;
    for (;;) {
      if (readByte()) return;
      // A fast workload may write, exec and exit between our read and this check: the byte it wrote
      // is still in the fifo, so read once more before calling the container stopped.
      if (!processAlive(record.pid, record.pidStartTime)) {
        if (readByte()) return;
        throw new Error("cannot start a container that has stopped");
      }
      if (Date.now() > end) throw new Error("timed out waiting for the container init to read the exec fifo");
      sleepMs(1);
    }
  } finally {
    closeSync(fd);
  }
}

export async function startContainer(ctx: RuntimeContext, id: string): Promise<void> {
  if (isVmContainer(ctx, id)) return vmStart(ctx, id);
  const store = new StateStore(ctx.root);
  await store.withLock(id, async () => {
    const record = store.read(id);
    checkTransition("start", containerStatus(store, record), id);
    const fifo = join(store.dir(id), EXEC_FIFO);
    releaseInit(fifo, record);
    ctx.debug?.("container started", { id, pid: record.pid });
    try {
      unlinkSync(fifo);
    } catch {}
    try {
      await hostHooks("poststart", record, "running");
    } catch (err) {
      // runc: a failed poststart hook stops the container.
      try {
        process.kill(record.pid, "SIGKILL");
      } catch {}
      throw err;
    }
  });
}

/** run = create + start; in the foreground, waits and returns the workload's exit code, then deletes. */
export async function runContainer(ctx: RuntimeContext, o: RunOptions): Promise<number> {
  if (vmMode(ctx)) return vmRun(ctx, o);
  const { launched } = await createContainer(ctx, o, !o.detach);
  try {
    await startContainer(ctx, o.id);
  } catch (err) {
    await deleteContainer(ctx, o.id, true).catch(() => {});
    throw err;
  }
  if (o.detach) return 0;
  const stop = relaySignals(launched.helper.pid ?? 0);
  const code = await launched.exited;
  stop();
  ctx.debug?.("container process exited", { id: o.id, status: code });
  if (!o.keep) await deleteContainer(ctx, o.id, true);
  return code;
}

export async function killContainer(
  ctx: RuntimeContext,
  id: string,
  signal: string,
  all = false,
): Promise<void> {
  if (isVmContainer(ctx, id)) return vmKill(ctx, id, signal, all);
  const sig = parseSignal(signal);
  const store = new StateStore(ctx.root);
  await store.withLock(id, async () => {
    const record = store.read(id);
    const status = containerStatus(store, record);
    checkTransition("kill", status, id);
    if (all) {
      const cg = cgroupOf(record, ctx);
      const pids = cg ? cg.pids() : [record.pid];
      for (const p of pids) {
        try {
          process.kill(p, sig);
        } catch {}
      }
      if (status === "paused" && sig === 9) cg?.thaw();
      return;
    }
    try {
      process.kill(record.pid, sig);
    } catch (err) {
      throw new Error(`kill container ${id}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  });
}

function cgroupOf(record: ContainerRecord, ctx: RuntimeContext): CgroupManager | undefined {
  try {
    if (record.engine.cgroup) return cgroupManagerFromState(record.engine.cgroup, ctx.warn);
    // A create that was killed before it recorded its cgroups: the paths follow from the config.
    return cgroupManagerFor({
      id: record.id,
      cgroupsPath: record.config.linux?.cgroupsPath,
      systemd: ctx.systemdCgroup,
      warn: ctx.warn,
    });
  } catch {
    return undefined;
  }
}

/** Kills everything left in the container (SIGKILL), then removes cgroups and state; poststop hooks last. */
function destroy(ctx: RuntimeContext, store: StateStore, record: ContainerRecord): void {
  const cg = cgroupOf(record, ctx);
  // With a pid namespace of its own, the container's processes are exactly that namespace's (the kernel
  // kills them with the init); others in its cgroup are a neighbour's (a shared cgroupsPath, which
  // create warns about) and are left alone, as runc does. Without one, everything in the cgroup goes.
  const ownPidNs = record.config.linux?.namespaces?.some((n) => n.type === "pid" && !n.path) ?? false;
  const pidNs = (pid: number): string | undefined => {
    try {
      return readlinkSync(`/proc/${pid}/ns/pid`);
    } catch {
      return undefined;
    }
  };
  const initAlive = processAlive(record.pid, record.pidStartTime);
  const ns = ownPidNs && initAlive ? pidNs(record.pid) : undefined;
  const ours = (pid: number) => !ownPidNs || (ns !== undefined && pidNs(pid) === ns);
  if (initAlive) {
    try {
      process.kill(record.pid, "SIGKILL");
    } catch {}
  }
  if (cg) {
    for (let round = 0; round < 3; round++) {
      const pids = cg.pids().filter(ours);
      if (pids.length === 0) break;
      for (const p of pids) {
        try {
          process.kill(p, "SIGKILL");
        } catch {}
      }
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
  store.remove(record.id);
}

export async function deleteContainer(ctx: RuntimeContext, id: string, force = false): Promise<void> {
  if (isVmContainer(ctx, id)) return vmDelete(ctx, id, force);
  const store = new StateStore(ctx.root);
  if (!store.exists(id)) {
    if (force) {
      store.remove(id); // a half-made directory from an interrupted create
      return;
    }
    throw new ContainerNotFound(id);
  }
  let record: ContainerRecord | undefined;
  await store.withLock(id, async () => {
    const r = store.read(id);
    const status = containerStatus(store, r);
    if (!force) checkTransition("delete", status, id);
    destroy(ctx, store, r);
    record = r;
  });
  if (record?.config.hooks?.poststop?.length) {
    const warnings = await runPoststopHooks(record.config.hooks.poststop, stateJson(record, "stopped"), {
      cwd: record.bundle,
    });
    for (const w of warnings) ctx.warn?.(w);
  }
}

/** Builds the exec process from argv and flags, on top of the container's own process (runc's rules). */
export function execProcessFromArgs(
  base: Process | undefined,
  a: {
    args: string[];
    env?: string[];
    cwd?: string;
    user?: string;
    additionalGids?: number[];
    caps?: string[];
    noNewPrivs?: boolean;
    tty?: boolean;
  },
): Process {
  if (a.args.length === 0) throw new Error("exec: process args cannot be empty");
  const p: Process = {
    terminal: Boolean(a.tty),
    user: { ...(base?.user ?? { uid: 0, gid: 0 }) },
    args: a.args,
    env: [...(base?.env ?? []), ...(a.env ?? [])],
    cwd: a.cwd ?? base?.cwd ?? "/",
    noNewPrivileges: a.noNewPrivs || base?.noNewPrivileges,
    rlimits: base?.rlimits,
  };
  if (base?.capabilities) {
    const c = base.capabilities;
    p.capabilities = {
      bounding: [...(c.bounding ?? [])],
      effective: [...(c.effective ?? [])],
      permitted: [...(c.permitted ?? [])],
      inheritable: [...(c.inheritable ?? [])],
      ambient: [...(c.ambient ?? [])],
    };
  }
  for (const cap of a.caps ?? []) {
    const name = cap.toUpperCase().startsWith("CAP_") ? cap.toUpperCase() : `CAP_${cap.toUpperCase()}`;
    const caps = p.capabilities ?? {};
    p.capabilities = caps;
    // runc 1.1 adds --cap to every set but the inheritable one (so, for a non-root user, ambient raising
    // fails quietly and the cap is gone after execve, exactly as under runc).
    for (const set of ["bounding", "effective", "permitted", "ambient"] as const)
      caps[set] = [...(caps[set] ?? []), name];
  }
  if (a.user) {
    const m = /^(\d+)(?::(\d+))?$/.exec(a.user);
    if (!m) throw new Error(`exec: --user must be uid[:gid], got ${JSON.stringify(a.user)}`);
    p.user = { uid: Number(m[1]), gid: m[2] !== undefined ? Number(m[2]) : 0 };
  }
  if (a.additionalGids?.length) p.user.additionalGids = a.additionalGids;
  return p;
}

export function readProcessFile(path: string): Process {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`read process file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return validateProcess(parseConfigJson(text, path));
}

/** runc exits 255 when exec itself fails (the workload's own codes pass through unchanged). */
export class ExecError extends Error {
  readonly exitCode = 255;
}

/** exec: a new process in a running container. Foreground: returns its exit code; detached: 0. */
export async function execInContainer(ctx: RuntimeContext, o: ExecOptions): Promise<number> {
  try {
    return await (isVmContainer(ctx, o.id) ? vmExec(ctx, o) : execInner(ctx, o));
  } catch (err) {
    throw new ExecError(err instanceof Error ? err.message : String(err));
  }
}

async function execInner(ctx: RuntimeContext, o: ExecOptions): Promise<number> {
  const store = new StateStore(ctx.root);
  const record = store.read(o.id);
  checkTransition("exec", containerStatus(store, record), o.id, o.ignorePaused);
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
  const launched = await launch({
    phase1: plan.phase1,
    preserveFds: o.preserveFds,
    wait: !o.detach,
    expectReady: false,
    onPid: (pid) => {
      setOomScoreAdj(pid, o.process.oomScoreAdj);
      if (subDirs) {
        ctx.debug?.("joining sub-cgroups", { pid, cgroups: subDirs.join(",") });
        for (const d of subDirs) writeValue(d, "cgroup.procs", String(pid));
      } else cg?.apply(pid);
      return plan.phase2(pid);
    },
  });
  ctx.debug?.("exec process started", { id: o.id, pid: launched.pid });
  writePidFile(o.pidFile, launched.pid);
  if (o.detach) return 0;
  const stop = relaySignals(launched.helper.pid ?? 0);
  const code = await launched.exited;
  stop();
  ctx.debug?.("exec process exited", { id: o.id, pid: launched.pid, status: code });
  return code;
}

export { signalNumber };

/** The runtime context from the CLI's global flags (kept here so every lifecycle command builds it alike). */
export function runtimeContext(
  g: { root: string; config?: string; systemdCgroup?: boolean },
  warn?: (m: string) => void,
  debug?: RuntimeContext["debug"],
): RuntimeContext {
  return { root: g.root, configPath: g.config, systemdCgroup: g.systemdCgroup, warn, debug };
}

/** Parses --preserve-fds. */
export function parsePreserveFds(v: string | undefined): number {
  if (v === undefined) return 0;
  if (!/^\d+$/.test(v)) throw new Error(`invalid --preserve-fds value ${JSON.stringify(v)}`);
  return Number(v);
}
