// Stats as containerd reads them from a shim: io.containerd.cgroups.v1.Metrics (proto/cgroups/v1), made
// from runc's stats object (what `kata-ts events --stats` prints; in VM mode read from the guest's
// cgroups). CRI's ContainerStats and `ctr task metrics` decode this message.
import type { CgroupStats } from "../engine/cgroups";
import type { BlkioEntry, MemoryEntry, U64 } from "../engine/cgroups/types";
import type { ProtoObject as Msg } from "../ttrpc";

const n = (v: U64 | undefined): number => (v === undefined ? 0 : Number(v));

/** memory.stat keys (v1 names) → Metrics.MemoryStat fields. */
const MEMORY_STAT: Record<string, string> = {
  // The same names, but for these two.
  ...Object.fromEntries(
    [
      "cache",
      "rss",
      "rss_huge",
      "mapped_file",
      "dirty",
      "writeback",
      "inactive_anon",
      "active_anon",
      "inactive_file",
      "active_file",
      "unevictable",
      "hierarchical_memory_limit",
      "total_cache",
      "total_rss",
      "total_rss_huge",
      "total_mapped_file",
      "total_dirty",
      "total_writeback",
      "total_inactive_anon",
      "total_active_anon",
      "total_inactive_file",
      "total_active_file",
      "total_unevictable",
    ].map((k) => [k, k]),
  ),
  pgpgin: "pg_pg_in",
  pgpgout: "pg_pg_out",
  pgfault: "pg_fault",
  pgmajfault: "pg_maj_fault",
  total_pgpgin: "total_pg_pg_in",
  total_pgpgout: "total_pg_pg_out",
  total_pgfault: "total_pg_fault",
  total_pgmajfault: "total_pg_maj_fault",
  hierarchical_memsw_limit: "hierarchical_swap_limit",
};

function entry(e: MemoryEntry | undefined): Msg {
  return { limit: n(e?.limit), usage: n(e?.usage), max: n(e?.max), failcnt: n(e?.failcnt) };
}

function blkio(list: BlkioEntry[] | undefined): Msg[] {
  return (list ?? []).map((e) => ({
    op: e.op ?? "",
    device: "",
    major: n(e.major),
    minor: n(e.minor),
    value: n(e.value),
  }));
}

export function metricsOf(s: CgroupStats): Msg {
  const memory: Msg = {
    usage: entry(s.memory.usage),
    swap: entry(s.memory.swap),
    kernel: entry(s.memory.kernel),
    kernel_tcp: entry(s.memory.kernelTCP),
  };
  for (const [k, v] of Object.entries(s.memory.raw ?? {})) {
    const field = MEMORY_STAT[k];
    if (field) memory[field] = n(v);
  }
  if (memory.cache === undefined) memory.cache = n(s.memory.cache);
  return {
    hugetlb: Object.entries(s.hugetlb ?? {}).map(([pagesize, h]) => ({
      usage: n(h.usage),
      max: n(h.max),
      failcnt: n(h.failcnt),
      pagesize,
    })),
    pids: { current: n(s.pids.current), limit: n(s.pids.limit) },
    cpu: {
      usage: {
        total: n(s.cpu.usage.total),
        kernel: n(s.cpu.usage.kernel),
        user: n(s.cpu.usage.user),
        per_cpu: (s.cpu.usage.percpu ?? []).map(n),
      },
      throttling: {
        periods: n(s.cpu.throttling.periods),
        throttled_periods: n(s.cpu.throttling.throttledPeriods),
        throttled_time: n(s.cpu.throttling.throttledTime),
      },
    },
    memory,
    blkio: {
      io_service_bytes_recursive: blkio(s.blkio.ioServiceBytesRecursive),
      io_serviced_recursive: blkio(s.blkio.ioServicedRecursive),
    },
  };
}
