// The container state machine: which verbs each status allows, and runc's wording for the ones it does
// not. One table for both the host engine (lifecycle.ts) and VM mode (vm.ts).
import type { ContainerStatus } from "./status";

export type Verb = "start" | "delete" | "exec" | "kill" | "pause";

/** Which verbs each status allows, and runc's words for the ones it does not. */
const TRANSITIONS: Record<ContainerStatus, Partial<Record<Verb, string | true>>> = {
  creating: { start: "cannot start a container in the creating state", delete: true, kill: true },
  created: { start: true, delete: true, kill: true, exec: true },
  running: {
    start: "cannot start an already running container",
    delete: "cannot delete container {id} that is not stopped: running",
    kill: true,
    exec: true,
  },
  paused: {
    start: "cannot start a container in the paused state",
    delete: "cannot delete container {id} that is not stopped: paused",
    kill: true,
    exec: "cannot exec in a paused container (use --ignore-paused to override)",
  },
  stopped: {
    start: "cannot start a container that has stopped",
    delete: true,
    kill: "container not running",
    exec: "cannot exec in a stopped container",
  },
};

/** Throws runc's error when `verb` is not allowed in `status`. */
export function checkTransition(verb: Verb, status: ContainerStatus, id: string, ignorePaused = false): void {
  if (verb === "exec" && status === "paused" && ignorePaused) return;
  const rule = TRANSITIONS[status][verb];
  if (rule === true) return;
  throw new Error((rule ?? `cannot ${verb} a container in the ${status} state`).replace("{id}", id));
}
