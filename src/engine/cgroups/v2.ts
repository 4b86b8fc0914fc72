// cgroup v2 manager: one directory in the unified hierarchy, runc's fs2 semantics (conversions
// included). Device rules become an eBPF program attached to the cgroup (BPF_CGROUP_DEVICE), since v2
// has no devices.allow file; see devicefilter.ts and docs/cgroups.md.

import { closeSync, constants, openSync } from "node:fs";
import { dirname, join } from "node:path";
import { firstLine } from "../../errors";
import { attachDeviceFilter } from "../../sys/native";
import { BaseManager, checkPageSize, hugePageSizes, int, type ManagerInit, rdmaLine } from "./common";
import { deviceFilterProgram } from "./devicefilter";
import { effectiveDeviceRules } from "./devices";
import {
  CgroupWriteError,
  fileExists,
  parseKeyValues,
  parseU64,
  readValue,
  sleepMs,
  writeValue,
} from "./fsutil";
import { UNIFIED } from "./paths";
import type { BlkioEntry, CgroupStats, LinuxResources, MemoryEntry, U64 } from "./types";

const MAX_U64 = 18446744073709551615n;

/** runc's ConvertCPUSharesToCgroupV2Value: shares [2, 262144] → weight [1, 10000]. */
export function sharesToWeight(shares: number): number {
  if (shares === 0) return 0;
  return 1 + Math.floor(((shares - 2) * 9999) / 262142);
}

/** runc's ConvertBlkIOToIOWeightValue: blkio weight [10, 1000] → io.weight [1, 10000]. */
export function blkioToIoWeight(weight: number): number {
  if (weight === 0) return 0;
  return 1 + Math.floor(((weight - 10) * 9999) / 990);
}

/** runc's ConvertMemorySwapToCgroupV2Value: OCI's memory+swap total → v2's swap-only memory.swap.max. */
export function swapToV2(swap: number, memory: number): number {
  if (memory === -1 && swap === 0) return -1;
  if (swap === -1 || swap === 0) return swap;
  if (memory === 0 || memory === -1) throw new Error("unable to set swap limit without memory limit");
  if (memory < 0) throw new Error(`invalid memory value: ${memory}`);
  if (swap < memory) throw new Error("memory+swap limit should be >= memory limit");
  return swap - memory;
}

/** 0 = leave alone (undefined), -1 = "max". */
function numToStr(v: number): string | undefined {
  if (v === 0) return undefined;
  if (v === -1) return "max";
  return String(v);
}

/**
 * Enables controllers for dir's cgroup by writing "+c" into cgroup.subtree_control of every ancestor
 * from the hierarchy root down to dir's parent (runc's CreateCgroupPath). All at once first; if the
 * kernel refuses the batch, one by one, ignoring failures: a controller that stays off is reported by
 * the write that needs it.
 */
export function enableControllers(dir: string, controllers?: string[]): void {
  const chain: string[] = [];
  for (let d = dirname(dir); ; d = dirname(d)) {
    if (readValue(d, "cgroup.subtree_control") === undefined) break;
    chain.unshift(d);
    if (dirname(d) === d) break;
  }
  if (!chain.length) return;
  const available = (readValue(chain[0]!, "cgroup.controllers") ?? "").split(/\s+/).filter(Boolean);
  const wanted = controllers ? available.filter((c) => controllers.includes(c)) : available;
  if (!wanted.length) return;
  for (const d of chain) {
    const enabled = (readValue(d, "cgroup.subtree_control") ?? "").split(/\s+/);
    const missing = wanted.filter((c) => !enabled.includes(c));
    if (!missing.length) continue;
    try {
      writeValue(d, "cgroup.subtree_control", missing.map((c) => `+${c}`).join(" "));
    } catch {
      for (const c of missing) {
        try {
          writeValue(d, "cgroup.subtree_control", `+${c}`);
        } catch {
          // see above
        }
      }
    }
  }
}

/** linux.resources.unified: written verbatim, with runc's checks and messages. */
export function setUnified(dir: string, unified: Record<string, string>): void {
  for (const [key, value] of Object.entries(unified)) {
    if (key.includes("/") || key === "" || key.startsWith("."))
      throw new Error(`unified resource "${key}" must be a file name (no '/')`);
    try {
      writeValue(dir, key, value);
    } catch (err) {
      if (err instanceof CgroupWriteError && err.code === "ENOENT") {
        const controller = key.split(".")[0]!;
        const available = (readValue(dir, "cgroup.controllers") ?? "").split(/\s+/);
        if (controller !== "cgroup" && !available.includes(controller))
          throw new Error(`unified resource "${key}" can't be set: controller "${controller}" not available`);
        throw new Error(`unified resource "${key}" can't be found`);
      }
      throw err;
    }
  }
}

export function v2HugetlbStats(dir: string): CgroupStats["hugetlb"] {
  const out: CgroupStats["hugetlb"] = {};
  for (const size of hugePageSizes()) {
    const current = readValue(dir, `hugetlb.${size}.current`);
    if (current === undefined) continue;
    const events = parseKeyValues(readValue(dir, `hugetlb.${size}.events`));
    out[size] = {
      usage: parseU64(current),
      max: maxValue(readValue(dir, `hugetlb.${size}.max`)),
      failcnt: events.max ?? 0,
    };
  }
  return out;
}

function maxValue(text: string | undefined): U64 {
  if (text?.trim() === "max") return MAX_U64;
  return parseU64(text);
}

/** Puts a device filter program on the cgroup directory dir, in place of the one there before. */
export type DeviceFilterLoader = (dir: string, program: Buffer) => void;

/** The real loader: the native addon's bpf(2) calls on an O_DIRECTORY fd of the cgroup. */
export function loadDeviceFilter(dir: string, program: Buffer): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    attachDeviceFilter(fd, program);
  } catch (err) {
    const why = firstLine(err instanceof Error ? err.message : String(err));
    throw new Error(`unable to load the cgroup v2 device filter (eBPF) into ${dir}: ${why}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export class V2Manager extends BaseManager {
  private readonly deviceFilter: DeviceFilterLoader;

  constructor(init: ManagerInit & { deviceFilter?: DeviceFilterLoader }) {
    super(init);
    this.deviceFilter = init.deviceFilter ?? loadDeviceFilter;
  }

  private get dir(): string {
    return this.paths[UNIFIED]!;
  }

  create(): void {
    this.mkdirTracked(this.dir);
    enableControllers(this.dir);
  }

  apply(pid: number): void {
    this.join(this.dir, pid);
  }

  set(r: LinuxResources, withDevices = true): void {
    this.resources = { ...this.resources, ...r };
    const dir = this.dir;
    // runc's fs2 order.
    this.setPids(dir, r);
    this.setMemory(dir, r);
    this.setIo(dir, r);
    this.setCpu(dir, r);
    if (withDevices) this.setDevices(r);
    this.setCpuset(dir, r);
    const huge = r.hugepageLimits ?? [];
    for (const l of huge) {
      checkPageSize(l.pageSize);
      this.write(dir, `hugetlb.${l.pageSize}.max`, String(l.limit), "hugetlb");
    }
    for (const [dev, l] of Object.entries(r.rdma ?? {}))
      this.write(dir, "rdma.max", rdmaLine(dev, l), "rdma");
    if (r.network && (r.network.classID || r.network.priorities?.length))
      this.warn("linux.resources.network (net_cls/net_prio) has no cgroup v2 equivalent and is ignored");
    if (r.unified) setUnified(dir, r.unified);
  }

  /** A write whose ENOENT means "controller not enabled here": say which controller. */
  private write(dir: string, file: string, value: string, controller: string): void {
    try {
      writeValue(dir, file, value);
    } catch (err) {
      if (err instanceof CgroupWriteError && err.code === "ENOENT")
        throw new Error(`${file} requested but the ${controller} controller is not enabled in ${dir}`);
      throw err;
    }
  }

  private setPids(dir: string, r: LinuxResources): void {
    const limit = r.pids?.limit;
    if (limit) this.write(dir, "pids.max", limit > 0 ? String(int("pids.limit", limit)) : "max", "pids");
  }

  private setMemory(dir: string, r: LinuxResources): void {
    const m = r.memory;
    if (!m) return;
    const limit = m.limit ? int("memory.limit", m.limit) : 0;
    const swapTotal = m.swap ? int("memory.swap", m.swap) : 0;
    const reservation = m.reservation ? int("memory.reservation", m.reservation) : 0;
    if (limit || swapTotal || reservation) {
      if (m.checkBeforeUpdate && limit > 0) {
        const usage = Number(parseU64(readValue(dir, "memory.current")));
        if (usage > limit)
          throw new Error(`rejecting memory limit ${limit} below the current usage ${usage}`);
      }
      const swap = swapToV2(swapTotal, limit);
      let swapStr = numToStr(swap);
      // memory == memory+swap: no swap at all.
      if (swapStr === undefined && swap === 0 && swapTotal > 0) swapStr = "0";
      if (swapStr !== undefined) {
        try {
          writeValue(dir, "memory.swap.max", swapStr);
        } catch (err) {
          // No swap accounting: "unlimited" and "none" are what the host gives anyway.
          const absent = err instanceof CgroupWriteError && err.code === "ENOENT";
          if (!(absent && (swapStr === "max" || swapStr === "0"))) throw err;
        }
      }
      const limitStr = numToStr(limit);
      if (limitStr) this.write(dir, "memory.max", limitStr, "memory");
      const low = numToStr(reservation);
      if (low) this.write(dir, "memory.low", low, "memory");
    }
    if (m.kernel) this.warn("linux.resources.memory.kernel is deprecated and ignored");
    if (m.kernelTCP) this.warn("linux.resources.memory.kernelTCP has no cgroup v2 equivalent and is ignored");
    if (m.swappiness !== undefined && m.swappiness !== -1)
      this.warn("linux.resources.memory.swappiness has no cgroup v2 equivalent and is ignored");
    if (m.disableOOMKiller)
      this.warn("linux.resources.memory.disableOOMKiller has no cgroup v2 equivalent and is ignored");
  }

  private setIo(dir: string, r: LinuxResources): void {
    const b = r.blockIO;
    if (!b) return;
    const bfq = fileExists(dir, "io.bfq.weight");
    if (b.weight) {
      if (bfq) writeValue(dir, "io.bfq.weight", String(int("blockIO.weight", b.weight)));
      else this.write(dir, "io.weight", String(blkioToIoWeight(int("blockIO.weight", b.weight))), "io");
    }
    if (b.leafWeight)
      this.warn("linux.resources.blockIO.leafWeight has no cgroup v2 equivalent and is ignored");
    for (const wd of b.weightDevice ?? []) {
      if (!wd.weight) continue;
      // Only BFQ has per-device weights.
      if (!bfq)
        throw new Error("blockIO.weightDevice requested but io.bfq.weight does not exist (no BFQ scheduler)");
      writeValue(dir, "io.bfq.weight", `${wd.major}:${wd.minor} ${wd.weight}`);
    }
    const throttles: [keyof typeof b, string][] = [
      ["throttleReadBpsDevice", "rbps"],
      ["throttleWriteBpsDevice", "wbps"],
      ["throttleReadIOPSDevice", "riops"],
      ["throttleWriteIOPSDevice", "wiops"],
    ];
    for (const [key, name] of throttles)
      for (const t of (b[key] as { major: number; minor: number; rate: number }[] | undefined) ?? [])
        this.write(dir, "io.max", `${t.major}:${t.minor} ${name}=${t.rate}`, "io");
  }

  private setCpu(dir: string, r: LinuxResources): void {
    const c = r.cpu;
    if (!c) return;
    if (c.realtimePeriod || c.realtimeRuntime)
      throw new Error(
        "realtime cpu budgets (cpu.realtimeRuntime/realtimePeriod) are not supported on cgroup v2",
      );
    if (c.idle !== undefined && c.idle !== null)
      this.write(dir, "cpu.idle", String(int("cpu.idle", c.idle)), "cpu");
    if (c.shares) {
      const shares = int("cpu.shares", c.shares);
      this.write(dir, "cpu.weight", String(sharesToWeight(shares)), "cpu");
    }
    if (c.quota || c.period) {
      let v = c.quota && c.quota > 0 ? String(int("cpu.quota", c.quota)) : "max";
      if (c.period) v += ` ${int("cpu.period", c.period)}`;
      this.write(dir, "cpu.max", v, "cpu");
    }
    if (c.burst !== undefined && c.burst !== null)
      this.write(dir, "cpu.max.burst", String(int("cpu.burst", c.burst)), "cpu");
  }

  private setCpuset(dir: string, r: LinuxResources): void {
    if (r.cpu?.cpus) this.write(dir, "cpuset.cpus", r.cpu.cpus, "cpuset");
    if (r.cpu?.mems) this.write(dir, "cpuset.mems", r.cpu.mems, "cpuset");
  }

  /** Replaces the cgroup's device program; set() runs before the workload does, so it starts filtered. */
  private setDevices(r: LinuxResources): void {
    this.deviceFilter(this.dir, deviceFilterProgram(effectiveDeviceRules(r.devices)));
  }

  freeze(): void {
    this.setFrozen(true);
  }

  thaw(): void {
    this.setFrozen(false);
  }

  private setFrozen(on: boolean): void {
    const dir = this.dir;
    if (!fileExists(dir, "cgroup.freeze"))
      throw new Error(`cgroup v2 freezer is not available (no ${join(dir, "cgroup.freeze")}; kernel < 5.2?)`);
    writeValue(dir, "cgroup.freeze", on ? "1" : "0");
    const deadline = Date.now() + 5000;
    let delay = 1;
    while (this.frozen() !== on) {
      if (Date.now() > deadline) {
        if (on) writeValue(dir, "cgroup.freeze", "0");
        throw new Error(`unable to ${on ? "freeze" : "thaw"} ${dir}: cgroup.events did not change within 5s`);
      }
      sleepMs(delay);
      delay = Math.min(delay * 2, 20);
    }
  }

  frozen(): boolean {
    const events = parseKeyValues(readValue(this.dir, "cgroup.events"));
    return Number(events.frozen ?? 0) === 1;
  }

  protected pidsDir(): string {
    return this.dir;
  }

  oomKills(): number {
    return Number(parseKeyValues(readValue(this.dir, "memory.events")).oom_kill ?? 0);
  }

  stats(): CgroupStats {
    const dir = this.dir;
    const cpu = parseKeyValues(readValue(dir, "cpu.stat"));
    const us = (v: U64 | undefined) => {
      const n = BigInt(v ?? 0) * 1000n;
      return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    };
    const mem = (prefix: string): MemoryEntry => ({
      usage: parseU64(readValue(dir, `${prefix}.current`)),
      max: parseU64(readValue(dir, `${prefix}.peak`)),
      limit: maxValue(readValue(dir, `${prefix}.max`)),
      failcnt: parseKeyValues(readValue(dir, `${prefix}.events`)).max ?? 0,
    });
    const usage = mem("memory");
    const swap = mem("memory.swap");
    // v1 reports swap as memory+swap; runc adds them up on v2 for compatibility.
    swap.usage = narrowBig(BigInt(swap.usage ?? 0) + BigInt(usage.usage ?? 0));
    if (BigInt(swap.limit) !== MAX_U64 && BigInt(usage.limit) !== MAX_U64)
      swap.limit = narrowBig(BigInt(swap.limit) + BigInt(usage.limit));
    const raw = parseKeyValues(readValue(dir, "memory.stat"));
    const io = parseIoStat(readValue(dir, "io.stat"));
    return {
      cpu: {
        usage: { total: us(cpu.usage_usec), user: us(cpu.user_usec), kernel: us(cpu.system_usec) },
        throttling: {
          periods: cpu.nr_periods,
          throttledPeriods: cpu.nr_throttled,
          throttledTime: us(cpu.throttled_usec),
        },
      },
      memory: {
        cache: raw.file ?? 0,
        usage,
        swap,
        kernel: { limit: 0, failcnt: 0, usage: raw.kernel ?? 0 },
        kernelTCP: { limit: 0, failcnt: 0, usage: raw.sock ?? 0 },
        raw,
      },
      pids: {
        current: parseU64(readValue(dir, "pids.current")),
        limit: parseU64(readValue(dir, "pids.max")),
      },
      blkio: io,
      hugetlb: v2HugetlbStats(dir),
    };
  }
}

function narrowBig(v: bigint): U64 {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...") in v1's Read/Write entry shape. */
export function parseIoStat(text: string | undefined): CgroupStats["blkio"] {
  const bytes: BlkioEntry[] = [];
  const ios: BlkioEntry[] = [];
  for (const line of (text ?? "").split("\n")) {
    const f = line.trim().split(/\s+/);
    if (!f[0]?.includes(":")) continue;
    const [maj, min] = f[0].split(":");
    const kv: Record<string, U64> = {};
    for (const p of f.slice(1)) {
      const [k, v] = p.split("=");
      if (k && v !== undefined) kv[k] = parseU64(v);
    }
    const dev = { major: parseU64(maj), minor: parseU64(min) };
    bytes.push({ ...dev, op: "Read", value: kv.rbytes ?? 0 }, { ...dev, op: "Write", value: kv.wbytes ?? 0 });
    ios.push({ ...dev, op: "Read", value: kv.rios ?? 0 }, { ...dev, op: "Write", value: kv.wios ?? 0 });
  }
  return { ioServiceBytesRecursive: bytes, ioServicedRecursive: ios };
}
