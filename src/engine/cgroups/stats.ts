// runc's `events` JSON: {"type":"stats","id":ID,"data":{...}} and {"type":"oom","id":ID}. Field names and
// omissions follow runc's Go structs (omitempty drops zero numbers and empty lists, never structs).
// Counters beyond 2^53 are printed exactly (JSON.stringify alone would round them).
import type { CgroupStats, U64 } from "./types";

function oe(v: U64 | undefined): U64 | undefined {
  return v === undefined || v === 0 || v === 0n ? undefined : v;
}

function oeList<T>(v: T[] | undefined): T[] | undefined {
  return v?.length ? v : undefined;
}

/** The `data` object of a stats event, shaped like runc's types.Stats. */
export function runcStatsData(s: CgroupStats): Record<string, unknown> {
  const mem = (e: CgroupStats["memory"]["usage"]) => ({
    limit: e.limit,
    usage: oe(e.usage),
    max: oe(e.max),
    failcnt: e.failcnt,
  });
  const blk = (l: CgroupStats["blkio"]["ioServiceBytesRecursive"]) =>
    oeList(
      l?.map((e) => ({ major: oe(e.major), minor: oe(e.minor), op: e.op || undefined, value: oe(e.value) })),
    );
  const hugetlb: Record<string, unknown> = {};
  for (const [k, h] of Object.entries(s.hugetlb))
    hugetlb[k] = { usage: oe(h.usage), max: oe(h.max), failcnt: h.failcnt };
  return {
    cpu: {
      usage: {
        total: oe(s.cpu.usage.total),
        percpu: oeList(s.cpu.usage.percpu),
        percpu_kernel: oeList(s.cpu.usage.percpu_kernel),
        percpu_user: oeList(s.cpu.usage.percpu_user),
        kernel: s.cpu.usage.kernel,
        user: s.cpu.usage.user,
      },
      throttling: {
        periods: oe(s.cpu.throttling.periods),
        throttledPeriods: oe(s.cpu.throttling.throttledPeriods),
        throttledTime: oe(s.cpu.throttling.throttledTime),
      },
    },
    memory: {
      cache: oe(s.memory.cache),
      usage: mem(s.memory.usage),
      swap: mem(s.memory.swap),
      kernel: mem(s.memory.kernel),
      kernelTCP: mem(s.memory.kernelTCP),
      raw: s.memory.raw && Object.keys(s.memory.raw).length ? s.memory.raw : undefined,
    },
    pids: { current: oe(s.pids.current), limit: oe(s.pids.limit) },
    blkio: {
      ioServiceBytesRecursive: blk(s.blkio.ioServiceBytesRecursive),
      ioServicedRecursive: blk(s.blkio.ioServicedRecursive),
    },
    hugetlb,
  };
}

/** JSON.stringify that prints bigint values as plain JSON numbers. */
export function stringifyExact(value: unknown): string {
  const marker = "\u0000bigint:";
  return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? `${marker}${v}` : v)).replace(
    /"\\u0000bigint:(\d+)"/g,
    "$1",
  );
}

export function statsEvent(id: string, s: CgroupStats): string {
  return stringifyExact({ type: "stats", id, data: runcStatsData(s) });
}

export function oomEvent(id: string): string {
  return JSON.stringify({ type: "oom", id });
}
