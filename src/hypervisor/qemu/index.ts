// The QEMU driver: spawns QEMU as a child of the caller (no -daemonize: the supervisor owns it, sees
// its exit and can always kill it), waits until QMP answers, and removes the socket and pid files
// when QEMU is gone, however it ended.
import { type ChildProcess, spawn } from "node:child_process";
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { dirname, join } from "node:path";
import type { QemuConfig } from "../../config/config";
import { findNativeFile } from "../../sys/native";
import { nsenterArgv } from "../../sys/netns";
import type { HypervisorDriver, StartVmOptions, Vm, VmExit } from "../driver";
import { JAILER_BINARY, type JailSpec, jailArgv, vmmJail } from "../jail";
import { type AccelChoice, chooseAccel, hostTscKhz } from "./accel";
import { buildQemuArgs, imageOnPmem, isMicrovm, launchFromConfig, type QemuLaunch } from "./cmdline";
import { QmpClient } from "./qmp";

export * from "./accel";
export * from "./cmdline";
export * from "./qmp";

/** sun_path is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;

export function vmPaths(dir: string) {
  return {
    qmpSocket: join(dir, "qmp.sock"),
    agentSocket: join(dir, "agent.sock"),
    consoleLog: join(dir, "console.log"),
    qemuLog: join(dir, "qemu.log"),
    pidFile: join(dir, "qemu.pid"),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function lastLine(file: string): string {
  try {
    const lines = readFileSync(file, "utf8").trim().split("\n");
    // QEMU prefixes its messages with a timestamp (-msg timestamp=on) and its own name.
    return (lines[lines.length - 1] ?? "").replace(/^\S+Z\s+/, "").replace(/^[^:]*qemu-system-\w+:\s*/, "");
  } catch {
    return "";
  }
}

class QemuVm implements Vm {
  exited = false;
  private exit: Promise<VmExit>;
  constructor(
    readonly id: string,
    private readonly child: ChildProcess,
    readonly pid: number,
    readonly qmp: QmpClient,
    readonly accel: AccelChoice,
    readonly argv: readonly string[],
    readonly paths: ReturnType<typeof vmPaths>,
    exit: Promise<VmExit>,
    readonly jail?: JailSpec,
  ) {
    this.exit = exit.then((e) => {
      this.exited = true;
      return e;
    });
  }
  get consoleLog() {
    return this.paths.consoleLog;
  }
  get qemuLog() {
    return this.paths.qemuLog;
  }
  get agentSocket() {
    return this.paths.agentSocket;
  }
  get qmpSocket() {
    return this.paths.qmpSocket;
  }
  async stop(timeoutMs = 5000): Promise<VmExit> {
    if (!this.exited) {
      try {
        await this.qmp.quit(timeoutMs);
      } catch {
        // QMP wedged: the deadline below ends it
      }
      const t = setTimeout(() => this.kill(), timeoutMs);
      try {
        return await this.exit;
      } finally {
        clearTimeout(t);
      }
    }
    return this.exit;
  }
  kill(): void {
    if (!this.exited) this.child.kill("SIGKILL");
  }
  waitExit(): Promise<VmExit> {
    return this.exit;
  }
}

/**
 * The boot files of a launch that do not exist, each as the one-line error to show: QEMU's own message
 * ("could not load kernel") names neither the configuration key nor the command that makes the file.
 */
export function missingBootFiles(l: {
  kernel: string;
  initrd?: string;
  image?: string;
  shares?: { path: string }[];
}): string[] {
  const out: string[] = [];
  if (!existsSync(l.kernel)) {
    out.push(
      `guest kernel ${l.kernel} does not exist (hypervisor.kernel): build it with \`kata-ts guest build --kernel\``,
    );
  }
  if (l.image && !existsSync(l.image)) {
    out.push(
      `guest image ${l.image} does not exist (hypervisor.image): build it with \`kata-ts guest build\``,
    );
  }
  if (l.initrd && !existsSync(l.initrd))
    out.push(`guest initrd ${l.initrd} does not exist (hypervisor.initrd)`);
  for (const s of l.shares ?? [])
    if (!existsSync(s.path)) out.push(`shared directory ${s.path} does not exist`);
  return out;
}

/** Throws the first missing boot file's one-line error for a configuration (+ per-VM overrides). */
export function checkBootFiles(
  config: QemuConfig,
  o: Pick<StartVmOptions, "kernel" | "initrd" | "image" | "shares"> = {},
): void {
  const l = launchFromConfig(config, {
    ...{ kernel: o.kernel, initrd: o.initrd, image: o.image, shares: o.shares },
    accel: "tcg",
    console: "serial",
    consoleLog: "",
    qmpSocket: "",
    agentSocket: "",
    pidFile: "",
  });
  const missing = missingBootFiles(l);
  if (missing.length > 0) throw new Error(missing[0]);
}

/**
 * The image as persistent memory with DAX (cmdline.ts `imagePmem`, `imageOnPmem`), as Kata attaches its
 * image as an nvdimm. An image whose size cannot be read or is not a whole number of 2 MiB (the build
 * makes it so) stays on virtio-blk.
 */
function imagePmem(config: QemuConfig, l: QemuLaunch): QemuLaunch["imagePmem"] {
  if (!l.image || l.initrd || !imageOnPmem(config)) return undefined;
  let bytes: number;
  try {
    bytes = statSync(l.image).size;
  } catch {
    return undefined;
  }
  return bytes > 0 && bytes % (2 * 1024 * 1024) === 0 ? { bytes } : undefined;
}

/** Starts one VM and returns once QEMU answers on QMP (the guest is booting by then). */
export async function startVm(opts: StartVmOptions): Promise<Vm> {
  const warn = opts.onWarning ?? (() => {});
  const paths = vmPaths(opts.dir);
  for (const s of [paths.qmpSocket, paths.agentSocket]) {
    if (Buffer.byteLength(s) > MAX_SOCKET_PATH) {
      throw new Error(
        `qemu: socket path ${s} is longer than ${MAX_SOCKET_PATH} bytes: use a shorter VM directory`,
      );
    }
  }
  // Missing boot files fail before anything is created or probed.
  checkBootFiles(opts.config, opts);
  mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  // Stale files from a VM that died uncleanly would make QEMU's listen() fail or confuse readers.
  for (const f of [paths.qmpSocket, paths.agentSocket, paths.pidFile]) rmSync(f, { force: true });

  const accel = opts.accel ?? (await chooseAccel(opts.config.accel));
  if (accel.warning) warn(accel.warning);
  const machineType = opts.config.machineType || "microvm";
  let tscKhz: number | undefined;
  if (accel.accel === "tcg") {
    tscKhz = hostTscKhz();
    if (tscKhz === undefined && isMicrovm(machineType)) {
      warn("host TSC frequency unknown: microvm guests under TCG may hang while calibrating the clock");
    }
  }
  const fromConfig = launchFromConfig(opts.config, {
    accel: accel.accel,
    kernel: opts.kernel,
    initrd: opts.initrd,
    image: opts.image,
    vcpus: opts.vcpus,
    memoryMiB: opts.memoryMiB,
    console: opts.console ?? "serial",
    consoleLog: paths.consoleLog,
    qmpSocket: paths.qmpSocket,
    agentSocket: paths.agentSocket,
    pidFile: paths.pidFile,
    tscKhz,
    sharedMemory: opts.sharedMemory,
    shares: opts.shares,
    nics: opts.nics,
    debug: opts.debug,
    name: `sandbox-${opts.id}`,
    memoryFile: opts.template ? { path: opts.template.memoryFile, mode: opts.template.mode } : undefined,
    incoming: opts.template?.mode === "clone",
  });
  const launch = { ...fromConfig, imagePmem: imagePmem(opts.config, fromConfig) };
  const argv = buildQemuArgs(launch);
  const rng = launch.rngSource ?? "/dev/urandom";
  const cloneMemory =
    opts.template?.mode === "clone" ? cloneMemoryReadOnly(opts.template.memoryFile) : undefined;
  // A QEMU path that is not executable is spawned as is, for spawn's own error (nothing would run).
  const jail = executable(launch.qemuPath)
    ? vmmJail({
        config: opts.config,
        user: opts.jailUser,
        needs: {
          qemuPath: launch.qemuPath,
          writable: [
            opts.dir,
            ...(launch.shares ?? []).map((s) =>
              s.fs === "virtio-fs" && s.socket ? dirname(s.socket) : s.path,
            ),
            // The template's memory file, which the template's QEMU writes (share=on).
            ...(opts.template?.mode === "template" ? [opts.template.memoryFile] : []),
          ],
          readable: [
            launch.kernel,
            launch.image ?? "",
            launch.initrd ?? "",
            opts.config.firmware,
            // A clone only reads it (share=off: its writes stay in its own pages): bound read-only.
            ...(cloneMemory ? [cloneMemory.file, cloneMemory.preload] : []),
          ],
          devices: [
            "/dev/null",
            ...(rng ? [rng] : []),
            ...(accel.accel === "kvm" ? ["/dev/kvm"] : []),
            ...((launch.nics ?? []).length > 0 ? ["/dev/net/tun"] : []),
          ],
        },
      })
    : undefined;

  // In the pod's network namespace when it has one (nsenter outside the jail: the pid stays QEMU's).
  const child = spawnDaemon(argv, paths.qemuLog, (a) => inNetns(opts.netns, a), jail, cloneMemory?.env);
  let exitInfo: VmExit | undefined;
  let spawnError: Error | undefined;
  const exit = new Promise<VmExit>((resolve) => {
    // spawn failed (no such binary, not executable): there is no process to wait for.
    child.once("error", (err) => {
      spawnError = err;
      exitInfo = { code: 127, signal: null };
      resolve(exitInfo);
    });
    child.once("exit", (code, signal) => {
      exitInfo = { code, signal };
      // QEMU removes its pid file on a clean exit, not after SIGKILL; sockets likewise.
      for (const f of [paths.qmpSocket, paths.agentSocket, paths.pidFile]) rmSync(f, { force: true });
      resolve(exitInfo);
    });
  });

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 10_000);
  let qmp: QmpClient | undefined;
  let lastErr = "";
  while (!qmp) {
    if (exitInfo) {
      if (spawnError) throw new Error(`qemu: cannot run ${argv[0]}: ${spawnError.message}`);
      const why = lastLine(paths.qemuLog) || `exit code ${exitInfo.code ?? exitInfo.signal}`;
      throw new Error(`qemu: ${argv[0]} exited during start: ${why}`);
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await exit;
      throw new Error(
        `qemu: no QMP answer within ${opts.readyTimeoutMs ?? 10_000} ms${lastErr ? ` (${lastErr})` : ""}`,
      );
    }
    try {
      qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: Math.max(100, deadline - Date.now()) });
    } catch (err) {
      lastErr = (err as Error).message;
      await sleep(10);
    }
  }
  const vm = new QemuVm(opts.id, child, child.pid!, qmp, accel, argv, paths, exit, jail);
  void vm.waitExit().then(() => qmp.close());
  if (opts.template?.mode === "clone") {
    try {
      await restoreClone(qmp, opts.template.stateFile ?? "", Math.max(1000, deadline - Date.now()));
    } catch (err) {
      vm.kill();
      await vm.waitExit();
      const why = lastLine(paths.qemuLog);
      throw new Error(`${(err as Error).message}${why ? ` (${why})` : ""}`);
    }
  }
  return vm;
}

export const qemuDriver: HypervisorDriver = { name: "qemu", startVm };

/** The library a clone's QEMU is started with (native/memro): it opens one path read-only. */
export const MEMRO_LIBRARY = "kata-ts-memro.so";

/**
 * How a clone's QEMU gets the template's memory file read-only. QEMU before 8.2 opens `mem-path`
 * O_RDWR even for a private mapping, so the file would have to be bound into the clone's jail
 * read-write, and a compromised clone QEMU could write the pages every other clone of the template
 * maps. native/memro, preloaded, turns QEMU's open of that one path into O_RDONLY, so the jail binds
 * it read-only (docs/factory.md, "Security notes").
 */
export function cloneMemoryReadOnly(
  file: string,
  preload = findNativeFile(MEMRO_LIBRARY),
): { file: string; preload: string; env: Record<string, string> } {
  if (!preload)
    throw new Error(`qemu: ${MEMRO_LIBRARY} not built (run \`make -C native\`): cannot start a clone`);
  return { file, preload, env: { LD_PRELOAD: preload, KATA_TS_MEMRO_PATH: file } };
}

/**
 * Both ends of a template's state: RAM pages are left out of the stream (x-ignore-shared: they are in
 * the memory file), and the state file is handed to QEMU as fd "state" (opened here: "r" for a clone,
 * "w" for the template's save), for the `fd:state` migration URI.
 */
async function handOverStateFile(qmp: QmpClient, stateFile: string, mode: "r" | "w"): Promise<void> {
  await qmp.execute("migrate-set-capabilities", {
    capabilities: [{ capability: "x-ignore-shared", state: true }],
  });
  const fd = openSync(stateFile, mode, 0o600);
  try {
    await qmp.getfd("state", fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A clone's start: the template's device state goes in over QMP (the file's fd passed by getfd, so
 * QEMU's seccomp `spawn=deny` holds and the file need not be in its jail), RAM pages are skipped
 * (x-ignore-shared: they are in the memory file already), and the vCPUs run once it is loaded.
 */
async function restoreClone(qmp: QmpClient, stateFile: string, timeoutMs: number): Promise<void> {
  await handOverStateFile(qmp, stateFile, "r");
  await qmp.execute("migrate-incoming", { uri: "fd:state" });
  const done = await qmp.migrationDone(timeoutMs);
  if (done.status !== "completed")
    throw new Error(`qemu: restoring the template failed: ${done.error ?? done.status}`);
  // QEMU starts the vCPUs by itself after an incoming migration (no -S); a paused clone is resumed.
  const st = await qmp.queryStatus();
  if (st.status !== "running") await qmp.resume();
}

/**
 * Saves a booted template: vCPUs stopped, then its device state written to `stateFile` (its RAM is in
 * the shared memory file already, so x-ignore-shared leaves it out). QEMU stays paused; the caller quits it.
 */
export async function saveTemplate(vm: Vm, stateFile: string, timeoutMs = 60_000): Promise<number> {
  await vm.qmp.pause();
  await handOverStateFile(vm.qmp, stateFile, "w");
  await vm.qmp.execute("migrate", { uri: "fd:state" });
  const done = await vm.qmp.migrationDone(timeoutMs);
  if (done.status !== "completed")
    throw new Error(`qemu: saving the template failed: ${done.error ?? done.status}`);
  return statSync(stateFile).size;
}

/**
 * Spawns a process the caller owns (QEMU, virtiofsd): it dies with the caller (withParentDeathSignal, or
 * the jailer's own parent-death signal when jailed), its stderr goes straight to `logFile` (nothing for
 * the caller to drain, and the file survives us).
 */
export function spawnDaemon(
  argv: string[],
  logFile: string,
  wrap: (argv: string[]) => string[] = (a) => a,
  jail?: JailSpec,
  extraEnv?: Record<string, string>,
): ChildProcess {
  const logFd = openSync(logFile, "a", 0o600);
  try {
    const [cmd, ...args] = wrap(jail ? jailArgv(jail, argv) : withParentDeathSignal(argv));
    const env = extraEnv ? { ...process.env, ...extraEnv } : undefined;
    return spawn(cmd, args, { stdio: ["ignore", "ignore", logFd], env });
  } finally {
    closeSync(logFd);
  }
}

const SETPRIV = "/usr/bin/setpriv";

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * QEMU in the pod's network namespace, where its taps are: nsenter enters it and execs the rest (no
 * fork for a network namespace), so the pid is still QEMU's and the parent-death signal holds.
 */
export function inNetns(netns: string | undefined, argv: string[]): string[] {
  return netns ? nsenterArgv(netns, argv) : argv;
}

/**
 * QEMU (or virtiofsd) gets SIGKILL when the process that started it dies: a supervisor killed before it
 * could stop its VM must not leave one running that nobody knows about. kata-ts-jailer with nothing to
 * jail sets PR_SET_PDEATHSIG and execs it (the pid stays QEMU's), and exits instead when its spawner
 * died before that (`--parent`: see jailArgv); util-linux `setpriv --pdeathsig` is the fallback when
 * the jailer is not built (it has no such check). A path that is not executable is spawned as is, for
 * spawn's own error.
 */
export function withParentDeathSignal(
  argv: string[],
  jailer = findNativeFile(JAILER_BINARY) ?? "",
): string[] {
  if (argv[0].includes("/") && !executable(argv[0])) return argv;
  if (jailer)
    return jailArgv({ jailer, binds: [], readonlyBinds: [], links: [], devices: [], caps: [] }, argv);
  return executable(SETPRIV) ? [SETPRIV, "--pdeathsig", "KILL", "--", ...argv] : argv;
}
