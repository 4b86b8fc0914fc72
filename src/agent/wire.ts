// Everything about bytes on the agent channel, in one module (docs/protocol.md):
//   - containerd ttrpc framing: a 10-byte big-endian header (u32 payload length, u32 stream id, u8 type,
//     u8 flags), then the payload; at most 4 MiB per message;
//   - ttrpc's Request / Response envelopes, protobuf-encoded by a small hand-written codec (only these
//     two messages, google.rpc.Status and KeyValue), so a real ttrpc peer can parse them;
//   - the method payloads inside the envelopes: JSON (UTF-8), marked with metadata content-type;
//   - the data-frame flags kata-ts uses for stdio streams (EOF, window updates, reset).
import { KataError, oneLine } from "../errors";

export const HEADER_SIZE = 10;
/** ttrpc's messageLengthMax. */
export const MAX_MESSAGE = 4 << 20;

export const FrameType = { request: 1, response: 2, data: 3 } as const;
export type FrameTypeNum = (typeof FrameType)[keyof typeof FrameType];

/** Flags on data frames. 0x1 and 0x4 are ttrpc's (remoteClosed, noData); 0x8 and 0x10 are kata-ts's. */
export const DataFlag = {
  /** The sender will send no more data on this stream (half-close of its direction). */
  eof: 0x01,
  /** The frame carries no data bytes. */
  noData: 0x04,
  /** The payload is a u32 BE credit: the receiver of this frame may send that many more bytes. */
  window: 0x08,
  /** The sender abandoned the stream in both directions. */
  reset: 0x10,
} as const;

/** The ttrpc service name kata-ts's agent methods live under. */
export const AGENT_SERVICE = "kata_ts.agent.v1.Agent";
export const CONTENT_TYPE_KEY = "content-type";
export const JSON_CONTENT_TYPE = "application/json";

export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  payload: Buffer;
}

/** gRPC status codes (google.rpc.Code) as ttrpc carries them. */
export const Code = {
  ok: 0,
  cancelled: 1,
  unknown: 2,
  invalidArgument: 3,
  deadlineExceeded: 4,
  notFound: 5,
  alreadyExists: 6,
  permissionDenied: 7,
  resourceExhausted: 8,
  failedPrecondition: 9,
  aborted: 10,
  outOfRange: 11,
  unimplemented: 12,
  internal: 13,
  unavailable: 14,
} as const;

const CODE_NAMES = Object.fromEntries(Object.entries(Code).map(([k, v]) => [v, k])) as Record<number, string>;

export function codeName(code: number): string {
  return CODE_NAMES[code] ?? `code ${code}`;
}

/** An error with a ttrpc status code: thrown by handlers in the guest, surfaced by the client on the host. */
export class AgentError extends KataError {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(oneLine(message, "; "));
    this.name = "AgentError";
  }
}

export function encodeFrame(f: Frame): Buffer {
  if (f.payload.length > MAX_MESSAGE)
    throw new AgentError(
      Code.resourceExhausted,
      `message of ${f.payload.length} bytes exceeds the ${MAX_MESSAGE}-byte limit`,
    );
  const out = Buffer.allocUnsafe(HEADER_SIZE + f.payload.length);
  out.writeUInt32BE(f.payload.length, 0);
  out.writeUInt32BE(f.streamId >>> 0, 4);
  out.writeUInt8(f.type, 8);
  out.writeUInt8(f.flags, 9);
  f.payload.copy(out, HEADER_SIZE);
  return out;
}

/** Incremental frame decoder: push() bytes as they arrive (split anywhere), get whole frames back. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** Throws AgentError(resourceExhausted) on a header announcing more than MAX_MESSAGE bytes. */
  push(chunk: Buffer): Frame[] {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: Frame[] = [];
    for (;;) {
      if (this.buffered < HEADER_SIZE) break;
      const head = this.peek(HEADER_SIZE);
      const len = head.readUInt32BE(0);
      if (len > MAX_MESSAGE)
        throw new AgentError(
          Code.resourceExhausted,
          `peer sent a ${len}-byte message, over the ${MAX_MESSAGE}-byte limit`,
        );
      if (this.buffered < HEADER_SIZE + len) break;
      const whole = this.take(HEADER_SIZE + len);
      out.push({
        streamId: whole.readUInt32BE(4),
        type: whole.readUInt8(8),
        flags: whole.readUInt8(9),
        payload: whole.subarray(HEADER_SIZE),
      });
    }
    return out;
  }

  get pending(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    const b = Buffer.concat(this.chunks);
    this.chunks = [b];
    return b.subarray(0, n);
  }

  private take(n: number): Buffer {
    let first = this.chunks[0];
    if (first.length < n) {
      first = Buffer.concat(this.chunks);
      this.chunks = [first];
    }
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}

// ---- protobuf (proto3 wire format): just what the envelopes need ----

class PbWriter {
  private parts: Buffer[] = [];

  private varint(n: number | bigint): void {
    let v = BigInt.asUintN(64, BigInt(n));
    const bytes: number[] = [];
    while (v >= 0x80n) {
      bytes.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    bytes.push(Number(v));
    this.parts.push(Buffer.from(bytes));
  }

  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, n: number | bigint): this {
    if (n === 0 || n === 0n) return this; // proto3 omits defaults
    this.tag(field, 0);
    this.varint(n);
    return this;
  }

  bytes(field: number, b: Buffer | undefined): this {
    if (!b || b.length === 0) return this;
    this.tag(field, 2);
    this.varint(b.length);
    this.parts.push(b);
    return this;
  }

  string(field: number, s: string | undefined): this {
    return this.bytes(field, s ? Buffer.from(s, "utf8") : undefined);
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

type PbValue = { wire: 0; n: bigint } | { wire: 2; b: Buffer } | { wire: 1 | 5 };

function readVarint(buf: Buffer, pos: { i: number }): bigint {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (pos.i >= buf.length) throw new AgentError(Code.invalidArgument, "truncated protobuf varint");
    const b = buf[pos.i++];
    result |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return result;
    shift += 7n;
    if (shift > 63n) throw new AgentError(Code.invalidArgument, "protobuf varint too long");
  }
}

/** Fields of one protobuf message, in order (unknown fields are kept and ignored by callers). */
function pbFields(buf: Buffer): [number, PbValue][] {
  const out: [number, PbValue][] = [];
  const pos = { i: 0 };
  while (pos.i < buf.length) {
    const key = Number(readVarint(buf, pos));
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 0) out.push([field, { wire: 0, n: readVarint(buf, pos) }]);
    else if (wire === 2) {
      const len = Number(readVarint(buf, pos));
      if (pos.i + len > buf.length) throw new AgentError(Code.invalidArgument, "truncated protobuf field");
      out.push([field, { wire: 2, b: buf.subarray(pos.i, pos.i + len) }]);
      pos.i += len;
    } else if (wire === 1 || wire === 5) {
      pos.i += wire === 1 ? 8 : 4;
      if (pos.i > buf.length) throw new AgentError(Code.invalidArgument, "truncated protobuf field");
      out.push([field, { wire }]);
    } else throw new AgentError(Code.invalidArgument, `unsupported protobuf wire type ${wire}`);
  }
  return out;
}

function asBytes(v: PbValue): Buffer {
  if (v.wire !== 2) throw new AgentError(Code.invalidArgument, "protobuf field has the wrong wire type");
  return v.b;
}

function asInt(v: PbValue): bigint {
  if (v.wire !== 0) throw new AgentError(Code.invalidArgument, "protobuf field has the wrong wire type");
  return v.n;
}

/** ttrpc's Request (ttrpc/request.proto). */
export interface TtrpcRequest {
  service: string;
  method: string;
  payload: Buffer;
  /** 0 = no deadline. */
  timeoutNano: bigint;
  metadata: [string, string][];
}

/** ttrpc's Response: status is google.rpc.Status {code, message} (details are not used). */
export interface TtrpcResponse {
  status: { code: number; message: string };
  payload: Buffer;
}

export function encodeRequest(r: TtrpcRequest): Buffer {
  const w = new PbWriter().string(1, r.service).string(2, r.method).bytes(3, r.payload).int(4, r.timeoutNano);
  for (const [k, v] of r.metadata) w.bytes(5, new PbWriter().string(1, k).string(2, v).finish());
  return w.finish();
}

export function decodeRequest(buf: Buffer): TtrpcRequest {
  const r: TtrpcRequest = {
    service: "",
    method: "",
    payload: Buffer.alloc(0),
    timeoutNano: 0n,
    metadata: [],
  };
  for (const [f, v] of pbFields(buf)) {
    if (f === 1) r.service = asBytes(v).toString("utf8");
    else if (f === 2) r.method = asBytes(v).toString("utf8");
    else if (f === 3) r.payload = asBytes(v);
    else if (f === 4) r.timeoutNano = BigInt.asIntN(64, asInt(v));
    else if (f === 5) {
      let k = "";
      let val = "";
      for (const [kf, kv] of pbFields(asBytes(v))) {
        if (kf === 1) k = asBytes(kv).toString("utf8");
        else if (kf === 2) val = asBytes(kv).toString("utf8");
      }
      r.metadata.push([k, val]);
    }
  }
  return r;
}

export function encodeResponse(r: TtrpcResponse): Buffer {
  const status = new PbWriter().int(1, r.status.code).string(2, r.status.message).finish();
  return new PbWriter().bytes(1, status).bytes(2, r.payload).finish();
}

export function decodeResponse(buf: Buffer): TtrpcResponse {
  const r: TtrpcResponse = { status: { code: 0, message: "" }, payload: Buffer.alloc(0) };
  for (const [f, v] of pbFields(buf)) {
    if (f === 1) {
      for (const [sf, sv] of pbFields(asBytes(v))) {
        if (sf === 1) r.status.code = Number(BigInt.asIntN(32, asInt(sv)));
        else if (sf === 2) r.status.message = asBytes(sv).toString("utf8");
      }
    } else if (f === 2) r.payload = asBytes(v);
  }
  return r;
}

// ---- method payloads ----

export function encodePayload(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value ?? {}), "utf8");
}

export function decodePayload(b: Buffer): unknown {
  if (b.length === 0) return {};
  try {
    return JSON.parse(b.toString("utf8"));
  } catch (err) {
    throw new AgentError(Code.invalidArgument, `payload is not JSON: ${(err as Error).message}`);
  }
}

export function encodeWindow(credit: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(credit >>> 0, 0);
  return b;
}

export function decodeWindow(b: Buffer): number {
  if (b.length !== 4) throw new AgentError(Code.invalidArgument, "window update must carry 4 bytes");
  return b.readUInt32BE(0);
}
