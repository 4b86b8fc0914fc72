// Small file primitives shared by every layer.
import { closeSync, openSync, renameSync, rmSync, writeSync } from "node:fs";

/**
 * Temp file in the same directory + rename: a reader sees the old content or the new, never half. No
 * fsync, as runc's state writes: these files (state records, pid files) live in runtime directories
 * that a reboot empties anyway (tmpfs /run on a normal host), and an fsync per write cost each `create`
 * milliseconds on a disk-backed root.
 */
export function writeFileAtomic(path: string, data: string, mode = 0o600): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w", mode);
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    // e.g. --pid-file naming a directory: the caller gets the error, the host no stray temp file.
    rmSync(tmp, { force: true });
    throw err;
  }
}
