// The sandbox's cgroup ([runtime] sandbox_cgroup_only, as Kata names it): the host cgroup the engine names
// in the sandbox container's linux.cgroupsPath holds the whole sandbox — the supervisor and its children
// QEMU and virtiofsd — so the engine's accounting and limits of the pod cover the VM. Only placement:
// the container's resource limits are the guest's business (a memory limit meant for the workload would
// kill the VM). The CLI's create makes it and records it (<sandbox>/cgroup.json, written before the
// directories exist, so a create killed halfway still leaves what to remove); the supervisor moves itself
// in first thing, before it starts anything; the CLI's delete kills what is left in it and removes it.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import {
  type CgroupManager,
  cgroupManagerFor,
  cgroupManagerFromState,
  type SavedCgroup,
} from "../engine/cgroups";
import type { SandboxPaths } from "./paths";

export interface SandboxCgroupOptions {
  sandboxId: string;
  /** The sandbox container's linux.cgroupsPath (default: the sandbox id, as runc's default). */
  cgroupsPath?: string;
  systemd?: boolean;
  warn?: (m: string) => void;
}

/** Creates the sandbox's cgroup and records it in the sandbox directory. */
export function createSandboxCgroup(p: SandboxPaths, o: SandboxCgroupOptions): CgroupManager {
  const cg = cgroupManagerFor({
    id: o.sandboxId,
    cgroupsPath: o.cgroupsPath,
    systemd: o.systemd,
    warn: o.warn,
  });
  writeFileSync(p.cgroup, `${JSON.stringify(cg.save())}\n`);
  cg.create();
  // create() adds the directories it made to what save() reports: record them for destroy().
  writeFileSync(p.cgroup, `${JSON.stringify(cg.save())}\n`);
  return cg;
}

/** The recorded sandbox cgroup (as saved), or undefined when there is none (sandbox_cgroup_only = false). */
export function readSandboxCgroup(p: SandboxPaths): SavedCgroup | undefined {
  try {
    return JSON.parse(readFileSync(p.cgroup, "utf8")) as SavedCgroup;
  } catch {
    return undefined;
  }
}

export function sandboxCgroup(p: SandboxPaths): CgroupManager | undefined {
  const saved = readSandboxCgroup(p);
  return saved ? cgroupManagerFromState(saved) : undefined;
}

/**
 * The readiness line a supervisor (on its fd 3) or a cache slot (on the create's connection) sends once
 * it is in the sandbox's cgroup, before its answer: the create waiting for it stops priming the join.
 */
export const JOINED_LINE = "joined";

/** The supervisor moves itself into the sandbox cgroup (its children are born there). */
export function joinSandboxCgroup(p: SandboxPaths, pid = process.pid): boolean {
  const cg = sandboxCgroup(p);
  if (!cg) return false;
  cg.apply(pid);
  return true;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Kills what is left in the sandbox's cgroup (`saved`: as recorded; the supervisor and QEMU are normally
 * gone by now) and removes it. Returns an error message instead of throwing: the caller is cleaning up.
 */
export async function removeSandboxCgroup(
  saved: SavedCgroup | undefined,
  timeoutMs = 5000,
): Promise<string | undefined> {
  if (!saved) return undefined;
  let cg: CgroupManager;
  try {
    cg = cgroupManagerFromState(saved);
  } catch (err) {
    return `sandbox cgroup record: ${(err as Error).message}`;
  }
  const end = Date.now() + timeoutMs;
  for (;;) {
    let pids: number[] = [];
    try {
      pids = cg.pids();
    } catch {
      // the cgroup is gone already: nothing to kill
    }
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // exited meanwhile: one fewer to kill
      }
    }
    if (Date.now() > end) return `sandbox cgroup still holds ${pids.join(", ")}`;
    await sleep(20);
  }
  try {
    cg.destroy();
  } catch (err) {
    return `remove sandbox cgroup: ${(err as Error).message}`;
  }
  return undefined;
}

/**
 * The supervisor's last act when it ends the sandbox by itself (its last container deleted, or idle):
 * it leaves the sandbox cgroup for its parent and removes it, since it also removes the record.
 */
export async function leaveSandboxCgroup(p: SandboxPaths): Promise<string | undefined> {
  const saved = readSandboxCgroup(p);
  if (!saved) return undefined;
  const parents = Object.fromEntries(Object.entries(saved.paths).map(([k, d]) => [k, dirname(d)]));
  try {
    cgroupManagerFromState({ ...saved, paths: parents, created: [] }).apply(process.pid);
  } catch (err) {
    return `leave the sandbox cgroup: ${(err as Error).message}`;
  }
  return removeSandboxCgroup(saved);
}
