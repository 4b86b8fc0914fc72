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

/** What a foreground CLI (run, exec) passes on to the process standing for the workload. */
const RELAYED: NodeJS.Signals[] = [
  "SIGINT",
  "SIGTERM",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
  "SIGWINCH",
];

/**
 * Forwards the signals a foreground CLI receives to pid (the helper or the stand-in), which forwards
 * them to the workload. Returns the function that stops forwarding.
 */
export function relaySignals(pid: number): () => void {
  const handlers = RELAYED.map((sig) => {
    const h = () => {
      try {
        process.kill(pid, sig);
      } catch {
        // the process exited meanwhile: nothing to relay to
      }
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  return () => {
    for (const [sig, h] of handlers) process.off(sig, h);
  };
}
