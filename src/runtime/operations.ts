// The cgroup-backed container operations behind `ps`, `pause`, `resume`, `update` and `events`, with
// runc's rules and error messages. The container's cgroup manager is rebuilt from what create saved in
// the state record (record.engine.cgroup); every mutation holds the container's lock.
import { type CgroupStats, oomEvent, statsEvent } from "../engine/cgroups";
import { KataError } from "../errors";
import type { LinuxResources } from "../oci/spec";
import { backendOf } from "./lifecycle";
import { containerStatus } from "./status";
import { type ContainerRecord, StateStore } from "./store";

export { filterPsOutput, psTable } from "./host";

export interface OpsContext {
  root: string;
  warn?: (msg: string) => void;
}

/** Host pids of the container's processes (what `ps --format json` prints; stand-ins in VM mode). */
export function containerPids(ctx: OpsContext, id: string): number[] {
  const record = new StateStore(ctx.root).read(id);
  return backendOf(record).pids(ctx, record);
}

/** `ps` table: the host's ps rows of the container's processes; in VM mode the guest's ps rows. */
export function containerPsTable(ctx: OpsContext, id: string, psArgs: readonly string[]): string {
  const record = new StateStore(ctx.root).read(id);
  return backendOf(record).psTable(ctx, record, psArgs);
}

/** runc's pause: only a created or running container; freezes it, then records it. */
export async function pauseContainer(ctx: OpsContext, id: string): Promise<void> {
  const store = new StateStore(ctx.root);
  await store.withLock(id, async () => {
    const record = store.read(id);
    const status = containerStatus(store, record);
    if (status !== "running" && status !== "created") throw new KataError("container not running");
    await backendOf(record).freeze(ctx, record, true);
    record.paused = true;
    store.write(record);
  });
}

export async function resumeContainer(ctx: OpsContext, id: string): Promise<void> {
  const store = new StateStore(ctx.root);
  await store.withLock(id, async () => {
    const record = store.read(id);
    if (containerStatus(store, record) !== "paused") throw new KataError("container not paused");
    await backendOf(record).freeze(ctx, record, false);
    record.paused = false;
    store.write(record);
  });
}

// ---- update ----

type Obj = Record<string, unknown>;

function isZero(v: unknown): boolean {
  return v === undefined || v === null || v === 0 || v === "";
}

/**
 * Merges an update into the stored resources the way runc's `update` does for the fields engines send:
 * a zero (or empty string) in the update means "leave unchanged". Nested objects merge field by field;
 * lists (throttle devices, hugepage limits) and maps (unified) replace what was there when non-empty.
 */
export function mergeResources(base: LinuxResources | undefined, delta: LinuxResources): LinuxResources {
  const merge = (a: Obj | undefined, b: Obj): Obj => {
    const out: Obj = { ...(a ?? {}) };
    for (const [k, v] of Object.entries(b)) {
      if (Array.isArray(v)) {
        if (v.length) out[k] = v;
      } else if (v && typeof v === "object") {
        if (k === "unified") {
          if (Object.keys(v).length) out[k] = { ...((a?.[k] as Obj) ?? {}), ...(v as Obj) };
        } else out[k] = merge(a?.[k] as Obj | undefined, v as Obj);
      } else if (typeof v === "boolean") {
        out[k] = v;
      } else if (!isZero(v)) out[k] = v;
    }
    return out;
  };
  return merge(base as Obj | undefined, delta as Obj) as LinuxResources;
}

/** Removes the zeros (nothing to write for them): what the cgroup manager is asked to change. */
function nonZero(r: LinuxResources): LinuxResources {
  return mergeResources(undefined, r);
}

/** The JSON an engine sends with `update --resources` (an OCI LinuxResources object). */
export function parseResourcesJson(text: string): LinuxResources {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new Error(`invalid resources JSON: ${(err as Error).message}`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v))
    throw new Error("invalid resources JSON: expected an object");
  return v as LinuxResources;
}

/** docker/runc size strings: "64m", "1g", "512k", "1024", "-1" (binary units, as runc's RAMInBytes). */
export function parseBytes(text: string): number {
  const m = /^\s*(-1|\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?\s*$/i.exec(text);
  if (!m) throw new Error(`invalid size: ${JSON.stringify(text)}`);
  if (m[1] === "-1") return -1;
  const mult = 1024 ** "bkmgtp".indexOf((m[2] || "b").toLowerCase());
  return Math.round(Number(m[1]) * mult);
}

export interface UpdateFlags {
  memory?: string;
  memoryReservation?: string;
  memorySwap?: string;
  kernelMemory?: string;
  kernelMemoryTcp?: string;
  cpuShares?: string;
  cpuQuota?: string;
  cpuPeriod?: string;
  cpuRtPeriod?: string;
  cpuRtRuntime?: string;
  cpusetCpus?: string;
  cpusetMems?: string;
  pidsLimit?: string;
  blkioWeight?: string;
}

function intFlag(name: string, v: string): number {
  if (!/^-?\d+$/.test(v.trim())) throw new Error(`invalid value for --${name}: ${JSON.stringify(v)}`);
  return Number(v);
}

/** runc update's individual flags as a LinuxResources delta (absent flags stay absent). */
export function resourcesFromFlags(f: UpdateFlags): LinuxResources {
  const r: LinuxResources = {};
  const memory: NonNullable<LinuxResources["memory"]> = {};
  if (f.memory !== undefined) memory.limit = parseBytes(f.memory);
  if (f.memoryReservation !== undefined) memory.reservation = parseBytes(f.memoryReservation);
  if (f.memorySwap !== undefined) memory.swap = parseBytes(f.memorySwap);
  if (f.kernelMemory !== undefined) memory.kernel = parseBytes(f.kernelMemory);
  if (f.kernelMemoryTcp !== undefined) memory.kernelTCP = parseBytes(f.kernelMemoryTcp);
  if (Object.keys(memory).length) r.memory = memory;
  const cpu: NonNullable<LinuxResources["cpu"]> = {};
  if (f.cpuShares !== undefined) cpu.shares = intFlag("cpu-share", f.cpuShares);
  if (f.cpuQuota !== undefined) cpu.quota = intFlag("cpu-quota", f.cpuQuota);
  if (f.cpuPeriod !== undefined) cpu.period = intFlag("cpu-period", f.cpuPeriod);
  if (f.cpuRtPeriod !== undefined) cpu.realtimePeriod = intFlag("cpu-rt-period", f.cpuRtPeriod);
  if (f.cpuRtRuntime !== undefined) cpu.realtimeRuntime = intFlag("cpu-rt-runtime", f.cpuRtRuntime);
  if (f.cpusetCpus !== undefined) cpu.cpus = f.cpusetCpus;
  if (f.cpusetMems !== undefined) cpu.mems = f.cpusetMems;
  if (Object.keys(cpu).length) r.cpu = cpu;
  if (f.pidsLimit !== undefined) r.pids = { limit: intFlag("pids-limit", f.pidsLimit) };
  if (f.blkioWeight !== undefined) r.blockIO = { weight: intFlag("blkio-weight", f.blkioWeight) };
  return r;
}

/**
 * Applies an update to a live container: the merged resources go to the cgroup (device rules left
 * alone, as runc's update does), then into the stored config so later commands see them.
 * Returns the merged resources.
 */
export async function updateContainer(
  ctx: OpsContext,
  id: string,
  delta: LinuxResources,
): Promise<LinuxResources> {
  const store = new StateStore(ctx.root);
  return store.withLock(id, async () => {
    const record = store.read(id);
    if (containerStatus(store, record) === "stopped") throw new Error("container not running");
    const merged = mergeResources(record.config.linux?.resources, delta);
    const { devices: _devices, ...toWrite } = nonZero(merged);
    await backendOf(record).update(ctx, record, toWrite);
    record.config.linux = { ...(record.config.linux ?? {}), resources: merged };
    store.write(record);
    return merged;
  });
}

// ---- stats and events ----

function liveRecord(ctx: OpsContext, id: string): ContainerRecord {
  const store = new StateStore(ctx.root);
  const record = store.read(id);
  if (containerStatus(store, record) === "stopped")
    throw new KataError(`container with id ${id} is not running`);
  return record;
}

/** A live container's cgroup stats, for a long-lived caller (the shim): VM mode asks without blocking. */
export function containerStats(ctx: OpsContext, id: string): Promise<CgroupStats> {
  const record = liveRecord(ctx, id);
  return backendOf(record).stats(ctx, record);
}

/** The same for the CLI's synchronous printers. */
export function containerStatsSync(ctx: OpsContext, id: string): CgroupStats {
  const record = liveRecord(ctx, id);
  return backendOf(record).statsSync(ctx, record);
}

/** OOM kills so far in a live container (undefined when its backend cannot see them). */
export function containerOomKills(ctx: OpsContext, id: string): Promise<number | undefined> {
  const record = new StateStore(ctx.root).read(id);
  return backendOf(record).oomKills(ctx, record);
}

/** Go duration strings as runc's --interval takes them: "5s", "500ms", "1m30s", "2h". */
export function parseDuration(text: string): number {
  const units: Record<string, number> = {
    ns: 1e-6,
    us: 1e-3,
    µs: 1e-3,
    ms: 1,
    s: 1000,
    m: 60_000,
    h: 3_600_000,
  };
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * units[m[2]!]!;
    pos = re.lastIndex;
  }
  if (!text || pos !== text.length) throw new Error(`invalid duration: ${JSON.stringify(text)}`);
  if (total <= 0) throw new Error(`duration must be positive: ${JSON.stringify(text)}`);
  return total;
}

export interface EventsOptions {
  /** Milliseconds between stats events. */
  intervalMs: number;
  /** Gets each JSON line (no trailing newline). */
  write: (line: string) => void;
  /** Stops the stream early (tests, signals). */
  signal?: AbortSignal;
}

/**
 * runc's `events`: a stats event every interval and an oom event whenever the kernel OOM-kills inside
 * the container (where the backend sees them), until the container stops (or its cgroup disappears).
 */
export async function streamEvents(ctx: OpsContext, id: string, o: EventsOptions): Promise<void> {
  const store = new StateStore(ctx.root);
  const record = store.read(id);
  if (containerStatus(store, record) === "stopped")
    throw new KataError(`container with id ${id} is not running`);
  const backend = backendOf(record);
  let ooms = await backend.oomKills(ctx, record);
  let nextStats = Date.now() + o.intervalMs;
  const tick = Math.min(o.intervalMs, 250);
  for (;;) {
    if (o.signal?.aborted) return;
    await new Promise((r) => setTimeout(r, Math.max(1, Math.min(tick, nextStats - Date.now()))));
    if (o.signal?.aborted) return;
    let current: ContainerRecord;
    try {
      current = store.read(id);
    } catch {
      return; // deleted
    }
    if (containerStatus(store, current) === "stopped") return;
    try {
      const n = await backend.oomKills(ctx, record);
      if (n !== undefined && ooms !== undefined && n > ooms) o.write(oomEvent(id));
      ooms = n;
      if (Date.now() >= nextStats) {
        nextStats += o.intervalMs;
        o.write(statsEvent(id, await backend.stats(ctx, record)));
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return; // cgroup removed
      ctx.warn?.(`events: ${(err as Error).message}`);
    }
  }
}

/** `events --stats`: the one stats event line of a running container. */
export function containerStatsEvent(ctx: OpsContext, id: string): string {
  return statsEvent(id, containerStatsSync(ctx, id));
}
