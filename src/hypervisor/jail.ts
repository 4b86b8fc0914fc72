// The VMM jail (Firecracker's jailer is the model): QEMU starts through native/jailer (kata-ts-jailer),
// which gives it
// - a mount namespace of its own whose root is an empty read-only tmpfs holding only the sandbox's VM
//   directory (sockets, logs, pid file), its share, the kernel and the image, the QEMU installation
//   (/usr, read-only) and the device nodes it uses (the mounts are slaves of the host's: container
//   rootfses bound into the share later still reach it; nothing it mounts reaches the host);
// - an unprivileged uid/gid ([hypervisor.qemu] rootless_user, created if missing) that keeps only the
//   capabilities the 9p server needs to act for the guest's root on the share (JAIL_CAPS: read and
//   write any file, chown, chmod/utimes of files it does not own, keep set-id bits), as ambient
//   capabilities so they survive the exec; everything else leaves even the bounding set;
// - SIGKILL when its parent (the supervisor) dies, set after the uid change (which clears it).
// QEMU's own seccomp filter (`-sandbox`, [hypervisor.qemu] seccompsandbox) is on its command line, and
// the supervisor, whose children QEMU and virtiofsd are, runs in the sandbox's cgroup. docs/hypervisor.md
// ("The VMM jail") gives the reasons and the measured cost.
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, realpathSync } from "node:fs";
import type { QemuConfig } from "../config/config";
import { findNativeFile } from "../sys/native";

export const JAILER_BINARY = "kata-ts-jailer";

/**
 * The empty directory each jail's root tmpfs is mounted on, inside the jail's own mount namespace only:
 * on the host it stays an empty directory that nothing is ever mounted on.
 */
export const JAIL_MOUNTPOINT = "/run/kata-ts/jail";

/** Capability numbers (linux/capability.h) QEMU keeps as the jail's uid. */
export const CAPS = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_DAC_READ_SEARCH: 2,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
} as const;

/**
 * What 9p (security_model=none: the files the guest's root makes belong to root on the host) needs to
 * act for the guest's root on the container's files. Not CAP_MKNOD (a device node made in the share
 * must not become a way to the host's disks), not CAP_SETUID/SETGID (QEMU's local 9p backend never
 * switches ids), not CAP_DAC_READ_SEARCH (CAP_DAC_OVERRIDE covers reading files and searching
 * directories; open_by_handle_at is not used).
 */
export const JAIL_CAPS: readonly number[] = [
  CAPS.CAP_CHOWN,
  CAPS.CAP_DAC_OVERRIDE,
  CAPS.CAP_FOWNER,
  CAPS.CAP_FSETID,
];

/** Kata's seccompsandbox, with elevateprivileges=deny too (kata-ts never daemonizes QEMU). */
export const DEFAULT_SECCOMP_SANDBOX =
  "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

export interface JailSpec {
  jailer: string;
  /** Mount namespace with a tmpfs root on this directory; undefined: QEMU sees the host's tree. */
  root?: string;
  /** Read-write binds (same path inside). */
  binds: string[];
  /** Read-only binds (same path inside). */
  readonlyBinds: string[];
  /** Symlinks recreated as they are on the host (merged /usr: /lib -> usr/lib). */
  links: string[];
  /** Device nodes bound at the same path. */
  devices: string[];
  /** A read-only /proc with only the jail uid's process directories (9p uses /proc/self/fd). */
  proc?: boolean;
  /** Unprivileged identity; undefined: QEMU stays root. */
  user?: { uid: number; gid: number };
  caps: number[];
}

/**
 * The argv that runs `argv` in the jail, with the parent-death signal tied to `parent`, the process
 * that spawns it (default: this one; null: whichever is the jailer's parent when it starts): the jailer
 * exits rather than run orphaned if that process died before the signal was set. Pure.
 */
export function jailArgv(j: JailSpec, argv: string[], parent: number | null = process.pid): string[] {
  const a = [j.jailer];
  if (j.root) {
    a.push("--root", j.root);
    // Parents before children (the jailer mounts in order): a bind inside another goes on top of it.
    const binds = [
      ...j.binds.map((p) => ["--bind", p]),
      ...j.readonlyBinds.map((p) => ["--bind-ro", p]),
    ].sort((x, y) => x[1].split("/").length - y[1].split("/").length);
    for (const b of binds) a.push(...b);
    for (const p of j.links) a.push("--link", p);
    for (const p of j.devices) a.push("--dev", p);
    if (j.proc) a.push("--proc");
  }
  if (j.user) {
    a.push("--uid", String(j.user.uid), "--gid", String(j.user.gid));
    for (const c of j.caps) a.push("--cap", String(c));
  }
  a.push("--pdeathsig");
  if (parent !== null) a.push("--parent", String(parent));
  a.push("--", ...argv);
  return a;
}

/** The host paths a VM needs, as the jail's binds are computed from them. */
export interface JailNeeds {
  qemuPath: string;
  /** Directories QEMU writes in (its VM directory, 9p share sources). */
  writable: string[];
  /** Files QEMU reads at start (kernel, image, initrd, firmware). */
  readable: string[];
  /** Device nodes (/dev/urandom for virtio-rng, /dev/kvm, /dev/net/tun). */
  devices: string[];
}

function under(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith("/") ? dir : `${dir}/`);
}

/** The top-level directories a program and its libraries come from (merged-/usr hosts: links). */
const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];

/**
 * The jail's binds for a VM: the system directories read-only (or as links where they are symlinks),
 * the writable directories (a directory below another is not bound twice), the boot files read-only,
 * the devices. `isLink`/`exists` stand in for the host (tests).
 */
export function jailMounts(
  n: JailNeeds,
  host: { isLink(p: string): boolean; exists(p: string): boolean } = {
    isLink: (p) => lstatSync(p, { throwIfNoEntry: false })?.isSymbolicLink() ?? false,
    exists: existsSync,
  },
): Pick<JailSpec, "binds" | "readonlyBinds" | "links" | "devices"> {
  const links: string[] = [];
  const ro: string[] = [];
  for (const d of SYSTEM_DIRS) {
    if (!host.exists(d)) continue;
    if (host.isLink(d)) links.push(d);
    else ro.push(d);
  }
  // A QEMU installed outside the system directories (e.g. /opt/kata/bin/qemu) is bound by itself.
  const q = n.qemuPath;
  if (!ro.some((d) => under(q, d)) && !links.some((d) => under(q, d))) ro.push(q);
  const rw: string[] = [];
  for (const w of [...new Set(n.writable)].sort((a, b) => a.length - b.length))
    if (!rw.some((d) => under(w, d))) rw.push(w);
  for (const r of n.readable)
    if (r && !ro.some((d) => under(r, d)) && !rw.some((d) => under(r, d)) && !ro.includes(r)) ro.push(r);
  return { binds: rw, readonlyBinds: ro, links, devices: [...new Set(n.devices)] };
}

/** uid and gid of a `passwd` line's fields (name:x:uid:gid:...); undefined when malformed. */
function passwdIds(f: string[]): { uid: number; gid: number } | undefined {
  if (f.length < 4 || !/^\d+$/.test(f[2]) || !/^\d+$/.test(f[3])) return undefined;
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/**
 * A user's uid and primary gid; undefined when it does not exist. /etc/passwd first (useradd puts the
 * jail's user there, and reading it spawns nothing: this runs at every VM start), then the name service.
 */
export function lookupUser(
  name: string,
  passwdFile = "/etc/passwd",
): { uid: number; gid: number } | undefined {
  try {
    for (const line of readFileSync(passwdFile, "utf8").split("\n")) {
      const f = line.split(":");
      if (f[0] === name) return passwdIds(f);
    }
  } catch {
    // no readable passwd file: the name service below
  }
  const r = spawnSync("getent", ["passwd", name], { encoding: "utf8" });
  return r.status === 0 ? passwdIds((r.stdout ?? "").trim().split(":")) : undefined;
}

/**
 * The jail's uid/gid: `name`'s, after creating it as a system user (no home, no login shell, a group of
 * its own) when it does not exist. Two sandboxes starting at once may both try: the loser finds it.
 */
export function ensureJailUser(name: string): { uid: number; gid: number } {
  if (!/^[a-z_][a-z0-9_-]{0,30}$/.test(name))
    throw new Error(`rootless_user "${name}" is not a valid user name`);
  const found = lookupUser(name);
  if (found) return checkUnprivileged(name, found);
  const r = spawnSync(
    "useradd",
    [
      "--system",
      "--user-group",
      "--no-create-home",
      "--home-dir",
      "/nonexistent",
      "--shell",
      "/usr/sbin/nologin",
      name,
    ],
    { encoding: "utf8" },
  );
  const made = lookupUser(name);
  if (!made) {
    const why = (r.error?.message ?? r.stderr ?? "").trim().split("\n").pop();
    throw new Error(
      `cannot create the VMM user ${name} (rootless_user): ${why || `useradd exit ${r.status}`}`,
    );
  }
  return checkUnprivileged(name, made);
}

function checkUnprivileged(name: string, u: { uid: number; gid: number }): { uid: number; gid: number } {
  if (u.uid === 0 || u.gid === 0)
    throw new Error(`rootless_user ${name} has uid or gid 0: the VMM would not be jailed`);
  return u;
}

/** What a configuration asks of the jail, in one line (check, logs). */
export function describeJail(q: QemuConfig, sandboxCgroupOnly: boolean): string {
  const parts = [
    q.seccompsandbox ? `seccomp -sandbox ${q.seccompsandbox}` : "no seccomp filter",
    q.rootless ? `user ${q.rootlessUser} with ${capNames(JAIL_CAPS).join(",")}` : "root",
    q.jailMountNamespace ? "own mount namespace" : "host mount namespace",
    sandboxCgroupOnly ? "sandbox cgroup" : "caller's cgroup",
  ];
  return parts.join("; ");
}

export function capNames(caps: readonly number[]): string[] {
  return caps.map(
    (c) =>
      Object.entries(CAPS)
        .find(([, n]) => n === c)?.[0]
        .toLowerCase() ?? String(c),
  );
}

/** The jail as `check` and `env` report it (nothing is created: a missing user is reported as such). */
export interface JailReport {
  seccompSandbox: string;
  rootless: boolean;
  user: string;
  /** The user's ids; undefined when it does not exist yet (the first sandbox creates it). */
  uid?: number;
  gid?: number;
  capabilities: string[];
  mountNamespace: boolean;
  sandboxCgroupOnly: boolean;
  /** The jailer binary; "" when it is not built. */
  jailer: string;
}

export function jailReport(q: QemuConfig, sandboxCgroupOnly: boolean): JailReport {
  const u = q.rootless ? lookupUser(q.rootlessUser) : undefined;
  return {
    seccompSandbox: q.seccompsandbox,
    rootless: q.rootless,
    user: q.rootless ? q.rootlessUser : "root",
    uid: q.rootless ? u?.uid : 0,
    gid: q.rootless ? u?.gid : 0,
    capabilities: q.rootless ? capNames(JAIL_CAPS) : ["all"],
    mountNamespace: q.jailMountNamespace,
    sandboxCgroupOnly,
    jailer: findNativeFile(JAILER_BINARY) ?? "",
  };
}

export interface VmmJailOptions {
  config: QemuConfig;
  needs: JailNeeds;
  /** Resolved uid/gid (default: ensureJailUser(config.rootlessUser) when rootless). */
  user?: { uid: number; gid: number };
}

/**
 * The jail for one VM per configuration, or undefined when nothing is jailed (rootless = false and
 * jail_mount_namespace = false: QEMU starts as before, under setpriv's parent-death signal).
 */
export function vmmJail(o: VmmJailOptions): JailSpec | undefined {
  const q = o.config;
  if (!q.rootless && !q.jailMountNamespace) return undefined;
  const jailer = findNativeFile(JAILER_BINARY);
  if (!jailer) throw new Error(`${JAILER_BINARY} not built: run \`make -C native\``);
  const spec: JailSpec = { jailer, binds: [], readonlyBinds: [], links: [], devices: [], caps: [] };
  if (q.jailMountNamespace) {
    mkdirSync(JAIL_MOUNTPOINT, { recursive: true, mode: 0o700 });
    spec.root = JAIL_MOUNTPOINT;
    let qemuPath = o.needs.qemuPath;
    try {
      qemuPath = realpathSync(qemuPath);
    } catch {
      // not resolvable: the path as configured is bound (spawn reports a missing QEMU)
    }
    Object.assign(spec, jailMounts({ ...o.needs, qemuPath }));
    // QEMU's 9p server sets modes and times through /proc/self/fd/N (without it a guest's file creation
    // fails with ENOENT).
    spec.proc = true;
  }
  if (q.rootless) {
    spec.user = o.user ?? ensureJailUser(q.rootlessUser);
    spec.caps = [...JAIL_CAPS];
  }
  return spec;
}
