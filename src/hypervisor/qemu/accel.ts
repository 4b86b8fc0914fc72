// Accelerator choice. "auto" takes KVM only when a probe guest really runs fast (src/sys/kvm.ts): some
// hosts expose a /dev/kvm that emulates every instruction and is far slower than TCG. Under TCG the
// guest must be told the TSC frequency (tsc_early_khz): microvm has no PIT/HPET to calibrate against,
// and without it about one boot in five hangs. Under TCG the guest's RDTSC reads the host TSC, so the
// host's TSC frequency is the right value.
import { readFileSync } from "node:fs";
import type { Accel } from "../../config/config";
import { type KvmVerdict, probeKvmCached } from "../../sys/kvm";

export interface AccelChoice {
  accel: "kvm" | "tcg";
  /** One line for logs / `check`: why this accelerator. */
  reason: string;
  /** Set when the VM will be slow (TCG): the caller logs it as a warning. */
  warning?: string;
}

/**
 * Decides the accelerator for a configured `accel`; `probe` is injectable for tests. The default probe
 * is the per-boot cached one: a sandbox start pays for the measurement once per host boot.
 */
export async function chooseAccel(
  setting: Accel,
  probe: () => Promise<KvmVerdict> = () => probeKvmCached(),
): Promise<AccelChoice> {
  if (setting === "kvm") return { accel: "kvm", reason: "accel = kvm in the configuration" };
  if (setting === "tcg") {
    return {
      accel: "tcg",
      reason: "accel = tcg in the configuration",
      warning: "VM runs under TCG emulation (accel = tcg): boot and workloads are slow",
    };
  }
  const v = await probe();
  if (v.usable) return { accel: "kvm", reason: v.reason };
  return {
    accel: "tcg",
    reason: v.reason,
    warning: `VM runs under TCG emulation, not KVM: ${v.reason}`,
  };
}

/**
 * The host TSC frequency in kHz from /proc/cpuinfo ("cpu MHz" with the `tsc` flag), or undefined when
 * it cannot be known. On hosts without cpufreq scaling (VMs, constant_tsc servers) "cpu MHz" is the
 * kernel's calibrated TSC rate; with frequency scaling it may differ a little, which only makes the
 * guest's early clock slightly off until it recalibrates.
 */
export function hostTscKhz(cpuinfo?: string): number | undefined {
  let text = cpuinfo;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/cpuinfo", "utf8");
    } catch {
      return undefined;
    }
  }
  const first = text.split(/\n\s*\n/)[0] ?? "";
  const flags = /^flags\s*:\s*(.*)$/m.exec(first)?.[1]?.split(/\s+/) ?? [];
  if (!flags.includes("tsc")) return undefined;
  const mhz = /^cpu MHz\s*:\s*([\d.]+)\s*$/m.exec(first)?.[1];
  if (!mhz) return undefined;
  const khz = Math.round(Number(mhz) * 1000);
  return Number.isFinite(khz) && khz > 0 ? khz : undefined;
}
