// Progress of a guest image build on stderr: a redrawn bar when stderr is a terminal, one plain line per
// step otherwise (logs and CI keep readable text, no carriage returns).
import type { ProgressEvent, ProgressFn } from "./image";

/** Where each phase sits on the overall bar: [start, end] fractions. Copy and mkfs dominate. */
const PHASES: Record<ProgressEvent["phase"], [number, number]> = {
  inputs: [0, 0.05],
  copy: [0.05, 0.55],
  mkfs: [0.55, 0.97],
  publish: [0.97, 1],
};

const LINES: Record<ProgressEvent["phase"], string> = {
  inputs: "hashing inputs",
  copy: "copying the runtime tree",
  mkfs: "writing the ext4 image",
  publish: "publishing to the cache",
};

/** Overall fraction 0..1 for an event. */
export function overallFraction(e: ProgressEvent): number {
  const [a, b] = PHASES[e.phase];
  const f = e.total > 0 ? Math.min(1, Math.max(0, e.done / e.total)) : 0;
  return a + (b - a) * f;
}

/** "[#########.........]  45% label", cut to `width` columns. */
export function renderBar(fraction: number, label: string, width = 80): string {
  const barWidth = 24;
  const filled = Math.round(fraction * barWidth);
  const pct = `${Math.floor(fraction * 100)}`.padStart(3);
  const line = `[${"#".repeat(filled)}${".".repeat(barWidth - filled)}] ${pct}% ${label}`;
  return line.length > width ? line.slice(0, width) : line;
}

export interface ProgressReporter {
  onProgress: ProgressFn;
  /** Clears the bar (terminal) before the final result is printed. */
  finish(): void;
}

export function progressReporter(
  stream: NodeJS.WriteStream = process.stderr,
  prefix = "guest build",
): ProgressReporter {
  if (stream.isTTY) {
    let last = 0;
    let drawn = false;
    let phase: ProgressEvent["phase"] | undefined;
    let pending: ProgressEvent | undefined;
    let timer: NodeJS.Timeout | undefined;
    const draw = (e: ProgressEvent) => {
      last = Date.now();
      phase = e.phase;
      pending = undefined;
      const width = Math.max(60, (stream.columns ?? 80) - 1);
      stream.write(`\r\x1b[K${renderBar(overallFraction(e), `${prefix}: ${e.label}`, width)}`);
      drawn = true;
    };
    return {
      onProgress(e) {
        // ~15 redraws a second are plenty; always draw the first event of a phase and a phase's end.
        // A skipped event is drawn a little later unless a newer one replaced it, so a slow step
        // (stripping node) shows its own label while it runs.
        const ends = e.total > 0 && e.done >= e.total;
        if (Date.now() - last >= 66 || e.phase !== phase || ends) return draw(e);
        pending = e;
        timer ??= setTimeout(() => {
          timer = undefined;
          if (pending) draw(pending);
        }, 66).unref();
      },
      finish() {
        if (timer) clearTimeout(timer);
        if (drawn) stream.write("\r\x1b[K");
      },
    };
  }
  let phase: ProgressEvent["phase"] | undefined;
  return {
    onProgress(e) {
      if (e.phase === phase) return;
      phase = e.phase;
      const detail = e.phase === "mkfs" || e.phase === "publish" ? `: ${e.label}` : "";
      stream.write(`${prefix}: ${LINES[e.phase]}${detail}\n`);
    },
    finish() {},
  };
}
