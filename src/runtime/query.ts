// Read-only views of containers for `state` and `list`, in runc's shapes. Status is derived at read
// time (src/runtime/status.ts), never trusted from the stored record.
import { statSync } from "node:fs";
import { userInfo } from "node:os";
import { type RuncState, runcState } from "../oci/state";
import { containerStatus } from "./status";
import type { ContainerRecord, StateStore } from "./store";

function stateOf(store: StateStore, record: ContainerRecord, owner = ""): RuncState {
  return runcState({
    id: record.id,
    status: containerStatus(store, record),
    pid: record.pid,
    bundle: record.bundle,
    rootfs: record.rootfs,
    created: record.created,
    owner,
    annotations: record.annotations,
  });
}

/** `kata-ts state ID`: throws ContainerNotFound (`container "ID" does not exist`). */
export function containerState(store: StateStore, id: string): RuncState {
  return stateOf(store, store.read(id));
}

/** `kata-ts list`: every container under the root; the owner is the state directory's owner, as runc. */
export function listContainers(store: StateStore): RuncState[] {
  const out: RuncState[] = [];
  for (const id of store.list()) {
    let record: ContainerRecord;
    try {
      record = store.read(id);
    } catch {
      continue; // deleted between list and read
    }
    out.push(stateOf(store, record, ownerName(store.dir(id))));
  }
  return out;
}

function ownerName(path: string): string {
  try {
    const uid = statSync(path).uid;
    if (uid === process.getuid?.()) return userInfo().username;
    return uid === 0 ? "root" : `#${uid}`;
  } catch {
    return "";
  }
}

/**
 * runc's table: Go's tabwriter with minwidth 12, padding 3; the last column is not padded.
 */
export function formatTable(rows: string[][]): string {
  if (rows.length === 0) return "";
  const cols = rows[0].length;
  const widths = Array.from({ length: cols - 1 }, (_, c) =>
    Math.max(12, ...rows.map((r) => r[c].length + 3)),
  );
  return rows
    .map((r) => r.map((cell, c) => (c < cols - 1 ? cell.padEnd(widths[c]) : cell)).join(""))
    .join("\n")
    .concat("\n");
}

export function listTable(states: RuncState[]): string {
  const rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]];
  for (const s of states) rows.push([s.id, String(s.pid), s.status, s.bundle, s.created, s.owner]);
  return formatTable(rows);
}
