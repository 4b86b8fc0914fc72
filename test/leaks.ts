// Leak scanner for integration tests: after `delete`, nothing of a container may remain on the host.
//
// API:
//   const before = snapshotHost();            // before the container is created
//   ... create / start / run / delete ...
//   assertNoLeaks(before, { root, bundle, id });   // throws AssertionError listing every leak
//   findLeaks(before, target) -> string[]          // the same checks, returned instead of thrown
//
// Only what belongs to the test counts: the machine is shared, and other programs (other tests, engines,
// other helpers' QEMUs) create processes, cgroups and network namespaces while a test runs. An object is
// the test's when it names the test's state root or bundle (both private temp dirs), or when it names the
// container id AND is new since the snapshot. Everything the test made stays strictly checked.
//
// What counts as a leak:
//   - a process whose cmdline mentions the bundle path, whose cwd or root lies in the bundle, or that has
//     a file open under the bundle or the state root; or a process started after the snapshot whose
//     cmdline mentions the id or whose cgroup path contains it (scans /proc; the calling process and its
//     ancestors are ignored);
//   - a mount (in this process's mount namespace) at or below the bundle or the state root;
//   - a cgroup directory whose name contains the id, in any v1 hierarchy or the unified tree
//     (searched to depth 6 below each mount in /sys/fs/cgroup);
//   - the state directory <root>/<id>, or any fifo or socket left under <root>;
//   - a virtiofsd or QEMU process whose cmdline names the state root (VM mode: their sockets and the
//     shared directory live under <root>/sandboxes, or under /run/kata-ts/s/<hash> with the id in QEMU's
//     -name), and a lock file of QEMU's C virtiofsd (/run/virtiofsd/<socket path, "/" → ".">.pid)
//     naming the state root: the daemon leaves it when it is killed;
//   - an entry in /run/netns, new since the snapshot, that is the test's: its name contains the id, or
//     it is the network namespace of a leaked process. An unrelated netns another program adds during
//     the run (an engine's, another test's) is not this test's leak.
// Ids should be distinctive (e.g. "ktc-<pid>-<n>"): matching is by substring.
import assert from "node:assert/strict";
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { join } from "node:path";

export interface HostSnapshot {
  pids: Set<number>;
  mounts: Set<string>;
  cgroups: Set<string>;
  netns: Set<string>;
}

export interface LeakTarget {
  /** the runtime's --root (state directory parent) */
  root: string;
  /** the bundle directory */
  bundle: string;
  /** the container id */
  id: string;
  /** netns names the test made itself and removes itself (never reported, even if named with the id) */
  allowNetns?: string[];
}

const CGROUP_BASE = "/sys/fs/cgroup";
const MAX_CGROUP_DEPTH = 6;
const VIRTIOFSD_LOCKS = "/run/virtiofsd";

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

function listPids(): number[] {
  return readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

/** Mount points of this process's mount namespace (octal escapes decoded). */
function listMounts(): string[] {
  const text = readText("/proc/self/mountinfo") ?? "";
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) =>
      l.split(" ")[4].replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(Number.parseInt(o, 8))),
    );
}

/** Cgroup hierarchy mount points (each v1 controller and the unified tree). */
function cgroupMounts(): string[] {
  const text = readText("/proc/self/mountinfo") ?? "";
  const out: string[] = [];
  for (const l of text.split("\n")) {
    const f = l.split(" ");
    const sep = f.indexOf("-");
    if (sep < 0) continue;
    const type = f[sep + 1];
    if ((type === "cgroup" || type === "cgroup2") && f[4].startsWith(CGROUP_BASE)) out.push(f[4]);
  }
  return out;
}

function walkCgroups(dir: string, depth: number, out: string[]): void {
  if (depth > MAX_CGROUP_DEPTH) return;
  let entries: import("node:fs").Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const p = join(dir, e.name);
    out.push(p);
    walkCgroups(p, depth + 1, out);
  }
}

function listCgroups(): string[] {
  const out: string[] = [];
  for (const m of cgroupMounts()) walkCgroups(m, 1, out);
  return out;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function listNetns(): string[] {
  return listDir("/run/netns");
}

/** The host state before a test creates its container. */
export function snapshotHost(): HostSnapshot {
  return {
    pids: new Set(listPids()),
    mounts: new Set(listMounts()),
    cgroups: new Set(listCgroups()),
    netns: new Set(listNetns()),
  };
}

function ancestors(): Set<number> {
  const out = new Set<number>();
  let pid = process.pid;
  while (pid > 1 && !out.has(pid)) {
    out.add(pid);
    const stat = readText(`/proc/${pid}/stat`);
    if (!stat) break;
    pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  }
  return out;
}

/** The first open file of a process inside one of `dirs`, if any. */
function openFileIn(pid: number, dirs: string[]): string | undefined {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  for (const fd of fds) {
    const target = readLink(`/proc/${pid}/fd/${fd}`);
    if (target && dirs.some((d) => within(target, d))) return target;
  }
  return undefined;
}

function within(path: string | undefined, dir: string): boolean {
  if (!path) return false;
  const clean = path.replace(/ \(deleted\)$/, "");
  return clean === dir || clean.startsWith(`${dir.replace(/\/$/, "")}/`);
}

function walkSpecialFiles(dir: string, out: string[], depth = 0): void {
  if (depth > 8) return;
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of entries) {
    const p = join(dir, name);
    let st: import("node:fs").Stats;
    try {
      st = lstatSync(p);
    } catch {
      continue;
    }
    if (st.isFIFO()) out.push(`fifo ${p}`);
    else if (st.isSocket()) out.push(`socket ${p}`);
    else if (st.isDirectory()) walkSpecialFiles(p, out, depth + 1);
  }
}

/** "net:[inode]" of a bound network namespace file, as /proc/<pid>/ns/net reads. */
function netnsOf(path: string): string | undefined {
  try {
    return `net:[${statSync(path).ino}]`;
  } catch {
    return undefined;
  }
}

/** Every leak found (empty when the container left nothing behind). */
export function findLeaks(before: HostSnapshot, t: LeakTarget): string[] {
  const leaks: string[] = [];
  const skip = ancestors();
  const leakedNetns = new Set<string>();

  for (const pid of listPids()) {
    if (skip.has(pid)) continue;
    const stat = readText(`/proc/${pid}/stat`);
    // Gone while we looked, or a zombie: an exited container process that the host's init has not
    // reaped yet holds nothing but its pid, and reaping it is its parent's job, not the runtime's.
    if (stat === undefined || stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
    const cmdline = readText(`/proc/${pid}/cmdline`)?.replace(/\0/g, " ").trim();
    if (cmdline === undefined) continue;
    const cwd = readLink(`/proc/${pid}/cwd`);
    const root = readLink(`/proc/${pid}/root`);
    const why: string[] = [];
    // The id alone is evidence only for a process the test could have started (new since the snapshot):
    // a same-named container of another run that was already there is not this test's.
    const isNew = !before.pids.has(pid);
    if (cmdline.includes(t.bundle) || (isNew && cmdline.includes(t.id))) why.push("cmdline");
    if (within(cwd, t.bundle)) why.push(`cwd ${cwd}`);
    if (within(root, t.bundle)) why.push(`root ${root}`);
    // A process that pivoted into the rootfs shows root "/" from here; its cgroup membership and
    // open files (an exec fifo, the bundle) still name the container.
    const cg = readText(`/proc/${pid}/cgroup`);
    if (isNew && cg?.split("\n").some((l) => l.slice(l.lastIndexOf(":") + 1).includes(t.id)))
      why.push("cgroup");
    const comm = readText(`/proc/${pid}/comm`)?.trim();
    if ((comm === "virtiofsd" || comm?.startsWith("qemu-system")) && cmdline.includes(t.root))
      why.push("VM process of the state root");
    const fd = openFileIn(pid, [t.bundle, t.root]);
    if (fd) why.push(`fd ${fd}`);
    if (why.length > 0) {
      leaks.push(`process ${pid} (${why.join(", ")}): ${cmdline || "<no cmdline>"}`);
      const ns = readLink(`/proc/${pid}/ns/net`);
      if (ns) leakedNetns.add(ns);
    }
  }

  for (const m of listMounts()) {
    if (within(m, t.bundle) || within(m, t.root)) leaks.push(`mount ${m}`);
  }

  for (const c of listCgroups()) {
    if (before.cgroups.has(c)) continue;
    const name = c.slice(c.lastIndexOf("/") + 1);
    if (name.includes(t.id)) leaks.push(`cgroup ${c}`);
  }

  const state = join(t.root, t.id);
  if (existsSync(state)) leaks.push(`state dir ${state}`);
  const special: string[] = [];
  walkSpecialFiles(t.root, special);
  for (const s of special) leaks.push(s);

  const lockName = `${t.root.replace(/\/$/, "")}/`.replace(/\//g, ".");
  for (const f of listDir(VIRTIOFSD_LOCKS))
    if (f.startsWith(lockName)) leaks.push(`virtiofsd lock ${join(VIRTIOFSD_LOCKS, f)}`);

  const allowed = new Set(t.allowNetns ?? []);
  for (const n of listNetns()) {
    if (before.netns.has(n) || allowed.has(n)) continue;
    if (n.includes(t.id) || leakedNetns.has(netnsOf(join("/run/netns", n)) ?? ""))
      leaks.push(`netns /run/netns/${n}`);
  }
  return leaks;
}

/** Throws an AssertionError that lists every leak of the container. */
export function assertNoLeaks(before: HostSnapshot, t: LeakTarget): void {
  const leaks = findLeaks(before, t);
  assert.deepEqual(leaks, [], `container ${t.id} left things behind:\n  ${leaks.join("\n  ")}`);
}
