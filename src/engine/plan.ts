// Spec → plan for the helper. Pure: everything it needs from the host (is a mount source a directory,
// the container's /etc/passwd, the cgroup layout, cap_last_cap) comes in through `HostFacts`, so unit
// tests can drive it with fixed facts. The record vocabulary is documented in docs/engine.md.

import { posix } from "node:path";
import { KataError } from "../errors";
import { capabilityNumber, rlimitNumber } from "../oci/names";
import type { Capabilities, LinuxDevice, Mount, NamespaceType, Process, Seccomp, Spec } from "../oci/spec";
import { MS, PROPAGATION, parseMountOptions } from "./mountopts";
import type { Rec } from "./protocol";

export const CLONE_FLAGS: Record<NamespaceType, number> = {
  mount: 0x00020000,
  cgroup: 0x02000000,
  uts: 0x04000000,
  ipc: 0x08000000,
  user: 0x10000000,
  pid: 0x20000000,
  network: 0x40000000,
  time: 0x00000080,
};

/** setns order: the user namespace first (it owns the others), the mount namespace last. */
export const JOIN_ORDER: readonly NamespaceType[] = [
  "user",
  "ipc",
  "uts",
  "network",
  "pid",
  "cgroup",
  "mount",
];

/** /proc/PID/ns/<name> for each namespace type. */
export const PROC_NS_NAME: Record<NamespaceType, string> = {
  mount: "mnt",
  cgroup: "cgroup",
  uts: "uts",
  ipc: "ipc",
  user: "user",
  pid: "pid",
  network: "net",
  time: "time",
};

export interface HostFacts {
  /** True when the host path is a directory (bind-mount sources); undefined = does not exist. */
  isDir(path: string): boolean | undefined;
  /** Text of the container's /etc/passwd, if any (for HOME). */
  passwd?: string;
  /** Highest capability number the kernel knows. */
  capLastCap: number;
  /** How to expand a `cgroup` mount: the records that make /sys/fs/cgroup inside the container. */
  cgroupMount?: (m: Mount, flags: number) => Rec[];
  /** Host devices exist (for bind-mounting them in a user namespace). */
  exists(path: string): boolean;
  /**
   * [st_dev, st_ino] of kata-ts's own mount namespace (/proc/self/ns/mnt): the container init refuses to
   * mount while it is still in it (the helper also compares with its own at start).
   */
  ownMountNs?: [string, string];
}

export interface InitPlanOptions {
  spec: Spec;
  bundle: string;
  rootfs: string;
  /** Path of the exec fifo in the state directory. */
  fifo: string;
  consoleSocket?: string;
  /** The caller hands the helper a console socket fd (launch({consoleFd})) instead of a path. */
  consoleFd?: boolean;
  noPivot?: boolean;
  preserveFds?: number;
  /** runc's per-container session keyring ("_ses.<id>"); undefined with --no-new-keyring. */
  sessionKeyring?: string;
  facts: HostFacts;
}

export interface InitPlan {
  /** Read by the helper before clone. */
  phase1: Rec[];
  /** Read by the container process once the caller is done; built with the createContainer state. */
  phase2: (stateJson: string) => Rec[];
  /** A new user namespace is made: the caller writes these maps before sending phase 2. */
  uidMappings?: string;
  gidMappings?: string;
  /** Namespaces the container gets: type → "new" or the joined path. */
  namespaces: Partial<Record<NamespaceType, string>>;
}

export class PlanError extends KataError {
  constructor(message: string) {
    super(message);
    this.name = "PlanError";
  }
}

/** u64 as a decimal string; JSON numbers near 2^64 (RLIM_INFINITY, masks) clamp to 2^64-1. */
export function u64(n: number): string {
  if (!Number.isFinite(n) || n < 0) throw new PlanError(`not an unsigned 64-bit value: ${n}`);
  if (n >= 2 ** 64 - 1) return "18446744073709551615";
  if (n > Number.MAX_SAFE_INTEGER) return BigInt(Math.round(n)).toString();
  return String(Math.trunc(n));
}

function mapText(
  maps: { containerID: number; hostID: number; size: number }[] | undefined,
): string | undefined {
  if (!maps || maps.length === 0) return undefined;
  return maps.map((m) => `${m.containerID} ${m.hostID} ${m.size}\n`).join("");
}

/** Phase 1 for a new container: namespaces to join, the fifo, the console socket, the clone flags. */
function initPhase1(
  opts: InitPlanOptions,
  wait: boolean,
): { recs: Rec[]; namespaces: InitPlan["namespaces"] } {
  const nss = opts.spec.linux?.namespaces ?? [];
  const recs: Rec[] = [];
  let flags = 0;
  const namespaces: InitPlan["namespaces"] = {};
  for (const ns of nss) {
    if (!ns.path) {
      // A new cgroup namespace is made in phase 2, after the caller put the pid in its cgroups, so
      // its root is the container's cgroup (as runc does).
      // A time namespace cannot be made by clone: the helper unshares it (it then applies to children).
      if (ns.type !== "cgroup" && ns.type !== "time") flags |= CLONE_FLAGS[ns.type];
      namespaces[ns.type] = "new";
    } else namespaces[ns.type] = ns.path;
  }
  if (!namespaces.mount) throw new PlanError("linux.namespaces: a mount namespace is required");
  if (opts.facts.ownMountNs) recs.push(["forbid-mntns", ...opts.facts.ownMountNs]);
  for (const t of JOIN_ORDER) {
    const p = namespaces[t];
    if (p && p !== "new") recs.push(["setns", p, t]);
  }
  if (namespaces.time === "new") {
    const lines: string[] = [];
    for (const [clock, o] of Object.entries(opts.spec.linux?.timeOffsets ?? {})) {
      if (clock !== "monotonic" && clock !== "boottime")
        throw new PlanError(`linux.timeOffsets: unknown clock ${JSON.stringify(clock)}`);
      lines.push(`${clock} ${Math.trunc(o.secs ?? 0)} ${Math.trunc(o.nanosecs ?? 0)}`);
    }
    recs.push(["timens", ...lines]);
  }
  recs.push(["mkfifo", opts.fifo]);
  const sec = opts.spec.linux?.seccomp;
  // Connected before any setns/pivot: the listener's path is the caller's.
  if (sec?.listenerPath && usesSeccompNotify(sec)) recs.push(["seccomp-connect", sec.listenerPath]);
  if (opts.consoleSocket) recs.push(["console-connect", opts.consoleSocket]);
  else if (opts.consoleFd && opts.spec.process?.terminal) recs.push(["console-fd"]);
  // Foreground with a terminal and no console socket: the waiting helper relays the pty, as runc does.
  else if (wait && opts.spec.process?.terminal) recs.push(["console-relay"]);
  const clone: Rec = ["clone", String(flags), wait ? "wait" : "detach"];
  // A new IPC namespace's mqueue root belongs to whoever's fsuid/fsgid made the namespace. runc makes it
  // after setresuid(0) in the new user namespace but before any setgid: uid = the container's root,
  // gid = the host's 0 (unmapped). We make every namespace in one clone, so the helper clones with
  // fsuid = the container root's host id (its fsgid stays 0): /dev/mqueue is 0:65534 inside, as runc's.
  const rootHost = namespaces.user === "new" ? hostIdOf(0, opts.spec.linux?.uidMappings) : undefined;
  if (rootHost !== undefined) clone.push(String(rootHost));
  recs.push(clone);
  return { recs, namespaces };
}

/** The host id a container id maps to, if a mapping covers it. */
function hostIdOf(id: number, maps: { containerID: number; hostID: number; size: number }[] | undefined) {
  const m = maps?.find((x) => id >= x.containerID && id < x.containerID + x.size);
  return m ? m.hostID + (id - m.containerID) : undefined;
}

// runc's default devices, in runc's order (what a container sees in /proc/self/mountinfo under userns).
const DEFAULT_DEVICES: LinuxDevice[] = [
  { path: "/dev/null", type: "c", major: 1, minor: 3 },
  { path: "/dev/random", type: "c", major: 1, minor: 8 },
  { path: "/dev/full", type: "c", major: 1, minor: 7 },
  { path: "/dev/tty", type: "c", major: 5, minor: 0 },
  { path: "/dev/zero", type: "c", major: 1, minor: 5 },
  { path: "/dev/urandom", type: "c", major: 1, minor: 9 },
];

function abs(p: string): string {
  return posix.normalize(p.startsWith("/") ? p : `/${p}`);
}

/** The records for one spec mount. */
export function mountRecords(m: Mount, bundle: string, facts: HostFacts): Rec[] {
  const dest = abs(m.destination);
  const { flags, propagation, data, attrSet, attrClr } = parseMountOptions(m.options);
  const type = m.type ?? "";
  const isBind = (flags & MS.BIND) !== 0 || type === "bind";
  if (type === "cgroup" && !isBind) {
    if (!facts.cgroupMount) throw new PlanError(`mounts: cgroup mount at ${dest} needs the cgroup layout`);
    return facts.cgroupMount({ ...m, destination: dest }, flags);
  }
  if (isBind) {
    let src = m.source ?? "";
    if (!src.startsWith("/")) src = posix.join(bundle, src);
    const dir = facts.isDir(src);
    if (dir === undefined)
      throw new PlanError(
        `error mounting "${src}" to rootfs at "${dest}": stat ${src}: no such file or directory`,
      );
    return withAttrs([
      ["mount", src, dest, "", String(flags | MS.BIND), String(propagation), "", dir ? "dir" : "file"],
    ]);
  }
  return withAttrs([
    ["mount", m.source ?? type, dest, type, String(flags), String(propagation), data, "dir"],
  ]);

  function withAttrs(recs: Rec[]): Rec[] {
    if (attrSet || attrClr) recs.push(["setattr", dest, String(attrSet), String(attrClr)]);
    return recs;
  }
}

function capMask(names: readonly string[] | undefined, last: number): string {
  let mask = 0n;
  for (const n of names ?? []) {
    const c = capabilityNumber(n);
    if (c !== undefined && c <= last) mask |= 1n << BigInt(c);
  }
  return mask.toString();
}

export function capsRecord(c: Capabilities | undefined, last: number): Rec[] {
  if (!c) return [];
  return [
    [
      "caps",
      capMask(c.bounding, last),
      capMask(c.effective, last),
      capMask(c.permitted, last),
      capMask(c.inheritable, last),
      capMask(c.ambient, last),
    ],
  ];
}

const SECCOMP_ACTION: Record<string, number> = {
  SCMP_ACT_KILL: 0,
  SCMP_ACT_KILL_THREAD: 0,
  SCMP_ACT_KILL_PROCESS: 0x80000000,
  SCMP_ACT_TRAP: 0x00030000,
  SCMP_ACT_ERRNO: 0x00050000,
  SCMP_ACT_TRACE: 0x7ff00000,
  SCMP_ACT_LOG: 0x7ffc0000,
  SCMP_ACT_ALLOW: 0x7fff0000,
  SCMP_ACT_NOTIFY: 0x7fc00000,
};
const SECCOMP_OP: Record<string, number> = {
  SCMP_CMP_NE: 1,
  SCMP_CMP_LT: 2,
  SCMP_CMP_LE: 3,
  SCMP_CMP_EQ: 4,
  SCMP_CMP_GE: 5,
  SCMP_CMP_GT: 6,
  SCMP_CMP_MASKED_EQ: 7,
};
const EPERM = 1;

function seccompAction(name: string, errnoRet: number | undefined): number {
  const base = SECCOMP_ACTION[name];
  if (base === undefined) throw new PlanError(`linux.seccomp: unknown action ${name}`);
  if (name === "SCMP_ACT_ERRNO" || name === "SCMP_ACT_TRACE")
    return (base | ((errnoRet ?? EPERM) & 0xffff)) >>> 0;
  return base;
}

/** True when a rule hands syscalls to a user-space listener (linux.seccomp.listenerPath). */
export function usesSeccompNotify(s: Seccomp | undefined): boolean {
  return Boolean(s?.listenerPath && s.syscalls?.some((sc) => sc.action === "SCMP_ACT_NOTIFY"));
}

/**
 * What the listener receives with the notify fd (SCM_RIGHTS), as runc sends it: the OCI
 * ContainerProcessState with `fds: ["seccompFd"]`.
 */
export function seccompListenerMessage(s: Seccomp, state: string, pid: number): string {
  return JSON.stringify({
    ociVersion: "1.0.2",
    fds: ["seccompFd"],
    pid,
    metadata: s.listenerMetadata ?? "",
    state: JSON.parse(state),
  });
}

export function seccompRecords(s: Seccomp | undefined, listenerMessage?: string): Rec[] {
  if (!s) return [];
  const def = seccompAction(s.defaultAction, s.defaultErrnoRet);
  const recs: Rec[] = [["seccomp-default", String(def)]];
  if (listenerMessage !== undefined && usesSeccompNotify(s)) recs.push(["seccomp-message", listenerMessage]);
  for (const a of s.architectures ?? [])
    recs.push(["seccomp-arch", a.replace(/^SCMP_ARCH_/, "").toLowerCase()]);
  for (const f of s.flags ?? []) {
    if (f === "SECCOMP_FILTER_FLAG_LOG") recs.push(["seccomp-flag", "log"]);
    else if (f === "SECCOMP_FILTER_FLAG_SPEC_ALLOW") recs.push(["seccomp-flag", "spec_allow"]);
  }
  for (const sc of s.syscalls ?? []) {
    const action = seccompAction(sc.action, sc.errnoRet);
    // runc skips rules that say what the default already says (libseccomp rejects them); their names
    // still count for the ENOSYS stub (the highest syscall the profile knows, see seccomp.c).
    if (action === def) {
      if (sc.names.length) recs.push(["seccomp-known", ...sc.names]);
      continue;
    }
    const conds: string[] = [];
    for (const a of sc.args ?? []) {
      const op = SECCOMP_OP[a.op];
      if (op === undefined) throw new PlanError(`linux.seccomp: unknown operator ${a.op}`);
      conds.push(String(a.index), String(op), u64(a.value), u64(a.valueTwo ?? 0));
    }
    for (const name of sc.names) recs.push(["seccomp-rule", String(action), name, ...conds]);
  }
  return recs;
}

/**
 * The environment as runc's init builds it (os.Setenv in order): a later KEY=value replaces an earlier
 * one in place, so `exec --env` overrides the container's own; an entry without "=" is an error.
 */
export function mergeEnv(env: readonly string[]): string[] {
  const byKey = new Map<string, string>();
  for (const e of env) {
    const i = e.indexOf("=");
    if (i <= 0) throw new PlanError(`invalid environment variable: ${JSON.stringify(e)} (missing '=')`);
    byKey.set(e.slice(0, i), e);
  }
  return [...byKey.values()];
}

/** HOME from the container's /etc/passwd for uid, "/" when unknown (runc's default). */
export function homeFor(passwd: string | undefined, uid: number): string {
  for (const line of (passwd ?? "").split("\n")) {
    const f = line.split(":");
    if (f.length >= 6 && Number(f[2]) === uid && f[2] !== "") return f[5] || "/";
  }
  return "/";
}

/** The records describing the final process: rlimits, caps, user, seccomp, cwd, env, args. */
export function processRecords(
  p: Process,
  opts: {
    seccomp?: Seccomp;
    capLastCap: number;
    passwd?: string;
    preserveFds?: number;
    hooks?: Rec[];
    listenerMessage?: string;
  },
): Rec[] {
  const recs: Rec[] = [];
  for (const rl of p.rlimits ?? []) {
    const n = rlimitNumber(rl.type);
    if (n === undefined) throw new PlanError(`process.rlimits: unknown type ${rl.type}`);
    recs.push(["rlimit", String(n), u64(rl.soft), u64(rl.hard)]);
  }
  recs.push(...capsRecord(p.capabilities, opts.capLastCap));
  if (p.noNewPrivileges) recs.push(["nnp"]);
  recs.push(["user", String(p.user.uid), String(p.user.gid), ...(p.user.additionalGids ?? []).map(String)]);
  recs.push(...seccompRecords(opts.seccomp, opts.listenerMessage));
  recs.push(["cwd", p.cwd || "/"]);
  const env = mergeEnv(p.env ?? []);
  if (!env.some((e) => e.startsWith("HOME="))) env.push(`HOME=${homeFor(opts.passwd, p.user.uid)}`);
  for (const e of env) recs.push(["env", e]);
  const args = p.args ?? [];
  if (args.length === 0) throw new PlanError("process.args: must not be empty");
  for (const a of args) recs.push(["arg", a]);
  recs.push(["preserve", String(opts.preserveFds ?? 0)]);
  recs.push(...(opts.hooks ?? []));
  return recs;
}

/** A hook record the helper runs itself (createContainer / startContainer: inside the container). */
export function hookRecord(
  kind: string,
  h: { path: string; args?: string[]; env?: string[]; timeout?: number },
  state: string,
): Rec {
  const args = h.args ?? [];
  return [
    "hook",
    kind,
    String(h.timeout ?? 0),
    h.path,
    state,
    String(args.length),
    ...args,
    ...(h.env ?? []),
  ];
}

export function buildInitPlan(opts: InitPlanOptions, wait = false): InitPlan {
  const { spec, facts } = opts;
  const proc = spec.process;
  if (!proc) throw new PlanError("process: is required");
  const linux = spec.linux ?? {};
  const { recs: phase1, namespaces } = initPhase1(opts, wait);
  const newUserNs = namespaces.user === "new";
  const mounts = spec.mounts ?? [];
  const devBind = mounts.some(
    (m) =>
      abs(m.destination) === "/dev" && (parseMountOptions(m.options).flags & MS.BIND || m.type === "bind"),
  );
  // A read-only /dev (not a bind) is mounted writable and made read-only once the devices, the links,
  // the mounts under it and /dev/console exist, as runc does (mountPropagate + finalizeRootfs).
  const devMount = mounts.find((m) => abs(m.destination) === "/dev");
  const devFlags = devMount && !devBind ? parseMountOptions(devMount.options).flags : 0;
  const devReadonly = (devFlags & MS.RDONLY) !== 0;
  // Validate what can fail before anything runs.
  const mountRecs = mounts.flatMap((m) =>
    devReadonly && m === devMount
      ? mountRecords({ ...m, options: [...(m.options ?? []), "rw"] }, opts.bundle, facts)
      : mountRecords(m, opts.bundle, facts),
  );
  const procRecsBase = { seccomp: linux.seccomp, capLastCap: facts.capLastCap, passwd: facts.passwd };
  processRecords(proc, procRecsBase);
  if (proc.terminal && !opts.consoleSocket && !opts.consoleFd && !wait)
    throw new PlanError("cannot allocate tty if kata-ts will detach without setting console socket");
  if (!proc.terminal && opts.consoleSocket)
    throw new PlanError("cannot use console socket if kata-ts will not detach or allocate tty");
  let personality: number | undefined;
  if (linux.personality) personality = linux.personality.domain === "LINUX32" ? 0x0008 : 0;

  const phase2 = (state: string): Rec[] => {
    const r: Rec[] = [["setsid"], ["fifo", opts.fifo]];
    // In a new user namespace the maps are written by now: become its root (kuid = the mapped id), or
    // files we create would belong to an unmapped id (EOVERFLOW). Before the keyring: it belongs to our
    // real uid and only its owner (by fsuid) may set its permissions, as in runc's init.
    if (newUserNs) r.push(["become-root"]);
    if (opts.sessionKeyring) r.push(["keyring", opts.sessionKeyring]);
    // runc brings up a new network namespace's lo (as its root, before the rootfs): so do we.
    if (namespaces.network === "new") r.push(["lo-up"]);
    if (namespaces.cgroup === "new") r.push(["unshare", String(CLONE_FLAGS.cgroup)]);
    const prop = linux.rootfsPropagation ? PROPAGATION[linux.rootfsPropagation] : MS.SLAVE | MS.REC;
    if (prop) r.push(["prop", String(prop)]);
    r.push(["rootfs", opts.rootfs]);
    r.push(...mountRecs);
    if (!devBind) {
      const devs = [...(linux.devices ?? [])];
      for (const d of DEFAULT_DEVICES) if (!devs.some((x) => x.path === d.path)) devs.push(d);
      for (const d of devs) {
        const bind = newUserNs && facts.exists(d.path);
        r.push([
          "device",
          d.path,
          d.type === "u" ? "c" : d.type,
          String(d.major ?? 0),
          String(d.minor ?? 0),
          String(d.fileMode ?? 0o666),
          String(d.uid ?? 0),
          String(d.gid ?? 0),
          bind ? "1" : "0",
        ]);
      }
      r.push(
        ["symlink", "/proc/self/fd", "/dev/fd"],
        ["symlink", "/proc/self/fd/0", "/dev/stdin"],
        ["symlink", "/proc/self/fd/1", "/dev/stdout"],
        ["symlink", "/proc/self/fd/2", "/dev/stderr"],
      );
      if (facts.exists("/proc/kcore")) r.push(["symlink", "/proc/kcore", "/dev/core"]);
      if (mounts.some((m) => abs(m.destination) === "/dev/pts")) r.push(["ptmx"]);
    }
    // runc makes a missing cwd (as root, inside the rootfs) before pivoting.
    if (proc.cwd) r.push(["mkdir", proc.cwd, "493"]);
    for (const h of spec.hooks?.createContainer ?? []) r.push(hookRecord("createContainer", h, state));
    r.push([opts.noPivot ? "chroot" : "pivot"]);
    if (proc.terminal) {
      const cs = proc.consoleSize;
      r.push(["console", devBind ? "0" : "1", String(cs?.height ?? 0), String(cs?.width ?? 0)]);
    }
    if (devReadonly) r.push(["remount-ro", "/dev", String(devFlags)]);
    if (spec.root?.readonly) r.push(["root-readonly"]);
    if (spec.hostname) r.push(["hostname", spec.hostname]);
    if (spec.domainname) r.push(["domainname", spec.domainname]);
    for (const [k, v] of Object.entries(linux.sysctl ?? {})) r.push(["sysctl", k, v]);
    for (const p of linux.readonlyPaths ?? []) r.push(["readonly", p]);
    for (const p of linux.maskedPaths ?? []) r.push(["mask", p]);
    if (personality !== undefined) r.push(["personality", String(personality)]);
    r.push(["umask", String(proc.user.umask ?? 0o022)]);
    const startHooks = (spec.hooks?.startContainer ?? []).map((h) => hookRecord("startContainer", h, state));
    const listenerMessage = linux.seccomp
      ? seccompListenerMessage(linux.seccomp, state, Number(JSON.parse(state).pid ?? 0))
      : undefined;
    r.push(
      ...processRecords(proc, {
        ...procRecsBase,
        preserveFds: opts.preserveFds,
        hooks: startHooks,
        listenerMessage,
      }),
    );
    r.push(["go"]);
    return r;
  };
  return {
    phase1,
    phase2,
    namespaces,
    uidMappings: newUserNs ? mapText(linux.uidMappings) : undefined,
    gidMappings: newUserNs ? mapText(linux.gidMappings) : undefined,
  };
}

export interface ExecPlanOptions {
  process: Process;
  /** namespace type → /proc/PID/ns path to join (only those that differ from the caller's). */
  joins: Partial<Record<NamespaceType, string>>;
  seccomp?: Seccomp;
  consoleSocket?: string;
  /** As InitPlanOptions.consoleFd. */
  consoleFd?: boolean;
  preserveFds?: number;
  detach: boolean;
  capLastCap: number;
  passwd?: string;
  /** The container's state JSON (for a seccomp listener's message). */
  state?: string;
}

/** exec: join the init's namespaces, then the same process setup without mounts or fifo. */
export function buildExecPlan(o: ExecPlanOptions): { phase1: Rec[]; phase2: (pid: number) => Rec[] } {
  const p = o.process;
  if (p.terminal && !o.consoleSocket && !o.consoleFd && o.detach)
    throw new PlanError("cannot allocate tty if kata-ts will detach without setting console socket");
  if (!p.terminal && o.consoleSocket)
    throw new PlanError("cannot use console socket if kata-ts will not detach or allocate tty");
  const phase1: Rec[] = [];
  if (o.seccomp?.listenerPath && usesSeccompNotify(o.seccomp))
    phase1.push(["seccomp-connect", o.seccomp.listenerPath]);
  if (o.consoleSocket) phase1.push(["console-connect", o.consoleSocket]);
  else if (p.terminal) phase1.push(o.consoleFd ? ["console-fd"] : ["console-relay"]);
  for (const t of JOIN_ORDER) {
    const path = o.joins[t];
    if (path) phase1.push(["setns", path, t]);
  }
  phase1.push(["clone", "0", o.detach ? "detach" : "wait"]);
  const phase2: Rec[] = [["setsid"]];
  if (p.terminal) {
    const cs = p.consoleSize;
    phase2.push(["console", "0", String(cs?.height ?? 0), String(cs?.width ?? 0)]);
  }
  phase2.push(["umask", String(p.user.umask ?? 0o022)]);
  const phase2For = (pid: number): Rec[] => [
    ...phase2,
    ...processRecords(p, {
      seccomp: o.seccomp,
      capLastCap: o.capLastCap,
      passwd: o.passwd,
      preserveFds: o.preserveFds,
      listenerMessage: o.seccomp ? seccompListenerMessage(o.seccomp, o.state ?? "{}", pid) : undefined,
    }),
    ["go"],
  ];
  return { phase1, phase2: phase2For };
}
