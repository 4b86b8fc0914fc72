// What the v1 and v2 managers share: directory bookkeeping, pid listing, removal, and the small
// parsers both need.
import { existsSync, mkdirSync, readdirSync, rmdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { isDir, readValue, removeCgroupDir, subdirs, writeValue } from "./fsutil";
import type { CgroupMode } from "./layout";
import type { CgroupManager, CgroupStats, LinuxResources, SavedCgroup, WarnFn } from "./types";

export interface ManagerInit {
  id: string;
  mode: CgroupMode;
  paths: Record<string, string>;
  created?: string[];
  /** The container's resources: apply() needs the realtime budget before the pid moves (v1). */
  resources?: LinuxResources;
  warn?: WarnFn;
}

export abstract class BaseManager implements CgroupManager {
  readonly id: string;
  readonly mode: CgroupMode;
  readonly paths: Record<string, string>;
  protected created: string[];
  protected resources: LinuxResources;
  protected warn: WarnFn;

  constructor(init: ManagerInit) {
    this.id = init.id;
    this.mode = init.mode;
    this.paths = { ...init.paths };
    this.created = [...(init.created ?? [])];
    this.resources = init.resources ?? {};
    this.warn = init.warn ?? (() => {});
  }

  save(): SavedCgroup {
    return { version: 1, id: this.id, mode: this.mode, paths: { ...this.paths }, created: [...this.created] };
  }

  /** Distinct directories (co-mounted v1 controllers share one). */
  protected dirs(): string[] {
    return [...new Set(Object.values(this.paths))];
  }

  /** mkdir -p that remembers which directories it made, so destroy() removes exactly those. */
  protected mkdirTracked(dir: string): void {
    const missing: string[] = [];
    for (let d = dir; !existsSync(d); d = dirname(d)) {
      missing.unshift(d);
      if (dirname(d) === d) break;
    }
    for (const d of missing) {
      try {
        mkdirSync(d, { mode: 0o755 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST")
          throw new Error(`failed to create cgroup ${d}: ${(err as Error).message}`);
        continue;
      }
      if (!this.created.includes(d)) this.created.push(d);
    }
  }

  protected join(dir: string, pid: number): void {
    if (!existsSync(dir)) throw new Error(`cgroup ${dir} does not exist (create() first)`);
    writeValue(dir, "cgroup.procs", String(pid));
  }

  update(resources: LinuxResources): void {
    const { devices: _ignored, ...rest } = resources;
    this.set(rest, false);
  }

  pids(): number[] {
    const dir = this.pidsDir();
    if (!dir) return [];
    return collectPids(dir);
  }

  /** The directory whose cgroup.procs (recursively) lists the container's processes. */
  protected abstract pidsDir(): string | undefined;
  abstract create(): void;
  abstract apply(pid: number): void;
  abstract set(resources: LinuxResources, withDevices?: boolean): void;
  abstract freeze(): void;
  abstract thaw(): void;
  abstract frozen(): boolean;
  abstract stats(): CgroupStats;
  abstract oomKills(): number;

  destroy(): void {
    const errors: string[] = [];
    // Deepest first, so a nested layout (one path inside another) also goes.
    for (const d of this.dirs().sort((a, b) => b.length - a.length)) {
      try {
        removeCgroupDir(d);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    // Parents we made and nobody else uses any more.
    for (const d of [...this.created].sort((a, b) => b.length - a.length)) {
      try {
        if (isDir(d) && subdirs(d).length === 0) rmdirSync(d);
      } catch {
        // Still used (another container under the same parent) or already gone: leave it.
      }
    }
    if (errors.length) throw new Error(errors.join("; "));
  }
}

export function collectPids(dir: string): number[] {
  const out: number[] = [];
  const walk = (d: string) => {
    const text = readValue(d, "cgroup.procs");
    if (text === undefined) return;
    for (const l of text.split("\n")) if (l.trim()) out.push(Number(l.trim()));
    let children: string[] = [];
    try {
      children = subdirs(d);
    } catch {
      return;
    }
    for (const e of children) walk(join(d, e));
  };
  walk(dir);
  return [...new Set(out)].sort((a, b) => a - b);
}

/** "2MB"-style page size names for /sys/kernel/mm/hugepages/hugepages-2048kB (runc's naming). */
export function hugePageSizes(sysDir = "/sys/kernel/mm/hugepages"): string[] {
  let names: string[] = [];
  try {
    names = readdirSync(sysDir);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const n of names) {
    const m = /^hugepages-(\d+)kB$/.exec(n);
    if (m) out.push(pageSizeName(Number(m[1]) * 1024));
  }
  return out;
}

export function pageSizeName(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let i = 0;
  let v = bytes;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v}${units[i]}`;
}

export function checkPageSize(size: string): void {
  if (!/^\d+(\.\d+)?[KMGTP]?B$/.test(size)) throw new Error(`invalid hugepage size "${size}" (e.g. "2MB")`);
}

/** Integer value of an OCI resource field, refusing fractions and non-numbers with the field's name. */
export function int(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v))
    throw new Error(`${name} must be an integer, got ${JSON.stringify(v)}`);
  return v;
}

/** The rdma.max line for one device ("max" where the spec leaves a count out). */
export function rdmaLine(dev: string, l: { hcaHandles?: number; hcaObjects?: number }): string {
  const v = (n: number | undefined) => (n === undefined || n === null ? "max" : String(n));
  return `${dev} hca_handle=${v(l.hcaHandles)} hca_object=${v(l.hcaObjects)}`;
}

export { writeValue };
