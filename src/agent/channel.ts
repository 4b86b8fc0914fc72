// The multiplexer both ends share: one duplex byte stream (the virtio-serial port in the guest, the QEMU
// chardev's unix socket on the host) carries ttrpc request/response frames on odd stream ids and stdio
// data frames on even stream ids (docs/protocol.md). Each data stream is a Node Duplex with credit-based
// flow control: a side may have at most `window` unacknowledged bytes in flight per stream, and the
// receiver returns credit only as its consumer reads, so a slow consumer stalls the writer instead of
// making either side buffer without bound.
import { Duplex } from "node:stream";
import {
  AgentError,
  Code,
  DataFlag,
  decodeResponse,
  decodeWindow,
  encodeFrame,
  encodeRequest,
  encodeResponse,
  encodeWindow,
  type Frame,
  FrameDecoder,
  FrameType,
  MAX_MESSAGE,
  type TtrpcRequest,
  type TtrpcResponse,
} from "./wire";

export const DEFAULT_WINDOW = 256 * 1024;
export const DEFAULT_MAX_DATA_FRAME = 64 * 1024;

export interface ChannelOptions {
  /** Per-stream, per-direction credit in bytes (both ends must agree: it is the initial credit). */
  window?: number;
  /** Largest data payload per frame. */
  maxDataFrame?: number;
}

export interface StreamStats {
  bytesSent: number;
  bytesReceived: number;
  /** Highest number of sent-but-unacknowledged bytes seen (never above the window). */
  maxInFlight: number;
  /** How often the writer had to wait for credit. */
  creditWaits: number;
  /** Highest number of received bytes buffered and not yet read by the consumer. */
  maxBuffered: number;
}

interface Pending {
  resolve: (r: TtrpcResponse) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

/** One stdio byte stream on the channel. Writable = what we send; readable = what the peer sends. */
export class AgentStream extends Duplex {
  readonly stats: StreamStats = {
    bytesSent: 0,
    bytesReceived: 0,
    maxInFlight: 0,
    creditWaits: 0,
    maxBuffered: 0,
  };
  private credit: number;
  private creditWaiter?: () => void;
  private consumedGranted = 0;
  private remoteEnded = false;
  private localEnded = false;

  constructor(
    readonly id: number,
    private readonly channel: Channel,
  ) {
    super({ readableHighWaterMark: channel.window, writableHighWaterMark: channel.maxDataFrame });
    this.credit = channel.window;
  }

  /** True once the peer half-closed its direction (our readable has ended). */
  get remoteClosed(): boolean {
    return this.remoteEnded;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.sendData(chunk).then(() => cb(), cb);
  }

  private async sendData(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      if (this.destroyed) throw new Error("stream destroyed");
      if (this.credit <= 0) {
        this.stats.creditWaits++;
        await new Promise<void>((resolve) => {
          this.creditWaiter = resolve;
        });
        continue;
      }
      await this.channel.writable();
      const n = Math.min(this.credit, this.channel.maxDataFrame, chunk.length - off);
      this.credit -= n;
      this.stats.bytesSent += n;
      this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.channel.window - this.credit);
      this.channel.send({
        streamId: this.id,
        type: FrameType.data,
        flags: 0,
        payload: chunk.subarray(off, off + n),
      });
      off += n;
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.localEnded = true;
    if (!this.channel.closed)
      this.channel.send({
        streamId: this.id,
        type: FrameType.data,
        flags: DataFlag.eof | DataFlag.noData,
        payload: Buffer.alloc(0),
      });
    cb();
  }

  override _read(): void {
    this.maybeGrant();
  }

  // Every way of consuming (flowing 'data', async iteration, pipe, explicit read) goes through read(),
  // so this is where consumption is seen; _read alone is not enough (Node stops calling it until the
  // next push, and no push comes while the peer waits for credit).
  override read(size?: number): Buffer | null {
    const chunk = super.read(size);
    this.maybeGrant();
    return chunk;
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!(this.localEnded && this.remoteEnded) && !this.channel.closed)
      this.channel.send({
        streamId: this.id,
        type: FrameType.data,
        flags: DataFlag.reset | DataFlag.noData,
        payload: Buffer.alloc(0),
      });
    this.creditWaiter?.();
    this.channel.forget(this.id);
    cb(err);
  }

  /** Returns credit for what the consumer has read since the last grant (in quarter-window steps). */
  private maybeGrant(): void {
    if (this.remoteEnded || this.destroyed) return;
    const consumed = this.stats.bytesReceived - this.readableLength;
    const owed = consumed - this.consumedGranted;
    if (owed <= 0) return;
    if (owed < this.channel.window / 4 && this.readableLength > 0) return;
    this.consumedGranted = consumed;
    this.channel.send({
      streamId: this.id,
      type: FrameType.data,
      flags: DataFlag.window | DataFlag.noData,
      payload: encodeWindow(owed),
    });
  }

  /** A data frame for this stream arrived. */
  onFrame(f: Frame): void {
    if (f.flags & DataFlag.window) {
      this.credit += decodeWindow(f.payload);
      const w = this.creditWaiter;
      this.creditWaiter = undefined;
      w?.();
      return;
    }
    if (f.flags & DataFlag.reset) {
      this.remoteEnded = true;
      this.localEnded = true;
      this.push(null);
      this.destroy();
      return;
    }
    if (!(f.flags & DataFlag.noData) && f.payload.length) {
      if (this.remoteEnded) return;
      this.stats.bytesReceived += f.payload.length;
      // Copy: the frame may be a view into a larger socket chunk we must not pin.
      this.push(Buffer.from(f.payload));
      this.stats.maxBuffered = Math.max(this.stats.maxBuffered, this.readableLength);
      if (this.readableLength > this.channel.window)
        this.destroy(new AgentError(Code.resourceExhausted, `stream ${this.id}: peer exceeded its credit`));
      else this.maybeGrant();
    }
    if (f.flags & DataFlag.eof && !this.remoteEnded) {
      this.remoteEnded = true;
      this.push(null);
    }
  }

  /** Why the stream ended early: the connection closed before both directions finished. */
  abortError?: Error;

  /**
   * The channel went away. The readable ends and the stream is destroyed without an 'error' event (an
   * unheard error would crash the process); `abortError` says why, and the pending calls on the same
   * channel (waitProcess) fail with it.
   */
  abort(err: Error): void {
    if (!(this.remoteEnded && this.writableFinished)) this.abortError = err;
    if (!this.remoteEnded) {
      this.remoteEnded = true;
      this.push(null);
    }
    this.localEnded = true;
    this.creditWaiter?.();
    this.destroy();
  }
}

/**
 * Frames in, frames out over one duplex. Requests use odd stream ids (allocated by the side that calls,
 * as ttrpc clients do); data streams use even ids, allocated by the host with `openStream()` and created
 * on the other side by the first frame or by `stream(id)`.
 */
export class Channel {
  readonly window: number;
  readonly maxDataFrame: number;
  closed = false;
  closeError?: Error;
  private decoder = new FrameDecoder();
  private pending = new Map<number, Pending>();
  private streams = new Map<number, AgentStream>();
  private closedStreams = new Set<number>();
  private nextRequestId = 1;
  private nextStreamId = 2;
  private drainWaiters: (() => void)[] = [];
  private closeListeners: ((err: Error) => void)[] = [];
  /** Set by the server side: called for every request frame. */
  onRequest?: (streamId: number, req: Buffer) => void;

  constructor(
    private readonly io: Duplex,
    opts: ChannelOptions = {},
  ) {
    this.window = opts.window ?? DEFAULT_WINDOW;
    this.maxDataFrame = Math.min(opts.maxDataFrame ?? DEFAULT_MAX_DATA_FRAME, MAX_MESSAGE);
    io.on("data", (chunk: Buffer) => this.onBytes(chunk));
    io.on("drain", () => this.flushDrain());
    io.on("end", () => this.close(new AgentError(Code.unavailable, "agent connection closed by the peer")));
    io.on("close", () => this.close(new AgentError(Code.unavailable, "agent connection closed")));
    io.on("error", (err) =>
      this.close(new AgentError(Code.unavailable, `agent connection failed: ${err.message}`)),
    );
  }

  onClose(fn: (err: Error) => void): void {
    if (this.closed) fn(this.closeError as Error);
    else this.closeListeners.push(fn);
  }

  send(f: Frame): boolean {
    if (this.closed) return false;
    return this.io.write(encodeFrame(f));
  }

  /** Resolves when the underlying stream accepts more writes (socket-level backpressure). */
  writable(): Promise<void> {
    if (this.closed) return Promise.reject(this.closeError);
    if (!this.io.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private flushDrain(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  /** Client side: sends a ttrpc request and resolves with the response envelope. */
  request(req: TtrpcRequest, timeoutMs: number): Promise<TtrpcResponse> {
    if (this.closed) return Promise.reject(this.closeError);
    const id = this.nextRequestId;
    this.nextRequestId = (this.nextRequestId + 2) % 0x80000000 || 1;
    const payload = encodeRequest(req);
    return new Promise((resolve, reject) => {
      const p: Pending = { resolve, reject };
      if (timeoutMs > 0)
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(
            new AgentError(Code.deadlineExceeded, `agent call ${req.method} timed out after ${timeoutMs} ms`),
          );
        }, timeoutMs);
      this.pending.set(id, p);
      try {
        this.send({ streamId: id, type: FrameType.request, flags: 0, payload });
      } catch (err) {
        this.pending.delete(id);
        if (p.timer) clearTimeout(p.timer);
        reject(err);
      }
    });
  }

  /** Server side: answers request `streamId`. */
  respond(streamId: number, res: TtrpcResponse): void {
    let payload = encodeResponse(res);
    if (payload.length > MAX_MESSAGE)
      payload = encodeResponse({
        status: {
          code: Code.resourceExhausted,
          message: `response of ${payload.length} bytes exceeds the ${MAX_MESSAGE}-byte limit`,
        },
        payload: Buffer.alloc(0),
      });
    this.send({ streamId, type: FrameType.response, flags: 0, payload });
  }

  /** Host side: a new data stream with a fresh even id. */
  openStream(): AgentStream {
    if (this.closed) throw this.closeError;
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    return this.stream(id);
  }

  /** The data stream with this id, created if it is new. */
  stream(id: number): AgentStream {
    if (id <= 0 || id % 2 !== 0) throw new AgentError(Code.invalidArgument, `invalid data stream id ${id}`);
    let s = this.streams.get(id);
    if (!s) {
      if (this.closedStreams.has(id))
        throw new AgentError(Code.failedPrecondition, `data stream ${id} is already closed`);
      s = new AgentStream(id, this);
      if (this.closed) s.abort(this.closeError as Error);
      else this.streams.set(id, s);
    }
    return s;
  }

  hasStream(id: number): boolean {
    return this.streams.has(id);
  }

  forget(id: number): void {
    if (this.streams.delete(id)) this.closedStreams.add(id);
  }

  private onBytes(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      // A frame over the limit: the stream cannot be resynchronised, so the connection ends.
      this.close(err as Error);
      this.io.destroy();
      return;
    }
    for (const f of frames) this.onFrame(f);
  }

  private onFrame(f: Frame): void {
    if (f.type === FrameType.response) {
      const p = this.pending.get(f.streamId);
      if (!p) return; // a late answer to a call that timed out
      this.pending.delete(f.streamId);
      if (p.timer) clearTimeout(p.timer);
      try {
        p.resolve(decodeResponse(f.payload));
      } catch (err) {
        p.reject(err as Error);
      }
    } else if (f.type === FrameType.request) {
      if (f.streamId % 2 !== 1) return; // ttrpc: requests travel on odd ids only
      if (this.onRequest) this.onRequest(f.streamId, f.payload);
      else
        this.respond(f.streamId, {
          status: { code: Code.unimplemented, message: "this side serves no requests" },
          payload: Buffer.alloc(0),
        });
    } else if (f.type === FrameType.data) {
      if (f.streamId % 2 !== 0) return;
      const known = this.streams.get(f.streamId);
      if (known) known.onFrame(f);
      else if (!(f.flags & (DataFlag.window | DataFlag.reset)) && !this.closedStreams.has(f.streamId))
        this.stream(f.streamId).onFrame(f);
    }
  }

  /** Ends the channel: pending calls fail, streams end with an error. Idempotent. */
  close(err: Error = new AgentError(Code.unavailable, "agent connection closed")): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = err;
    for (const [, p] of this.pending) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    for (const s of [...this.streams.values()]) s.abort(err);
    this.streams.clear();
    this.flushDrain();
    for (const fn of this.closeListeners) fn(err);
    this.closeListeners = [];
    if (!this.io.destroyed) this.io.end();
  }

  /** Closes the channel and the underlying duplex. */
  destroy(): void {
    this.close();
    this.io.destroy();
  }
}
