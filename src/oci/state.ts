// The container state as the OCI spec defines it (what hooks get on stdin and what `state` prints),
// plus the extra fields runc's `state` prints. Pure builders: the runtime supplies the facts.
import { OCI_VERSION } from "./spec";

/** "creating" exists in the spec; runc adds "paused". */
export type Status = "creating" | "created" | "running" | "stopped" | "paused";

export interface OciState {
  ociVersion: string;
  id: string;
  status: Status;
  pid?: number;
  bundle: string;
  annotations?: Record<string, string>;
}

/** `runc state` output: the OCI state plus rootfs, creation time (RFC 3339, nanoseconds) and owner. */
export interface RuncState {
  ociVersion: string;
  id: string;
  pid: number;
  status: Status;
  bundle: string;
  rootfs: string;
  created: string;
  owner: string;
  annotations?: Record<string, string>;
}

export interface StateFacts {
  id: string;
  status: Status;
  /** Host pid of the container init; 0 or undefined once stopped. */
  pid?: number;
  bundle: string;
  annotations?: Record<string, string>;
  ociVersion?: string;
}

/** The OCI state JSON (hooks' stdin). The pid is omitted when there is no live process. */
export function ociState(f: StateFacts): OciState {
  const s: OciState = {
    ociVersion: f.ociVersion ?? OCI_VERSION,
    id: f.id,
    status: f.status,
    bundle: f.bundle,
  };
  if (f.pid && f.pid > 0 && f.status !== "stopped") s.pid = f.pid;
  if (f.annotations && Object.keys(f.annotations).length > 0) s.annotations = f.annotations;
  return s;
}

/** runc's `state` object, in runc's field order. A stopped container reports pid 0. */
export function runcState(
  f: StateFacts & { rootfs: string; created: Date | string; owner?: string },
): RuncState {
  const s: RuncState = {
    ociVersion: f.ociVersion ?? OCI_VERSION,
    id: f.id,
    pid: f.status === "stopped" ? 0 : (f.pid ?? 0),
    status: f.status,
    bundle: f.bundle,
    rootfs: f.rootfs,
    created: typeof f.created === "string" ? f.created : rfc3339Nano(f.created),
    owner: f.owner ?? "",
  };
  if (f.annotations && Object.keys(f.annotations).length > 0) s.annotations = f.annotations;
  return s;
}

/**
 * Go's time.RFC3339Nano in UTC ("2024-01-02T03:04:05.123456789Z"; trailing zeros of the fraction
 * dropped). `extraNanos` adds the sub-millisecond part a Date cannot hold.
 */
export function rfc3339Nano(d: Date, extraNanos = 0): string {
  const iso = d.toISOString(); // 2024-01-02T03:04:05.123Z
  const nanos = d.getUTCMilliseconds() * 1_000_000 + (extraNanos % 1_000_000);
  const base = iso.slice(0, 19);
  if (nanos === 0) return `${base}Z`;
  return `${base}.${String(nanos).padStart(9, "0").replace(/0+$/, "")}Z`;
}
