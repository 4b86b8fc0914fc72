// Signal arguments as runc takes them: "KILL", "SIGKILL", "kill", "9". Unknown → runc's wording.
import { constants } from "node:os";

const SIGNALS = constants.signals as Record<string, number>;

export function parseSignal(raw: string | undefined): number {
  const s = (raw ?? "SIGTERM").trim();
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n > 0 && n <= 64) return n;
    throw new Error(`unknown signal "${s}"`);
  }
  const upper = s.toUpperCase();
  const name = upper.startsWith("SIG") ? upper : `SIG${upper}`;
  const n = SIGNALS[name];
  if (n === undefined) throw new Error(`unknown signal "${s}"`);
  return n;
}
