// cgroup v1 (and hybrid) manager: one directory per controller hierarchy, runc's fs driver semantics.
// In hybrid mode the container is also placed in the cgroup2 hierarchy ("unified"), as runc does; that
// hierarchy is where hugetlb lives on hosts (like this one) that have no v1 hugetlb.
import { dirname } from "node:path";
import { BaseManager, checkPageSize, hugePageSizes, int, rdmaLine } from "./common";
import { deviceRuleSet } from "./devicefilter";
import { deviceRuleString, effectiveDeviceRules } from "./devices";
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
import { enableControllers, setUnified, v2HugetlbStats } from "./v2";

/** USER_HZ: cpuacct.stat counts in clock ticks, which are 100 per second on every Linux build. */
const CLOCK_TICKS = 100;

export class V1Manager extends BaseManager {
  private need(controller: string, what: string): string {
    const dir = this.paths[controller];
    if (!dir)
      throw new Error(
        `${what} requested but the ${controller} cgroup controller is not available on this host`,
      );
    return dir;
  }

  create(): void {
    for (const d of this.dirs()) this.mkdirTracked(d);
    if (this.paths.cpuset) initCpuset(this.paths.cpuset);
  }

  apply(pid: number): void {
    // A realtime task can only join a cpu cgroup that already has a realtime budget.
    const cpu = this.resources.cpu;
    if (this.paths.cpu && (cpu?.realtimePeriod || cpu?.realtimeRuntime))
      this.setRt(this.paths.cpu, this.resources);
    for (const d of this.dirs()) this.join(d, pid);
  }

  set(r: LinuxResources, withDevices = true): void {
    this.resources = { ...this.resources, ...r };
    this.setCpuset(r);
    if (withDevices) this.setDevices(r);
    this.setMemory(r);
    this.setCpu(r);
    this.setPids(r);
    this.setBlkio(r);
    this.setHugetlb(r);
    this.setNetwork(r);
    this.setRdma(r);
    if (r.unified && Object.keys(r.unified).length) {
      if (!this.paths[UNIFIED]) throw new Error("invalid configuration: cannot use unified on cgroup v1");
      setUnified(this.paths[UNIFIED], r.unified);
    }
  }

  private setCpuset(r: LinuxResources): void {
    const c = r.cpu;
    if (!c?.cpus && !c?.mems) return;
    const dir = this.need("cpuset", "cpu.cpus/cpu.mems");
    if (c.cpus) writeValue(dir, "cpuset.cpus", c.cpus);
    if (c.mems) writeValue(dir, "cpuset.mems", c.mems);
  }

  private setDevices(r: LinuxResources): void {
    const dir = this.paths.devices;
    if (!dir) {
      if (r.devices?.length)
        this.warn("device rules requested but the devices cgroup controller is not available");
      return;
    }
    const rules = effectiveDeviceRules(r.devices);
    // The kernel would silently ignore a rule that punches a hole in a wider one; refuse it, as runc
    // does and as the v2 filter does, so a rule list means the same on both.
    deviceRuleSet(rules);
    // Start from "deny everything" and replay the rules in order; 'a' rules switch the default.
    writeValue(dir, "devices.deny", "a");
    for (const rule of rules) {
      writeValue(dir, rule.allow ? "devices.allow" : "devices.deny", deviceRuleString(rule));
    }
  }

  private setMemory(r: LinuxResources): void {
    const m = r.memory;
    if (!m) return;
    const any =
      m.limit ||
      m.swap ||
      m.reservation ||
      m.kernelTCP ||
      m.disableOOMKiller ||
      m.swappiness !== undefined ||
      m.kernel;
    if (!any) return;
    const dir = this.need("memory", "linux.resources.memory");
    const limit = m.limit ? int("memory.limit", m.limit) : 0;
    let swap = m.swap ? int("memory.swap", m.swap) : 0;
    const hasSwap = fileExists(dir, "memory.memsw.limit_in_bytes");
    if (limit === -1 && swap === 0 && hasSwap) swap = -1;
    if (swap !== 0 && !hasSwap)
      throw new Error("memory.swap requested but swap accounting is off (no memory.memsw.limit_in_bytes)");
    if (m.checkBeforeUpdate && limit > 0) {
      const usage = Number(parseU64(readValue(dir, "memory.usage_in_bytes")));
      if (usage > limit) throw new Error(`rejecting memory limit ${limit} below the current usage ${usage}`);
    }
    const setLimit = () => {
      if (limit === 0) return;
      try {
        writeValue(dir, "memory.limit_in_bytes", String(limit));
      } catch (err) {
        if (err instanceof CgroupWriteError && err.code === "EBUSY") {
          const usage = readValue(dir, "memory.usage_in_bytes");
          const peak = readValue(dir, "memory.max_usage_in_bytes");
          throw new Error(
            `unable to set memory limit to ${limit} (current usage: ${usage}, peak usage: ${peak})`,
          );
        }
        throw err;
      }
    };
    const setSwap = () => {
      if (swap !== 0) writeValue(dir, "memory.memsw.limit_in_bytes", String(swap));
    };
    // memsw must stay >= the memory limit at every step: raise swap first when growing, last when
    // shrinking (runc's order).
    if (limit !== 0 && swap !== 0) {
      const current = parseU64(readValue(dir, "memory.limit_in_bytes"));
      if (swap === -1 || BigInt(current) < BigInt(swap)) {
        setSwap();
        setLimit();
      } else {
        setLimit();
        setSwap();
      }
    } else {
      setLimit();
      setSwap();
    }
    if (m.kernel) this.warn("linux.resources.memory.kernel is deprecated and ignored");
    if (m.reservation)
      writeValue(dir, "memory.soft_limit_in_bytes", String(int("memory.reservation", m.reservation)));
    if (m.kernelTCP)
      writeValue(dir, "memory.kmem.tcp.limit_in_bytes", String(int("memory.kernelTCP", m.kernelTCP)));
    if (m.disableOOMKiller) writeValue(dir, "memory.oom_control", "1");
    if (m.swappiness !== undefined && m.swappiness !== -1) {
      const s = int("memory.swappiness", m.swappiness);
      if (s < 0 || s > 100) throw new Error(`invalid memory swappiness value: ${s} (valid range is 0-100)`);
      writeValue(dir, "memory.swappiness", String(s));
    }
  }

  private setRt(dir: string, r: LinuxResources): void {
    const c = r.cpu;
    // Period before runtime: the runtime must fit in the period.
    if (c?.realtimePeriod)
      writeValue(dir, "cpu.rt_period_us", String(int("cpu.realtimePeriod", c.realtimePeriod)));
    if (c?.realtimeRuntime)
      writeValue(dir, "cpu.rt_runtime_us", String(int("cpu.realtimeRuntime", c.realtimeRuntime)));
  }

  private setCpu(r: LinuxResources): void {
    const c = r.cpu;
    if (!c) return;
    const any =
      c.shares ||
      c.quota ||
      c.period ||
      c.realtimePeriod ||
      c.realtimeRuntime ||
      c.burst !== undefined ||
      c.idle !== undefined;
    if (!any) return;
    const dir = this.need("cpu", "linux.resources.cpu");
    if (c.shares) {
      const shares = int("cpu.shares", c.shares);
      writeValue(dir, "cpu.shares", String(shares));
      // The kernel clamps silently: read back and say so, as runc does.
      const got = Number(parseU64(readValue(dir, "cpu.shares")));
      if (shares > got) throw new Error(`the maximum allowed cpu-shares is ${got}`);
      if (shares < got) throw new Error(`the minimum allowed cpu-shares is ${got}`);
    }
    let pendingPeriod: string | undefined;
    if (c.period) {
      pendingPeriod = String(int("cpu.period", c.period));
      try {
        writeValue(dir, "cpu.cfs_period_us", pendingPeriod);
        pendingPeriod = undefined;
      } catch (err) {
        // A smaller period can be refused until the quota shrinks too: retry after the quota.
        if (!(err instanceof CgroupWriteError && err.code === "EINVAL") || !c.quota) throw err;
      }
    }
    if (c.quota) {
      writeValue(dir, "cpu.cfs_quota_us", String(int("cpu.quota", c.quota)));
      if (pendingPeriod) writeValue(dir, "cpu.cfs_period_us", pendingPeriod);
    }
    if (c.burst !== undefined && c.burst !== null)
      writeValue(dir, "cpu.cfs_burst_us", String(int("cpu.burst", c.burst)));
    if (c.idle !== undefined && c.idle !== null) writeValue(dir, "cpu.idle", String(int("cpu.idle", c.idle)));
    this.setRt(dir, r);
  }

  private setPids(r: LinuxResources): void {
    const limit = r.pids?.limit;
    if (!limit) return;
    const dir = this.need("pids", "linux.resources.pids");
    writeValue(dir, "pids.max", limit > 0 ? String(int("pids.limit", limit)) : "max");
  }

  private setBlkio(r: LinuxResources): void {
    const b = r.blockIO;
    if (!b) return;
    const throttles: [keyof typeof b, string][] = [
      ["throttleReadBpsDevice", "blkio.throttle.read_bps_device"],
      ["throttleWriteBpsDevice", "blkio.throttle.write_bps_device"],
      ["throttleReadIOPSDevice", "blkio.throttle.read_iops_device"],
      ["throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"],
    ];
    const any =
      b.weight ||
      b.leafWeight ||
      b.weightDevice?.length ||
      throttles.some(([k]) => (b[k] as unknown[] | undefined)?.length);
    if (!any) return;
    const dir = this.need("blkio", "linux.resources.blockIO");
    // Proportional weights need the CFQ (blkio.weight) or BFQ (blkio.bfq.weight) scheduler. Without
    // them the request cannot be honoured: fail rather than pretend.
    const weightFile = (plain: string, bfq: string) => {
      if (fileExists(dir, plain)) return plain;
      if (fileExists(dir, bfq)) return bfq;
      throw new Error(
        `blkio weight requested but neither ${plain} nor ${bfq} exists (no CFQ/BFQ I/O scheduler on this host)`,
      );
    };
    if (b.weight)
      writeValue(
        dir,
        weightFile("blkio.weight", "blkio.bfq.weight"),
        String(int("blockIO.weight", b.weight)),
      );
    if (b.leafWeight)
      writeValue(dir, weightFile("blkio.leaf_weight", "blkio.leaf_weight"), String(b.leafWeight));
    for (const wd of b.weightDevice ?? []) {
      if (wd.weight)
        writeValue(
          dir,
          weightFile("blkio.weight_device", "blkio.bfq.weight_device"),
          `${wd.major}:${wd.minor} ${wd.weight}`,
        );
      if (wd.leafWeight)
        writeValue(
          dir,
          weightFile("blkio.leaf_weight_device", "blkio.leaf_weight_device"),
          `${wd.major}:${wd.minor} ${wd.leafWeight}`,
        );
    }
    for (const [key, file] of throttles) {
      for (const t of (b[key] as { major: number; minor: number; rate: number }[] | undefined) ?? [])
        writeValue(dir, file, `${t.major}:${t.minor} ${t.rate}`);
    }
  }

  private setHugetlb(r: LinuxResources): void {
    const limits = r.hugepageLimits ?? [];
    if (!limits.length) return;
    for (const l of limits) checkPageSize(l.pageSize);
    const dir = this.paths.hugetlb;
    if (dir) {
      for (const l of limits) writeValue(dir, `hugetlb.${l.pageSize}.limit_in_bytes`, String(l.limit));
      return;
    }
    // Hybrid host without v1 hugetlb: the cgroup2 hierarchy may have it.
    const unified = this.paths[UNIFIED];
    if (unified && hierarchyHas(unified, "hugetlb")) {
      enableControllers(unified, ["hugetlb"]);
      for (const l of limits) writeValue(unified, `hugetlb.${l.pageSize}.max`, String(l.limit));
      return;
    }
    throw new Error(
      "hugepage limits requested but the hugetlb cgroup controller is not available on this host",
    );
  }

  private setNetwork(r: LinuxResources): void {
    const n = r.network;
    if (!n) return;
    if (n.classID)
      writeValue(
        this.need("net_cls", "linux.resources.network.classID"),
        "net_cls.classid",
        String(n.classID),
      );
    for (const p of n.priorities ?? [])
      writeValue(
        this.need("net_prio", "linux.resources.network.priorities"),
        "net_prio.ifpriomap",
        `${p.name} ${p.priority}`,
      );
  }

  private setRdma(r: LinuxResources): void {
    for (const [dev, l] of Object.entries(r.rdma ?? {})) {
      const dir = this.need("rdma", "linux.resources.rdma");
      writeValue(dir, "rdma.max", rdmaLine(dev, l));
    }
  }

  // ---- freezer ----

  private freezerDir(): string {
    return this.need("freezer", "pause/resume");
  }

  freeze(): void {
    const dir = this.freezerDir();
    // FREEZING can persist while tasks are in uninterruptible sleep; re-request now and then.
    const deadline = Date.now() + 5000;
    let delay = 1;
    for (let i = 0; ; i++) {
      if (i % 50 === 0) writeValue(dir, "freezer.state", "FROZEN");
      const state = readValue(dir, "freezer.state");
      if (state === "FROZEN") return;
      if (Date.now() > deadline) {
        writeValue(dir, "freezer.state", "THAWED");
        throw new Error(`unable to freeze ${dir}: still ${state} after 5s`);
      }
      sleepMs(delay);
      delay = Math.min(delay * 2, 20);
    }
  }

  thaw(): void {
    const dir = this.freezerDir();
    writeValue(dir, "freezer.state", "THAWED");
    const deadline = Date.now() + 5000;
    while (readValue(dir, "freezer.state") !== "THAWED") {
      if (Date.now() > deadline) throw new Error(`unable to thaw ${dir}`);
      sleepMs(2);
    }
  }

  frozen(): boolean {
    const dir = this.paths.freezer;
    return dir ? readValue(dir, "freezer.state") === "FROZEN" : false;
  }

  protected pidsDir(): string | undefined {
    return this.paths.pids ?? this.paths.devices ?? this.paths.freezer ?? this.paths.memory ?? this.dirs()[0];
  }

  oomKills(): number {
    const dir = this.paths.memory;
    if (!dir) return 0;
    const kv = parseKeyValues(readValue(dir, "memory.oom_control"));
    return Number(kv.oom_kill ?? 0);
  }

  // ---- stats ----

  stats(): CgroupStats {
    const s: CgroupStats = {
      cpu: { usage: { total: 0, kernel: 0, user: 0 }, throttling: {} },
      memory: {
        usage: { limit: 0, failcnt: 0 },
        swap: { limit: 0, failcnt: 0 },
        kernel: { limit: 0, failcnt: 0 },
        kernelTCP: { limit: 0, failcnt: 0 },
      },
      pids: {},
      blkio: {},
      hugetlb: {},
    };
    const acct = this.paths.cpuacct;
    if (acct) {
      s.cpu.usage.total = parseU64(readValue(acct, "cpuacct.usage"));
      const percpu = readValue(acct, "cpuacct.usage_percpu");
      if (percpu !== undefined) s.cpu.usage.percpu = percpu.trim().split(/\s+/).filter(Boolean).map(parseU64);
      const st = parseKeyValues(readValue(acct, "cpuacct.stat"));
      const ns = (ticks: U64) => (BigInt(ticks) * 1_000_000_000n) / BigInt(CLOCK_TICKS);
      s.cpu.usage.user = narrow(ns(st.user ?? 0));
      s.cpu.usage.kernel = narrow(ns(st.system ?? 0));
      // "cpu user system" header, then one line per cpu (nanoseconds).
      const all = readValue(acct, "cpuacct.usage_all");
      if (all !== undefined) {
        const rows = all
          .split("\n")
          .slice(1)
          .filter(Boolean)
          .map((l) => l.trim().split(/\s+/));
        s.cpu.usage.percpu_user = rows.map((r) => parseU64(r[1]));
        s.cpu.usage.percpu_kernel = rows.map((r) => parseU64(r[2]));
      }
    }
    const cpu = this.paths.cpu;
    if (cpu) {
      const st = parseKeyValues(readValue(cpu, "cpu.stat"));
      s.cpu.throttling = {
        periods: st.nr_periods,
        throttledPeriods: st.nr_throttled,
        throttledTime: st.throttled_time,
      };
    }
    const mem = this.paths.memory;
    if (mem) {
      const entry = (prefix: string): MemoryEntry => ({
        usage: parseU64(readValue(mem, `${prefix}.usage_in_bytes`)),
        max: parseU64(readValue(mem, `${prefix}.max_usage_in_bytes`)),
        failcnt: parseU64(readValue(mem, `${prefix}.failcnt`)),
        limit: parseU64(readValue(mem, `${prefix}.limit_in_bytes`)),
      });
      s.memory.usage = entry("memory");
      s.memory.swap = entry("memory.memsw");
      s.memory.kernel = entry("memory.kmem");
      s.memory.kernelTCP = entry("memory.kmem.tcp");
      s.memory.raw = parseKeyValues(readValue(mem, "memory.stat"));
      s.memory.cache = s.memory.raw.cache ?? 0;
    }
    const pids = this.paths.pids;
    if (pids)
      s.pids = {
        current: parseU64(readValue(pids, "pids.current")),
        limit: parseU64(readValue(pids, "pids.max")),
      };
    const blkio = this.paths.blkio;
    if (blkio) {
      // CFQ's files when present, else the throttle layer's (which always counts).
      const pick = (name: string) =>
        readValue(blkio, `blkio.${name}`) ?? readValue(blkio, `blkio.throttle.${name}`);
      s.blkio.ioServiceBytesRecursive = parseBlkio(pick("io_service_bytes_recursive"));
      s.blkio.ioServicedRecursive = parseBlkio(pick("io_serviced_recursive"));
    }
    const huge = this.paths.hugetlb;
    if (huge) {
      for (const size of hugePageSizes()) {
        s.hugetlb[size] = {
          usage: parseU64(readValue(huge, `hugetlb.${size}.usage_in_bytes`)),
          max: parseU64(readValue(huge, `hugetlb.${size}.max_usage_in_bytes`)),
          failcnt: parseU64(readValue(huge, `hugetlb.${size}.failcnt`)),
        };
      }
    } else if (this.paths[UNIFIED]) s.hugetlb = v2HugetlbStats(this.paths[UNIFIED]);
    return s;
  }
}

function narrow(v: bigint): U64 {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** "8:0 Read 4096" lines (plus a "Total N" line, dropped). */
export function parseBlkio(text: string | undefined): BlkioEntry[] {
  const out: BlkioEntry[] = [];
  for (const line of (text ?? "").split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length !== 3) continue;
    const [maj, min] = f[0]!.split(":");
    out.push({ major: parseU64(maj), minor: parseU64(min), op: f[1], value: parseU64(f[2]) });
  }
  return out;
}

/** Whether the cgroup2 hierarchy holding dir offers a controller (its root's cgroup.controllers). */
function hierarchyHas(dir: string, controller: string): boolean {
  // The hierarchy root is the top-most ancestor that still has cgroup.controllers; the leaf may not
  // exist yet and a child lists only what its parent enabled.
  let top: string | undefined;
  for (let d = dir; ; d = dirname(d)) {
    if (readValue(d, "cgroup.controllers") !== undefined) top = d;
    else if (top) break;
    if (dirname(d) === d) break;
  }
  return top !== undefined && (readValue(top, "cgroup.controllers") ?? "").split(/\s+/).includes(controller);
}

/**
 * cpuset: a new cgroup starts with empty cpus/mems and refuses tasks until they are set; copy them from
 * the nearest ancestor that has them, top-down (runc's ensureParent).
 */
function initCpuset(leaf: string): void {
  const chain: string[] = [];
  for (let d = leaf; ; d = dirname(d)) {
    const cpus = readValue(d, "cpuset.cpus");
    if (cpus === undefined) break; // left the hierarchy
    chain.unshift(d);
    if (cpus.trim() && (readValue(d, "cpuset.mems") ?? "").trim() && d !== leaf) break;
    if (dirname(d) === d) break;
  }
  for (let i = 1; i < chain.length; i++) {
    const parent = chain[i - 1]!;
    const d = chain[i]!;
    for (const f of ["cpuset.cpus", "cpuset.mems"]) {
      if (!(readValue(d, f) ?? "").trim()) writeValue(d, f, readValue(parent, f) ?? "");
    }
  }
}
