// A clone's identity: a VM started from a template resumes with the template's CRNG state, clock and
// hostname. The host sends fresh entropy and its clock before any container runs (src/factory).
import { writeFileSync } from "node:fs";
import type { CloneIdentity } from "../agent/api";
import { reseedRandom, setRealtime } from "../sys/native";

const HOSTNAME_RE = /^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/;

export function adoptClone(req: CloneIdentity, received = Date.now()): { timeMs: number } {
  const bytes = Buffer.from(req.entropy ?? "", "base64");
  if (bytes.length < 64 || bytes.length > 4096) throw new Error("adoptClone: entropy must be 64-4096 bytes");
  reseedRandom(bytes);
  // The guest's own clock is the template's (plus whatever ran since the restore): only the time spent
  // here since the request arrived is added to the host's reading.
  if (!(req.timeMs > 0)) throw new Error("adoptClone: timeMs must be a positive number");
  setRealtime(req.timeMs + (Date.now() - received));
  if (req.hostname) {
    if (!HOSTNAME_RE.test(req.hostname))
      throw new Error(`adoptClone: invalid hostname ${JSON.stringify(req.hostname)}`);
    writeFileSync("/proc/sys/kernel/hostname", req.hostname);
  }
  return { timeMs: Date.now() };
}
