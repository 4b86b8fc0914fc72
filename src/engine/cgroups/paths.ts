// linux.cgroupsPath → one directory per hierarchy, with runc's semantics:
//   - absolute ("/a/b"): relative to the root of every hierarchy (/sys/fs/cgroup/<ctrl>/a/b);
//   - relative ("a/b"): relative to the runtime's own cgroup in each hierarchy (/proc/self/cgroup); on a
//     pure v2 host relative to the *parent* of our own cgroup, because our own cgroup holds processes and
//     v2 forbids enabling controllers for children of a cgroup that has them (runc fs2 does the same);
//   - empty: the container id as a relative path (runc's specconv sets Name = id with an empty Parent);
//   - with --systemd-cgroup: "slice:prefix:name". No systemd runs here, so kata-ts does what systemd
//     would do on disk: <expanded slice>/<prefix>-<name>.scope under every hierarchy ("a-b.slice" expands
//     to /a.slice/a-b.slice; an empty slice is system.slice; an empty path is system.slice:kata-ts:<id>).
import { posix } from "node:path";
import type { CgroupLayout, Hierarchy, OwnCgroups } from "./layout";

export const UNIFIED = "unified";

/** runc's utils.CleanPath: lexical clean; a relative path cannot climb above its base. */
export function cleanPath(p: string): string {
  if (p === "") return "";
  let out = posix.normalize(p);
  if (!posix.isAbsolute(out)) out = posix.normalize(`/${out}`).slice(1) || ".";
  return out.length > 1 ? out.replace(/\/+$/, "") : out;
}

/** systemd's slice expansion ("a-b-c.slice" → "/a.slice/a-b.slice/a-b-c.slice"), as runc's ExpandSlice. */
export function expandSlice(slice: string): string {
  const suffix = ".slice";
  if (slice.length <= suffix.length || !slice.endsWith(suffix) || slice.includes("/"))
    throw new Error(`invalid slice name: ${slice}`);
  const name = slice.slice(0, -suffix.length);
  if (name === "-") return "/";
  let path = "";
  let prefix = "";
  for (const component of name.split("-")) {
    if (component === "") throw new Error(`invalid slice name: ${slice}`);
    path += `/${prefix}${component}${suffix}`;
    prefix += `${component}-`;
  }
  return path;
}

/** The cgroup a systemd-style "slice:prefix:name" designates, as a path from the hierarchy root. */
export function systemdCgroupPath(cgroupsPath: string, id: string): string {
  let slice = "system.slice";
  let prefix = "kata-ts";
  let name = id;
  if (cgroupsPath !== "") {
    const parts = cgroupsPath.split(":");
    if (parts.length !== 3)
      throw new Error(
        `expected cgroupsPath to be of format "slice:prefix:name" for systemd cgroups, got "${cgroupsPath}" instead`,
      );
    [slice, prefix, name] = parts as [string, string, string];
    if (slice === "") slice = "system.slice";
  }
  if (name === "" || name.includes("/"))
    throw new Error(`invalid systemd unit name in cgroupsPath: "${name}"`);
  // A name ending in .slice asks for a slice, anything else for a scope (runc's getUnitName).
  const unit = name.endsWith(".slice") ? name : prefix === "" ? `${name}.scope` : `${prefix}-${name}.scope`;
  return posix.join(expandSlice(slice), unit);
}

/** The path inside each hierarchy: absolute from its root, or relative to our own cgroup. */
export function innerPath(opts: { id: string; cgroupsPath?: string; systemd?: boolean }): string {
  const raw = opts.cgroupsPath ?? "";
  if (opts.systemd) return systemdCgroupPath(raw, opts.id);
  const inner = cleanPath(raw) || cleanPath(opts.id);
  if (inner === "." || inner === "/" || inner === "")
    throw new Error(`cgroupsPath "${raw}" designates the runtime's own or the root cgroup`);
  return inner;
}

/** Our own cgroup expressed relative to the hierarchy's mount (strips the mount root, if any). */
function relativeToMount(h: Hierarchy, cgroup: string): string {
  if (h.root !== "/" && (cgroup === h.root || cgroup.startsWith(`${h.root}/`)))
    return cgroup.slice(h.root.length) || "/";
  return cgroup;
}

/**
 * This process's own cgroup directory in one hierarchy: the unified one on a v2 host, else the pids
 * hierarchy (any v1 one when it has none). Undefined when no hierarchy is mounted.
 */
export function ownCgroupDir(layout: CgroupLayout, own: OwnCgroups): string | undefined {
  if (layout.mode === "v2" && layout.unified)
    return posix.join(layout.unified.mountpoint, relativeToMount(layout.unified, own.unified ?? "/"));
  const controller = layout.v1.pids ? "pids" : Object.keys(layout.v1)[0];
  if (controller === undefined) return undefined;
  const h = layout.v1[controller]!;
  return posix.join(h.mountpoint, relativeToMount(h, own.v1[controller] ?? "/"));
}

/**
 * controller → absolute directory for every hierarchy the layout has. v1 controllers are keyed by name
 * (co-mounted ones share a directory), the cgroup2 hierarchy by "unified" (in hybrid mode too: runc also
 * puts the container in the unified hierarchy there).
 */
export function resolvePaths(inner: string, layout: CgroupLayout, own: OwnCgroups): Record<string, string> {
  const paths: Record<string, string> = {};
  const absolute = posix.isAbsolute(inner);
  for (const [controller, h] of Object.entries(layout.v1)) {
    if (absolute) paths[controller] = posix.join(h.mountpoint, inner);
    else {
      const mine = own.v1[controller] ?? "/";
      paths[controller] = posix.join(h.mountpoint, relativeToMount(h, mine), inner);
    }
  }
  if (layout.unified) {
    const h = layout.unified;
    if (absolute) paths[UNIFIED] = posix.join(h.mountpoint, inner);
    else {
      let mine = relativeToMount(h, own.unified ?? "/");
      if (layout.mode === "v2") mine = posix.dirname(mine);
      paths[UNIFIED] = posix.join(h.mountpoint, mine, inner);
    }
  }
  return paths;
}
