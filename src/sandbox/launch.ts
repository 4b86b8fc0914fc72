// Launching a sandbox from the CLI (short-lived) side: the supervisor (detached, one per sandbox), the
// stand-ins (one per container process: the host pid engines wait on), the sandbox's recorded process
// facts, and the teardown of whatever a dead or wedged sandbox left behind. The runtime's VM backend
// (src/runtime/vm.ts) calls these; it never touches sandbox files itself.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { constants } from "node:os";
import { join, resolve } from "node:path";
import type { VmSize } from "../config/sizing";
import { type StopPriming, withJoinPriming } from "../engine/cgroups/prime";
import { KataError } from "../errors";
import { cacheRequest, type SlotAssignment, type TakeReply } from "../factory/cache";
import { virtiofsdLockFile } from "../hypervisor/virtiofsd";
import { nodeChildEnv } from "../nodeenv";
import { writeFileAtomic } from "../sys/files";
import { closeFd, findNativeFile, openpty, sendFds } from "../sys/native";
import { findProcesses, processAlive, processStartTime } from "../sys/proc";
import {
  createSandboxCgroup,
  JOINED_LINE,
  readSandboxCgroup,
  removeSandboxCgroup,
  type SandboxCgroupOptions,
} from "./cgroup";
import { cleanupSandboxDir } from "./cleanup";
import { sandboxPaths } from "./paths";
import { type ControlArgs, type ControlOp, type ControlResult, supervisorCall } from "./protocol";

export const STANDIN_BINARY = "kata-ts-standin";
export const SUPERVISOR_BUNDLE = "kata-supervisor.cjs";
/** Boot + agent ready under TCG is a few seconds; a cold page cache or a loaded CI host more. */
const SUPERVISOR_READY_MS = 120_000;

/** A host process named by pid and start time (a recycled pid is not it). */
export interface ProcRef {
  pid: number;
  start: number;
}

/** A sandbox as the CLI names it: its runtime root and its id. */
export interface SandboxRef {
  root: string;
  id: string;
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
  throw new KataError(`sandbox supervisor ${SUPERVISOR_BUNDLE} not found: run \`npm run build\``);
}

export function standinBinary(): string {
  const p = findNativeFile(STANDIN_BINARY);
  if (!p) throw new KataError(`${STANDIN_BINARY} not built: run \`make -C native\``);
  return p;
}

export function alive(p: ProcRef | undefined): boolean {
  return p !== undefined && p.pid > 0 && processAlive(p.pid, p.start);
}

export function killRef(p: ProcRef | undefined, sig: NodeJS.Signals = "SIGKILL"): void {
  if (!alive(p)) return;
  try {
    process.kill(p!.pid, sig);
  } catch {
    // gone between the check and the kill: what we wanted
  }
}

export async function waitGone(p: ProcRef | undefined, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (alive(p)) {
    if (Date.now() > end) return false;
    await sleep(10);
  }
  return true;
}

/** One request to the sandbox's supervisor over its control socket. */
export function sandboxCall<O extends ControlOp>(
  s: SandboxRef,
  op: O,
  args: ControlArgs<O>,
  timeoutMs?: number,
): Promise<ControlResult<O>> {
  return supervisorCall(sandboxPaths(s.root, s.id).socket, op, args, timeoutMs);
}

interface SandboxInfo {
  supervisorPid: number;
  supervisorStart: number;
  vmPid: number;
  vmStart: number;
}

/** The processes a sandbox runs on the host, as far as its files (or /proc) tell. */
export interface SandboxProcs {
  supervisor?: ProcRef;
  vm?: ProcRef;
  /** virtio-fs: the daemon the supervisor started (it forks once more into its own pid namespace). */
  virtiofsd?: ProcRef;
  /** The sandbox cgroup's record (read early: a supervisor that ends removes its directory). */
  cgroup?: ReturnType<typeof readSandboxCgroup>;
}

/** A "PID START" file (supervisor.pid, virtiofsd.pid); undefined when missing or not (yet) whole. */
function readPidFile(path: string): ProcRef | undefined {
  try {
    const [pid, start] = readFileSync(path, "utf8").trim().split(" ").map(Number);
    return Number.isInteger(pid) && pid > 0 && Number.isFinite(start) ? { pid, start } : undefined;
  } catch {
    return undefined;
  }
}

export function readSandboxInfo(s: SandboxRef): SandboxProcs {
  const p = sandboxPaths(s.root, s.id);
  const out: SandboxProcs = { cgroup: readSandboxCgroup(p) };
  // absent: no virtio-fs daemon (9p, or not started yet)
  out.virtiofsd = readPidFile(p.virtiofsdPid);
  try {
    const i = JSON.parse(readFileSync(p.info, "utf8")) as SandboxInfo;
    out.supervisor = { pid: i.supervisorPid, start: i.supervisorStart };
    if (i.vmPid) out.vm = { pid: i.vmPid, start: i.vmStart };
  } catch {
    // Not written yet (killed while booting): the CLI writes the pid file right after the spawn and the
    // supervisor again first thing; when neither has, it is looked for by argv below.
    out.supervisor = readPidFile(p.pidFile);
  }
  if (!alive(out.supervisor)) {
    // Nothing whole on disk yet (the CLI that spawned it was killed before either of them wrote the pid
    // file), or a recorded pid that is gone: whatever runs with this sandbox's argv is the supervisor.
    const root = resolve(s.root);
    out.supervisor =
      findProcesses((argv) => {
        const at = argv.indexOf("--sandbox");
        return (
          at > 0 &&
          argv[at + 1] === s.id &&
          argv.some((a) => a.endsWith(SUPERVISOR_BUNDLE)) &&
          argv[argv.indexOf("--root") + 1] === root
        );
      })[0] ?? out.supervisor;
  }
  if (!out.vm) {
    // QEMU writes its own pid file as soon as it runs.
    try {
      const pid = Number(readFileSync(join(p.vmDir, "qemu.pid"), "utf8").trim());
      const start = processStartTime(pid);
      if (start !== undefined && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(`sandbox-${s.id}`))
        out.vm = { pid, start };
    } catch {
      // no QEMU started (or it is gone)
    }
  }
  return out;
}

/**
 * Stops whatever is left of a sandbox (supervisor, QEMU, mounts, sockets, its directory) when its
 * supervisor is gone or does not leave by itself.
 */
export async function destroySandbox(
  s: SandboxRef,
  graceMs = 10_000,
  known: SandboxProcs = {},
  warn?: (m: string) => void,
): Promise<void> {
  // What the caller read before the supervisor could remove its files, completed by what is on disk now.
  const now = readSandboxInfo(s);
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
  const paths = sandboxPaths(s.root, s.id);
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
  if (cgError) warn?.(`sandbox ${s.id}: ${cgError}`);
  cleanupSandboxDir(paths, true);
}

/**
 * The sandbox's directory, fresh: what a previous sandbox of this id left when it died without cleanup
 * (its processes, cgroup, network namespace) would confuse this one and goes first. Before anything of
 * the new sandbox is made in it (its network namespace, then the supervisor).
 */
export async function prepareSandboxDir(s: SandboxRef, warn?: (m: string) => void): Promise<void> {
  const p = sandboxPaths(s.root, s.id);
  if ([p.info, p.pidFile, p.cgroup, p.netns].some((f) => existsSync(f))) await destroySandbox(s, 0, {}, warn);
  mkdirSync(p.dir, { recursive: true, mode: 0o711 });
}

export interface SupervisorOptions {
  configPath?: string;
  /** The pod's network namespace: its interfaces become the VM's NICs, which must exist at QEMU's start. */
  netns?: string;
  /** sandbox_cgroup_only: the sandbox's cgroup is made first; the supervisor moves itself into it. */
  cgroup?: Omit<SandboxCgroupOptions, "sandboxId">;
  /** The VM's size when the sandbox's annotations asked for one (config/sizing.ts). */
  size?: VmSize;
  /** [factory] vm_cache_number > 0: ask the cache server first (its endpoint, this config's template key). */
  cache?: { endpoint: string; key: string };
  warn?: (m: string) => void;
}

/**
 * Starts the sandbox supervisor (detached) and waits until it reports ready or fails; the directory is
 * prepareSandboxDir's.
 */
export async function startSupervisor(s: SandboxRef, o: SupervisorOptions = {}): Promise<ProcRef> {
  const { cgroup } = o;
  const p = sandboxPaths(s.root, s.id);
  mkdirSync(p.dir, { recursive: true, mode: 0o711 });
  if (cgroup) {
    try {
      createSandboxCgroup(p, { sandboxId: s.id, ...cgroup });
    } catch (err) {
      await destroySandbox(s, 0, {}, cgroup.warn);
      throw new KataError(`sandbox ${s.id}: cannot create its cgroup: ${(err as Error).message}`);
    }
  }
  // The supervisor (or the cache slot, with its QEMU) moves into that cgroup: its first cgroup.procs
  // write would wait for an RCU grace period (7-20 ms here), so the lock is kept primed until it says
  // "joined" (engine/cgroups/prime.ts; the lock is the kernel's, shared by every cgroup).
  return withJoinPriming(Boolean(cgroup), (joined) => startOrTakeSupervisor(s, o, joined));
}

/** A cached VM's supervisor when the cache has one for this sandbox, else one of its own. */
async function startOrTakeSupervisor(
  s: SandboxRef,
  o: SupervisorOptions,
  joined: StopPriming,
): Promise<ProcRef> {
  const { configPath, netns, size, warn } = o;
  const p = sandboxPaths(s.root, s.id);
  if (o.cache) {
    const taken = await takeCachedVm(s, o.cache, netns, warn, joined);
    if (taken) return taken;
  }
  const logFd = openSync(p.log, "a", 0o600);
  // An absolute root: `delete` may look for this process by its argv before it has written its pid.
  const args = [supervisorScript(), "--root", resolve(s.root), "--sandbox", s.id];
  if (configPath) args.push("--config", resolve(configPath));
  if (netns) args.push("--netns", netns);
  if (size) args.push("--memory", String(size.memoryMiB), "--vcpus", String(size.vcpus));
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, args, {
      detached: true,
      stdio: ["ignore", logFd, logFd, "pipe"],
      env: nodeChildEnv(),
    });
  } finally {
    closeSync(logFd);
  }
  const ref = { pid: child.pid ?? 0, start: processStartTime(child.pid ?? 0) ?? 0 };
  // Written by us too, at once: a CLI killed right after this line still leaves a findable pid.
  writeFileAtomic(p.pidFile, `${ref.pid} ${ref.start}\n`);
  const pipe = child.stdio[3] as NodeJS.ReadableStream;
  const line = await readinessLine(pipe, "the sandbox supervisor exited during start", warn, joined);
  (pipe as unknown as { destroy(): void }).destroy();
  child.unref();
  if (line !== "ok") {
    killRef(ref);
    await destroySandbox(s, 5000);
    let why = line.replace(/^error: /, "");
    if (why === "the sandbox supervisor exited during start") {
      try {
        const last = readFileSync(p.log, "utf8").trim().split("\n").pop();
        if (last) why = last.replace(/^\S+Z /, "");
      } catch {
        // no log: the generic reason stands
      }
    }
    throw new KataError(`sandbox ${s.id}: ${why}`);
  }
  return ref;
}

/**
 * The supervisor's readiness line on `stream` (its fd 3, or a cache slot's socket): "warning: ..." lines
 * go to `warn`, "joined" (it is in the sandbox's cgroup) calls `joined`, the first other line is the
 * answer ("ok", "error: ...", a slot's "refused: ...").
 */
function readinessLine(
  stream: NodeJS.ReadableStream,
  ended: string,
  warn?: (m: string) => void,
  joined?: () => void,
): Promise<string> {
  return new Promise<string>((res) => {
    let buf = "";
    const timer = setTimeout(
      () => res(`error: the sandbox did not become ready within ${SUPERVISOR_READY_MS} ms`),
      SUPERVISOR_READY_MS,
    );
    stream.setEncoding("utf8");
    stream.on("error", () => {});
    stream.on("data", (d: string) => {
      buf += d;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const l = buf.slice(0, nl);
        if (l === JOINED_LINE) joined?.();
        else if (l.startsWith("warning: ")) warn?.(l.slice("warning: ".length));
        else {
          clearTimeout(timer);
          res(l);
          return;
        }
        buf = buf.slice(nl + 1);
      }
    });
    // "close" too: a socket whose peer vanished may close without an "end".
    const finish = () => {
      clearTimeout(timer);
      res(buf.includes("\n") ? buf.slice(0, buf.indexOf("\n")) : `error: ${ended}`);
    };
    stream.on("end", finish);
    stream.on("close", finish);
  });
}

/**
 * A supervisor from the VM cache (src/factory/cache.ts): one of the server's slots, told this sandbox.
 * Undefined (with the reason as a warning) when there is no server, no ready VM, or this sandbox cannot
 * use one: the caller starts a supervisor of its own. A slot that fails after it took the sandbox fails
 * the create, as a supervisor of its own would.
 */
async function takeCachedVm(
  s: SandboxRef,
  cache: { endpoint: string; key: string },
  netns: string | undefined,
  warn?: (m: string) => void,
  joined?: () => void,
): Promise<ProcRef | undefined> {
  const p = sandboxPaths(s.root, s.id);
  let reply: TakeReply;
  try {
    reply = await cacheRequest<TakeReply>(cache.endpoint, { op: "take", key: cache.key });
  } catch (err) {
    warn?.(
      `factory: the VM cache at ${cache.endpoint} does not answer (${(err as Error).message}): starting a VM`,
    );
    return undefined;
  }
  if (!reply.ok) {
    warn?.(`factory: VM cache: ${reply.why}`);
    return undefined;
  }
  const ref = { pid: reply.pid, start: reply.start };
  const sock = connect(reply.socket);
  const connected = await new Promise<boolean>((res) => {
    sock.once("connect", () => res(true));
    sock.once("error", () => res(false));
  });
  if (!connected) {
    // The slot died between the server's answer and our call: it never saw this sandbox.
    warn?.("factory: VM cache: the cached VM went away before it was handed over: starting a VM");
    return undefined;
  }
  const a: SlotAssignment = {
    root: resolve(s.root),
    sandboxId: s.id,
    ...(netns ? { netns } : {}),
    joinedLine: true,
  };
  sock.write(`${JSON.stringify(a)}\n`);
  const line = await readinessLine(sock, "the cached VM's supervisor hung up", warn, joined);
  sock.destroy();
  if (line.startsWith("refused: ")) {
    warn?.(`factory: VM cache: ${line.slice("refused: ".length)}: starting a VM`);
    return undefined;
  }
  if (line !== "ok") {
    killRef(ref);
    await destroySandbox(s, 5000);
    throw new KataError(`sandbox ${s.id}: ${line.replace(/^error: /, "")}`);
  }
  // The supervisor wrote it too; a later CLI finds the supervisor by this file (its argv names no sandbox).
  writeFileAtomic(p.pidFile, `${ref.pid} ${ref.start}\n`);
  return ref;
}

/** Sends a pty master to the engine's --console-socket, as runc does (the data is the pty's name). */
async function sendConsole(socketPath: string, master: number, name: string): Promise<void> {
  const sock = connect(socketPath);
  await new Promise<void>((res, rej) => {
    sock.once("connect", () => res());
    sock.once("error", (e: NodeJS.ErrnoException) =>
      rej(new KataError(`console socket ${socketPath}: ${e.code ?? e.message}`)),
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

/** A stand-in child of this process: the host face of one container process. */
export interface StandinChild {
  child: ChildProcess;
  ref: ProcRef;
  /** A foreground process with a terminal and no console socket: the master of the stand-in's pty. */
  master?: number;
}

/**
 * Spawns a stand-in: with a terminal, on a fresh host pty whose master goes to the console socket or,
 * for a foreground process without one (`foreground`), stays with this CLI (returned as `master`).
 */
export async function spawnStandin(
  s: SandboxRef,
  containerId: string,
  execId: string,
  terminal: boolean,
  consoleSocket: string | undefined,
  foreground = false,
  given?: [number, number, number],
): Promise<StandinChild> {
  const bin = standinBinary();
  const sock = sandboxPaths(s.root, s.id).socket;
  let stdio: ("inherit" | number)[] = given ?? ["inherit", "inherit", "inherit"];
  let slave: number | undefined;
  let master: number | undefined;
  if (terminal) {
    if (!consoleSocket && !foreground)
      throw new KataError("cannot allocate tty if runc will detach without setting console socket");
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
    throw new KataError(`${STANDIN_BINARY}: could not be started`);
  }
  child.on("error", () => {});
  return { child, ref: { pid, start: processStartTime(pid) ?? 0 }, master };
}

/** Waits for a stand-in child of ours; its exit code is the workload's (or 128+signal). */
export function standinExit(child: ChildProcess): Promise<number> {
  return new Promise((res) => {
    if (child.exitCode !== null) return res(child.exitCode);
    if (child.signalCode) return res(128 + (constants.signals[child.signalCode] as number));
    child.once("exit", (code, sig) => res(sig ? 128 + (constants.signals[sig] as number) : (code ?? 255)));
  });
}

/** The stand-ins of a container still running (init and every exec), by their argv. */
export function standinPids(s: SandboxRef, containerId: string): number[] {
  const sock = sandboxPaths(s.root, s.id).socket;
  return findProcesses(
    (argv) => argv[0]?.endsWith(`/${STANDIN_BINARY}`) === true && argv[1] === sock && argv[2] === containerId,
  )
    .map((p) => p.pid)
    .sort((a, b) => a - b);
}
