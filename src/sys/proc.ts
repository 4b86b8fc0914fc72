// Facts about host processes from /proc: start time (a pid plus its start time names one process even
// after the pid is recycled), liveness (a zombie counts as gone), and search by argv.
import { readdirSync, readFileSync } from "node:fs";

export interface ProcStat {
  state: string;
  startTime: number;
}

/** Parses /proc/PID/stat; the comm field may contain spaces and parentheses, so split after the last ')'. */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const fields = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  // fields[0] is field 3 (state); starttime is field 22 → index 19.
  const startTime = Number(fields[19]);
  if (!fields[0] || !Number.isFinite(startTime)) return undefined;
  return { state: fields[0], startTime };
}

function readProcStat(pid: number): ProcStat | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

/** Start time of pid in clock ticks since boot, or undefined when it does not exist. */
export function processStartTime(pid: number): number | undefined {
  return readProcStat(pid)?.startTime;
}

/**
 * Live processes whose argv satisfies `match`, with their start times. For finding a process whose pid
 * file was never written (its parent was killed between spawning it and recording it).
 */
export function findProcesses(match: (argv: string[]) => boolean): { pid: number; start: number }[] {
  const found: { pid: number; start: number }[] = [];
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    if (!match(argv)) continue;
    const stat = readProcStat(pid);
    if (stat && stat.state !== "Z" && stat.state !== "X") found.push({ pid, start: stat.startTime });
  }
  return found;
}

/** True when pid exists, is not a zombie, and is the same process that had startTime. */
export function processAlive(pid: number, startTime: number): boolean {
  const stat = readProcStat(pid);
  return stat !== undefined && stat.state !== "Z" && stat.state !== "X" && stat.startTime === startTime;
}
