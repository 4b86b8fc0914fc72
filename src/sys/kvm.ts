// Is KVM usable on this host? Presence of /dev/kvm is not the answer: some hosts expose a software
// hypervisor behind it that emulates every guest instruction (~1000x slower than hardware KVM, slower
// than QEMU's TCG). The probe binary (native/probe/kvm-probe.c) runs a `dec ecx; jnz` loop in a raw KVM
// guest and reports the rate; hardware KVM runs it at ~1000 M iterations/s, an emulating /dev/kvm at
// ~1 M/s. Anything below MIN_MIPS means: use TCG.

import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { firstLine } from "../errors";
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
  /** True when the verdict came from the per-boot cache (probeKvmCached), not a fresh measurement. */
  cached?: boolean;
  /** Set by probeKvm when the verdict rests on a measurement (worth caching until the next boot). */
  measured?: boolean;
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
  if (out) return { ...classifyProbe(out, device), elapsedMs, measured: true };
  if (r.error?.killed) {
    return {
      usable: false,
      reason: `KVM unusable: the probe did not finish within ${timeoutMs / 1000} s; ${TCG}`,
      elapsedMs,
    };
  }
  const why = firstLine(r.stderr) || firstLine(r.error?.message ?? "") || "no output";
  return { usable: false, reason: `KVM unusable: the probe failed: ${why}; ${TCG}`, elapsedMs };
}

// ── the per-boot cache ────────────────────────────────────────────────────────────────────────────
// The probe costs ~1 s on a loaded TCG-only host (process start + a guest run to its budget), and its
// answer cannot change while the host runs: the hardware and the kvm module stay what they are. So
// sandbox starts reuse the verdict until the next boot (/proc/sys/kernel/random/boot_id) or until the
// probe binary changes (rebuilt: it may measure differently). `kata-ts check` calls probeKvm itself
// and so always measures afresh. Only verdicts that rest on a measurement are cached: a timeout or a
// crash may be load or a transient fault, and a missing /dev/kvm is cheap to see again.

/** Where sandbox starts keep the verdict (tmpfs: gone at reboot anyway; the key guards the rest). */
export const PROBE_CACHE_FILE = "/run/kata-ts/kvm-probe.json";

export interface CachedProbeOptions extends ProbeOptions {
  /** Default PROBE_CACHE_FILE. */
  cacheFile?: string;
  /** Measure even when the cache holds a verdict (and store the new one). */
  fresh?: boolean;
  /** Default: /proc/sys/kernel/random/boot_id (injectable for tests). */
  bootId?: string;
  /** Replaces probeKvm (tests). */
  probe?: (opts: ProbeOptions) => Promise<KvmVerdict>;
}

interface CacheEntry {
  key: string;
  verdict: KvmVerdict;
  /** When it was measured (ms since the epoch), for humans reading the file. */
  at: number;
}

/** The host's boot id, or "" when it cannot be read (then nothing is cached). */
export function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

/** Identity of a file's current content as far as stat tells: device, inode, size, mtime. */
export function fileIdentity(path: string): string {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}:${st.size}:${Math.round(st.mtimeMs)}`;
  } catch {
    return "";
  }
}

/** The cache key: boot, probe binary, device and iteration count; "" when one of them is unknown. */
export function probeCacheKey(boot: string, probeIdentity: string, device: string): string {
  if (!boot || !probeIdentity) return "";
  return `${boot}|${probeIdentity}|${device}|${PROBE_ITERATIONS}|${MIN_MIPS}`;
}

/** The cached verdict for `key`, if the file holds one for exactly that key. */
export function readProbeCache(file: string, key: string): KvmVerdict | undefined {
  if (!key) return undefined;
  try {
    const e = JSON.parse(readFileSync(file, "utf8")) as Partial<CacheEntry>;
    const v = e.verdict;
    if (e.key !== key || !v || typeof v.usable !== "boolean" || typeof v.reason !== "string")
      return undefined;
    return { usable: v.usable, reason: v.reason, mips: v.mips, elapsedMs: v.elapsedMs, cached: true };
  } catch {
    return undefined;
  }
}

/** Stores a verdict atomically (temp file + rename: concurrent sandbox starts never see half a file). */
export function writeProbeCache(file: string, key: string, verdict: KvmVerdict): void {
  if (!key) return;
  const { cached: _c, measured: _m, ...v } = verdict;
  const entry: CacheEntry = { key, verdict: v, at: Date.now() };
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(entry)}\n`, { mode: 0o644 });
    renameSync(tmp, file);
  } catch {
    // A read-only /run only costs the next start another probe.
  }
}

/** probeKvm with the per-boot cache: what sandbox starts use for accel = "auto". */
export async function probeKvmCached(opts: CachedProbeOptions = {}): Promise<KvmVerdict> {
  const device = opts.device ?? "/dev/kvm";
  const file = opts.cacheFile ?? PROBE_CACHE_FILE;
  const probePath = opts.probePath ?? findNativeFile(PROBE_FILE);
  const key = probeCacheKey(opts.bootId ?? bootId(), probePath ? fileIdentity(probePath) : "", device);
  if (!opts.fresh) {
    const hit = readProbeCache(file, key);
    if (hit) return hit;
  }
  const v = await (opts.probe ?? probeKvm)({ timeoutMs: opts.timeoutMs, device, probePath });
  if (v.measured) writeProbeCache(file, key, v);
  return v;
}
