// Is KVM usable on this host? Presence of /dev/kvm is not the answer: some hosts expose a software
// hypervisor behind it that emulates every guest instruction (~1000x slower than hardware KVM, slower
// than QEMU's TCG). The probe binary (native/probe/kvm-probe.c) runs a `dec ecx; jnz` loop in a raw KVM
// guest and reports the rate; hardware KVM runs it at ~1000 M iterations/s, an emulating /dev/kvm at
// ~1 M/s. Anything below MIN_MIPS means: use TCG.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { findNativeFile } from "./native";

export const PROBE_FILE = "kata-ts-kvm-probe";
/** Far below real KVM (~1000 M/s, even nested), far above an emulating /dev/kvm (< 5 M/s). */
export const MIN_MIPS = 50;
/** Hardware KVM finishes this in ~10 ms; an emulating /dev/kvm is stopped by the run budget instead. */
export const PROBE_ITERATIONS = 10_000_000;
export const DEFAULT_TIMEOUT_MS = 5000;

/** The probe's JSON line. */
export type ProbeOutput =
  | { ok: true; complete: boolean; iterations: number; seconds: number; mips: number }
  | { ok: false; stage: string; error: string };

export interface KvmVerdict {
  usable: boolean;
  /** One line for `kata-ts check` and logs, with the measured rate when there is one. */
  reason: string;
  /** Measured rate in millions of loop iterations per second. */
  mips?: number;
  /** Wall time the probe took, including process start. */
  elapsedMs?: number;
}

export interface ProbeOptions {
  /** Deadline for the whole probe process (killed with SIGKILL after it). Default 5 s. */
  timeoutMs?: number;
  /** Default /dev/kvm. */
  device?: string;
  /** Default: kata-ts-kvm-probe found next to the native addon. */
  probePath?: string;
}

const TCG = "TCG fallback";

/** Parses the probe's stdout (one JSON line); undefined when it is not a well-formed report. */
export function parseProbeOutput(stdout: string): ProbeOutput | undefined {
  const line = stdout.trim().split("\n").pop();
  if (!line) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (
    o.ok === true &&
    typeof o.iterations === "number" &&
    typeof o.seconds === "number" &&
    typeof o.mips === "number" &&
    Number.isFinite(o.mips)
  ) {
    return {
      ok: true,
      complete: o.complete !== false,
      iterations: o.iterations,
      seconds: o.seconds,
      mips: o.mips,
    };
  }
  if (o.ok === false && typeof o.stage === "string" && typeof o.error === "string") {
    return { ok: false, stage: o.stage, error: o.error };
  }
  return undefined;
}

/** A rate for humans: 0.76, 7.6, 76, 1234. */
export function formatMips(mips: number): string {
  if (mips >= 10) return String(Math.round(mips));
  return String(Number(mips.toPrecision(2)));
}

/** The verdict for a parsed probe report. */
export function classifyProbe(out: ProbeOutput, device = "/dev/kvm"): KvmVerdict {
  if (!out.ok) {
    return { usable: false, reason: `KVM unusable: probe failed at ${out.stage}: ${out.error}; ${TCG}` };
  }
  const rate = formatMips(out.mips);
  if (out.mips >= MIN_MIPS) {
    return {
      usable: true,
      reason: `KVM usable: ${device} runs a test loop at ${rate} M iterations/s`,
      mips: out.mips,
    };
  }
  return {
    usable: false,
    reason: `KVM unusable: ${device} runs a test loop at ${rate} M iterations/s (real KVM: ~1000 M/s); ${TCG}`,
    mips: out.mips,
  };
}

/**
 * Runs the probe binary under a deadline and classifies what it measured. Never throws: every failure
 * (no device, no probe binary, timeout, garbage output) is an unusable verdict whose reason says why.
 */
export async function probeKvm(opts: ProbeOptions = {}): Promise<KvmVerdict> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const device = opts.device ?? "/dev/kvm";
  if (!existsSync(device)) return { usable: false, reason: `KVM unusable: ${device} does not exist; ${TCG}` };
  const probe = opts.probePath ?? findNativeFile(PROBE_FILE);
  if (!probe || !existsSync(probe)) {
    return {
      usable: false,
      reason: `KVM unusable: cannot test it, ${PROBE_FILE} is not built (make -C native); ${TCG}`,
    };
  }
  // The probe stops its own guest after the budget and still reports the rate it measured, so a slow
  // /dev/kvm yields a number, not a timeout. The budget leaves room for process start and VM setup.
  const budgetMs = Math.max(50, Math.min(1000, Math.floor(timeoutMs / 2)));
  const started = performance.now();
  const r = await new Promise<{
    stdout: string;
    stderr: string;
    error: (Error & { killed?: boolean; code?: unknown }) | null;
  }>((resolve) => {
    execFile(
      probe,
      [String(PROBE_ITERATIONS), String(budgetMs), device],
      { timeout: timeoutMs, killSignal: "SIGKILL", encoding: "utf8" },
      (error, stdout, stderr) => resolve({ error, stdout, stderr }),
    );
  });
  const elapsedMs = Math.round(performance.now() - started);
  const out = parseProbeOutput(r.stdout);
  if (out) return { ...classifyProbe(out, device), elapsedMs };
  if (r.error?.killed) {
    return {
      usable: false,
      reason: `KVM unusable: the probe did not finish within ${timeoutMs / 1000} s; ${TCG}`,
      elapsedMs,
    };
  }
  const why = r.stderr.trim().split("\n")[0] || r.error?.message.split("\n")[0] || "no output";
  return { usable: false, reason: `KVM unusable: the probe failed: ${why}; ${TCG}`, elapsedMs };
}
