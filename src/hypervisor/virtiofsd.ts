// virtiofsd: the vhost-user daemon that serves a host directory to the guest over virtio-fs. One per
// sandbox, started by the supervisor before QEMU (QEMU connects to its socket at start), a child of the
// supervisor that dies with it (PR_SET_PDEATHSIG through setpriv, as QEMU), and stopped after QEMU.
// Two daemons exist with different flags: QEMU 7's C daemon (Debian qemu-system-common,
// /usr/lib/qemu/virtiofsd) and the Rust one (Debian's virtiofsd package, /usr/libexec/virtiofsd).
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync, rmSync } from "node:fs";
import type { QemuConfig } from "../config/config";
import { spawnDaemon } from "./qemu";

export type VirtiofsdFlavour = "c" | "rust";
export type VirtiofsCache = "auto" | "always" | "never" | "none";

export interface VirtiofsdLaunch {
  daemon: string;
  flavour: VirtiofsdFlavour;
  /** The vhost-user socket virtiofsd listens on and QEMU connects to. */
  socket: string;
  /** The directory exported (the sandbox's shared/). */
  source: string;
  cache: VirtiofsCache;
  /** virtio_fs_extra_args, appended last so they can override ours. */
  extraArgs?: string[];
}

/** Whether `path` is an executable file (the configured daemon, before we rely on it). */
export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The shared filesystem a sandbox uses: the configured one, except that virtio-fs without an executable
 * virtiofsd falls back to 9p with a warning (as Kata does). "none" is refused before a sandbox starts.
 */
export function sharedFsFor(q: QemuConfig, warn: (m: string) => void): "virtio-fs" | "virtio-9p" {
  if (q.sharedFs !== "virtio-fs") return "virtio-9p";
  if (isExecutable(q.virtioFsDaemon)) return "virtio-fs";
  warn(
    `warning: shared_fs = "virtio-fs" but virtio_fs_daemon ${q.virtioFsDaemon} is not executable: using virtio-9p`,
  );
  return "virtio-9p";
}

/** Which daemon a binary is: the C one says "using FUSE kernel interface" in its --version. */
export function virtiofsdFlavour(daemon: string): VirtiofsdFlavour {
  const r = spawnSync(daemon, ["--version"], { encoding: "utf8", timeout: 5000 });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  return /FUSE kernel interface|QEMU Project/.test(out) ? "c" : "rust";
}

/** argv (argv[0] = the daemon) for one sandbox's virtiofsd. */
export function virtiofsdArgs(l: VirtiofsdLaunch): string[] {
  const a = [l.daemon, `--socket-path=${l.socket}`];
  if (l.flavour === "c") {
    // The C daemon spells "never" as "none".
    const cache = l.cache === "never" ? "none" : l.cache;
    a.push("-o", `source=${l.source}`, "-o", `cache=${cache}`);
    // The share holds bind mounts of several filesystems (rootfs, volumes): announce each as a
    // submount so the guest gives each its own st_dev and inode numbers never collide.
    a.push("-o", "announce_submounts");
  } else {
    const cache = l.cache === "none" ? "never" : l.cache;
    a.push(`--shared-dir=${l.source}`, `--cache=${cache}`, "--announce-submounts");
  }
  // Both try to raise RLIMIT_NOFILE to ~1M by default, which cannot work without CAP_SYS_RESOURCE
  // (containers, this CI machine; the C daemon then keeps its limit silently): ask for what we gave.
  a.push("--rlimit-nofile=0");
  a.push(...(l.extraArgs ?? []));
  return a;
}

/**
 * The C daemon's lock file (it refuses a second daemon on the same socket): /run/virtiofsd/ + the
 * socket path with "/" turned into ".", + ".pid". It stays behind when the daemon is killed.
 */
export function virtiofsdLockFile(socket: string): string {
  return `/run/virtiofsd/${socket.replace(/\//g, ".")}.pid`;
}

export interface Virtiofsd {
  readonly pid: number;
  readonly exited: boolean;
  /** Waits up to timeoutMs for the daemon to leave (it does when QEMU disconnects), then kills it. */
  stop(timeoutMs?: number): Promise<void>;
  kill(): void;
  /** Resolves when the daemon has exited and its socket and lock file are removed. */
  waitExit(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function lastLine(file: string): string {
  try {
    return readFileSync(file, "utf8").trim().split("\n").pop() ?? "";
  } catch {
    return "";
  }
}

/** Starts virtiofsd and returns once its socket exists (QEMU may connect then). */
export async function startVirtiofsd(
  l: VirtiofsdLaunch,
  o: { logFile: string; readyTimeoutMs?: number },
): Promise<Virtiofsd> {
  if (!existsSync(l.source)) throw new Error(`virtiofsd: shared directory ${l.source} does not exist`);
  const lock = virtiofsdLockFile(l.socket);
  // Stale files of a daemon that was killed would make this one refuse to start.
  rmSync(l.socket, { force: true });
  rmSync(lock, { force: true });
  const child = spawnDaemon(virtiofsdArgs(l), o.logFile);
  let exited = false;
  let spawnError: Error | undefined;
  const exit = new Promise<void>((resolve) => {
    const done = () => {
      exited = true;
      rmSync(l.socket, { force: true });
      rmSync(lock, { force: true });
      resolve();
    };
    child.once("error", (err) => {
      spawnError = err;
      done();
    });
    child.once("exit", done);
  });
  const timeout = o.readyTimeoutMs ?? 5000;
  const deadline = Date.now() + timeout;
  while (!existsSync(l.socket)) {
    if (exited) {
      if (spawnError) throw new Error(`virtiofsd: cannot run ${l.daemon}: ${spawnError.message}`);
      throw new Error(
        `virtiofsd: ${l.daemon} exited during start: ${lastLine(o.logFile) || `exit code ${child.exitCode}`}`,
      );
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await exit;
      throw new Error(`virtiofsd: no socket ${l.socket} within ${timeout} ms`);
    }
    await sleep(5);
  }
  const pid = child.pid ?? 0;
  const kill = () => {
    if (!exited) child.kill("SIGKILL");
  };
  return {
    pid,
    get exited() {
      return exited;
    },
    kill,
    waitExit: () => exit,
    async stop(timeoutMs = 2000) {
      if (exited) return exit;
      const t = setTimeout(kill, timeoutMs);
      try {
        await exit;
      } finally {
        clearTimeout(t);
      }
    },
  };
}
