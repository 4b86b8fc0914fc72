// The status of a container is derived, never trusted from disk: a stored pid may have exited or been
// recycled. runc's rules: the init is gone (or a zombie, or a different process with the same pid) →
// stopped; the exec fifo still exists → created; frozen → paused; else running.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { EXEC_FIFO } from "../engine/container";
import { processAlive } from "../sys/proc";
import type { ContainerRecord, StateStore } from "./store";

export type ContainerStatus = "creating" | "created" | "running" | "paused" | "stopped";

export function containerStatus(store: StateStore, record: ContainerRecord): ContainerStatus {
  if (record.pid <= 0) return "creating";
  if (!processAlive(record.pid, record.pidStartTime)) return "stopped";
  if (record.paused) return "paused";
  if (existsSync(join(store.dir(record.id), EXEC_FIFO))) return "created";
  return "running";
}
