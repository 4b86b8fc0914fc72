// Entry point of the cgroup package: pick the v1 (or hybrid) or the v2 manager for the host's layout and
// the container's cgroupsPath, or rebuild one from what an earlier command saved in the state record.
import { type CgroupLayout, detectLayout, ownCgroups } from "./layout";
import { innerPath, resolvePaths, UNIFIED } from "./paths";
import type { CgroupManager, LinuxResources, SavedCgroup, WarnFn } from "./types";
import { V1Manager } from "./v1";
import { type DeviceFilterLoader, V2Manager } from "./v2";

export { observeCgroupWrites, writeValue } from "./fsutil";
export type { CgroupLayout, CgroupMode } from "./layout";
export { detectLayout, parseMountinfo, parseProcCgroup } from "./layout";
export { cleanPath, expandSlice, innerPath, ownCgroupDir, resolvePaths, systemdCgroupPath } from "./paths";
export { primeCgroupJoin, withJoinPriming } from "./prime";
export { oomEvent, runcStatsData, statsEvent, stringifyExact } from "./stats";
export { parseSubCgroupArgs, subCgroupDirs } from "./subcgroup";
export type { CgroupManager, CgroupStats, LinuxResources, SavedCgroup, WarnFn } from "./types";
export { blkioToIoWeight, type DeviceFilterLoader, loadDeviceFilter, sharesToWeight, swapToV2 } from "./v2";

export interface CgroupManagerOptions {
  /** Container id (the default cgroup name). */
  id: string;
  /** linux.cgroupsPath as given. */
  cgroupsPath?: string;
  /** --systemd-cgroup: cgroupsPath is "slice:prefix:name". */
  systemd?: boolean;
  /** The container's linux.resources (apply() needs the realtime budget before joining, on v1). */
  resources?: LinuxResources;
  /** A directory standing in for /sys/fs/cgroup (tests, or a hierarchy mounted elsewhere). */
  root?: string;
  /** Contents standing in for /proc/self/cgroup (relative paths resolve against it). */
  selfCgroup?: string;
  /** Told about settings this host cannot enforce (e.g. net_cls on cgroup v2). */
  warn?: WarnFn;
  /** v2: what attaches the device filter program (default: bpf(2) through the native addon). */
  deviceFilter?: DeviceFilterLoader;
}

export function cgroupManagerFor(opts: CgroupManagerOptions): CgroupManager {
  const layout = detectLayout(opts.root);
  const own = ownCgroups(opts.root && opts.selfCgroup === undefined ? "" : opts.selfCgroup);
  const inner = innerPath(opts);
  const paths = resolvePaths(inner, layout, own);
  if (!Object.keys(paths).length) throw new Error("no cgroup hierarchy is mounted");
  const init = { id: opts.id, mode: layout.mode, paths, resources: opts.resources, warn: opts.warn };
  return layout.mode === "v2"
    ? new V2Manager({ ...init, deviceFilter: opts.deviceFilter })
    : new V1Manager(init);
}

/**
 * runc's validator: unified (cgroup v2) resources need a pure cgroup v2 host (hybrid counts as v1, as
 * for runc). Checked before anything is created; an empty map is fine, as it is for runc.
 */
export function checkUnifiedSupported(mode: CgroupLayout["mode"], r: LinuxResources | undefined): void {
  if (mode !== "v2" && r?.unified && Object.keys(r.unified).length)
    throw new Error("invalid configuration: cannot use unified on cgroup v1");
}

export function cgroupManagerFromState(saved: unknown, warn?: WarnFn): CgroupManager {
  const s = saved as Partial<SavedCgroup> | undefined;
  if (s?.version !== 1 || typeof s.paths !== "object" || !s.paths || typeof s.id !== "string")
    throw new Error("no usable cgroup state recorded for this container");
  const init = { id: s.id, mode: s.mode ?? "v1", paths: s.paths, created: s.created ?? [], warn };
  return s.mode === "v2" && s.paths[UNIFIED] ? new V2Manager(init) : new V1Manager(init);
}
