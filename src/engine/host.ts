// The host facts the pure planner needs, read from the real system; and the expansion of a `cgroup`
// mount into what runc makes of it (v1: a tmpfs with one bind per hierarchy of the container's own
// cgroup, plus symlinks for co-mounted controllers; v2: cgroup2 in a cgroup namespace, else a bind).
import { lstatSync, readFileSync, statSync } from "node:fs";
import { posix } from "node:path";
import type { Mount } from "../oci/spec";
import { detectLayout } from "./cgroups";
import { MS } from "./mountopts";
import type { HostFacts } from "./plan";
import type { Rec } from "./protocol";

export function capLastCap(): number {
  try {
    return Number(readFileSync("/proc/sys/kernel/cap_last_cap", "utf8").trim());
  } catch {
    return 40;
  }
}

/** The container's /etc/passwd, read only if it is a regular file (a symlink could point at the host's). */
export function containerPasswd(rootfs: string): string | undefined {
  const p = posix.join(rootfs, "etc/passwd");
  try {
    if (!lstatSync(p).isFile()) return undefined;
    return readFileSync(p, "utf8");
  } catch {
    return undefined;
  }
}

export function cgroupMountRecords(
  m: Mount,
  flags: number,
  paths: Record<string, string>,
  cgroupNs: boolean,
  layout = detectLayout(),
): Rec[] {
  const dest = m.destination;
  if (layout.mode === "v2") {
    if (cgroupNs) return [["mount", "cgroup", dest, "cgroup2", String(flags), "0", "", "dir"]];
    const src = paths.unified;
    if (!src) return [];
    return [["mount", src, dest, "", String(flags | MS.BIND | MS.REC), "0", "", "dir"]];
  }
  const recs: Rec[] = [["mount", "tmpfs", dest, "tmpfs", String(flags & ~MS.RDONLY), "0", "mode=755", "dir"]];
  const seen = new Set<string>();
  for (const [controller, h] of Object.entries(layout.v1)) {
    if (seen.has(h.mountpoint)) continue;
    seen.add(h.mountpoint);
    const src = paths[controller];
    if (!src) continue;
    const name = posix.basename(h.mountpoint);
    recs.push(["mount", src, posix.join(dest, name), "", String(flags | MS.BIND | MS.REC), "0", "", "dir"]);
    if (name.includes(","))
      for (const part of name.split(",")) recs.push(["symlink", name, posix.join(dest, part)]);
  }
  // runc 1.1 leaves this tmpfs writable (only the hierarchies are read-only); so do we.
  return recs;
}

export function hostFacts(rootfs: string, cgroupMount?: HostFacts["cgroupMount"]): HostFacts {
  return {
    isDir(path) {
      try {
        return statSync(path).isDirectory();
      } catch {
        return undefined;
      }
    },
    exists(path) {
      try {
        statSync(path);
        return true;
      } catch {
        return false;
      }
    },
    passwd: containerPasswd(rootfs),
    capLastCap: capLastCap(),
    cgroupMount,
    ownMountNs: ownMountNs(),
  };
}

/** [st_dev, st_ino] of this process's mount namespace (see HostFacts.ownMountNs). */
export function ownMountNs(): [string, string] | undefined {
  try {
    const st = statSync("/proc/self/ns/mnt", { bigint: true });
    return [String(st.dev), String(st.ino)];
  } catch {
    return undefined;
  }
}
