// Semantic validation of config.json, following runc's libcontainer/specconv and configs/validate: every
// known field must have its documented type (unknown fields are ignored, as the spec says), and the
// cross-field rules runc enforces (namespaces vs. mappings, sysctls vs. namespaces, seccomp actions...)
// are checked here so that `create` fails before anything is set up. Messages are
// "<field path>: <what>" so the user can find the offending field.
import { KataError } from "../errors";
import {
  CAPABILITIES,
  RLIMITS,
  ROOTFS_PROPAGATIONS,
  SCHEDULER_FLAGS,
  SCHEDULER_POLICIES,
  SECCOMP_ACTIONS,
  SECCOMP_ARCHS,
  SECCOMP_FLAGS,
  SECCOMP_OPERATORS,
} from "./names";
import { CAPABILITY_SETS, HOOK_NAMES, NAMESPACE_TYPES, type Process, type Spec } from "./spec";

export class SpecError extends KataError {
  constructor(
    readonly field: string,
    readonly what: string,
  ) {
    super(`${field}: ${what}`);
    this.name = "SpecError";
  }
}

export interface ValidateOptions {
  /** `create`/`run` need a process; `delete`/`state` reading a stored config do not. Default true. */
  requireProcess?: boolean;
}

type Obj = Record<string, unknown>;

const INT32: [number, number] = [-2147483648, 2147483647];
const UINT16: [number, number] = [0, 65535];
const UINT32: [number, number] = [0, 4294967295];
// JSON numbers beyond 2^53 lose precision in JS; the range check only rejects what can never fit.
const INT64: [number, number] = [-(2 ** 63), 2 ** 63];
const UINT64: [number, number] = [0, 2 ** 64];

/** "a" + "b" → "a.b"; the top level has no prefix. */
function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

function fail(path: string, what: string): never {
  throw new SpecError(path, what);
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function obj(v: unknown, path: string): Obj {
  if (!isObj(v)) fail(path, `must be an object, got ${typeName(v)}`);
  return v;
}

function optObj(o: Obj, key: string, path: string): Obj | undefined {
  return o[key] === undefined ? undefined : obj(o[key], join(path, key));
}

function str(v: unknown, path: string): string {
  if (typeof v !== "string") fail(path, `must be a string, got ${typeName(v)}`);
  return v;
}

function optStr(o: Obj, key: string, path: string): string | undefined {
  return o[key] === undefined ? undefined : str(o[key], join(path, key));
}

function optBool(o: Obj, key: string, path: string): boolean | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") fail(join(path, key), `must be a boolean, got ${typeName(v)}`);
  return v;
}

function int(v: unknown, path: string, [min, max]: [number, number]): number {
  if (typeof v !== "number") fail(path, `must be an integer, got ${typeName(v)}`);
  if (!Number.isInteger(v)) fail(path, `must be an integer, got ${v}`);
  if (v < min || v > max) fail(path, `${v} is out of range [${min}, ${max}]`);
  return v;
}

function optInt(o: Obj, key: string, path: string, range: [number, number]): number | undefined {
  return o[key] === undefined ? undefined : int(o[key], join(path, key), range);
}

function reqInt(o: Obj, key: string, path: string, range: [number, number]): number {
  if (o[key] === undefined) fail(join(path, key), "is required");
  return int(o[key], join(path, key), range);
}

function arr(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) fail(path, `must be an array, got ${typeName(v)}`);
  return v;
}

function optArr<T>(o: Obj, key: string, path: string, each: (v: unknown, p: string) => T): T[] | undefined {
  if (o[key] === undefined) return undefined;
  return arr(o[key], join(path, key)).map((v, i) => each(v, `${join(path, key)}[${i}]`));
}

function strArr(o: Obj, key: string, path: string): string[] | undefined {
  return optArr(o, key, path, str);
}

function stringMap(v: unknown, path: string): Record<string, string> {
  const m = obj(v, path);
  for (const [k, val] of Object.entries(m)) {
    if (k === "") fail(path, "keys must not be empty");
    str(val, `${path}[${JSON.stringify(k)}]`);
  }
  return m as Record<string, string>;
}

function oneOf(v: string, path: string, allowed: readonly string[], what: string): void {
  if (!allowed.includes(v)) fail(path, `unknown ${what} ${JSON.stringify(v)}`);
}

function absolute(v: string, path: string): void {
  if (!v.startsWith("/")) fail(path, `must be an absolute path, got ${JSON.stringify(v)}`);
}

/** Parses config.json text; malformed JSON becomes one line naming the file. */
export function parseConfigJson(text: string, source = "config.json"): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const reason = (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, " ");
    throw new Error(`${source}: invalid JSON: ${reason}`);
  }
}

/** Validates a whole config.json value and returns it typed. Throws SpecError on the first problem. */
export function validateSpec(raw: unknown, opts: ValidateOptions = {}): Spec {
  const spec = obj(raw, "config");
  if (spec.ociVersion === undefined) fail("ociVersion", "is required");
  const version = str(spec.ociVersion, "ociVersion");
  if (!/^1\.\d+\.\d+/.test(version)) fail("ociVersion", `unsupported version ${JSON.stringify(version)}`);

  const vm = optObj(spec, "vm", "");
  if (vm) checkVM(vm);

  if (spec.root === undefined) {
    // A VM-only bundle (vm.image) boots its own root filesystem.
    if (!vm?.image) fail("root", "is required");
  } else {
    const root = obj(spec.root, "root");
    if (root.path === undefined) fail("root.path", "is required");
    if (str(root.path, "root.path") === "") fail("root.path", "must not be empty");
    optBool(root, "readonly", "root");
  }

  const hostname = optStr(spec, "hostname", "");
  const domainname = optStr(spec, "domainname", "");

  if (spec.process === undefined) {
    if (opts.requireProcess !== false) fail("process", "is required");
  } else {
    checkProcess(spec.process, "process");
  }

  optArr(spec, "mounts", "", checkMount);
  if (spec.hooks !== undefined) checkHooks(obj(spec.hooks, "hooks"));
  if (spec.annotations !== undefined) stringMap(spec.annotations, "annotations");

  const linux = optObj(spec, "linux", "");
  if (linux) checkLinux(linux);

  const nsTypes = new Set(
    (linux?.namespaces as { type: string }[] | undefined)?.map((n) => n.type) ?? ([] as string[]),
  );
  // runc: the hostname can only be set in a private UTS namespace.
  if (hostname && !nsTypes.has("uts"))
    fail("hostname", "unable to set hostname without a private UTS namespace");
  if (domainname && !nsTypes.has("uts"))
    fail("domainname", "unable to set domainname without a private UTS namespace");
  if (linux) checkLinuxCrossRules(linux, nsTypes);

  return spec as Spec;
}

/** Validates an `exec --process` JSON value (the same rules as config.json's process). */
export function validateProcess(raw: unknown): Process {
  checkProcess(raw, "process");
  return raw as Process;
}

function checkVM(vm: Obj): void {
  const p = "vm";
  const kernel = obj(vm.kernel, `${p}.kernel`);
  str(kernel.path, `${p}.kernel.path`);
  strArr(kernel, "parameters", `${p}.kernel`);
  optStr(kernel, "initrd", `${p}.kernel`);
  const hv = optObj(vm, "hypervisor", p);
  if (hv) {
    str(hv.path, `${p}.hypervisor.path`);
    strArr(hv, "parameters", `${p}.hypervisor`);
  }
  const image = optObj(vm, "image", p);
  if (image) {
    str(image.path, `${p}.image.path`);
    oneOf(
      str(image.format, `${p}.image.format`),
      `${p}.image.format`,
      ["raw", "qcow2", "vdi", "vmdk", "vhd"],
      "image format",
    );
  }
}

function checkProcess(raw: unknown, p: string): void {
  const proc = obj(raw, p);
  optBool(proc, "terminal", p);
  const cs = optObj(proc, "consoleSize", p);
  if (cs) {
    reqInt(cs, "height", `${p}.consoleSize`, UINT32);
    reqInt(cs, "width", `${p}.consoleSize`, UINT32);
  }

  if (proc.user === undefined) fail(`${p}.user`, "is required");
  const user = obj(proc.user, `${p}.user`);
  reqInt(user, "uid", `${p}.user`, UINT32);
  reqInt(user, "gid", `${p}.user`, UINT32);
  optInt(user, "umask", `${p}.user`, UINT32);
  optArr(user, "additionalGids", `${p}.user`, (v, q) => int(v, q, UINT32));
  optStr(user, "username", `${p}.user`);

  const commandLine = optStr(proc, "commandLine", p);
  const args = strArr(proc, "args", p);
  if (!args || args.length === 0) {
    if (commandLine === undefined) fail(`${p}.args`, "must not be empty");
  }

  const env = strArr(proc, "env", p) ?? [];
  env.forEach((e, i) => {
    const eq = e.indexOf("=");
    if (eq < 0) fail(`${p}.env[${i}]`, `invalid environment variable ${JSON.stringify(e)}: missing '='`);
    if (eq === 0)
      fail(`${p}.env[${i}]`, `invalid environment variable ${JSON.stringify(e)}: name cannot be empty`);
    if (e.includes("\0")) fail(`${p}.env[${i}]`, "invalid environment variable: contains a NUL byte");
  });

  if (proc.cwd === undefined) fail(`${p}.cwd`, "is required");
  const cwd = str(proc.cwd, `${p}.cwd`);
  if (cwd === "") fail(`${p}.cwd`, "must not be empty");
  absolute(cwd, `${p}.cwd`);

  const caps = optObj(proc, "capabilities", p);
  if (caps) {
    for (const set of CAPABILITY_SETS) {
      optArr(caps, set, `${p}.capabilities`, (v, q) => {
        oneOf(str(v, q), q, CAPABILITIES, "capability");
        return v;
      });
    }
  }

  const seen = new Set<string>();
  optArr(proc, "rlimits", p, (v, q) => {
    const r = obj(v, q);
    if (r.type === undefined) fail(`${q}.type`, "is required");
    const type = str(r.type, `${q}.type`);
    oneOf(type, `${q}.type`, RLIMITS, "rlimit type");
    if (seen.has(type)) fail(`${q}.type`, `duplicate rlimit type ${JSON.stringify(type)}`);
    seen.add(type);
    const hard = reqInt(r, "hard", q, UINT64);
    const soft = reqInt(r, "soft", q, UINT64);
    if (soft > hard) fail(q, `soft limit ${soft} is greater than hard limit ${hard}`);
    return r;
  });

  optBool(proc, "noNewPrivileges", p);
  optStr(proc, "apparmorProfile", p);
  optStr(proc, "selinuxLabel", p);
  optInt(proc, "oomScoreAdj", p, [-1000, 1000]);

  const io = optObj(proc, "ioPriority", p);
  if (io) {
    if (io.class === undefined) fail(`${p}.ioPriority.class`, "is required");
    oneOf(
      str(io.class, `${p}.ioPriority.class`),
      `${p}.ioPriority.class`,
      ["IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"],
      "I/O priority class",
    );
    optInt(io, "priority", `${p}.ioPriority`, [0, 7]);
  }

  const sch = optObj(proc, "scheduler", p);
  if (sch) {
    const q = `${p}.scheduler`;
    if (sch.policy === undefined) fail(`${q}.policy`, "is required");
    oneOf(str(sch.policy, `${q}.policy`), `${q}.policy`, SCHEDULER_POLICIES, "scheduler policy");
    optInt(sch, "nice", q, [-20, 19]);
    optInt(sch, "priority", q, INT32);
    optArr(sch, "flags", q, (v, r) => oneOf(str(v, r), r, SCHEDULER_FLAGS, "scheduler flag"));
    optInt(sch, "runtime", q, UINT64);
    optInt(sch, "deadline", q, UINT64);
    optInt(sch, "period", q, UINT64);
  }

  const aff = optObj(proc, "execCPUAffinity", p);
  if (aff) {
    for (const k of ["initial", "final"]) {
      const s = optStr(aff, k, `${p}.execCPUAffinity`);
      if (s !== undefined && !/^[0-9, -]*$/.test(s))
        fail(`${p}.execCPUAffinity.${k}`, `invalid CPU list ${JSON.stringify(s)}`);
    }
  }
}

function checkIDMapping(v: unknown, p: string): Obj {
  const m = obj(v, p);
  reqInt(m, "containerID", p, UINT32);
  reqInt(m, "hostID", p, UINT32);
  const size = reqInt(m, "size", p, UINT32);
  if (size === 0) fail(`${p}.size`, "must be greater than 0");
  return m;
}

function checkMount(v: unknown, p: string): Obj {
  const m = obj(v, p);
  if (m.destination === undefined) fail(`${p}.destination`, "is required");
  const dest = str(m.destination, `${p}.destination`);
  absolute(dest, `${p}.destination`);
  optStr(m, "source", p);
  optStr(m, "type", p);
  strArr(m, "options", p);
  const uids = optArr(m, "uidMappings", p, checkIDMapping);
  const gids = optArr(m, "gidMappings", p, checkIDMapping);
  if ((uids === undefined) !== (gids === undefined))
    fail(p, "uidMappings and gidMappings must be specified together");
  return m;
}

function checkHooks(hooks: Obj): void {
  for (const name of HOOK_NAMES) {
    optArr(hooks, name, "hooks", (v, p) => {
      const h = obj(v, p);
      if (h.path === undefined) fail(`${p}.path`, "is required");
      absolute(str(h.path, `${p}.path`), `${p}.path`);
      strArr(h, "args", p);
      strArr(h, "env", p);
      const t = optInt(h, "timeout", p, INT32);
      if (t !== undefined && t < 1) fail(`${p}.timeout`, "must be at least 1 second");
      return h;
    });
  }
}

function checkLinux(linux: Obj): void {
  const p = "linux";
  const seenNs = new Set<string>();
  optArr(linux, "namespaces", p, (v, q) => {
    const ns = obj(v, q);
    if (ns.type === undefined) fail(`${q}.type`, "is required");
    const type = str(ns.type, `${q}.type`);
    oneOf(type, `${q}.type`, NAMESPACE_TYPES, "namespace type");
    if (seenNs.has(type)) fail(`${q}.type`, `duplicate namespace type ${JSON.stringify(type)}`);
    seenNs.add(type);
    const path = optStr(ns, "path", q);
    if (path !== undefined && path !== "") absolute(path, `${q}.path`);
    return ns;
  });
  optArr(linux, "uidMappings", p, checkIDMapping);
  optArr(linux, "gidMappings", p, checkIDMapping);

  optArr(linux, "devices", p, (v, q) => {
    const d = obj(v, q);
    if (d.path === undefined) fail(`${q}.path`, "is required");
    absolute(str(d.path, `${q}.path`), `${q}.path`);
    if (d.type === undefined) fail(`${q}.type`, "is required");
    const type = str(d.type, `${q}.type`);
    oneOf(type, `${q}.type`, ["c", "b", "u", "p"], "device type");
    if (type !== "p") {
      reqInt(d, "major", q, INT64);
      reqInt(d, "minor", q, INT64);
    } else {
      optInt(d, "major", q, INT64);
      optInt(d, "minor", q, INT64);
    }
    optInt(d, "fileMode", q, UINT32);
    optInt(d, "uid", q, UINT32);
    optInt(d, "gid", q, UINT32);
    return d;
  });

  optStr(linux, "cgroupsPath", p);
  const res = optObj(linux, "resources", p);
  if (res) checkResources(res);

  const prop = optStr(linux, "rootfsPropagation", p);
  if (prop !== undefined) oneOf(prop, `${p}.rootfsPropagation`, ROOTFS_PROPAGATIONS, "rootfs propagation");

  const sec = optObj(linux, "seccomp", p);
  if (sec) checkSeccomp(sec);

  if (linux.sysctl !== undefined) stringMap(linux.sysctl, `${p}.sysctl`);
  for (const k of ["maskedPaths", "readonlyPaths"]) {
    optArr(linux, k, p, (v, q) => {
      absolute(str(v, q), q);
      return v;
    });
  }
  optStr(linux, "mountLabel", p);

  const rdt = optObj(linux, "intelRdt", p);
  if (rdt) {
    for (const k of ["closID", "l3CacheSchema", "memBwSchema"]) optStr(rdt, k, `${p}.intelRdt`);
    optBool(rdt, "enableCMT", `${p}.intelRdt`);
    optBool(rdt, "enableMBM", `${p}.intelRdt`);
    if (typeof rdt.closID === "string" && /[/\n]|^\.\.?$/.test(rdt.closID))
      fail(`${p}.intelRdt.closID`, `invalid CLOS id ${JSON.stringify(rdt.closID)}`);
  }

  const pers = optObj(linux, "personality", p);
  if (pers) {
    if (pers.domain === undefined) fail(`${p}.personality.domain`, "is required");
    oneOf(
      str(pers.domain, `${p}.personality.domain`),
      `${p}.personality.domain`,
      ["LINUX", "LINUX32"],
      "personality domain",
    );
    strArr(pers, "flags", `${p}.personality`);
  }

  const offs = optObj(linux, "timeOffsets", p);
  if (offs) {
    for (const [clock, v] of Object.entries(offs)) {
      const q = `${p}.timeOffsets.${clock}`;
      oneOf(clock, q, ["monotonic", "boottime"], "clock");
      const o = obj(v, q);
      optInt(o, "secs", q, INT64);
      optInt(o, "nanosecs", q, [0, 999_999_999]);
    }
  }
}

function checkResources(res: Obj): void {
  const p = "linux.resources";
  optArr(res, "devices", p, (v, q) => {
    const d = obj(v, q);
    if (d.allow === undefined) fail(`${q}.allow`, "is required");
    optBool(d, "allow", q);
    const type = optStr(d, "type", q);
    if (type !== undefined && type !== "") oneOf(type, `${q}.type`, ["a", "b", "c"], "device type");
    optInt(d, "major", q, INT64);
    optInt(d, "minor", q, INT64);
    const access = optStr(d, "access", q);
    if (access !== undefined && !/^[rwm]*$/.test(access))
      fail(`${q}.access`, `invalid access ${JSON.stringify(access)}`);
    return d;
  });

  const mem = optObj(res, "memory", p);
  if (mem) {
    const q = `${p}.memory`;
    for (const k of ["limit", "reservation", "swap", "kernel", "kernelTCP"]) optInt(mem, k, q, INT64);
    optInt(mem, "swappiness", q, [0, 100]);
    for (const k of ["disableOOMKiller", "useHierarchy", "checkBeforeUpdate"]) optBool(mem, k, q);
    // runc: a swap limit (memory+swap) below the memory limit is a mistake.
    const limit = mem.limit as number | undefined;
    const swap = mem.swap as number | undefined;
    if (limit !== undefined && swap !== undefined && limit > 0 && swap > 0 && swap < limit)
      fail(`${q}.swap`, `memory+swap limit ${swap} should be bigger than memory limit ${limit}`);
  }

  const cpu = optObj(res, "cpu", p);
  if (cpu) {
    const q = `${p}.cpu`;
    for (const k of ["shares", "burst", "period", "realtimePeriod"]) optInt(cpu, k, q, UINT64);
    for (const k of ["quota", "realtimeRuntime", "idle"]) optInt(cpu, k, q, INT64);
    for (const k of ["cpus", "mems"]) {
      const s = optStr(cpu, k, q);
      if (s !== undefined && !/^[0-9,\s-]*$/.test(s)) fail(`${q}.${k}`, `invalid list ${JSON.stringify(s)}`);
    }
  }

  const pids = optObj(res, "pids", p);
  if (pids) reqInt(pids, "limit", `${p}.pids`, INT64);

  const bio = optObj(res, "blockIO", p);
  if (bio) {
    const q = `${p}.blockIO`;
    optInt(bio, "weight", q, UINT16);
    optInt(bio, "leafWeight", q, UINT16);
    optArr(bio, "weightDevice", q, (v, r) => {
      const d = obj(v, r);
      reqInt(d, "major", r, INT64);
      reqInt(d, "minor", r, INT64);
      optInt(d, "weight", r, UINT16);
      optInt(d, "leafWeight", r, UINT16);
      return d;
    });
    for (const k of [
      "throttleReadBpsDevice",
      "throttleWriteBpsDevice",
      "throttleReadIOPSDevice",
      "throttleWriteIOPSDevice",
    ]) {
      optArr(bio, k, q, (v, r) => {
        const d = obj(v, r);
        reqInt(d, "major", r, INT64);
        reqInt(d, "minor", r, INT64);
        reqInt(d, "rate", r, UINT64);
        return d;
      });
    }
  }

  optArr(res, "hugepageLimits", p, (v, q) => {
    const h = obj(v, q);
    if (h.pageSize === undefined) fail(`${q}.pageSize`, "is required");
    const size = str(h.pageSize, `${q}.pageSize`);
    if (!/^\d+[KMG]B$/.test(size)) fail(`${q}.pageSize`, `invalid page size ${JSON.stringify(size)}`);
    reqInt(h, "limit", q, UINT64);
    return h;
  });

  const net = optObj(res, "network", p);
  if (net) {
    optInt(net, "classID", `${p}.network`, UINT32);
    optArr(net, "priorities", `${p}.network`, (v, q) => {
      const pr = obj(v, q);
      str(pr.name, `${q}.name`);
      reqInt(pr, "priority", q, UINT32);
      return pr;
    });
  }

  const rdma = optObj(res, "rdma", p);
  if (rdma) {
    for (const [dev, v] of Object.entries(rdma)) {
      const q = `${p}.rdma[${JSON.stringify(dev)}]`;
      const r = obj(v, q);
      optInt(r, "hcaHandles", q, UINT32);
      optInt(r, "hcaObjects", q, UINT32);
    }
  }

  if (res.unified !== undefined) {
    const u = stringMap(res.unified, `${p}.unified`);
    // runc: keys are cgroup v2 interface file names ("memory.max"), never paths.
    for (const k of Object.keys(u)) {
      if (k.includes("/") || !k.includes("."))
        fail(`${p}.unified`, `invalid cgroup v2 key ${JSON.stringify(k)}`);
    }
  }
}

function checkSeccomp(sec: Obj): void {
  const p = "linux.seccomp";
  if (sec.defaultAction === undefined) fail(`${p}.defaultAction`, "is required");
  const def = str(sec.defaultAction, `${p}.defaultAction`);
  oneOf(def, `${p}.defaultAction`, SECCOMP_ACTIONS, "seccomp action");
  if (def === "SCMP_ACT_NOTIFY")
    fail(`${p}.defaultAction`, "SCMP_ACT_NOTIFY cannot be used as the default action");
  optInt(sec, "defaultErrnoRet", p, UINT32);
  optArr(sec, "architectures", p, (v, q) => oneOf(str(v, q), q, SECCOMP_ARCHS, "seccomp architecture"));
  optArr(sec, "flags", p, (v, q) => oneOf(str(v, q), q, SECCOMP_FLAGS, "seccomp flag"));
  const listener = optStr(sec, "listenerPath", p);
  if (listener) absolute(listener, `${p}.listenerPath`);
  optStr(sec, "listenerMetadata", p);
  let notify = false;
  optArr(sec, "syscalls", p, (v, q) => {
    const s = obj(v, q);
    if (s.names === undefined) fail(`${q}.names`, "is required");
    const names = arr(s.names, `${q}.names`);
    if (names.length === 0) fail(`${q}.names`, "must not be empty");
    names.forEach((n, i) => {
      if (str(n, `${q}.names[${i}]`) === "") fail(`${q}.names[${i}]`, "must not be empty");
    });
    if (s.action === undefined) fail(`${q}.action`, "is required");
    const action = str(s.action, `${q}.action`);
    oneOf(action, `${q}.action`, SECCOMP_ACTIONS, "seccomp action");
    if (action === "SCMP_ACT_NOTIFY") notify = true;
    if (
      optInt(s, "errnoRet", q, UINT32) !== undefined &&
      action !== "SCMP_ACT_ERRNO" &&
      action !== "SCMP_ACT_TRACE"
    )
      fail(`${q}.errnoRet`, `errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not ${action}`);
    optArr(s, "args", q, (a, r) => {
      const arg = obj(a, r);
      reqInt(arg, "index", r, [0, 5]);
      reqInt(arg, "value", r, UINT64);
      optInt(arg, "valueTwo", r, UINT64);
      if (arg.op === undefined) fail(`${r}.op`, "is required");
      oneOf(str(arg.op, `${r}.op`), `${r}.op`, SECCOMP_OPERATORS, "seccomp operator");
      return arg;
    });
    return s;
  });
  if (notify && !listener) fail(`${p}.listenerPath`, "is required when SCMP_ACT_NOTIFY is used");
}

// IPC sysctls runc allows inside a private IPC namespace.
const IPC_SYSCTLS = new Set([
  "kernel.msgmax",
  "kernel.msgmnb",
  "kernel.msgmni",
  "kernel.sem",
  "kernel.shmall",
  "kernel.shmmax",
  "kernel.shmmni",
  "kernel.shm_rmid_forced",
]);

function checkLinuxCrossRules(linux: Obj, ns: Set<string>): void {
  const userNs = ns.has("user");
  const userNsPath = (linux.namespaces as { type: string; path?: string }[] | undefined)?.find(
    (n) => n.type === "user",
  )?.path;
  const uids = (linux.uidMappings as unknown[] | undefined) ?? [];
  const gids = (linux.gidMappings as unknown[] | undefined) ?? [];
  if (userNs && !userNsPath) {
    if (uids.length === 0) fail("linux.uidMappings", "user namespaces enabled, but no uid mappings found");
    if (gids.length === 0) fail("linux.gidMappings", "user namespaces enabled, but no gid mappings found");
  }
  if (!userNs && (uids.length > 0 || gids.length > 0))
    fail(
      "linux.uidMappings",
      'uid/gid mappings require a user namespace (add {"type": "user"} to linux.namespaces)',
    );

  if (linux.timeOffsets !== undefined && !ns.has("time"))
    fail("linux.timeOffsets", "time offsets require a time namespace");

  const sysctl = (linux.sysctl as Record<string, string> | undefined) ?? {};
  for (const key of Object.keys(sysctl)) {
    const q = `linux.sysctl[${JSON.stringify(key)}]`;
    if (IPC_SYSCTLS.has(key) || key.startsWith("fs.mqueue.")) {
      if (!ns.has("ipc")) fail(q, "sysctl is not allowed without a private IPC namespace");
    } else if (key.startsWith("net.")) {
      if (!ns.has("network")) fail(q, "sysctl is not allowed in the host network namespace");
    } else if (key === "kernel.hostname" || key === "kernel.domainname") {
      if (!ns.has("uts")) fail(q, "sysctl is not allowed without a private UTS namespace");
      fail(q, "sysctl is not allowed: use the hostname/domainname fields");
    } else {
      fail(q, "sysctl is not in a separate kernel namespace");
    }
  }
}
