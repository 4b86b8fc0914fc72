// ttrpc framing: every message is a 10-byte header (u32 BE payload length, u32 BE stream id, u8 type,
// u8 flags) and the payload. A payload over MESSAGE_LENGTH_MAX is refused by the sender; a receiver that
// reads such a header does what Go ttrpc's channel.recv does: it skips the payload bytes (the stream stays
// in sync) and reports the stream id, so the server can answer that one call RESOURCE_EXHAUSTED and the
// client can fail that one call.
import { oversizedMessage } from "./status";

export const HEADER_LENGTH = 10;
/** Go ttrpc's messageLengthMax. */
export const MESSAGE_LENGTH_MAX = 4 << 20;

export const MessageType = { request: 1, response: 2, data: 3 } as const;

export interface FrameHeader {
  streamId: number;
  type: number;
  flags: number;
}

export interface Frame extends FrameHeader {
  payload: Buffer;
}

/** What FrameReader yields: a whole frame, or the header of one whose payload was too large (skipped). */
export type ReadItem = Frame | (FrameHeader & { oversized: number });

/** Header and payload as one buffer; throws TtrpcError(RESOURCE_EXHAUSTED) over the limit. */
export function encodeFrame(h: FrameHeader, payload: Uint8Array): Buffer {
  if (payload.length > MESSAGE_LENGTH_MAX) throw oversizedMessage(payload.length, MESSAGE_LENGTH_MAX);
  const out = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.writeUInt32BE(h.streamId >>> 0, 4);
  out[8] = h.type & 0xff;
  out[9] = h.flags & 0xff;
  out.set(payload, HEADER_LENGTH);
  return out;
}

/**
 * Incremental reader: feed it the bytes as they arrive, split anywhere; it returns what completed. Each
 * payload is copied once, into a buffer of its announced size.
 */
export class FrameReader {
  private readonly head = Buffer.alloc(HEADER_LENGTH);
  private headFill = 0;
  private header: FrameHeader | undefined;
  private body: Buffer | undefined;
  private bodyFill = 0;
  /** Bytes of an oversized payload still to skip. */
  private skip = 0;

  push(chunk: Uint8Array): ReadItem[] {
    const items: ReadItem[] = [];
    let i = 0;
    const take = (want: number) => {
      const n = Math.min(want, chunk.length - i);
      i += n;
      return n;
    };
    for (;;) {
      if (this.skip > 0) {
        this.skip -= take(this.skip);
        if (this.skip > 0) break;
      }
      if (this.body && this.header) {
        const from = i;
        const n = take(this.body.length - this.bodyFill);
        this.body.set(chunk.subarray(from, from + n), this.bodyFill);
        this.bodyFill += n;
        if (this.bodyFill < this.body.length) break;
        items.push({ ...this.header, payload: this.body });
        this.body = undefined;
        this.header = undefined;
        continue;
      }
      if (i >= chunk.length) break;
      const from = i;
      const n = take(HEADER_LENGTH - this.headFill);
      this.head.set(chunk.subarray(from, from + n), this.headFill);
      this.headFill += n;
      if (this.headFill < HEADER_LENGTH) break;
      this.headFill = 0;
      const length = this.head.readUInt32BE(0);
      const header = { streamId: this.head.readUInt32BE(4), type: this.head[8], flags: this.head[9] };
      if (length > MESSAGE_LENGTH_MAX) {
        items.push({ ...header, oversized: length });
        this.skip = length;
        continue;
      }
      this.header = header;
      this.body = Buffer.allocUnsafe(length);
      this.bodyFill = 0;
    }
    return items;
  }

  /** Bytes held of a frame not yet complete (0 between frames). */
  get buffered(): number {
    return this.headFill + (this.body ? HEADER_LENGTH + this.bodyFill : 0);
  }
}
