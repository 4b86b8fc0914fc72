// The cgroup manager's contract and the stats shape. Stats follow runc's `events --stats` JSON (package
// runc/types): engines and scripts that parse runc's output parse ours.
import type { LinuxResources } from "../../oci/spec";
import type { CgroupMode } from "./layout";

export type { LinuxResources };

/** A kernel counter: a number when it fits in 2^53, else an exact bigint (printed verbatim). */
export type U64 = number | bigint;

export interface CpuUsage {
  total: U64;
  percpu?: U64[];
  percpu_kernel?: U64[];
  percpu_user?: U64[];
  kernel: U64;
  user: U64;
}

export interface CpuStats {
  usage: CpuUsage;
  throttling: { periods?: U64; throttledPeriods?: U64; throttledTime?: U64 };
}

export interface MemoryEntry {
  limit: U64;
  usage?: U64;
  max?: U64;
  failcnt: U64;
}

export interface MemoryStats {
  cache?: U64;
  usage: MemoryEntry;
  swap: MemoryEntry;
  kernel: MemoryEntry;
  kernelTCP: MemoryEntry;
  raw?: Record<string, U64>;
}

export interface BlkioEntry {
  major?: U64;
  minor?: U64;
  op?: string;
  value?: U64;
}

export interface CgroupStats {
  cpu: CpuStats;
  memory: MemoryStats;
  pids: { current?: U64; limit?: U64 };
  blkio: { ioServiceBytesRecursive?: BlkioEntry[]; ioServicedRecursive?: BlkioEntry[] };
  hugetlb: Record<string, { usage?: U64; max?: U64; failcnt: U64 }>;
}

/** What save() returns and cgroupManagerFromState() takes: enough to find and remove the cgroups later. */
export interface SavedCgroup {
  version: 1;
  id: string;
  mode: CgroupMode;
  /** controller → absolute directory ("unified" for the cgroup2 hierarchy). */
  paths: Record<string, string>;
  /** Directories create() made, parents first: destroy() removes those left empty. */
  created: string[];
}

export interface CgroupManager {
  readonly mode: CgroupMode;
  /** controller → absolute directory ("unified" for the cgroup2 hierarchy, in v2 and hybrid mode). */
  readonly paths: Record<string, string>;
  save(): SavedCgroup;
  /** Makes the directories (cpuset initialised from the parent; v2 controllers enabled in the parents). */
  create(): void;
  /** Moves pid into every hierarchy (realtime cpu budget first on v1, as the kernel requires). */
  apply(pid: number): void;
  /** Writes resources, device rules included (deny all, then the rules, then the default devices). */
  set(resources: LinuxResources): void;
  /** Like set() but leaves device rules alone: what `update` uses (runc update cannot change them). */
  update(resources: LinuxResources): void;
  /** Freezes every task; returns once the kernel reports the cgroup frozen. */
  freeze(): void;
  thaw(): void;
  frozen(): boolean;
  /** Host pids of every process in the cgroup and its sub-cgroups. */
  pids(): number[];
  stats(): CgroupStats;
  /** OOM-kill count so far (v1 memory.oom_control oom_kill, v2 memory.events oom_kill). */
  oomKills(): number;
  /** Removes the directories (kills nothing: the caller must have stopped the processes). */
  destroy(): void;
}

/** Something that wants to hear about a requested setting that this host cannot enforce. */
export type WarnFn = (message: string) => void;
