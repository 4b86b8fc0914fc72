// Which cgroup layout the host has, found from /proc/self/mountinfo (or, for tests, from the shape of a
// fake tree): "v1" (only v1 hierarchies), "hybrid" (v1 controllers plus a cgroup2 mount, usually at
// /sys/fs/cgroup/unified, systemd's default before v2) or "v2" (one unified hierarchy). runc decides by
// the filesystem type of /sys/fs/cgroup; reading mountinfo also finds hierarchies mounted elsewhere.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isDir } from "./fsutil";

export type CgroupMode = "v1" | "hybrid" | "v2";

export interface Hierarchy {
  /** Where the hierarchy is mounted. */
  mountpoint: string;
  /** The cgroup that is the mount's root (not "/" inside a cgroup namespace or for a bind mount). */
  root: string;
}

export interface CgroupLayout {
  mode: CgroupMode;
  /** v1 controller (and "name=systemd") → its hierarchy; co-mounted controllers share one. */
  v1: Record<string, Hierarchy>;
  /** The cgroup2 hierarchy: the whole tree in v2, the extra one in hybrid. */
  unified?: Hierarchy;
}

/** Mount options that are not controller names. */
const NON_CONTROLLER_OPTIONS = new Set(["rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode"]);

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Parses /proc/self/mountinfo text into a layout. The first mount of each hierarchy wins, as runc. */
export function parseMountinfo(text: string): CgroupLayout {
  const v1: Record<string, Hierarchy> = {};
  let unified: Hierarchy | undefined;
  for (const line of text.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(" ");
    const post = line.slice(sep + 3).split(" ");
    const fstype = post[0];
    if (fstype !== "cgroup" && fstype !== "cgroup2") continue;
    const h: Hierarchy = {
      root: unescapeMountinfo(pre[3] ?? "/"),
      mountpoint: unescapeMountinfo(pre[4] ?? ""),
    };
    if (fstype === "cgroup2") {
      unified ??= h;
      continue;
    }
    for (const opt of (post[2] ?? "").split(",")) {
      if (!opt || NON_CONTROLLER_OPTIONS.has(opt) || opt.startsWith("release_agent=")) continue;
      v1[opt] ??= h;
    }
  }
  return layoutOf(v1, unified);
}

function layoutOf(v1: Record<string, Hierarchy>, unified: Hierarchy | undefined): CgroupLayout {
  const realV1 = Object.keys(v1).some((c) => !c.startsWith("name="));
  if (realV1) return { mode: unified ? "hybrid" : "v1", v1, unified };
  if (unified) return { mode: "v2", v1: {}, unified };
  return { mode: "v1", v1 };
}

/**
 * The layout of a directory that stands in for /sys/fs/cgroup (unit tests, or a hierarchy mounted
 * somewhere else). `<root>/cgroup.controllers` → v2; otherwise every sub-directory is a v1 hierarchy
 * named after its controllers ("cpu,cpuacct", "systemd" = name=systemd), and a sub-directory holding a
 * cgroup.controllers file is the cgroup2 mount of a hybrid layout.
 */
export function layoutFromRoot(root: string): CgroupLayout {
  if (existsSync(join(root, "cgroup.controllers")))
    return { mode: "v2", v1: {}, unified: { mountpoint: root, root: "/" } };
  const v1: Record<string, Hierarchy> = {};
  let unified: Hierarchy | undefined;
  for (const name of readdirSync(root).sort()) {
    const dir = join(root, name);
    if (!isDir(dir)) continue;
    if (existsSync(join(dir, "cgroup.controllers"))) {
      unified ??= { mountpoint: dir, root: "/" };
      continue;
    }
    for (const c of name.split(",")) {
      const key = c === "systemd" ? "name=systemd" : c;
      v1[key] ??= { mountpoint: dir, root: "/" };
    }
  }
  return layoutOf(v1, unified);
}

/** The host's layout. */
export function detectLayout(root?: string): CgroupLayout {
  if (root) return layoutFromRoot(root);
  return parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8"));
}

export interface OwnCgroups {
  /** v1 controller → this process's cgroup in that hierarchy. */
  v1: Record<string, string>;
  /** This process's cgroup2 path ("0::<path>"). */
  unified?: string;
}

/** Parses /proc/self/cgroup ("id:controllers:path" lines). */
export function parseProcCgroup(text: string): OwnCgroups {
  const out: OwnCgroups = { v1: {} };
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, id, controllers, path] = m;
    if (id === "0" && controllers === "") {
      out.unified = path;
      continue;
    }
    for (const c of controllers!.split(",")) if (c) out.v1[c] = path!;
  }
  return out;
}

export function ownCgroups(text?: string): OwnCgroups {
  return parseProcCgroup(text ?? readFileSync("/proc/self/cgroup", "utf8"));
}
