// Host checks behind `kata-ts check` (Kata's kata-check) and the host facts `kata-ts env` reports.
// Every check looks at the real host: files that must exist, a KVM guest that must actually run, the
// cgroup layout as mounted. What is required depends on the configured hypervisor: with
// `hypervisor = "none"` the VM components are reported as skipped and only host features count.

import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync, statSync } from "node:fs";
import { arch, cpus, release } from "node:os";
import type { Accel, HypervisorKind, RuntimeConfig } from "../config/config";
import { firstLine } from "../errors";
import { cacheStatus } from "../factory/cache";
import { findTemplate, templateKey } from "../factory/template";
import { describeJail, jailReport } from "../hypervisor/jail";
import { MEMRO_LIBRARY } from "../hypervisor/qemu";
import { DEFAULT_TIMEOUT_MS, probeKvm } from "../sys/kvm";
import { findNativeFile } from "../sys/native";

export type CheckLevel = "info" | "warn" | "error" | "skip";

export interface CheckResult {
  /** Short id of the check, e.g. "qemu", "kvm", "cgroups". */
  name: string;
  /** error = a required component is missing: the host cannot run the configuration. */
  level: CheckLevel;
  message: string;
}

export interface KvmStatus {
  usable: boolean;
  reason: string;
  mips?: number;
}

export interface CheckReport {
  hypervisor: HypervisorKind;
  results: CheckResult[];
  kvm: KvmStatus;
  /** The accelerator a VM would use ("none" when hypervisor = "none"). */
  accelerator: "kvm" | "tcg" | "none";
  /** False when any result is an error. */
  capable: boolean;
}

export type CgroupLayout = "v1" | "hybrid" | "v2" | "none";

export interface CgroupInfo {
  layout: CgroupLayout;
  /** v1 controllers (from mount options) and, for v2/hybrid, the unified hierarchy's controllers. */
  v1Controllers: string[];
  v2Controllers: string[];
  /** Mount point of the cgroup2 hierarchy, if any. */
  unifiedMount?: string;
}

export interface HostFacts {
  kernel: string;
  /** Go-style name as Kata prints it (amd64, arm64, ...). */
  architecture: string;
  cpu: { vendor: string; model: string; cpus: number; virtFlags: string[] };
  /** kB, as /proc/meminfo and Kata's env report them. */
  memory: { total: number; free: number; available: number };
  cgroup: CgroupInfo;
  namespaces: string[];
  distro: { name: string; version: string };
}

export interface CheckOptions {
  /** Probe deadline for the KVM test guest. */
  kvmTimeoutMs?: number;
  /** Replaces the real KVM probe (tests). */
  probe?: (opts: { timeoutMs: number }) => Promise<KvmStatus>;
}

const REQUIRED_NAMESPACES = ["mnt", "uts", "ipc", "pid", "net"];
const OPTIONAL_NAMESPACES = ["user", "cgroup", "time"];

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** Parses /proc/self/mountinfo text (plus the cgroup2 root's cgroup.controllers) into a layout. */
export function detectCgroupLayout(mountinfo: string, readControllers = readCgroup2Controllers): CgroupInfo {
  const v1 = new Set<string>();
  let unified: string | undefined;
  let v1Seen = false;
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(" ");
    const post = line.slice(sep + 3).split(" ");
    const mountPoint = pre[4];
    const fstype = post[0];
    if (fstype === "cgroup2") {
      // Prefer the conventional location if several cgroup2 mounts exist.
      if (unified === undefined || mountPoint === "/sys/fs/cgroup") unified = mountPoint;
    } else if (fstype === "cgroup") {
      v1Seen = true;
      for (const opt of (post[2] ?? "").split(",")) {
        if (["rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "xattr"].includes(opt)) continue;
        if (opt.startsWith("release_agent=") || opt === "clone_children" || opt === "noprefix") continue;
        v1.add(opt);
      }
    }
  }
  const v2Controllers = unified ? readControllers(unified) : [];
  let layout: CgroupLayout = "none";
  if (unified && !v1Seen) layout = "v2";
  else if (unified && v1Seen) layout = "hybrid";
  else if (v1Seen) layout = "v1";
  return { layout, v1Controllers: [...v1].sort(), v2Controllers, unifiedMount: unified };
}

function readCgroup2Controllers(mount: string): string[] {
  return readText(`${mount}/cgroup.controllers`).trim().split(/\s+/).filter(Boolean);
}

/** Values of "key : value" lines of the first processor in /proc/cpuinfo. */
export function parseCpuinfo(text: string): { vendor: string; model: string; virtFlags: string[] } {
  const first = text.split(/\n\s*\n/)[0] ?? "";
  const get = (k: string) => new RegExp(`^${k}\\s*:\\s*(.*)$`, "m").exec(first)?.[1]?.trim() ?? "";
  const flags = new Set(get("flags").split(/\s+/));
  return {
    vendor: get("vendor_id"),
    model: get("model name"),
    virtFlags: ["vmx", "svm"].filter((x) => flags.has(x)),
  };
}

export function parseMeminfo(text: string): { total: number; free: number; available: number } {
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s*(\\d+)`, "m").exec(text)?.[1] ?? 0);
  return { total: kb("MemTotal"), free: kb("MemFree"), available: kb("MemAvailable") };
}

function goArch(): string {
  const a = arch();
  return a === "x64" ? "amd64" : a === "ia32" ? "386" : a;
}

function distro(): { name: string; version: string } {
  const text = readText("/etc/os-release");
  const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?`, "m").exec(text)?.[1] ?? "";
  return { name: get("NAME"), version: get("VERSION_ID") };
}

export function hostFacts(): HostFacts {
  const cpu = parseCpuinfo(readText("/proc/cpuinfo"));
  let namespaces: string[] = [];
  try {
    namespaces = [...REQUIRED_NAMESPACES, ...OPTIONAL_NAMESPACES].filter((n) =>
      existsSync(`/proc/self/ns/${n}`),
    );
  } catch {
    // no /proc/self/ns: the check below reports every namespace missing
  }
  return {
    kernel: release(),
    architecture: goArch(),
    cpu: { ...cpu, cpus: cpus().length },
    memory: parseMeminfo(readText("/proc/meminfo")),
    cgroup: detectCgroupLayout(readText("/proc/self/mountinfo")),
    namespaces,
    distro: distro(),
  };
}

/** First line of `<qemu> --version`, or undefined when the binary is missing or fails. */
export function qemuVersion(path: string): string | undefined {
  if (!path || !existsSync(path)) return undefined;
  const r = spawnSync(path, ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (r.error || r.status !== 0) return undefined;
  return firstLine(r.stdout) || undefined;
}

function executable(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The accelerator QEMU will use for `accel` given what the KVM probe measured. */
export function chooseAccelerator(accel: Accel, kvm: KvmStatus): "kvm" | "tcg" {
  if (accel === "tcg") return "tcg";
  if (accel === "kvm") return "kvm";
  return kvm.usable ? "kvm" : "tcg";
}

/** Runs the KVM probe, turning a probe failure into an "unusable" status with its reason. */
export async function measureKvm(opts: CheckOptions = {}): Promise<KvmStatus> {
  const probe = opts.probe ?? probeKvm;
  try {
    return await probe({ timeoutMs: opts.kvmTimeoutMs ?? DEFAULT_TIMEOUT_MS });
  } catch (err) {
    return { usable: false, reason: `probe failed: ${(err as Error).message}` };
  }
}

/** Runs every host check for `config`. Never throws for a host problem: it is a result. */
export async function runHostChecks(config: RuntimeConfig, opts: CheckOptions = {}): Promise<CheckReport> {
  const results: CheckResult[] = [];
  const add = (name: string, level: CheckLevel, message: string) => results.push({ name, level, message });
  const vm = config.runtime.hypervisor === "qemu";
  const q = config.hypervisor;
  const facts = hostFacts();

  add("kernel", "info", `host kernel ${facts.kernel} (${facts.architecture})`);

  if (facts.cpu.virtFlags.length > 0)
    add(
      "cpu",
      "info",
      `CPU virtualisation extensions: ${facts.cpu.virtFlags.join(", ")} (${facts.cpu.model})`,
    );
  else add("cpu", "info", `no CPU virtualisation extensions (vmx/svm) visible (${facts.cpu.model})`);

  // The probe runs in every mode: it is what decides the accelerator, and users want to know.
  const kvm = await measureKvm(opts);
  // The probe's reason already says usable/unusable, the measured rate and the fallback.
  if (kvm.usable) add("kvm", "info", kvm.reason);
  else if (vm && q.accel === "kvm") add("kvm", "error", `accel = "kvm" configured, but ${kvm.reason}`);
  else add("kvm", "warn", kvm.reason);
  let accelerator: CheckReport["accelerator"] = "none";
  if (vm) {
    accelerator = chooseAccelerator(q.accel, kvm);
    add("accel", "info", `${accelerator} (configured: ${q.accel})`);
  }

  const vmCheck = (name: string, path: string, what: string, needExec = false) => {
    if (!vm) return add(name, "skip", `${what}: not needed with hypervisor = "none"`);
    if (!path) return add(name, "error", `${what}: no path configured`);
    const ok = needExec ? executable(path) : isFile(path);
    if (ok) return add(name, "info", `${what}: ${path}`);
    if (needExec && existsSync(path)) return add(name, "error", `${what}: not an executable file: ${path}`);
    return add(name, "error", `${what}: missing: ${path}`);
  };

  vmCheck("qemu", q.path, "hypervisor binary", true);
  if (vm && executable(q.path)) {
    const v = qemuVersion(q.path);
    if (v) add("qemu-version", "info", v);
    else add("qemu-version", "error", `${q.path} --version failed`);
  }
  vmCheck("guest-kernel", q.kernel, "guest kernel");
  if (q.image) vmCheck("guest-image", q.image, "guest image");
  else if (q.initrd) vmCheck("guest-initrd", q.initrd, "guest initrd");
  else vmCheck("guest-image", "", "guest image or initrd");
  if (q.firmware) vmCheck("firmware", q.firmware, "firmware");
  if (q.sharedFs === "virtio-fs" && vm && !executable(q.virtioFsDaemon))
    // create falls back to 9p then (sharedFsFor): worth a warning, not an error.
    add(
      "virtiofsd",
      "warn",
      `virtio-fs daemon: ${q.virtioFsDaemon ? `missing or not executable: ${q.virtioFsDaemon}` : "none found"}; sandboxes fall back to virtio-9p`,
    );
  else if (q.sharedFs === "virtio-fs") vmCheck("virtiofsd", q.virtioFsDaemon, "virtio-fs daemon", true);
  else if (vm) add("virtiofsd", "skip", `virtio-fs daemon: not needed with shared_fs = "${q.sharedFs}"`);

  if (vm) {
    // The VMM jail: what QEMU will run under, and whether this host can make it.
    const j = jailReport(q, config.runtime.sandboxCgroupOnly);
    const jailed = j.rootless || j.mountNamespace;
    add(
      "jail",
      jailed || j.seccompSandbox ? "info" : "warn",
      `VMM jail: ${describeJail(q, j.sandboxCgroupOnly)}`,
    );
    if (jailed && !j.jailer) add("jail", "error", "kata-ts-jailer not built: run `make -C native`");
    if (j.rootless)
      add(
        "jail",
        "info",
        j.uid !== undefined
          ? `VMM user ${j.user}: uid ${j.uid}, gid ${j.gid}`
          : `VMM user ${j.user}: does not exist yet (the first sandbox creates it)`,
      );
    if (j.seccompSandbox && !/^Seccomp:/m.test(readText("/proc/self/status")))
      add("jail", "error", "seccompsandbox is set but this kernel has no seccomp");
    if (q.sharedFs === "virtio-fs")
      add(
        "jail",
        "info",
        `virtiofsd: root (it serves every owner's files), its own mount namespace and seccomp filter, ${j.sandboxCgroupOnly ? "sandbox cgroup" : "caller's cgroup"}`,
      );
  }

  if (vm && config.factory.enableTemplate) {
    // A missing or stale template is a cold boot per create, not a failure: a warning.
    const t = findTemplate(config, accelerator === "kvm" ? "kvm" : "tcg");
    if (t.ok) add("factory", "info", `VM template: ${t.files.dir} (created ${t.meta.created})`);
    else add("factory", "warn", `VM template: ${t.why}; create boots cold`);
    // A clone's QEMU opens the template's memory read-only through this library: without it, no clone.
    if (!findNativeFile(MEMRO_LIBRARY))
      add("factory", "warn", `${MEMRO_LIBRARY} not built: create boots cold: run \`make -C native\``);
  }
  if (vm && config.factory.vmCacheNumber > 0) {
    // No server (or one of another configuration) means no cached VM: a warning, create still works.
    const endpoint = config.factory.vmCacheEndpoint;
    const key = templateKey(config, accelerator === "kvm" ? "kvm" : "tcg");
    const st = await cacheStatus(endpoint);
    if (!st) add("factory", "warn", `VM cache: no server on ${endpoint}: run \`kata-ts factory init\``);
    else if (st.key !== key)
      add("factory", "warn", `VM cache on ${endpoint} serves another configuration: restart it`);
    else add("factory", "info", `VM cache on ${endpoint}: ${st.idle} of ${st.number} VMs ready`);
  }

  const cg = facts.cgroup;
  if (cg.layout === "none") add("cgroups", "error", "no cgroup hierarchy mounted");
  else {
    const parts = [`cgroups ${cg.layout}`];
    if (cg.v1Controllers.length) parts.push(`v1: ${cg.v1Controllers.join(",")}`);
    if (cg.unifiedMount)
      parts.push(`v2 at ${cg.unifiedMount}: ${cg.v2Controllers.join(",") || "(no controllers)"}`);
    add("cgroups", "info", parts.join("; "));
  }

  const missingRequired = REQUIRED_NAMESPACES.filter((n) => !facts.namespaces.includes(n));
  const missingOptional = OPTIONAL_NAMESPACES.filter((n) => !facts.namespaces.includes(n));
  if (missingRequired.length) add("namespaces", "error", `namespaces missing: ${missingRequired.join(", ")}`);
  else add("namespaces", "info", facts.namespaces.join(", "));
  if (missingOptional.length)
    add("namespaces", "warn", `optional namespaces missing: ${missingOptional.join(", ")}`);

  return {
    hypervisor: config.runtime.hypervisor,
    results,
    kvm,
    accelerator,
    capable: !results.some((r) => r.level === "error"),
  };
}

/** One check as a line, in the spirit of kata-check's logrus output: `INFO  kvm: ...`. */
export function formatCheckLine(r: CheckResult): string {
  return `${r.level.toUpperCase().padEnd(5)} ${r.name}: ${r.message}`;
}
