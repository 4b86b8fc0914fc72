// The guest asset cache (/var/cache/kata-ts): content-addressed artifacts, published atomically so a
// reader sees a complete file or none, and built once per key.
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { GUEST_ASSET_DIR } from "../config/config";
import { sha256 } from "../sys/crypto";

/** First 16 hex of the sha256 over the parts, each length-prefixed so ("ab","c") ≠ ("a","bc"). */
export function contentKey(...parts: (string | Buffer)[]): string {
  const h = sha256();
  for (const p of parts) {
    const b = typeof p === "string" ? Buffer.from(p) : p;
    h.update(`${b.length}:`);
    h.update(b);
  }
  return h.digest("hex").slice(0, 16);
}

/** <cacheDir>/<kind>/<key>/<file>. */
export function cachePath(kind: string, key: string, file: string, cacheDir = GUEST_ASSET_DIR): string {
  return join(cacheDir, kind, key, file);
}

/** Writes via a temp file in the same directory and rename(2): atomic for readers. */
export function publishFile(path: string, data: Buffer | string, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp.${process.pid}`;
  try {
    writeFileSync(tmp, data, { mode });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** The cached file at `path`, produced by `produce` when it does not exist yet. */
export async function ensureCached(path: string, produce: () => Buffer | Promise<Buffer>): Promise<string> {
  if (existsSync(path)) return path;
  publishFile(path, await produce());
  return path;
}
