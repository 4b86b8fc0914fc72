// The guest end: `serve(duplex, handlers)` answers the host's ttrpc requests with the handlers in
// api.ts's shape and hands them the stdio streams by id (ctx.stream(id)). Handler errors become ttrpc
// statuses: an AgentError keeps its code, anything else is UNKNOWN with the error's one-line message.

import { setMaxListeners } from "node:events";
import type { Duplex } from "node:stream";
import { oneLine } from "../errors";
import type { AgentApi, AgentMethod, AgentRequest, AgentResponse } from "./api";
import { type AgentStream, Channel, type ChannelOptions } from "./channel";
import {
  AGENT_SERVICE,
  AgentError,
  Code,
  decodePayload,
  decodeRequest,
  encodePayload,
  type TtrpcRequest,
} from "./wire";

export interface CallContext {
  method: AgentMethod;
  /** Aborted when the host's deadline passes or the connection closes. */
  signal: AbortSignal;
  /** The stdio stream with this id (created if the host has not written to it yet). */
  stream(id: number): AgentStream;
  metadata: [string, string][];
  /** The session (connection) this call came on. */
  session: Session;
}

export type AgentHandler<M extends AgentMethod> = (
  req: AgentRequest<M>,
  ctx: CallContext,
) => Promise<AgentResponse<M>>;

export type AgentHandlers = { [M in AgentMethod]: AgentHandler<M> };

/** One host connection. */
export class Session {
  readonly channel: Channel;
  /** Resolves when the connection ends. */
  readonly closed: Promise<Error>;
  private readonly aborter = new AbortController();

  constructor(
    io: Duplex,
    private readonly handlers: Partial<AgentHandlers>,
    opts: ChannelOptions & { onError?: (method: string, err: Error) => void } = {},
  ) {
    this.channel = new Channel(io, opts);
    // every call in flight listens on the session's signal (pings queued during boot arrive together)
    setMaxListeners(0, this.aborter.signal);
    this.closed = new Promise((resolve) =>
      this.channel.onClose((err) => {
        this.aborter.abort(err);
        resolve(err);
      }),
    );
    this.channel.onRequest = (id, payload) => {
      this.handle(id, payload, opts.onError).catch(() => {});
    };
  }

  stream(id: number): AgentStream {
    return this.channel.stream(id);
  }

  close(): void {
    this.channel.destroy();
  }

  private async handle(
    id: number,
    payload: Buffer,
    onError?: (method: string, err: Error) => void,
  ): Promise<void> {
    let req: TtrpcRequest | undefined;
    let timer: NodeJS.Timeout | undefined;
    let cleanup = () => {};
    try {
      req = decodeRequest(payload);
      if (req.service !== AGENT_SERVICE)
        throw new AgentError(Code.unimplemented, `unknown service ${JSON.stringify(req.service)}`);
      const handler = Object.hasOwn(this.handlers, req.method)
        ? (this.handlers[req.method as AgentMethod] as AgentHandler<AgentMethod> | undefined)
        : undefined;
      if (!handler) throw new AgentError(Code.unimplemented, `unknown method ${JSON.stringify(req.method)}`);
      // One controller per call, aborted by the host's deadline or the session ending; both hooks are
      // removed when the call finishes (AbortSignal.any/timeout would keep them alive far longer).
      const ac = new AbortController();
      const onSessionAbort = () => ac.abort(this.aborter.signal.reason);
      this.aborter.signal.addEventListener("abort", onSessionAbort, { once: true });
      const ms = Number(req.timeoutNano / 1_000_000n);
      timer =
        ms > 0
          ? setTimeout(() => ac.abort(new AgentError(Code.deadlineExceeded, "deadline exceeded")), ms)
          : undefined;
      cleanup = () => {
        if (timer) clearTimeout(timer);
        this.aborter.signal.removeEventListener("abort", onSessionAbort);
      };
      const ctx: CallContext = {
        method: req.method as AgentMethod,
        signal: ac.signal,
        stream: (sid) => this.channel.stream(sid),
        metadata: req.metadata,
        session: this,
      };
      const arg = decodePayload(req.payload) as AgentRequest<AgentMethod>;
      const result = await handler(arg, ctx);
      this.channel.respond(id, { status: { code: Code.ok, message: "" }, payload: encodePayload(result) });
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      onError?.(req?.method ?? "?", e);
      this.channel.respond(id, {
        status: {
          code: e instanceof AgentError ? e.code : Code.unknown,
          message: oneLine(e.message || e.name, "; "),
        },
        payload: Buffer.alloc(0),
      });
    } finally {
      cleanup();
    }
  }
}

/** Serves the agent API on one duplex (one host connection) until it closes. */
export function serve(
  io: Duplex,
  handlers: Partial<AgentHandlers>,
  opts: ChannelOptions & { onError?: (method: string, err: Error) => void } = {},
): Session {
  return new Session(io, handlers, opts);
}

export class AgentServer {
  constructor(
    readonly handlers: Partial<AgentHandlers>,
    readonly opts: ChannelOptions & { onError?: (method: string, err: Error) => void } = {},
  ) {}

  serve(io: Duplex): Session {
    return new Session(io, this.handlers, this.opts);
  }
}

export type { AgentApi };
