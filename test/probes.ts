// Host feature probes for tests. Machines of one kind still differ (kernel build, BFQ, /dev/kvm present
// or not, engines installed or not), so a test that needs a feature asks here first and then either
// asserts kata-ts's refusal or skips with the finding as its reason; it never assumes.
//
// Every probe reads files only, under roots it takes as parameters (defaults: the real /sys, /dev,
// /sys/fs/cgroup), so a unit test can point it at a fake tree and cover both answers.
import { accessSync, constants, existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** A probe's answer: the feature is there, or the reason it is not (usable as a test's skip reason). */
export type Finding = { ok: true; detail: string } | { ok: false; reason: string };

const have = (detail: string): Finding => ({ ok: true, detail });
const lack = (reason: string): Finding => ({ ok: false, reason });

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** The cgroup layout under `cgroupRoot`: v2-only, hybrid (v1 + cgroup2 at unified/), or v1-only. */
export function cgroupLayout(cgroupRoot = "/sys/fs/cgroup"): "v2" | "hybrid" | "v1" {
  if (existsSync(join(cgroupRoot, "cgroup.controllers"))) return "v2";
  if (existsSync(join(cgroupRoot, "unified", "cgroup.controllers"))) return "hybrid";
  return "v1";
}

/** A v1 controller's hierarchy is mounted at <cgroupRoot>/<name>. */
export function v1Controller(name: string, cgroupRoot = "/sys/fs/cgroup"): Finding {
  if (cgroupLayout(cgroupRoot) === "v2") return lack(`cgroup v2-only host: no v1 ${name} hierarchy`);
  return existsSync(join(cgroupRoot, name, "cgroup.procs"))
    ? have(`${join(cgroupRoot, name)}`)
    : lack(`no cgroup v1 ${name} hierarchy at ${join(cgroupRoot, name)}`);
}

/** The hybrid layout: every v1 controller the v1 tests use, plus the cgroup2 mount at unified/. */
export function hybridCgroups(cgroupRoot = "/sys/fs/cgroup"): Finding {
  const layout = cgroupLayout(cgroupRoot);
  if (layout !== "hybrid") return lack(`cgroup layout is ${layout}, not hybrid (v1 + ${cgroupRoot}/unified)`);
  for (const c of ["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio"]) {
    const f = v1Controller(c, cgroupRoot);
    if (!f.ok) return f;
  }
  return have(`hybrid at ${cgroupRoot}`);
}

/** The I/O schedulers the block queues under `sysBlock` offer (union, sorted). */
export function ioSchedulers(sysBlock = "/sys/block"): string[] {
  const out = new Set<string>();
  let devs: string[] = [];
  try {
    devs = readdirSync(sysBlock);
  } catch {}
  for (const d of devs)
    for (const s of (read(join(sysBlock, d, "queue", "scheduler")) ?? "").split(/\s+/))
      if (s) out.add(s.replace(/^\[|\]$/g, ""));
  return [...out].sort();
}

/**
 * Proportional blkio weights in the v1 blkio hierarchy: CFQ's blkio.weight or BFQ's blkio.bfq.weight.
 * BFQ's file is not on the root cgroup (CFTYPE_NOT_ON_ROOT), only in children, and its policy exists
 * exactly when the kernel has the BFQ scheduler, so BFQ is found from the block queues' offer (or from
 * a child cgroup that has the file). `detail` is the file's name.
 */
export function blkioWeight(cgroupRoot = "/sys/fs/cgroup", sysBlock = "/sys/block"): Finding {
  const dir = join(cgroupRoot, "blkio");
  if (!existsSync(join(dir, "cgroup.procs"))) return lack(`no cgroup v1 blkio hierarchy at ${dir}`);
  if (existsSync(join(dir, "blkio.weight"))) return have("blkio.weight");
  const s = ioSchedulers(sysBlock);
  if (s.includes("bfq")) return have("blkio.bfq.weight");
  let children: string[] = [];
  try {
    children = readdirSync(dir);
  } catch {}
  if (children.some((c) => existsSync(join(dir, c, "blkio.bfq.weight")))) return have("blkio.bfq.weight");
  return lack(
    `no CFQ/BFQ: block queues offer ${s.length ? s.join(" ") : "no scheduler"}; ${dir} has no blkio.weight or blkio.bfq.weight`,
  );
}

/** The 2 MiB huge page size exists (<sysKernelMm>/hugepages/hugepages-2048kB). */
export function hugepages2M(sysKernelMm = "/sys/kernel/mm"): Finding {
  return existsSync(join(sysKernelMm, "hugepages", "hugepages-2048kB"))
    ? have("2 MiB huge pages")
    : lack("the kernel has no 2 MiB huge pages");
}

/**
 * hugetlb for 2 MiB pages in a cgroup2 hierarchy at `unifiedRoot` (the hybrid layout's unified/ or a
 * v2-only /sys/fs/cgroup): the controller is listed in its root's cgroup.controllers.
 */
export function hugetlbV2(unifiedRoot = "/sys/fs/cgroup/unified", sysKernelMm = "/sys/kernel/mm"): Finding {
  const ctl = read(join(unifiedRoot, "cgroup.controllers"));
  if (ctl === undefined) return lack(`no cgroup2 hierarchy at ${unifiedRoot}`);
  if (!ctl.split(/\s+/).includes("hugetlb")) return lack(`hugetlb is not among ${unifiedRoot}'s controllers`);
  return all(have(`hugetlb in ${unifiedRoot}`), hugepages2M(sysKernelMm));
}

/**
 * The hugetlb controller where a hybrid host's manager can reach it: v1 first, else the cgroup2 tree
 * (the page sizes are a separate probe: hugepages2M).
 */
export function hugetlbHybrid(cgroupRoot = "/sys/fs/cgroup"): Finding {
  if (existsSync(join(cgroupRoot, "hugetlb", "cgroup.procs"))) return have("hugetlb v1");
  const unified = join(cgroupRoot, "unified");
  const ctl = read(join(unified, "cgroup.controllers"));
  if (ctl?.split(/\s+/).includes("hugetlb")) return have(`hugetlb in ${unified}`);
  return lack(`no hugetlb v1 hierarchy and no hugetlb in ${unified}`);
}

/** /dev/kvm (or `device`) exists; `emulated` says whether the software PVM hypervisor provides it. */
export function kvmDevice(
  device = "/dev/kvm",
  sysModule = "/sys/module",
): { present: boolean; emulated: boolean; finding: Finding } {
  const present = existsSync(device);
  const emulated = present && existsSync(join(sysModule, "kvm_pvm"));
  const finding = !present
    ? lack(`${device} does not exist`)
    : emulated
      ? have(`${device} is the software PVM hypervisor (kvm_pvm): it emulates stock guests`)
      : have(`${device} present`);
  return { present, emulated, finding };
}

/** CAP_SYS_RESOURCE (bit 24) in `status`'s bounding set: root without it cannot raise hard rlimits. */
export function capSysResource(status = "/proc/self/status"): Finding {
  const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(read(status) ?? "");
  if (!m) return lack(`no CapBnd line in ${status}`);
  return (BigInt(`0x${m[1]}`) >> 24n) & 1n
    ? have("CAP_SYS_RESOURCE in the bounding set")
    : lack(`root lacks CAP_SYS_RESOURCE (bounding set 0x${m[1]})`);
}

/** The hard RLIMIT_NOFILE in `limits` (a runtime the test starts inherits it); Infinity for unlimited. */
export function hardNofile(limits = "/proc/self/limits"): number {
  const m = /^Max open files\s+\S+\s+(\S+)/m.exec(read(limits) ?? "");
  return !m ? 0 : m[1] === "unlimited" ? Number.POSITIVE_INFINITY : Number(m[1]);
}

/** An executable at `path`. */
export function executable(path: string, what = path): Finding {
  try {
    accessSync(path, constants.X_OK);
    return have(path);
  } catch {
    return lack(`${what} is not installed (${path})`);
  }
}

/** Every finding ok, or the first reason (joined when several lack). */
export function all(...fs: Finding[]): Finding {
  const missing = fs.filter((f) => !f.ok).map((f) => (f as { reason: string }).reason);
  return missing.length
    ? lack(missing.join("; "))
    : have(fs.map((f) => (f as { detail: string }).detail).join("; "));
}

/** For node:test's `skip` option: false when the feature is there, else the probe's reason. */
export const skipUnless = (f: Finding): string | false => (f.ok ? false : f.reason);
