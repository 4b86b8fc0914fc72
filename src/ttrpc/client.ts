// A ttrpc client: one connection, calls multiplexed on odd, increasing stream ids (1, 3, 5, ...), answers
// matched by stream id in whatever order they come. A call rejects with a TtrpcError: the server's
// status (code, message, details), or one of its own:
//   DEADLINE_EXCEEDED   the call's timeoutMs passed (it was also sent as timeout_nano; a late answer is
//                       dropped)
//   CANCELLED           the call's signal aborted
//   UNAVAILABLE         the connection is closed or closed while the call waited ("ttrpc: closed")
//   RESOURCE_EXHAUSTED  the request or the answer is over 4 MiB (the connection goes on)
//   INVALID_ARGUMENT    the request object does not fit its message type (nothing is sent)
//   INTERNAL            the answer's payload is not the response type
import { createConnection, type Socket } from "node:net";
import { decodeResponse, encodeRequest } from "./envelope";
import { encodeFrame, FrameReader, MESSAGE_LENGTH_MAX, MessageType, type ReadItem } from "./frame";
import { schema as defaultSchema, type ProtoObject, type ProtoSchema } from "./proto";
import { Code, oversizedMessage, TtrpcError } from "./status";

export interface CallOptions {
  /** Give up after this many ms (sent to the server as timeout_nano); 0 or absent: no deadline. */
  timeoutMs?: number;
  /** Request metadata; an array sends the key once per value. */
  metadata?: Record<string, string | string[]>;
  signal?: AbortSignal;
}

export interface ClientOptions {
  /** The schema requests and responses are coded with (default: kata-ts's proto/). */
  schema?: ProtoSchema;
}

interface Pending {
  responseType: string;
  resolve(v: ProtoObject): void;
  reject(e: Error): void;
}

export class TtrpcClient {
  private readonly reader = new FrameReader();
  private readonly pending = new Map<number, Pending>();
  private nextStreamId = 1;
  private closedWith: TtrpcError | undefined;
  private schemaInUse: ProtoSchema | undefined;
  private onClosed!: (err: TtrpcError) => void;
  /** Resolves (never rejects) with the reason once the connection is gone. */
  readonly closed: Promise<TtrpcError>;

  /** Connects to a unix socket; rejects with UNAVAILABLE naming the path if nothing listens there. */
  static connect(path: string, opts: ClientOptions = {}): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ path });
      const fail = (err: Error) =>
        reject(new TtrpcError(Code.UNAVAILABLE, `ttrpc: connect ${path}: ${err.message}`));
      socket.once("error", fail);
      socket.once("connect", () => {
        socket.off("error", fail);
        resolve(new TtrpcClient(socket, opts));
      });
    });
  }

  /** Uses a connected socket (a socketpair end, an adopted fd). */
  constructor(
    private readonly socket: Socket,
    opts: ClientOptions = {},
  ) {
    this.schemaInUse = opts.schema;
    this.closed = new Promise((resolve) => {
      this.onClosed = resolve;
    });
    socket.on("data", (chunk: Buffer) => {
      for (const item of this.reader.push(chunk)) this.onItem(item);
    });
    let cause = "";
    socket.on("error", (err) => {
      cause = err.message;
    });
    socket.on("close", () =>
      this.shut(new TtrpcError(Code.UNAVAILABLE, cause ? `ttrpc: closed: ${cause}` : "ttrpc: closed")),
    );
  }

  /**
   * Calls service/method with `obj` encoded as `requestType`; resolves with the answer decoded as
   * `responseType` (plain object, see proto.ts).
   */
  call<Res = ProtoObject>(
    service: string,
    method: string,
    requestType: string,
    responseType: string,
    obj: object,
    opts: CallOptions = {},
  ): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      if (this.closedWith) return reject(this.closedWith);
      if (opts.signal?.aborted) return reject(new TtrpcError(Code.CANCELLED, "context canceled"));
      let frame: Buffer;
      const streamId = this.nextStreamId;
      try {
        const payload = this.schema.encode(requestType, obj);
        const metadata = Object.entries(opts.metadata ?? {}).flatMap(([key, v]) =>
          (Array.isArray(v) ? v : [v]).map((value) => ({ key, value })),
        );
        const timeoutMs = opts.timeoutMs ?? 0;
        const body = encodeRequest({ service, method, payload, timeoutNano: timeoutMs * 1e6, metadata });
        if (body.length > MESSAGE_LENGTH_MAX) throw oversizedMessage(body.length, MESSAGE_LENGTH_MAX);
        frame = encodeFrame({ streamId, type: MessageType.request, flags: 0 }, body);
      } catch (err) {
        return reject(err);
      }
      this.nextStreamId += 2;

      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => finish(new TtrpcError(Code.CANCELLED, "context canceled"));
      const finish = (err: Error | undefined, value?: ProtoObject) => {
        if (!this.pending.delete(streamId)) return;
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        if (err) reject(err);
        else resolve(value as Res);
      };
      this.pending.set(streamId, {
        responseType,
        resolve: (v) => finish(undefined, v),
        reject: (e) => finish(e),
      });
      if (opts.timeoutMs && opts.timeoutMs > 0) {
        const ms = opts.timeoutMs;
        timer = setTimeout(
          () =>
            finish(
              new TtrpcError(
                Code.DEADLINE_EXCEEDED,
                `ttrpc: ${service}/${method}: deadline exceeded after ${ms} ms`,
              ),
            ),
          ms,
        );
      }
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      this.socket.write(frame);
    });
  }

  /** Closes the connection; pending calls reject with UNAVAILABLE. */
  close(): void {
    this.socket.destroy();
    this.shut(new TtrpcError(Code.UNAVAILABLE, "ttrpc: closed"));
  }

  get isClosed(): boolean {
    return this.closedWith !== undefined;
  }

  /** Calls waiting for an answer. */
  get inFlight(): number {
    return this.pending.size;
  }

  private get schema(): ProtoSchema {
    this.schemaInUse ??= defaultSchema();
    return this.schemaInUse;
  }

  private shut(reason: TtrpcError): void {
    if (this.closedWith) return;
    this.closedWith = reason;
    for (const p of [...this.pending.values()]) p.reject(reason);
    this.onClosed(reason);
  }

  private onItem(item: ReadItem): void {
    const p = this.pending.get(item.streamId);
    if (!p) return; // timed out or cancelled already, or not ours
    if ("oversized" in item) p.reject(oversizedMessage(item.oversized, MESSAGE_LENGTH_MAX));
    else if (item.type === MessageType.response) {
      try {
        p.resolve(this.answer(p.responseType, item.payload));
      } catch (err) {
        p.reject(err as Error);
      }
    }
  }

  /** The decoded answer of a response frame, or the TtrpcError it carries. */
  private answer(responseType: string, frame: Buffer): ProtoObject {
    let resp: ReturnType<typeof decodeResponse>;
    try {
      resp = decodeResponse(frame);
    } catch (err) {
      throw new TtrpcError(Code.INTERNAL, `ttrpc: bad response: ${(err as Error).message}`);
    }
    const st = resp.status;
    if (st.code !== Code.OK) throw new TtrpcError(st.code, st.message, st.details);
    try {
      return this.schema.decode(responseType, resp.payload);
    } catch (err) {
      throw new TtrpcError(Code.INTERNAL, `ttrpc: error unmarshalling payload: ${(err as Error).message}`);
    }
  }
}
