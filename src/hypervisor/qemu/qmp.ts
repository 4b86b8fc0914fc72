// A small QMP (QEMU Machine Protocol) client over a unix socket. No npm package does this for Node, and
// the protocol is small: newline-delimited JSON; a greeting; `qmp_capabilities` to leave negotiation
// mode; then commands `{"execute", "arguments", "id"}` answered by `{"return"|"error", "id"}`, with
// asynchronous `{"event", "data", "timestamp"}` messages interleaved.

import { EventEmitter } from "node:events";
import { connect, type Socket } from "node:net";
import { KataError } from "../../errors";
import { sendFds } from "../../sys/native";

export interface QmpGreeting {
  QMP: {
    version: { qemu: { major: number; minor: number; micro: number }; package: string };
    capabilities: string[];
  };
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpStatus {
  status: string;
  running: boolean;
  singlestep?: boolean;
}

/** An error QEMU returned for a command: `class` is QMP's error class (e.g. "GenericError"). */
export class QmpError extends KataError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`qmp: ${command}: ${desc}`);
    this.name = "QmpError";
  }
}

export const DEFAULT_QMP_TIMEOUT_MS = 10_000;

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpConnectOptions {
  /** Connect + greeting + capabilities negotiation deadline. */
  timeoutMs?: number;
  /** Default timeout of each execute(). */
  commandTimeoutMs?: number;
}

/**
 * Events: "event" (every QmpEvent), "<EVENT NAME>" (its data, e.g. "SHUTDOWN", "STOP", "RESUME",
 * "DEVICE_DELETED"), "close" (the connection ended; every pending command was rejected).
 */
export class QmpClient extends EventEmitter {
  greeting: QmpGreeting | undefined;
  private buf = "";
  private nextId = 1;
  private pending = new Map<string, Pending>();
  private closed = false;
  private greetingWaiter: ((g: QmpGreeting) => void) | undefined;
  private readonly commandTimeoutMs: number;

  private constructor(
    private readonly sock: Socket,
    opts: QmpConnectOptions,
  ) {
    super();
    this.commandTimeoutMs = opts.commandTimeoutMs ?? DEFAULT_QMP_TIMEOUT_MS;
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => this.onData(chunk));
    sock.on("close", () => this.onClose());
    sock.on("error", () => {}); // "close" follows and rejects what is pending
  }

  /** Connects, reads the greeting and negotiates capabilities: the client is ready for commands. */
  static connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_QMP_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      let client: QmpClient | undefined;
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`qmp: ${path}: no greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        sock.destroy();
        reject(new Error(`qmp: ${path}: ${err.message}`));
      };
      sock.once("error", fail);
      sock.once("connect", () => {
        sock.off("error", fail);
        client = new QmpClient(sock, opts);
        const onEarlyClose = () => {
          clearTimeout(timer);
          reject(new Error(`qmp: ${path}: connection closed during negotiation`));
        };
        client.once("close", onEarlyClose);
        client.greetingWaiter = (g) => {
          client!.greeting = g;
          client!
            .execute("qmp_capabilities")
            .then(() => {
              clearTimeout(timer);
              client!.off("close", onEarlyClose);
              resolve(client!);
            })
            .catch((err: Error) => {
              clearTimeout(timer);
              sock.destroy();
              reject(err);
            });
        };
      });
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs a command; resolves with its `return` value, rejects with QmpError or a timeout. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T> {
    return this.send<T>(command, args, timeoutMs, (line) => this.sock.write(line));
  }

  private send<T>(
    command: string,
    args: Record<string, unknown> | undefined,
    timeoutMs: number | undefined,
    write: (line: string) => void,
  ): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`qmp: ${command}: connection closed`));
    const id = String(this.nextId++);
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg.arguments = args;
    const ms = timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`qmp: ${command}: no answer within ${ms} ms`));
      }, ms);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      try {
        write(`${JSON.stringify(msg)}\n`);
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new Error(`qmp: ${command}: ${(err as Error).message}`));
      }
    });
  }

  /**
   * Hands QEMU an open file under `name` (QMP getfd: the fd rides on the command as SCM_RIGHTS), for a
   * later `fd:<name>` URI. QEMU never opens the file itself, so it may lie outside its jail.
   */
  async getfd(name: string, fd: number): Promise<void> {
    const raw = (this.sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (raw === undefined || raw < 0) throw new Error("qmp: getfd: the socket has no descriptor");
    // Nothing else is queued on the socket (commands are small and written at once), so this message
    // cannot overtake an earlier one.
    await this.send("getfd", { fdname: name }, undefined, (line) => sendFds(raw, [fd], Buffer.from(line)));
  }

  /** The migration's status, polled until it is no longer in progress ("completed" or "failed"...). */
  async migrationDone(timeoutMs: number): Promise<{ status: string; error?: string }> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = await this.execute<{ status?: string; "error-desc"?: string }>("query-migrate");
      const status = m.status ?? "none";
      if (!["setup", "active", "pre-switchover", "device", "wait-unplug", "none"].includes(status))
        return { status, error: m["error-desc"] };
      if (Date.now() > end) return { status: `${status} after ${timeoutMs} ms` };
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  queryStatus(): Promise<QmpStatus> {
    return this.execute<QmpStatus>("query-status");
  }

  /** Pauses the vCPUs (QMP `stop`). */
  async pause(): Promise<void> {
    await this.execute("stop");
  }

  /** Resumes the vCPUs (QMP `cont`). */
  async resume(): Promise<void> {
    await this.execute("cont");
  }

  async deviceAdd(args: { driver: string; id: string } & Record<string, unknown>): Promise<void> {
    await this.execute("device_add", args);
  }

  /**
   * Unplugs a device and waits for DEVICE_DELETED (the guest must cooperate: device_del only
   * requests the unplug).
   */
  async deviceDel(id: string, timeoutMs = this.commandTimeoutMs): Promise<void> {
    const deleted = this.waitEvent("DEVICE_DELETED", timeoutMs, (d) => d?.device === id);
    deleted.catch(() => {}); // observed below; avoid an unhandled rejection if execute fails first
    await this.execute("device_del", { id });
    await deleted;
  }

  /**
   * Asks QEMU to exit. QEMU may close the socket before or right after it answers; both count as done.
   */
  async quit(timeoutMs = this.commandTimeoutMs): Promise<void> {
    if (this.closed) return;
    const closed = new Promise<void>((resolve) => this.once("close", () => resolve()));
    await Promise.race([
      this.execute("quit", undefined, timeoutMs).catch((err: Error) => {
        if (!this.closed) throw err;
      }),
      closed,
    ]);
  }

  /** The next event named `name` (whose data passes `match`), or a timeout error. */
  waitEvent(
    name: string,
    timeoutMs = this.commandTimeoutMs,
    match: (data: Record<string, unknown> | undefined) => boolean = () => true,
  ): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEvent = (ev: QmpEvent) => {
        if (ev.event !== name || !match(ev.data)) return;
        cleanup();
        resolve(ev);
      };
      const onClose = () => {
        cleanup();
        reject(new Error(`qmp: connection closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`qmp: no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.off("event", onEvent);
        this.off("close", onClose);
      };
      this.on("event", onEvent);
      this.once("close", onClose);
    });
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let nl = this.buf.indexOf("\n");
    while (nl >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
      nl = this.buf.indexOf("\n");
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // not JSON: nothing QEMU sends; ignore rather than kill the connection
    }
    if (msg.QMP !== undefined) {
      const w = this.greetingWaiter;
      this.greetingWaiter = undefined;
      w?.(msg as unknown as QmpGreeting);
      return;
    }
    if (typeof msg.event === "string") {
      const ev = msg as unknown as QmpEvent;
      this.emit("event", ev);
      // QMP event names are upper case; never let one collide with "event", "close" or "error".
      if (/^[A-Z0-9_]+$/.test(ev.event)) this.emit(ev.event, ev.data);
      return;
    }
    const id = msg.id === undefined ? undefined : String(msg.id);
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) return; // a late answer to a timed-out command
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (msg.error !== undefined) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, e.class ?? "GenericError", e.desc ?? "unknown error"));
    } else {
      p.resolve(msg.return);
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`qmp: ${p.command}: connection closed`));
      this.pending.delete(id);
    }
    this.emit("close");
  }
}
