// The VM cache (Kata's `vm_cache_number`): a long-running server (`kata-ts factory init` with
// vm_cache_number > 0, src/sandbox/cacheserver.ts) keeps N template clones resumed, each held by an idle
// sandbox supervisor (a "slot", src/sandbox/slot.ts) whose agent already answered. `create` asks the
// server for one and hands it its sandbox; the server starts another in the background.
//
// This module is what both sides share: the line protocol on vm_cache_endpoint, the slots' directories
// and the cleanup of what a dead server's slots left. The server answers one JSON line per request line:
//   {"op":"take","key":K}  -> {"ok":true,"socket":S,"pid":P,"start":T} | {"ok":false,"why":W}
//   {"op":"status"}        -> {"ok":true,"status":CacheStatus}
//   {"op":"stop"}          -> {"ok":true}, then the server stops its idle slots and exits
// A taken slot is then told its sandbox on its own socket S (src/sandbox/slot.ts).
import { readdirSync, readFileSync, rmdirSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import type { RuntimeConfig } from "../config/config";
import { processAlive } from "../sys/proc";

export interface CacheSlotInfo {
  dir: string;
  pid: number;
  state: "booting" | "idle" | "taken";
}

export interface CacheStatus {
  /** The template key the server's clones are made from. */
  key: string;
  number: number;
  idle: number;
  booting: number;
  /** Slots taken by a `create` since the server started. */
  served: number;
  slots: CacheSlotInfo[];
}

export type CacheRequest = { op: "take"; key: string } | { op: "status" } | { op: "stop" };
export type TakeReply = { ok: true; socket: string; pid: number; start: number } | { ok: false; why: string };

/** What a `create` sends the slot it took, on the slot's socket. */
export interface SlotAssignment {
  root: string;
  sandboxId: string;
  netns?: string;
  /** The create reads a "joined" line (src/sandbox/cgroup.ts): a create of an older kata-ts would not. */
  joinedLine?: boolean;
}

/** Where the server's slots live: one short directory each (their sockets must fit in sun_path). */
export function cacheRoot(config: RuntimeConfig): string {
  return join(config.factory.templatePath, "cache");
}

/** A slot's files: its supervisor's pid ("PID START"), and once taken, the sandbox directory it serves. */
export const SLOT_PID = "slot.pid";
export const SLOT_SOCKET = "slot.sock";
export const SLOT_SANDBOX = "sandbox";
/** In a sandbox directory: the slot directory its VM runs in (removed with the sandbox). */
export const SANDBOX_SLOT_RECORD = "vm-slot";

const SLOT_NAME = /^[0-9a-f]{16}$/;

/** The slot directory a sandbox's record names, if it is one of ours (never an arbitrary path). */
export function slotDirOf(sandboxDir: string): string | undefined {
  try {
    const dir = readFileSync(join(sandboxDir, SANDBOX_SLOT_RECORD), "utf8").trim();
    const name = dir.split("/").pop() ?? "";
    return SLOT_NAME.test(name) && dir.split("/").slice(-2)[0] === "cache" ? dir : undefined;
  } catch {
    return undefined;
  }
}

/** One request on the cache endpoint and its answer (rejects when nobody serves it). */
export function cacheRequest<T>(endpoint: string, req: CacheRequest, timeoutMs = 5000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const sock = connect(endpoint);
    let buf = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding("utf8");
    sock.once("connect", () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on("data", (d: string) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(timer);
      sock.destroy();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as T);
      } catch {
        reject(new Error("an answer that is not JSON"));
      }
    });
    sock.once("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(e.code ?? e.message));
    });
    sock.once("end", () => {
      clearTimeout(timer);
      if (!buf.includes("\n")) reject(new Error("the server hung up"));
    });
  });
}

/** The server's status, or undefined when nobody serves the endpoint. */
export async function cacheStatus(endpoint: string, timeoutMs = 2000): Promise<CacheStatus | undefined> {
  try {
    const r = await cacheRequest<{ ok: boolean; status?: CacheStatus }>(
      endpoint,
      { op: "status" },
      timeoutMs,
    );
    return r.ok ? r.status : undefined;
  } catch {
    return undefined;
  }
}

function readPid(file: string): { pid: number; start: number } | undefined {
  try {
    const [pid, start] = readFileSync(file, "utf8").trim().split(" ").map(Number);
    return pid > 0 ? { pid, start } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What slots left when their server died or was stopped: an idle slot still running is stopped
 * (SIGTERM: it stops its clone and removes its directory), a dead one's directory is removed. A taken
 * slot belongs to a sandbox (its directory goes with that sandbox's `delete`) and is left alone.
 * `unmount` removes the mounts below a directory (the slot's share is a bind mount of itself).
 * Returns the slots it stopped or removed.
 */
export async function cleanCacheLeftovers(
  config: RuntimeConfig,
  unmount: (dir: string) => void,
): Promise<number> {
  const root = cacheRoot(config);
  let names: string[];
  try {
    names = readdirSync(root).filter((n) => SLOT_NAME.test(n));
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    const dir = join(root, name);
    const owner = readPid(join(dir, SLOT_PID));
    const live = owner !== undefined && processAlive(owner.pid, owner.start);
    let taken = false;
    try {
      taken = readFileSync(join(dir, SLOT_SANDBOX), "utf8").length > 0;
    } catch {
      // not taken
    }
    if (live && taken) continue;
    if (live && owner) {
      try {
        process.kill(owner.pid, "SIGTERM");
      } catch {
        // gone meanwhile
      }
      const end = Date.now() + 10_000;
      while (processAlive(owner.pid, owner.start) && Date.now() < end)
        await new Promise((r) => setTimeout(r, 50));
      if (processAlive(owner.pid, owner.start)) process.kill(owner.pid, "SIGKILL");
    }
    if (!live && taken) continue; // its sandbox's delete removes it
    unmount(dir);
    rmSync(dir, { recursive: true, force: true });
    n++;
  }
  try {
    rmdirSync(root);
  } catch {
    // a slot still serves a sandbox: the directory stays
  }
  return n;
}
