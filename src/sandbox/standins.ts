// The stand-ins' side of the supervisor: each container process has a stand-in on the host (the pid
// engines wait on) that connects to the control socket with its stdio fds. A stand-in may connect
// before or after the CLI's request that needs it; the registry pairs them (claim) and keeps the
// unclaimed ones until their container is created, deleted or the sandbox stops.
import type { Socket } from "node:net";
import { closeFd } from "../sys/native";

/** One stand-in connection: the host face of one container process. */
export class Standin {
  told = false;
  constructor(
    readonly sock: Socket,
    readonly containerId: string,
    readonly execId: string,
    readonly terminal: boolean,
    public fds: number[],
  ) {}
  /** Last word to the stand-in: "exit N" or "kill SIG"; it exits on it. */
  tell(line: string): void {
    if (this.told) return;
    this.told = true;
    if (this.sock.destroyed) return;
    const sent = new Promise<void>((resolve) => this.sock.write(`${line}\n`, () => resolve()));
    unsent.add(sent);
    void sent.then(() => unsent.delete(sent));
  }
  closeFds(): void {
    for (const fd of this.fds) {
      try {
        closeFd(fd);
      } catch {
        // already closed (EBADF): nothing held
      }
    }
    this.fds = [];
  }
}

/** What stand-ins were told and their sockets have not written yet. */
const unsent = new Set<Promise<void>>();

/** Resolves once every stand-in's last word has been written (a process about to exit waits on it). */
export async function standinsTold(timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(unsent),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    }),
  ]);
  clearTimeout(timer);
}

function key(cid: string, execId: string): string {
  return `${cid}\0${execId}`;
}

export class StandinRegistry {
  private unclaimed = new Map<string, Standin>();
  private waiters = new Map<string, (s: Standin) => void>();

  get size(): number {
    return this.unclaimed.size;
  }

  /** A stand-in connected: to the request waiting for it, else kept (a previous one of its key goes). */
  arrived(s: Standin): void {
    const k = key(s.containerId, s.execId);
    const waiter = this.waiters.get(k);
    if (waiter) {
      this.waiters.delete(k);
      waiter(s);
    } else {
      this.unclaimed.get(k)?.sock.destroy();
      this.unclaimed.set(k, s);
    }
  }

  /** Takes the stand-in of (cid, execId), waiting up to timeoutMs for it to connect. */
  claim(cid: string, execId: string, timeoutMs: number): Promise<Standin> {
    const k = key(cid, execId);
    const ready = this.unclaimed.get(k);
    if (ready) {
      this.unclaimed.delete(k);
      return Promise.resolve(ready);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(k);
        reject(
          new Error(`the stand-in of ${cid}/${execId || "init"} did not connect within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.waiters.set(k, (s) => {
        clearTimeout(timer);
        resolve(s);
      });
    });
  }

  /** Puts back a claimed stand-in whose process could not be made: a delete or shutdown ends it. */
  putBack(s: Standin): void {
    s.closeFds();
    this.unclaimed.set(key(s.containerId, s.execId), s);
  }

  /** True (and forgotten) when `s` was waiting unclaimed. */
  forget(s: Standin): boolean {
    const k = key(s.containerId, s.execId);
    if (this.unclaimed.get(k) !== s) return false;
    this.unclaimed.delete(k);
    s.closeFds();
    return true;
  }

  /** Ends the unclaimed stand-ins of one container (or all): they are told to die with SIGKILL. */
  killUnclaimed(cid?: string): void {
    for (const [k, s] of this.unclaimed) {
      if (cid !== undefined && s.containerId !== cid) continue;
      this.unclaimed.delete(k);
      s.closeFds();
      s.tell("kill 9");
    }
  }

  /** The VM died: every unclaimed stand-in is told, but kept (shutdown closes them). */
  tellAll(line: string): void {
    for (const s of this.unclaimed.values()) s.tell(line);
  }
}
