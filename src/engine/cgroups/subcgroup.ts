// `exec --cgroup [<controller>[,<controller>...]:]<path>`: an exec'd process joins an existing
// sub-cgroup of the container's cgroup instead of the container's own, with runc 1.1's rules and words:
// one argument without a controller applies to every hierarchy; otherwise each argument names its
// controllers (cgroup v1 only; on v2 the only "controller" is the whole tree); a path that leaves the
// container's cgroup is refused. Like runc, nothing is created: the sub-cgroup must exist.
import { posix } from "node:path";
import type { CgroupMode } from "./layout";
import { UNIFIED } from "./paths";

/** runc's getSubCgroupPaths: controller → sub path ("" = every hierarchy). Empty list → undefined. */
export function parseSubCgroupArgs(args: string[] | undefined): Record<string, string> | undefined {
  if (!args?.length) return undefined;
  const subs: Record<string, string> = {};
  for (const a of args) {
    const parts = a.split(":");
    if (parts.length > 2) throw new Error(`invalid --cgroup argument: ${a}`);
    if (parts.length === 1) {
      if (args.length !== 1)
        throw new Error(`invalid --cgroup argument: ${a} (missing <controller>: prefix)`);
      subs[""] = a;
      continue;
    }
    for (const ctrl of parts[0].split(",")) subs[ctrl] = parts[1];
  }
  return subs;
}

/**
 * The directories an exec'd process joins: the container's cgroup directories (as saved by its manager,
 * "unified" for the cgroup2 hierarchy), with the --cgroup sub paths below them. Throws runc's error for
 * an unknown controller or a path outside the container's cgroup.
 */
export function subCgroupDirs(
  mode: CgroupMode,
  paths: Record<string, string>,
  subs: Record<string, string>,
): string[] {
  // runc's keys: v1 controllers by name, the cgroup2 hierarchy as "" (never addressable by name).
  const byController: Record<string, string> = {};
  for (const [k, v] of Object.entries(paths)) {
    if (mode === "v2" && k !== UNIFIED) continue;
    byController[k === UNIFIED ? "" : k] = v;
  }
  const below = (base: string, add: string): string => {
    const p = posix.join(base, add);
    // runc compares with a bare string prefix, which lets "../<name>x" through; a directory boundary does not.
    if (p !== base && !p.startsWith(`${base}/`)) throw new Error(`${add} is not a sub cgroup path`);
    return p;
  };
  for (const ctrl of Object.keys(subs))
    if (!("" in subs) && byController[ctrl] === undefined)
      throw new Error(`unknown controller ${ctrl} in SubCgroupPaths`);
  // One target per hierarchy directory: co-mounted controllers (cpu,cpuacct) share it, and a second
  // write of the pid to the plain directory would undo the sub-cgroup.
  const target = new Map<string, string>();
  for (const [ctrl, base] of Object.entries(byController)) {
    const add = subs[""] ?? subs[ctrl];
    if (add !== undefined) target.set(base, below(base, add));
    else if (!target.has(base)) target.set(base, base);
  }
  return [...target.values()];
}
