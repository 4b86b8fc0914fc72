// The lifecycle verbs with hypervisor = "qemu": the same semantics as the host engine (runc's), but the
// workload runs in the sandbox's VM. The CLI stays stateless: it starts the sandbox supervisor (one per
// sandbox, detached), spawns a stand-in per container process (its pid is what --pid-file names and
// what engines wait on), and asks the supervisor over its control socket for the rest. Status is
// derived as for the host engine: the stand-in's liveness replaces the init's (it exits with the
// workload, and with 255 when the supervisor dies); an empty regular file named exec.fifo marks
// "created" until `start`. Every failure mid-create unwinds what was made.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { connect } from "node:net";
import { join, resolve } from "node:path";
import { loadConfig } from "../config/config";
import { parseSignal, relaySignals } from "../engine/signals";
import { checkBootFiles } from "../hypervisor/qemu";
import { virtiofsdLockFile } from "../hypervisor/virtiofsd";
import { sandboxNetns } from "../network";
import { validateContainerId } from "../oci/id";
import type { LinuxResources } from "../oci/spec";
import { createSandboxCgroup, readSandboxCgroup, removeSandboxCgroup } from "../sandbox/cgroup";
import { sandboxPaths } from "../sandbox/paths";
import {
  type ControlArgs,
  type ControlOp,
  type ControlResult,
  supervisorCall,
  supervisorCallSync,
} from "../sandbox/protocol";
import { cleanupSandboxDir } from "../sandbox/supervisor";
import { closeFd, findNativeFile, openpty, sendFds } from "../sys/native";
import { attachConsole } from "./console";
import { hostHooks, newContainerRecord, stateJson, writePidFile } from "./container";
import { runPoststopHooks } from "./hooks";
import type { CreateOptions, ExecOptions, RunOptions, RuntimeContext } from "./options";
import { containerStatus, EXEC_FIFO, findProcesses, processAlive, processStartTime } from "./status";
import { ContainerNotFound, type ContainerRecord, StateStore } from "./store";
import { checkTransition } from "./transitions";

export const STANDIN_BINARY = "kata-ts-standin";
export const SUPERVISOR_BUNDLE = "kata-supervisor.cjs";
/** Boot + agent ready under TCG is a few seconds; a cold page cache or a loaded CI host more. */
const SUPERVISOR_READY_MS = 120_000;

interface ProcRef {
  pid: number;
  start: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The supervisor bundle: $KATA_TS_SUPERVISOR, next to the CLI bundle, or dist/ of the source tree. */
export function supervisorScript(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = [
    env.KATA_TS_SUPERVISOR,
    join(__dirname, SUPERVISOR_BUNDLE),
    join(__dirname, "..", "..", "dist", SUPERVISOR_BUNDLE),
  ];
  for (const c of candidates) if (c && existsSync(c)) return c;
  throw new Error(`sandbox supervisor ${SUPERVISOR_BUNDLE} not found: run \`npm run build\``);
}

export function standinBinary(): string {
  const p = findNativeFile(STANDIN_BINARY);
  if (!p) throw new Error(`${STANDIN_BINARY} not built: run \`make -C native\``);
  return p;
}

function alive(p: ProcRef | undefined): boolean {
  return p !== undefined && p.pid > 0 && processAlive(p.pid, p.start);
}

function killRef(p: ProcRef | undefined, sig: NodeJS.Signals = "SIGKILL"): void {
  if (!alive(p)) return;
  try {
    process.kill(p!.pid, sig);
  } catch {}
}

async function waitGone(p: ProcRef | undefined, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (alive(p)) {
    if (Date.now() > end) return false;
    await sleep(10);
  }
  return true;
}

function call<O extends ControlOp>(
  ctx: RuntimeContext,
  sandboxId: string,
  op: O,
  args: ControlArgs<O>,
  timeoutMs?: number,
): Promise<ControlResult<O>> {
  return supervisorCall(sandboxPaths(ctx.root, sandboxId).socket, op, args, timeoutMs);
}

interface SandboxInfo {
  supervisorPid: number;
  supervisorStart: number;
  vmPid: number;
  vmStart: number;
}

interface SandboxProcs {
  supervisor?: ProcRef;
  vm?: ProcRef;
  /** virtio-fs: the daemon the supervisor started (it forks once more into its own pid namespace). */
  virtiofsd?: ProcRef;
  /** The sandbox cgroup's record (read early: a supervisor that ends removes its directory). */
  cgroup?: ReturnType<typeof readSandboxCgroup>;
}

function readSandboxInfo(ctx: RuntimeContext, sandboxId: string): SandboxProcs {
  const p = sandboxPaths(ctx.root, sandboxId);
  const out: SandboxProcs = { cgroup: readSandboxCgroup(p) };
  try {
    const [pid, start] = readFileSync(p.virtiofsdPid, "utf8").trim().split(" ").map(Number);
    if (pid > 0) out.virtiofsd = { pid, start };
  } catch {}
  try {
    const i = JSON.parse(readFileSync(p.info, "utf8")) as SandboxInfo;
    out.supervisor = { pid: i.supervisorPid, start: i.supervisorStart };
    if (i.vmPid) out.vm = { pid: i.vmPid, start: i.vmStart };
  } catch {
    // Not written yet (killed while booting): the supervisor writes its pid file first thing.
    try {
      const [pid, start] = readFileSync(p.pidFile, "utf8").trim().split(" ").map(Number);
      out.supervisor = { pid, start };
    } catch {}
  }
  if (!out.supervisor) {
    // Nothing on disk yet: the CLI that spawned it was killed before either of them wrote the pid file.
    const root = resolve(ctx.root);
    out.supervisor = findProcesses((argv) => {
      const at = argv.indexOf("--sandbox");
      return (
        at > 0 &&
        argv[at + 1] === sandboxId &&
        argv.some((a) => a.endsWith(SUPERVISOR_BUNDLE)) &&
        argv[argv.indexOf("--root") + 1] === root
      );
    })[0];
  }
  if (!out.vm) {
    // QEMU writes its own pid file as soon as it runs.
    try {
      const pid = Number(readFileSync(join(p.vmDir, "qemu.pid"), "utf8").trim());
      const start = processStartTime(pid);
      if (
        start !== undefined &&
        readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(`sandbox-${sandboxId}`)
      )
        out.vm = { pid, start };
    } catch {}
  }
  return out;
}

/**
 * Stops whatever is left of a sandbox (supervisor, QEMU, mounts, sockets, its directory) when its
 * supervisor is gone or does not leave by itself.
 */
export async function destroySandbox(
  ctx: RuntimeContext,
  sandboxId: string,
  graceMs = 10_000,
  known: SandboxProcs = {},
): Promise<void> {
  // What the caller read before the supervisor could remove its files, completed by what is on disk now.
  const now = readSandboxInfo(ctx, sandboxId);
  const info = {
    supervisor: known.supervisor ?? now.supervisor,
    vm: known.vm ?? now.vm,
    virtiofsd: known.virtiofsd ?? now.virtiofsd,
    cgroup: known.cgroup ?? now.cgroup,
  };
  if (!(await waitGone(info.supervisor, graceMs))) killRef(info.supervisor);
  await waitGone(info.supervisor, 2000);
  killRef(info.vm);
  await waitGone(info.vm, 5000);
  const paths = sandboxPaths(ctx.root, sandboxId);
  // virtiofsd dies with the supervisor (and its namespaced child with it); whatever still serves this
  // sandbox's socket — the recorded daemon or its child — is killed here.
  const daemons = [
    ...(alive(info.virtiofsd) ? [info.virtiofsd!] : []),
    ...findProcesses((argv) => argv.includes(`--socket-path=${paths.virtiofsdSocket}`)),
  ];
  for (const d of daemons) killRef(d);
  for (const d of daemons) await waitGone(d, 2000);
  rmSync(virtiofsdLockFile(paths.virtiofsdSocket), { force: true });
  const cgError = await removeSandboxCgroup(info.cgroup);
  if (cgError) ctx.warn?.(`sandbox ${sandboxId}: ${cgError}`);
  cleanupSandboxDir(paths, true);
}

/**
 * Starts the sandbox supervisor (detached) and waits until it reports ready or fails. `cgroupsPath`
 * (sandbox_cgroup_only): the sandbox's cgroup is made first; the supervisor moves itself into it.
 */
async function startSupervisor(
  ctx: RuntimeContext,
  sandboxId: string,
  netns?: string,
  cgroup?: { cgroupsPath?: string },
): Promise<ProcRef> {
  const p = sandboxPaths(ctx.root, sandboxId);
  if (existsSync(p.info) || existsSync(p.pidFile) || existsSync(p.cgroup)) {
    // A previous sandbox of this id died without cleanup: its leftovers would confuse this one.
    await destroySandbox(ctx, sandboxId, 0);
  }
  mkdirSync(p.dir, { recursive: true, mode: 0o711 });
  if (cgroup) {
    try {
      createSandboxCgroup(p, { sandboxId, ...cgroup, systemd: ctx.systemdCgroup, warn: ctx.warn });
    } catch (err) {
      await destroySandbox(ctx, sandboxId, 0);
      throw new Error(`sandbox ${sandboxId}: cannot create its cgroup: ${(err as Error).message}`);
    }
  }
  const logFd = openSync(p.log, "a", 0o600);
  // An absolute root: `delete` may look for this process by its argv before it has written its pid.
  const args = [supervisorScript(), "--root", resolve(ctx.root), "--sandbox", sandboxId];
  if (ctx.configPath) args.push("--config", resolve(ctx.configPath));
  // The pod's network namespace: its interfaces become the VM's NICs, which must exist at QEMU's start.
  if (netns) args.push("--netns", netns);
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", logFd, logFd, "pipe"] });
  } finally {
    closeSync(logFd);
  }
  const ref = { pid: child.pid ?? 0, start: processStartTime(child.pid ?? 0) ?? 0 };
  // Written by us too, at once: a CLI killed right after this line still leaves a findable pid.
  writeFileSync(p.pidFile, `${ref.pid} ${ref.start}\n`);
  const pipe = child.stdio[3] as NodeJS.ReadableStream;
  const line = await new Promise<string>((res) => {
    let buf = "";
    const timer = setTimeout(
      () => res(`error: the sandbox did not become ready within ${SUPERVISOR_READY_MS} ms`),
      SUPERVISOR_READY_MS,
    );
    pipe.setEncoding("utf8");
    pipe.on("data", (d: string) => {
      buf += d;
      if (buf.includes("\n")) {
        clearTimeout(timer);
        res(buf.slice(0, buf.indexOf("\n")));
      }
    });
    pipe.on("end", () => {
      clearTimeout(timer);
      res(
        buf.includes("\n")
          ? buf.slice(0, buf.indexOf("\n"))
          : "error: the sandbox supervisor exited during start",
      );
    });
  });
  (pipe as unknown as { destroy(): void }).destroy();
  child.unref();
  if (line !== "ok") {
    killRef(ref);
    await destroySandbox(ctx, sandboxId, 5000);
    let why = line.replace(/^error: /, "");
    if (why === "the sandbox supervisor exited during start") {
      try {
        const last = readFileSync(p.log, "utf8").trim().split("\n").pop();
        if (last) why = last.replace(/^\S+Z /, "");
      } catch {}
    }
    throw new Error(`sandbox ${sandboxId}: ${why}`);
  }
  return ref;
}

/** Sends a pty master to the engine's --console-socket, as runc does (the data is the pty's name). */
async function sendConsole(socketPath: string, master: number, name: string): Promise<void> {
  const sock = connect(socketPath);
  await new Promise<void>((res, rej) => {
    sock.once("connect", () => res());
    sock.once("error", (e: NodeJS.ErrnoException) =>
      rej(new Error(`console socket ${socketPath}: ${e.code ?? e.message}`)),
    );
  });
  try {
    const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
    // The socket is non-blocking; one small message fits in any socket buffer.
    sendFds(fd, [master], Buffer.from(name));
  } finally {
    sock.destroy();
  }
}

/**
 * Spawns a stand-in: with a terminal, on a fresh host pty whose master goes to the console socket or,
 * for a foreground process without one (`foreground`), stays with this CLI (returned as `master`).
 */
async function spawnStandin(
  ctx: RuntimeContext,
  sandboxId: string,
  containerId: string,
  execId: string,
  terminal: boolean,
  consoleSocket: string | undefined,
  foreground = false,
): Promise<{ child: ChildProcess; ref: ProcRef; master?: number }> {
  const bin = standinBinary();
  const sock = sandboxPaths(ctx.root, sandboxId).socket;
  let stdio: ("inherit" | number)[] = ["inherit", "inherit", "inherit"];
  let slave: number | undefined;
  let master: number | undefined;
  if (terminal) {
    if (!consoleSocket && !foreground)
      throw new Error("cannot allocate tty if runc will detach without setting console socket");
    const pty = openpty();
    if (consoleSocket) {
      try {
        await sendConsole(resolve(consoleSocket), pty.master, pty.name);
      } finally {
        closeFd(pty.master);
      }
    } else master = pty.master;
    slave = pty.slave;
    stdio = [slave, slave, slave];
  }
  let child: ChildProcess;
  try {
    child = spawn(bin, [sock, containerId, execId || "-", terminal ? "1" : "0"], { detached: true, stdio });
  } finally {
    if (slave !== undefined) closeFd(slave);
  }
  const pid = child.pid;
  if (!pid) {
    if (master !== undefined) closeFd(master);
    throw new Error(`${STANDIN_BINARY}: could not be started`);
  }
  child.on("error", () => {});
  return { child, ref: { pid, start: processStartTime(pid) ?? 0 }, master };
}

export interface VmCreated {
  record: ContainerRecord;
  /** The stand-in of the init (our child until this process exits). */
  standin: ChildProcess;
  /** A foreground run with a terminal and no console socket: the master of the stand-in's pty. */
  master?: number;
}

/** create: the sandbox (if this container is its own), the container in the guest, the stand-in. */
export async function vmCreate(
  ctx: RuntimeContext,
  o: CreateOptions,
  foreground = false,
): Promise<VmCreated> {
  validateContainerId(o.id);
  const record = newContainerRecord(o.id, o.bundle, "qemu");
  const { rootfs, config: spec, sandboxId } = record;
  const ownSandbox = record.containerType === "sandbox";
  // A missing kernel or image, or a shared fs this build cannot serve (none), fails here in one line, before a
  // supervisor is spawned for nothing.
  let netns: string | undefined;
  let cgroup: { cgroupsPath?: string } | undefined;
  if (ownSandbox) {
    const { config } = loadConfig({ explicitPath: ctx.configPath });
    const hv = config.hypervisor;
    netns = sandboxNetns(spec, config.runtime.internetworkingModel);
    if (config.runtime.sandboxCgroupOnly) cgroup = { cgroupsPath: spec.linux?.cgroupsPath };
    if (hv.sharedFs === "none")
      throw new Error(
        'shared_fs = "none" is not supported in VM mode: set shared_fs = "virtio-fs" or "virtio-9p" in [hypervisor.qemu]',
      );
    checkBootFiles(hv);
  }
  const store = new StateStore(ctx.root);
  store.create(record);
  let standin: { child: ChildProcess; ref: ProcRef; master?: number } | undefined;
  let inGuest = false;
  let supervisorStarted = false;
  try {
    return await store.withLock(o.id, async () => {
      if (ownSandbox) {
        const sup = await startSupervisor(ctx, sandboxId, netns, cgroup);
        ctx.debug?.("sandbox supervisor ready", { sandbox: sandboxId, pid: sup.pid });
        supervisorStarted = true;
        record.engine.supervisor = sup;
        store.write(record);
      } else {
        await call(ctx, sandboxId, "ping", {}).catch((err: Error) => {
          throw new Error(`sandbox ${sandboxId} of pod container ${o.id} is not running: ${err.message}`);
        });
      }
      const terminal = Boolean(spec.process?.terminal);
      standin = await spawnStandin(ctx, sandboxId, o.id, "", terminal, o.consoleSocket, foreground);
      record.pid = standin.ref.pid;
      record.pidStartTime = standin.ref.start;
      // The record names the pid before anything else can fail or a hook can call `state`.
      writeFileSync(join(store.dir(o.id), EXEC_FIFO), "");
      store.write(record);
      const exited = new Promise<never>((_, rej) =>
        standin!.child.once("exit", (code, sig) =>
          rej(
            new Error(
              `${STANDIN_BINARY} exited early (${sig ?? code}): see ${sandboxPaths(ctx.root, sandboxId).log}`,
            ),
          ),
        ),
      );
      exited.catch(() => {});
      await Promise.race([
        call(ctx, sandboxId, "createContainer", { containerId: o.id, spec, rootfs }, 120_000),
        exited,
      ]);
      inGuest = true;
      ctx.debug?.("container created in the guest", { id: o.id, standin: record.pid });
      await hostHooks("prestart", record, "created");
      await hostHooks("createRuntime", record, "created");
      store.write(record);
      writePidFile(o.pidFile, record.pid);
      standin.child.removeAllListeners("exit");
      // The stand-in outlives this CLI (the engine's subreaper adopts it); `run` re-refs it to wait.
      standin.child.unref();
      return { record, standin: standin.child, master: standin.master };
    });
  } catch (err) {
    if (standin?.master !== undefined) closeFd(standin.master);
    if (inGuest && !ownSandbox) await call(ctx, sandboxId, "delete", { containerId: o.id }).catch(() => {});
    killRef(standin?.ref);
    if (supervisorStarted || ownSandbox) {
      await call(ctx, sandboxId, "shutdown", {}).catch(() => {});
      await destroySandbox(ctx, sandboxId, 10_000);
    }
    await waitGone(standin?.ref, 2000);
    store.remove(o.id);
    throw err;
  }
}

export async function vmStart(ctx: RuntimeContext, id: string): Promise<void> {
  const store = new StateStore(ctx.root);
  await store.withLock(id, async () => {
    const record = store.read(id);
    checkTransition("start", containerStatus(store, record), id);
    await call(ctx, record.sandboxId, "startContainer", { containerId: id });
    try {
      unlinkSync(join(store.dir(id), EXEC_FIFO));
    } catch {}
    try {
      await hostHooks("poststart", record, "running");
    } catch (err) {
      // runc: a failed poststart hook stops the container.
      await call(ctx, record.sandboxId, "kill", { containerId: id, signal: 9, all: true }).catch(() => {});
      throw err;
    }
  });
}

export async function vmKill(ctx: RuntimeContext, id: string, signal: string, all = false): Promise<void> {
  const sig = parseSignal(signal);
  const store = new StateStore(ctx.root);
  await store.withLock(id, async () => {
    const record = store.read(id);
    checkTransition("kill", containerStatus(store, record), id);
    await call(ctx, record.sandboxId, "kill", { containerId: id, signal: sig, all });
  });
}

/** delete: the container leaves the guest and the share; the sandbox's last container stops the VM. */
export async function vmDelete(ctx: RuntimeContext, id: string, force = false): Promise<void> {
  const store = new StateStore(ctx.root);
  if (!store.exists(id)) {
    if (!force) throw new ContainerNotFound(id);
    store.remove(id);
    return;
  }
  let record: ContainerRecord | undefined;
  await store.withLock(id, async () => {
    let r: ContainerRecord;
    try {
      r = store.read(id);
    } catch (err) {
      // A create that failed meanwhile removed it: with --force that is success, as for runc.
      if (force && err instanceof ContainerNotFound) return;
      throw err;
    }
    if (!force) checkTransition("delete", containerStatus(store, r), id);
    let empty = r.sandboxId === id;
    let grace = 10_000;
    const known = readSandboxInfo(ctx, r.sandboxId);
    try {
      empty = (await call(ctx, r.sandboxId, "delete", { containerId: id }, 60_000)).sandboxEmpty || empty;
    } catch {
      // The supervisor is gone, still booting or wedged: what is left is cleaned up directly below.
      empty = empty || r.containerType === "sandbox";
      grace = 0;
    }
    const standin = { pid: r.pid, start: r.pidStartTime };
    if (!(await waitGone(standin, 2000))) killRef(standin);
    await waitGone(standin, 2000);
    if (empty) await destroySandbox(ctx, r.sandboxId, grace, known);
    store.remove(id);
    record = r;
  });
  if (record?.config.hooks?.poststop?.length) {
    const warnings = await runPoststopHooks(record.config.hooks.poststop, stateJson(record, "stopped"), {
      cwd: record.bundle,
    });
    for (const w of warnings) ctx.warn?.(w);
  }
}

/** Waits for a stand-in child of ours; its exit code is the workload's (or 128+signal). */
export function standinExit(child: ChildProcess): Promise<number> {
  return childExit(child);
}

function childExit(child: ChildProcess): Promise<number> {
  return new Promise((res) => {
    if (child.exitCode !== null) return res(child.exitCode);
    if (child.signalCode)
      return res(128 + (require("node:os").constants.signals[child.signalCode] as number));
    child.once("exit", (code, sig) =>
      res(sig ? 128 + (require("node:os").constants.signals[sig] as number) : (code ?? 255)),
    );
  });
}

/** run = create + start; in the foreground waits for the workload and returns its exit code. */
export async function vmRun(ctx: RuntimeContext, o: RunOptions): Promise<number> {
  const { standin, master } = await vmCreate(ctx, o, !o.detach);
  // Attached before start, so not a byte of the workload's first output is missed.
  const term = master !== undefined ? attachConsole(master) : undefined;
  term?.syncSize();
  try {
    await vmStart(ctx, o.id);
  } catch (err) {
    await term?.finish();
    await vmDelete(ctx, o.id, true).catch(() => {});
    throw err;
  }
  if (o.detach) return 0;
  standin.ref();
  const stop = relaySignals(standin.pid ?? 0);
  const code = await childExit(standin);
  stop();
  await term?.finish();
  ctx.debug?.("container process exited", { id: o.id, status: code });
  if (!o.keep) await vmDelete(ctx, o.id, true);
  return code;
}

/** exec: a new process in the container, with its own stand-in (whose pid goes in --pid-file). */
export async function vmExec(ctx: RuntimeContext, o: ExecOptions): Promise<number> {
  const store = new StateStore(ctx.root);
  const record = store.read(o.id);
  checkTransition("exec", containerStatus(store, record), o.id, o.ignorePaused);
  // The guest's cgroups are not the host's and no host tool can make a sub-cgroup there (docs/differences.md).
  if (o.subCgroups) throw new Error("exec --cgroup is not supported in VM mode");
  const execId = `exec-${randomBytes(8).toString("hex")}`;
  const s = await spawnStandin(
    ctx,
    record.sandboxId,
    o.id,
    execId,
    Boolean(o.process.terminal),
    o.consoleSocket,
    !o.detach,
  );
  const term = s.master !== undefined ? attachConsole(s.master) : undefined;
  try {
    await call(ctx, record.sandboxId, "exec", { containerId: o.id, execId, process: o.process }, 60_000);
  } catch (err) {
    killRef(s.ref);
    await term?.finish();
    throw err;
  }
  term?.syncSize();
  ctx.debug?.("exec process started in the guest", { id: o.id, exec: execId, standin: s.ref.pid });
  writePidFile(o.pidFile, s.ref.pid);
  if (o.detach) {
    s.child.unref();
    return 0;
  }
  const stop = relaySignals(s.ref.pid);
  const code = await childExit(s.child);
  stop();
  await term?.finish();
  ctx.debug?.("exec process exited", { id: o.id, exec: execId, status: code });
  return code;
}

async function requireRunning(ctx: RuntimeContext, id: string): Promise<ContainerRecord> {
  const store = new StateStore(ctx.root);
  const record = store.read(id);
  const status = containerStatus(store, record);
  if (status === "stopped") throw new Error("container not running");
  return record;
}

/** Guest pids of the container's processes (the host cannot see them). */
export async function vmPs(ctx: RuntimeContext, id: string): Promise<number[]> {
  const r = await requireRunning(ctx, id);
  return (await call(ctx, r.sandboxId, "ps", { containerId: id })).pids;
}

export async function vmPause(ctx: RuntimeContext, id: string, pause: boolean): Promise<void> {
  const store = new StateStore(ctx.root);
  await store.withLock(id, async () => {
    const r = store.read(id);
    const status = containerStatus(store, r);
    if (pause && status !== "running") throw new Error(`container ${id} is not running`);
    if (!pause && status !== "paused") throw new Error(`container ${id} is not paused`);
    await call(ctx, r.sandboxId, pause ? "pause" : "resume", { containerId: id });
    r.paused = pause;
    store.write(r);
  });
}

export async function vmUpdate(ctx: RuntimeContext, id: string, resources: LinuxResources): Promise<void> {
  const r = await requireRunning(ctx, id);
  await call(ctx, r.sandboxId, "update", { containerId: id, resources });
}

export async function vmStats(ctx: RuntimeContext, id: string): Promise<Record<string, unknown>> {
  const r = await requireRunning(ctx, id);
  return (await call(ctx, r.sandboxId, "stats", { containerId: id })).data;
}

/** True for containers created in VM mode (the dispatch in lifecycle/operations asks this). */
export function isVmRecord(r: ContainerRecord): boolean {
  return r.hypervisor === "qemu";
}

// Synchronous forms for the operations whose callers print from synchronous code (ps, events --stats).

/** The guest's pids of the container's processes and, with psArgs, the guest's `ps` output. */
export function vmPsSync(
  ctx: RuntimeContext,
  record: ContainerRecord,
  psArgs?: string[],
): { pids: number[]; table?: string } {
  return supervisorCallSync(sandboxPaths(ctx.root, record.sandboxId).socket, "ps", {
    containerId: record.id,
    psArgs,
  });
}

/**
 * Host pids for `ps --format json`: the container's stand-ins (init and every exec still running).
 * Engines take these pids for the container's processes (containerd matches them with the pids it got
 * from --pid-file; docker top runs the host's ps on them): guest pids would name unrelated host
 * processes, or none.
 */
export function vmStandinPids(ctx: RuntimeContext, record: ContainerRecord): number[] {
  const sock = sandboxPaths(ctx.root, record.sandboxId).socket;
  return findProcesses(
    (argv) => argv[0]?.endsWith(`/${STANDIN_BINARY}`) === true && argv[1] === sock && argv[2] === record.id,
  )
    .map((p) => p.pid)
    .sort((a, b) => a - b);
}

export function vmStatsSync(ctx: RuntimeContext, record: ContainerRecord): Record<string, unknown> {
  return supervisorCallSync(sandboxPaths(ctx.root, record.sandboxId).socket, "stats", {
    containerId: record.id,
  }).data;
}

/** update inside the caller's lock: the agent applies the resources in the guest. */
export async function vmApplyResources(
  ctx: RuntimeContext,
  record: ContainerRecord,
  resources: LinuxResources,
): Promise<void> {
  await call(ctx, record.sandboxId, "update", { containerId: record.id, resources });
}

/** pause/resume inside the caller's lock. */
export async function vmFreeze(ctx: RuntimeContext, record: ContainerRecord, pause: boolean): Promise<void> {
  await call(ctx, record.sandboxId, pause ? "pause" : "resume", { containerId: record.id });
}
