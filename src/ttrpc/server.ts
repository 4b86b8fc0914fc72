// A ttrpc server (containerd's protocol, Go ttrpc's behaviour): services of unary methods whose requests
// and responses are protobuf messages named by full name and coded through a ProtoSchema; any number of
// connections, any number of calls in flight on each. Statuses as Go ttrpc answers them:
//   unknown service / method            UNIMPLEMENTED "service <name>" / "method <name>"
//   even stream id, undecodable Request INVALID_ARGUMENT (a reused or decreasing id too)
//   frame over 4 MiB                    RESOURCE_EXHAUSTED on that stream id, the connection goes on
//   payload not the request type        INTERNAL "ttrpc: error unmarshalling payload: ..."
//   handler throws                      its own gRPC `code` (a number 1..16) and message, else UNKNOWN
//   handler's answer not encodable      INTERNAL "ttrpc: error marshaling payload: ..."
//   call arriving while close() waits   UNAVAILABLE "ttrpc: server closed"
// A request's timeout_nano and the connection's end abort the handler's ctx.signal; the handler decides
// what to do (its answer is dropped if the peer is gone).

import { setMaxListeners } from "node:events";
import { chmodSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { decodeRequest, encodeResponse, type TtrpcRequest, type TtrpcResponse } from "./envelope";
import { encodeFrame, FrameReader, MESSAGE_LENGTH_MAX, MessageType, type ReadItem } from "./frame";
import { schema as defaultSchema, type ProtoObject, type ProtoSchema } from "./proto";
import { Code, oversizedMessage, statusOf, TtrpcError } from "./status";

export interface CallContext {
  service: string;
  method: string;
  /** The request's metadata, key → values in arrival order (containerd sends the namespace as
   * "containerd-namespace-ttrpc"). */
  metadata: Record<string, string[]>;
  /** Aborted when the caller's timeout passes (reason: DEADLINE_EXCEEDED), the connection ends or
   * close() gives up waiting (UNAVAILABLE). */
  signal: AbortSignal;
}

/** A method: what to decode the request as, what to encode the answer as, and the handler. An
 * undefined answer is sent as an empty message. */
export interface MethodSpec<Req = ProtoObject, Res = ProtoObject> {
  request: string;
  response: string;
  handler: (req: Req, ctx: CallContext) => Res | undefined | Promise<Res | undefined>;
}

// biome-ignore lint/suspicious/noExplicitAny: each method has its own request and response types
export type ServiceSpec = Record<string, MethodSpec<any, any>>;

export interface ServerOptions {
  /** The schema requests and responses are coded with (default: kata-ts's proto/, loaded on first use). */
  schema?: ProtoSchema;
  /** Told of every call that fails with an error thrown by its handler, and of listener errors. */
  onError?: (err: Error, where: string) => void;
}

const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
/** setTimeout's largest delay; longer deadlines are not armed (they are weeks away). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class TtrpcServer {
  private readonly services = new Map<string, ServiceSpec>();
  private readonly listeners: Server[] = [];
  private readonly conns = new Set<Connection>();
  private closing = false;
  /** Set while close() waits: called as connections go. */
  private drained: (() => void) | undefined;
  private schemaInUse: ProtoSchema | undefined;

  constructor(private readonly opts: ServerOptions = {}) {
    this.schemaInUse = opts.schema;
  }

  /** Adds a service (full name, "containerd.task.v2.Task"); a second one of the same name throws. */
  register(service: string, methods: ServiceSpec): this {
    if (this.services.has(service)) throw new Error(`ttrpc: duplicate service ${service} registered`);
    this.services.set(service, methods);
    return this;
  }

  /** Listens on a unix socket at `path`, created with mode 0600 (no other user may connect). */
  async listen(path: string): Promise<void> {
    const srv = this.newListener();
    // the umask covers the window between bind() and the chmod below
    const old = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        srv.once("error", reject);
        srv.listen(path, () => {
          srv.off("error", reject);
          resolve();
        });
      });
    } finally {
      process.umask(old);
    }
    chmodSync(path, 0o600);
    this.adoptListener(srv);
  }

  /** Serves on a listening socket the caller already has (containerd passes a shim its socket as fd 3). */
  async listenFd(fd: number): Promise<void> {
    const srv = this.newListener();
    await new Promise<void>((resolve, reject) => {
      srv.once("error", reject);
      srv.listen({ fd }, () => {
        srv.off("error", reject);
        resolve();
      });
    });
    this.adoptListener(srv);
  }

  /** Serves one connected socket (a unix socket, a socketpair end, a test's stream). */
  serveConnection(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new Connection(socket, this);
    this.conns.add(conn);
    socket.once("close", () => {
      this.conns.delete(conn);
      this.drained?.();
    });
  }

  /** Number of open connections. */
  get connections(): number {
    return this.conns.size;
  }

  /**
   * Stops accepting (a socket path is removed), ends idle connections at once and busy ones after
   * their last answer, and after `timeoutMs` (default 10 s) aborts the calls still running and
   * destroys their connections. Resolves when every connection is closed. Do not await it inside a
   * handler: that call is in flight until its handler returns.
   */
  async close(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.closing = true;
    // a net.Server's close callback waits for its connections, so it is awaited last
    const listenersClosed = Promise.all(
      this.listeners.splice(0).map((l) => new Promise<void>((resolve) => l.close(() => resolve()))),
    );
    for (const c of this.conns) c.endWhenIdle();
    if (this.conns.size > 0) {
      const timeoutMs = opts.timeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          for (const c of this.conns) c.destroy(new TtrpcError(Code.UNAVAILABLE, "ttrpc: server closed"));
        }, timeoutMs);
        this.drained = () => {
          if (this.conns.size > 0) return;
          clearTimeout(timer);
          this.drained = undefined;
          resolve();
        };
      });
    }
    await listenersClosed;
  }

  get isClosing(): boolean {
    return this.closing;
  }

  /** @internal the schema, loaded on the first call that needs it */
  get schema(): ProtoSchema {
    this.schemaInUse ??= defaultSchema();
    return this.schemaInUse;
  }

  /** @internal */
  resolve(service: string, method: string): MethodSpec {
    const svc = this.services.get(service);
    if (!svc) throw new TtrpcError(Code.UNIMPLEMENTED, `service ${service}`);
    const m = Object.hasOwn(svc, method) ? svc[method] : undefined;
    if (!m) throw new TtrpcError(Code.UNIMPLEMENTED, `method ${method}`);
    return m;
  }

  /** @internal */
  reportError(err: Error, where: string): void {
    this.opts.onError?.(err, where);
  }

  private newListener(): Server {
    if (this.closing) throw new Error("ttrpc: server closed");
    return createServer((socket) => this.serveConnection(socket));
  }

  private adoptListener(srv: Server): void {
    srv.on("error", (err) => this.reportError(err, "listener"));
    this.listeners.push(srv);
  }
}

/** One peer: reads frames, runs calls concurrently, writes answers in completion order. */
class Connection {
  private readonly reader = new FrameReader();
  private readonly inflight = new Map<number, AbortController>();
  private lastStreamId = 0;
  private ending = false;

  constructor(
    private readonly socket: Socket,
    private readonly server: TtrpcServer,
  ) {
    // a peer gone mid-call (EPIPE, ECONNRESET) only ends this connection
    socket.on("error", () => {});
    socket.on("close", () => this.abortAll(new TtrpcError(Code.UNAVAILABLE, "ttrpc: connection closed")));
    socket.on("data", (chunk: Buffer) => {
      for (const item of this.reader.push(chunk)) this.onItem(item);
    });
  }

  endWhenIdle(): void {
    this.ending = true;
    if (this.inflight.size === 0) this.socket.end(() => this.socket.destroy());
  }

  destroy(reason: Error): void {
    this.abortAll(reason);
    this.socket.destroy();
  }

  private abortAll(reason: Error): void {
    for (const ac of this.inflight.values()) ac.abort(reason);
  }

  private onItem(item: ReadItem): void {
    const id = item.streamId;
    if ("oversized" in item) {
      this.send(id, errorResponse(oversizedMessage(item.oversized, MESSAGE_LENGTH_MAX)));
      return;
    }
    if (item.type !== MessageType.request) return; // ignored, as Go ttrpc does (future frame types)
    if (id % 2 !== 1) {
      this.send(id, status(Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams"));
      return;
    }
    if (id <= this.lastStreamId) {
      this.send(id, status(Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment"));
      return;
    }
    this.lastStreamId = id;
    let req: TtrpcRequest;
    try {
      req = decodeRequest(item.payload);
    } catch (err) {
      this.send(id, status(Code.INVALID_ARGUMENT, `unmarshal request error: ${(err as Error).message}`));
      return;
    }
    if (this.ending || this.server.isClosing) {
      this.send(id, status(Code.UNAVAILABLE, "ttrpc: server closed"));
      return;
    }
    const ac = new AbortController();
    setMaxListeners(0, ac.signal);
    this.inflight.set(id, ac);
    this.call(req, ac).then((resp) => {
      this.inflight.delete(id);
      this.send(id, resp);
      if (this.ending && this.inflight.size === 0) this.endWhenIdle();
    });
  }

  /** Never rejects: every outcome is a Response. */
  private async call(req: TtrpcRequest, ac: AbortController): Promise<TtrpcResponse> {
    const ns = req.timeoutNano;
    const ms = ns > 0 ? Math.ceil(ns / 1e6) : 0;
    const timer =
      ms > 0 && ms <= MAX_TIMER_MS
        ? setTimeout(() => ac.abort(new TtrpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded")), ms)
        : undefined;
    const where = `${req.service}/${req.method}`;
    try {
      let spec: MethodSpec;
      let arg: ProtoObject;
      try {
        spec = this.server.resolve(req.service, req.method);
        arg = this.server.schema.decode(spec.request, req.payload);
      } catch (err) {
        if (err instanceof TtrpcError && err.code === Code.UNIMPLEMENTED) return errorResponse(err);
        return status(Code.INTERNAL, `ttrpc: error unmarshalling payload: ${(err as Error).message}`);
      }
      const metadata: Record<string, string[]> = {};
      for (const { key, value } of req.metadata) {
        metadata[key] ??= [];
        metadata[key].push(value);
      }
      let result: ProtoObject | undefined;
      try {
        result = await spec.handler(arg, {
          service: req.service,
          method: req.method,
          metadata,
          signal: ac.signal,
        });
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        this.server.reportError(e, where);
        return errorResponse(e);
      }
      try {
        const payload = this.server.schema.encode(spec.response, result ?? {});
        return { status: { code: Code.OK, message: "", details: [] }, payload };
      } catch (err) {
        this.server.reportError(err as Error, where);
        return status(Code.INTERNAL, `ttrpc: error marshaling payload: ${(err as Error).message}`);
      }
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  private send(id: number, resp: TtrpcResponse): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    let payload: Buffer;
    try {
      payload = encodeResponse(resp);
    } catch (err) {
      payload = encodeResponse(
        status(Code.INTERNAL, `ttrpc: error marshaling response: ${(err as Error).message}`),
      );
    }
    if (payload.length > MESSAGE_LENGTH_MAX)
      payload = encodeResponse(errorResponse(oversizedMessage(payload.length, MESSAGE_LENGTH_MAX)));
    this.socket.write(encodeFrame({ streamId: id, type: MessageType.response, flags: 0 }, payload));
  }
}

function status(code: number, message: string): TtrpcResponse {
  return { status: { code, message, details: [] }, payload: new Uint8Array(0) };
}

function errorResponse(err: Error): TtrpcResponse {
  const st = statusOf(err);
  return {
    status: { ...st, details: err instanceof TtrpcError ? err.details : [] },
    payload: new Uint8Array(0),
  };
}
