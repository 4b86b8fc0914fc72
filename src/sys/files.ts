// Small file primitives shared by every layer.
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";

/** Temp file in the same directory + fsync + rename: a reader sees the old content or the new, never half. */
export function writeFileAtomic(path: string, data: string, mode = 0o600): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w", mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
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
