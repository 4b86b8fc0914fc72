// The state store: one directory per container under --root (default /run/kata-ts).
//   <root>/<id>/state.json   the ContainerRecord, replaced atomically (temp + rename)
//   <root>/<id>/lock         flock target; every mutating command holds it exclusively
//   <root>/<id>/exec.fifo    present between create and start (owned by the engine)
// The CLI is stateless between calls; this directory is the only memory it has.

import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { KataError } from "../errors";
import { validateContainerId } from "../oci/id";
import type { Spec } from "../oci/spec";
import { writeFileAtomic } from "../sys/files";
import { flock } from "../sys/native";

export type HypervisorKind = "none" | "qemu";
export type ContainerType = "sandbox" | "pod_container";

export interface ContainerRecord {
  id: string;
  /** Absolute bundle path. */
  bundle: string;
  /** Absolute rootfs path (config.root.path resolved against the bundle). */
  rootfs: string;
  /** RFC 3339 creation time. */
  created: string;
  owner: string;
  annotations: Record<string, string>;
  /** Host pid of the container's init (or its stand-in in VM mode); 0 until known. */
  pid: number;
  /** Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22): a recycled pid differs. */
  pidStartTime: number;
  paused: boolean;
  hypervisor: HypervisorKind;
  sandboxId: string;
  containerType: ContainerType;
  /** The validated config.json as it was at create time (updates merge into linux.resources). */
  config: Spec;
  /** Engine-owned data: cgroup paths, namespace paths, ... */
  engine: Record<string, unknown>;
}

export class ContainerNotFound extends KataError {
  constructor(readonly id: string) {
    super(`container "${id}" does not exist`);
    this.name = "ContainerNotFound";
  }
}

export class ContainerExists extends KataError {
  constructor(readonly id: string) {
    super(`container with id exists: ${id}`);
    this.name = "ContainerExists";
  }
}

const STATE_FILE = "state.json";
const LOCK_FILE = "lock";

export class StateStore {
  constructor(readonly root: string) {}

  /**
   * The container's directory. Every path built from an id goes through here, so the id is checked
   * here too: `delete --force ..` must not remove the parent of --root (it did: rm -rf of /run).
   */
  dir(id: string): string {
    return join(this.root, validateContainerId(id));
  }

  exists(id: string): boolean {
    try {
      readFileSync(join(this.dir(id), STATE_FILE));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Makes the container's directory (exclusively: a second create of the same id fails) and writes the
   * first record. The caller should hold `withLock` from here on.
   */
  create(record: ContainerRecord): void {
    mkdirSync(this.root, { recursive: true, mode: 0o711 });
    try {
      mkdirSync(this.dir(record.id), { mode: 0o711 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") throw new ContainerExists(record.id);
      throw err;
    }
    this.write(record);
  }

  read(id: string): ContainerRecord {
    let text: string;
    try {
      text = readFileSync(join(this.dir(id), STATE_FILE), "utf8");
    } catch (err) {
      if (
        (err as NodeJS.ErrnoException).code === "ENOENT" ||
        (err as NodeJS.ErrnoException).code === "ENOTDIR"
      )
        throw new ContainerNotFound(id);
      throw err;
    }
    try {
      return JSON.parse(text) as ContainerRecord;
    } catch {
      throw new Error(`state of container "${id}" is corrupt: ${join(this.dir(id), STATE_FILE)}`);
    }
  }

  /** Atomic replace: a reader sees the old record or the new one, never a torn file. */
  write(record: ContainerRecord): void {
    writeFileAtomic(join(this.dir(record.id), STATE_FILE), `${JSON.stringify(record)}\n`);
  }

  remove(id: string): void {
    rmSync(this.dir(id), { recursive: true, force: true });
  }

  /** Container ids with a state file, sorted. */
  list(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.root);
    } catch {
      return [];
    }
    return names.filter((n) => this.exists(n)).sort();
  }

  /**
   * Runs fn holding an exclusive flock on the container's lock file, so that two commands on one
   * container serialise. The container directory must exist (ContainerNotFound otherwise).
   */
  async withLock<T>(id: string, fn: () => T | Promise<T>): Promise<T> {
    let fd: number;
    try {
      fd = openSync(join(this.dir(id), LOCK_FILE), "a", 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new ContainerNotFound(id);
      throw err;
    }
    try {
      flock(fd, "ex");
      return await fn();
    } finally {
      closeSync(fd); // closing drops the flock
    }
  }
}
