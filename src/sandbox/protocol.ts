// The supervisor's control protocol: JSON lines on <sandbox>/supervisor.sock. A client sends
// {"id":N,"op":"<op>",...args}; the supervisor answers {"id":N,"ok":true,"result":...} or
// {"id":N,"ok":false,"error":"<one line>"}. Requests on one connection may be pipelined; answers carry
// the request id. Stand-ins use the same socket but speak a line protocol of their own, recognised by
// the first line ("standin ..."; see native/standin/standin.c).
import { connect, type Socket } from "node:net";
import type { Empty, GuestDetails, NetRoute, WaitProcessResponse } from "../agent/api";
import type { NetworkAction, NetworkResult } from "../network";
import { nodeChildEnv } from "../nodeenv";
import type { LinuxResources, Process, Spec } from "../oci/spec";

export interface ControlOps {
  /** Liveness and facts about the sandbox. */
  ping: [Empty, { sandboxId: string; pid: number; vmPid: number; guest: GuestDetails; containers: string[] }];
  /**
   * Shares the rootfs, creates the container in the guest with the registered stand-in's stdio (it
   * waits up to `standinTimeoutMs` for the stand-in of (containerId, "") to connect).
   */
  createContainer: [
    { containerId: string; spec: Spec; rootfs: string; standinTimeoutMs?: number },
    { guestPid: number },
  ];
  startContainer: [{ containerId: string }, Empty];
  exec: [
    { containerId: string; execId: string; process: Process; standinTimeoutMs?: number },
    { guestPid: number },
  ];
  kill: [{ containerId: string; execId?: string; signal: number; all?: boolean }, Empty];
  /** Resolves when the process has exited and its output was relayed. */
  wait: [{ containerId: string; execId?: string }, WaitProcessResponse];
  pause: [{ containerId: string }, Empty];
  resume: [{ containerId: string }, Empty];
  update: [{ containerId: string; resources: LinuxResources }, Empty];
  stats: [{ containerId: string }, { data: Record<string, unknown>; oomKills?: number }];
  /** Guest pids; with psArgs also the guest's `ps` output (unfiltered). */
  ps: [{ containerId: string; psArgs?: string[] }, { pids: number[]; table?: string }];
  /** Removes the container from the guest and unshares its rootfs; the last one stops the sandbox. */
  delete: [{ containerId: string }, { sandboxEmpty: boolean }];
  /** The guest's network (`kata-ts network`): its NICs, its routes, or new routes (src/network). */
  network: [{ action: NetworkAction; routes?: NetRoute[] }, NetworkResult];
  /** Stops the VM and the supervisor, whatever is still running. */
  shutdown: [Empty, Empty];
}

export type ControlOp = keyof ControlOps;
export type ControlArgs<O extends ControlOp> = ControlOps[O][0];
export type ControlResult<O extends ControlOp> = ControlOps[O][1];

export interface ControlRequest {
  id: number;
  op: ControlOp;
  [arg: string]: unknown;
}

export type ControlResponse =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: string };

/** A connection from the CLI to one supervisor. */
export class SupervisorClient {
  private nextId = 1;
  private buf = "";
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private closedErr?: Error;

  private constructor(
    private readonly sock: Socket,
    readonly path: string,
  ) {
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => this.onData(d));
    sock.on("error", () => {});
    sock.on("close", () => {
      this.closedErr = new Error(`sandbox supervisor at ${path} closed the connection`);
      for (const p of this.pending.values()) p.reject(this.closedErr);
      this.pending.clear();
    });
  }

  static connect(path: string, timeoutMs = 5000): Promise<SupervisorClient> {
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`sandbox supervisor at ${path}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      sock.once("connect", () => {
        clearTimeout(timer);
        sock.removeAllListeners("error");
        resolve(new SupervisorClient(sock, path));
      });
      sock.once("error", (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new Error(`sandbox supervisor at ${path}: ${err.code ?? err.message}`));
      });
    });
  }

  call<O extends ControlOp>(op: O, args: ControlArgs<O>, timeoutMs = 60_000): Promise<ControlResult<O>> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`sandbox supervisor: ${op}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as ControlResult<O>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.sock.write(`${JSON.stringify({ ...args, id, op })}\n`);
    });
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      let msg: ControlResponse;
      try {
        msg = JSON.parse(line) as ControlResponse;
      } catch {
        continue;
      }
      const p = this.pending.get(msg.id);
      if (!p) continue;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new Error(msg.error));
    }
  }
}

/** One call on a fresh connection. */
export async function supervisorCall<O extends ControlOp>(
  socket: string,
  op: O,
  args: ControlArgs<O>,
  timeoutMs?: number,
): Promise<ControlResult<O>> {
  const c = await SupervisorClient.connect(socket);
  try {
    return await c.call(op, args, timeoutMs);
  } finally {
    c.close();
  }
}

// A client small enough to pass to `node -e`: for the few callers that must stay synchronous (`ps` and
// `events --stats` print from synchronous code paths). It costs one node start.
const SYNC_CLIENT = `
const [sock, line] = process.argv.slice(1);
const c = require("node:net").connect(sock);
let buf = "";
c.on("connect", () => c.write(line + "\\n"));
c.on("data", (d) => {
  buf += d;
  const nl = buf.indexOf("\\n");
  if (nl >= 0) { process.stdout.write(buf.slice(0, nl)); c.destroy(); }
});
c.on("error", (e) => { process.stdout.write(JSON.stringify({ id: 1, ok: false, error: "sandbox supervisor at " + sock + ": " + (e.code || e.message) })); });
`;

export function supervisorCallSync<O extends ControlOp>(
  socket: string,
  op: O,
  args: ControlArgs<O>,
  timeoutMs = 30_000,
): ControlResult<O> {
  const { execFileSync } = require("node:child_process") as typeof import("node:child_process");
  const line = JSON.stringify({ ...args, id: 1, op });
  let out: string;
  try {
    out = execFileSync(process.execPath, ["-e", SYNC_CLIENT, socket, line], {
      encoding: "utf8",
      timeout: timeoutMs,
      stdio: ["ignore", "pipe", "ignore"],
      env: nodeChildEnv(),
    });
  } catch {
    throw new Error(`sandbox supervisor: ${op}: no answer within ${timeoutMs} ms`);
  }
  let res: ControlResponse;
  try {
    res = JSON.parse(out) as ControlResponse;
  } catch {
    throw new Error(`sandbox supervisor at ${socket}: ${op}: no answer`);
  }
  if (!res.ok) throw new Error(res.error);
  return res.result as ControlResult<O>;
}
