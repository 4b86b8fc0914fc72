// The sandbox VM's size from the sandbox container's annotations, as Kata sizes it: a pod (containerd's
// CRI with `pod_annotations = ["io.katacontainers.*"]`, or podman --annotation) may ask for
// io.katacontainers.config.hypervisor.default_memory (MiB) and .default_vcpus. microvm cannot hot-plug
// memory or CPUs, so the size is fixed when QEMU starts. An annotation is obeyed only when
// [hypervisor.qemu] enable_annotations lets it through; a refused or bad value fails the create in one
// line before anything is made (Kata refuses too, rather than ignoring what the pod asked for).
import { cpus, totalmem } from "node:os";
import { KataError } from "../errors";
import type { QemuConfig } from "./config";

export const HYPERVISOR_ANNOTATION_PREFIX = "io.katacontainers.config.hypervisor.";
/** The annotation names (after the prefix) this runtime can obey. */
export const SIZING_ANNOTATIONS = ["default_memory", "default_vcpus"] as const;
/** Kata's floor for a VM's memory (vc.MinHypervisorMemory); a smaller guest cannot run the agent. */
export const MIN_VM_MEMORY_MIB = 256;

export interface VmSize {
  memoryMiB: number;
  vcpus: number;
}

/** What the host offers: a VM larger than this is refused rather than overcommitted. */
export interface HostLimits {
  memoryMiB: number;
  cpus: number;
}

export function hostLimits(): HostLimits {
  return { memoryMiB: Math.floor(totalmem() / 1024 / 1024), cpus: cpus().length };
}

/** enable_annotations entries are regular expressions over the name after the prefix, matched whole. */
function enabled(q: Pick<QemuConfig, "enableAnnotations">, name: string): boolean {
  return q.enableAnnotations.some((re) => new RegExp(`^(?:${re})$`).test(name));
}

function positiveInt(key: string, value: string): number {
  if (!/^[0-9]+$/.test(value.trim()) || Number(value) < 1 || !Number.isSafeInteger(Number(value)))
    throw new KataError(`annotation ${key}: "${value}" is not a positive integer`);
  return Number(value);
}

/**
 * The VM size for a sandbox with these annotations: the configuration's defaults, overridden by the
 * enabled sizing annotations. Throws a one-line KataError for an annotation that is not enabled, is not a
 * positive integer, or is out of bounds (memory below MIN_VM_MEMORY_MIB or above the host's; vCPUs above
 * default_maxvcpus, or the host's CPUs when that is 0, as in Kata).
 */
export function sandboxVmSize(
  annotations: Record<string, string> | undefined,
  q: Pick<QemuConfig, "defaultMemory" | "defaultVcpus" | "defaultMaxvcpus" | "enableAnnotations">,
  host: HostLimits = hostLimits(),
): VmSize {
  const size: VmSize = { memoryMiB: q.defaultMemory, vcpus: q.defaultVcpus };
  for (const [key, value] of Object.entries(annotations ?? {})) {
    if (!key.startsWith(HYPERVISOR_ANNOTATION_PREFIX)) continue;
    const name = key.slice(HYPERVISOR_ANNOTATION_PREFIX.length);
    if (!enabled(q, name))
      throw new KataError(`annotation ${key} is not enabled: see enable_annotations in [hypervisor.qemu]`);
    if (name === "default_memory") {
      const mib = positiveInt(key, value);
      if (mib < MIN_VM_MEMORY_MIB)
        throw new KataError(
          `annotation ${key}: ${mib} MiB is less than the minimum of ${MIN_VM_MEMORY_MIB} MiB`,
        );
      if (mib > host.memoryMiB)
        throw new KataError(`annotation ${key}: ${mib} MiB is more than the host's ${host.memoryMiB} MiB`);
      size.memoryMiB = mib;
    } else if (name === "default_vcpus") {
      const n = positiveInt(key, value);
      const max = q.defaultMaxvcpus > 0 ? Math.min(q.defaultMaxvcpus, host.cpus) : host.cpus;
      if (n > max) throw new KataError(`annotation ${key}: ${n} vCPUs is more than the maximum of ${max}`);
      size.vcpus = n;
    } else {
      throw new KataError(
        `annotation ${key} is not supported by kata-ts (only ${SIZING_ANNOTATIONS.join(", ")})`,
      );
    }
  }
  return size;
}
