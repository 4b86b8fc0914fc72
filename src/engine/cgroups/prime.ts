// Moving a process into a cgroup (a write to cgroup.procs) takes the kernel's cgroup_threadgroup_rwsem
// for writing, and the first such write after a quiet spell waits for an RCU grace period (rcu_sync:
// the lock's readers are switched to their slow path first). On this kind of host that is 7-20 ms of
// every host-mode `create` and `exec`, the largest single item of the CLI's own cost; runc pays it too.
// The lock stays in its writer-friendly state for about one grace period after each write, so a create
// starts no-op writes of the CLI's own pid to its own cgroup.procs as soon as it knows it will need a
// cgroup (the first one's wait overlaps the rest of create), repeated every few milliseconds until the
// container's init has joined: the join then finds the grace period past (measured: 0.1 ms instead of
// 7-20 ms). The writes move nothing (the process is already there). They run on a thread of the native
// addon: the series must go on while the main thread runs create's synchronous work (libuv's pool
// would need the main thread to queue each write). cgroup v2's `favordynmods` mount option does the
// same for a whole host; kata-ts does not remount the host's cgroups. docs/engine.md has the figures.
import { openSync } from "node:fs";
import { startPriming, stopPriming } from "../../sys/native";
import { detectLayout, ownCgroups } from "./layout";
import { ownCgroupDir } from "./paths";

/** Under one RCU grace period at HZ 100-1000, so the lock never drops back in between. */
const INTERVAL_MS = 5;

/** Stops the priming; no write starts after it (one already under way completes). */
export type StopPriming = () => void;

/**
 * Starts priming for a cgroup join to come. `procsFile` defaults to this process's own cgroup.procs
 * (ownCgroupDir). A host without a cgroup mount, a file that cannot be opened, or a write that fails
 * (a cgroup that does not take processes) means no priming: the join then waits as it did before.
 */
export function primeCgroupJoin(procsFile = ownProcsFile()): StopPriming {
  if (!procsFile) return () => {};
  try {
    // r+: the file exists and is never created or truncated by us. The thread owns the fd.
    startPriming(openSync(procsFile, "r+"), INTERVAL_MS);
  } catch {
    return () => {};
  }
  let stopped = false;
  return () => {
    if (!stopped) stopPriming();
    stopped = true;
  };
}

/**
 * Runs `launch` with the priming on (when `on`): it calls `joined` once its process is in its cgroups,
 * and the priming stops in any case when `launch` settles, however it ends.
 */
export async function withJoinPriming<T>(
  on: boolean,
  launch: (joined: StopPriming) => Promise<T>,
): Promise<T> {
  const stop = on ? primeCgroupJoin() : () => {};
  try {
    return await launch(stop);
  } finally {
    stop();
  }
}

function ownProcsFile(): string | undefined {
  try {
    const dir = ownCgroupDir(detectLayout(), ownCgroups());
    return dir && `${dir}/cgroup.procs`;
  } catch {
    return undefined;
  }
}
