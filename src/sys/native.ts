// The only module that loads kata-ts's native addon (native/build/kata_native.node, built by
// `make -C native` with plain cc against Node-API). It is loaded lazily, on the first call that needs it,
// so commands that never touch fds or locks do not pay for it and still work where it is not built.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { firstLine } from "../errors";

export type FlockOp = "sh" | "ex" | "un";

export interface Winsize {
  rows: number;
  cols: number;
}

export interface Pty {
  /** The side the runtime keeps (reads the workload's output, writes its input). O_CLOEXEC. */
  master: number;
  /** The side that becomes the workload's controlling terminal. O_CLOEXEC. */
  slave: number;
  /** The slave's path, e.g. /dev/pts/3. */
  name: string;
}

/**
 * What kata_native.node exports. Every call is synchronous; failures throw an Error with the message
 * "<call>: <strerror>", `code` ("EAGAIN"), `errno` (negative) and `syscall`. Every fd it returns is O_CLOEXEC.
 */
export interface NativeAddon {
  /** true when the lock was taken (or released); false only when nonBlocking and someone else holds it. */
  flock(fd: number, op: FlockOp, nonBlocking: boolean): boolean;
  /** Sends data (at least 1 byte) with fds as SCM_RIGHTS on a unix socket; returns the bytes sent. */
  sendFds(socketFd: number, fds: number[], data: Buffer): number;
  /** One recvmsg: data is empty at end of stream; more fds than maxFds throws EMSGSIZE. */
  recvFds(socketFd: number, maxFds: number, maxBytes: number): { data: Buffer; fds: number[] };
  openpty(): Pty;
  setWinsize(fd: number, rows: number, cols: number): void;
  getWinsize(fd: number): Winsize;
  /** prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to this process. */
  setChildSubreaper(): void;
  /** AF_UNIX SOCK_STREAM pair, blocking, O_CLOEXEC. */
  socketpair(): [number, number];
  pipe(): [number, number];
  closeFd(fd: number): void;
  /** fcntl(F_DUPFD_CLOEXEC, 3): never lands on stdio. */
  dupFd(fd: number): number;
  setCloexec(fd: number, on: boolean): void;
  /**
   * Loads insns (8-byte eBPF instructions) as a BPF_PROG_TYPE_CGROUP_DEVICE program and attaches it to the
   * cgroup2 directory open as cgroupDirFd (BPF_F_ALLOW_MULTI), detaching the device programs attached
   * there before. id: the new program's id; replaced: how many programs it took the place of.
   */
  attachDeviceFilter(cgroupDirFd: number, insns: Buffer): { id: number; replaced: number };
  /** Ids of the device programs attached directly to that cgroup (BPF_PROG_QUERY). */
  deviceFilterIds(cgroupDirFd: number): number[];
  /** false once the kernel has freed the program with that id. */
  bpfProgramExists(id: number): boolean;
  /** The CLONE_NEW* flag of the namespace file at path (ioctl NS_GET_NSTYPE); 0: not a namespace file. */
  nsType(path: string): number;
  /** Credits bytes to the kernel's entropy pool (RNDADDENTROPY) and reseeds the CRNG (RNDRESEEDCRNG). */
  reseedRandom(bytes: Buffer): void;
  /** Sets CLOCK_REALTIME (ms since the epoch). */
  setRealtime(ms: number): void;
  /** mount(2); an empty fstype or data is NULL. */
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  umount2(target: string, flags: number): void;
  /** statvfs(3)'s f_flag for path. */
  statvfsFlags(path: string): number;
  /**
   * A detached thread writes this process's pid to fd (it takes the fd and closes it) every intervalMs,
   * until stopPriming() or a failed write; a second start stops the first (src/engine/cgroups/prime.ts).
   */
  startPriming(fd: number, intervalMs: number): void;
  stopPriming(): void;
}

export const ADDON_FILE = "kata_native.node";

/** An Error thrown by the addon: the shape of Node's own system errors. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** true when err is an addon (or Node) system error with the given code, e.g. isErrno(e, "EAGAIN"). */
export function isErrno(err: unknown, code: string): err is NativeError {
  return err instanceof Error && (err as Partial<NativeError>).code === code;
}

/**
 * Directories that may hold native build outputs, in order: $KATA_TS_NATIVE_DIR; next to the bundle
 * (dist/kata-ts.cjs → ../native/build); next to the sources (src/sys/native.ts → ../../native/build), for
 * tests run through tsx.
 */
export function nativeDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs: string[] = [];
  if (env.KATA_TS_NATIVE_DIR) dirs.push(env.KATA_TS_NATIVE_DIR);
  dirs.push(join(__dirname, "..", "native", "build"), join(__dirname, "..", "..", "native", "build"));
  return dirs;
}

/** The first existing path of a native build output (the addon, the helper, the KVM probe), if any. */
export function findNativeFile(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of nativeDirs(env)) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

let loaded: NativeAddon | undefined;

/** The addon, loaded on first use. Throws a one-line error when it is not built. */
export function native(): NativeAddon {
  if (loaded) return loaded;
  const file = findNativeFile(ADDON_FILE);
  if (!file) throw new Error("native addon not built: run `make -C native`");
  // process.dlopen instead of require: the bundler must not try to resolve or inline a .node file.
  const mod: { exports: unknown } = { exports: {} };
  try {
    process.dlopen(mod, file);
  } catch (err) {
    const why = firstLine(err instanceof Error ? err.message : String(err));
    throw new Error(`native addon ${file} failed to load (rebuild with \`make -C native\`): ${why}`);
  }
  loaded = mod.exports as NativeAddon;
  return loaded;
}

// Thin typed wrappers: callers import these instead of reaching for the addon object.

export function flock(fd: number, op: FlockOp, nonBlocking = false): boolean {
  return native().flock(fd, op, nonBlocking);
}

export function sendFds(socketFd: number, fds: number[], data: Buffer = Buffer.from([0])): number {
  return native().sendFds(socketFd, fds, data);
}

export function recvFds(socketFd: number, maxFds: number, maxBytes = 4096): { data: Buffer; fds: number[] } {
  return native().recvFds(socketFd, maxFds, maxBytes);
}

export function openpty(): Pty {
  return native().openpty();
}

export function setWinsize(fd: number, rows: number, cols: number): void {
  native().setWinsize(fd, rows, cols);
}

export function getWinsize(fd: number): Winsize {
  return native().getWinsize(fd);
}

export function setChildSubreaper(): void {
  native().setChildSubreaper();
}

export function socketpair(): [number, number] {
  return native().socketpair();
}

/** A real pipe: [readFd, writeFd], both O_CLOEXEC. */
export function pipe(): [number, number] {
  return native().pipe();
}

export function closeFd(fd: number): void {
  native().closeFd(fd);
}

export function dupFd(fd: number): number {
  return native().dupFd(fd);
}

export function setCloexec(fd: number, on: boolean): void {
  native().setCloexec(fd, on);
}

export function attachDeviceFilter(cgroupDirFd: number, insns: Buffer): { id: number; replaced: number } {
  return native().attachDeviceFilter(cgroupDirFd, insns);
}

export function deviceFilterIds(cgroupDirFd: number): number[] {
  return native().deviceFilterIds(cgroupDirFd);
}

export function bpfProgramExists(id: number): boolean {
  return native().bpfProgramExists(id);
}

export function nsType(path: string): number {
  return native().nsType(path);
}

export function reseedRandom(bytes: Buffer): void {
  native().reseedRandom(bytes);
}

export function setRealtime(ms: number): void {
  native().setRealtime(ms);
}

/** mount(2) in this process's mount namespace (the guest agent's mounts; the host's go through the helper). */
export function mount(source: string, target: string, fstype: string, flags: number, data: string): void {
  native().mount(source, target, fstype, flags, data);
}

/** MNT_DETACH for umount2: the mount leaves the tree now, the kernel frees it when its last user goes. */
export const MNT_DETACH = 2;

export function umount2(target: string, flags = 0): void {
  native().umount2(target, flags);
}

/**
 * Unmounts target; when it is busy (a process still holds it), detaches it: the kernel finishes once
 * the last user goes. False when neither worked (not mounted, or still refused).
 */
export function unmountOrDetach(target: string): boolean {
  try {
    umount2(target);
    return true;
  } catch {
    try {
      umount2(target, MNT_DETACH);
      return true;
    } catch {
      return false;
    }
  }
}

const ST_RELATIME = 0x1000;
const MS_RELATIME = 1 << 21;

/**
 * The per-mount flags of the mount holding path, as MS_* flags for a remount. statvfs f_flag's
 * ST_RDONLY, ST_NOSUID, ST_NODEV, ST_NOEXEC, ST_SYNCHRONOUS, ST_MANDLOCK, ST_NOATIME and ST_NODIRATIME
 * have the values of the MS_* flags of the same names; ST_RELATIME (0x1000) does not: it is MS_BIND's
 * value, and MS_RELATIME is 1 << 21.
 */
export function mountFlagsOf(path: string): number {
  const st = native().statvfsFlags(path);
  return (st & 0xc5f) | (st & ST_RELATIME ? MS_RELATIME : 0);
}

/** See NativeAddon.startPriming: the thread owns fd from here on. */
export function startPriming(fd: number, intervalMs: number): void {
  native().startPriming(fd, intervalMs);
}

export function stopPriming(): void {
  native().stopPriming();
}
