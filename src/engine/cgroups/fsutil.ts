// Small synchronous file helpers for cgroupfs. Every failure becomes a one-line Error that names the file
// and the value, because "EINVAL" alone never tells a user which limit the kernel refused.

import {
  closeSync,
  constants,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statfsSync,
  statSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { KataError } from "../../errors";

export class CgroupWriteError extends KataError {
  constructor(
    readonly file: string,
    readonly value: string,
    readonly code: string | undefined,
    cause: string,
  ) {
    super(`failed to write ${JSON.stringify(value)} to ${file}: ${cause}`);
    this.name = "CgroupWriteError";
  }
}

function errnoText(err: unknown): { code?: string; text: string } {
  const e = err as NodeJS.ErrnoException;
  const text = (e?.message ?? String(err)).replace(/,\s*(write|open|read)\s+'[^']*'$/, "");
  return { code: e?.code, text };
}

type WriteObserver = (path: string, value: string) => void;
let observer: WriteObserver | undefined;

/**
 * Registers a function that sees every control-file write, in order (debug logging; tests use it to
 * check write ordering that the final file contents cannot show). Returns the previous observer.
 */
export function observeCgroupWrites(fn: WriteObserver | undefined): WriteObserver | undefined {
  const prev = observer;
  observer = fn;
  return prev;
}

/** Writes one value the way the kernel wants it: a single write(2) (cgroupfs files are not seekable). */
export function writeValue(dir: string, file: string, value: string): void {
  const path = join(dir, file);
  observer?.(path, value);
  try {
    // No O_CREAT: a missing control file is an error (the controller or the feature is absent), never a
    // new regular file. O_TRUNC is harmless on cgroupfs and keeps plain files (fake trees) exact.
    const fd = openSync(path, constants.O_WRONLY | constants.O_TRUNC);
    try {
      writeSync(fd, value);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    const { code, text } = errnoText(err);
    throw new CgroupWriteError(path, value, code, text);
  }
}

/** The content of a control file without the trailing newline; undefined when it does not exist. */
export function readValue(dir: string, file: string): string | undefined {
  try {
    return readFileSync(join(dir, file), "utf8").replace(/\n$/, "");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

export function fileExists(dir: string, file: string): boolean {
  return existsSync(join(dir, file));
}

/**
 * The names of dir's sub-directories (its sub-cgroups), from one readdir: the entry types come with it,
 * where a stat per entry cost ~4 ms per container on a v1 host (10 hierarchies of ~25 control files).
 */
export function subdirs(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
}

export function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Parses a counter; values beyond 2^53 (e.g. v1's "unlimited" 9223372036854771712) stay exact as bigint. */
export function parseU64(text: string | undefined): number | bigint {
  if (text === undefined) return 0;
  const t = text.trim();
  if (t === "" || t === "max") return 0;
  if (!/^-?\d+$/.test(t)) return 0;
  const n = Number(t);
  return Number.isSafeInteger(n) ? n : BigInt(t);
}

/** "key value" lines (memory.stat, cpu.stat, cpuacct.stat, memory.events, ...). */
export function parseKeyValues(text: string | undefined): Record<string, number | bigint> {
  const out: Record<string, number | bigint> = {};
  for (const line of (text ?? "").split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) out[k] = parseU64(v);
  }
  return out;
}

/** Blocks the thread: cgroup operations are synchronous like the rest of the CLI's short-lived work. */
export function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const CGROUP_SUPER_MAGIC = 0x27e0eb;
const CGROUP2_SUPER_MAGIC = 0x63677270;

export function onCgroupFs(path: string): boolean {
  try {
    const t = statfsSync(path).type;
    return t === CGROUP_SUPER_MAGIC || t === CGROUP2_SUPER_MAGIC;
  } catch {
    return false;
  }
}

/**
 * Removes a cgroup directory and every sub-cgroup below it (the container may have made its own), deepest
 * first. Only rmdir(2) works on cgroupfs; EBUSY means tasks are still exiting, so retry with backoff
 * (runc does the same). A directory that is already gone is success.
 */
export function removeCgroupDir(path: string, attempts = 8): void {
  let children: string[];
  try {
    children = subdirs(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  for (const e of children) removeCgroupDir(join(path, e), attempts);
  let delay = 10;
  for (let i = 0; ; i++) {
    try {
      rmdirSync(path);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      // Not a cgroup filesystem (a fake tree in unit tests, with plain control files): remove normally.
      if (code === "ENOTEMPTY" && !onCgroupFs(path)) {
        rmSync(path, { recursive: true, force: true });
        return;
      }
      if ((code === "EBUSY" || code === "ENOTEMPTY") && i < attempts) {
        sleepMs(delay);
        delay = Math.min(delay * 2, 500);
        continue;
      }
      throw new Error(`failed to remove cgroup ${path}: ${errnoText(err).text}`);
    }
  }
}
