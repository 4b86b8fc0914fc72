// The helper's wire format (see native/helper/proto.c and docs/engine.md): a record is a native-endian
// u32 payload length, then the payload: NUL-terminated strings, the first being the op. Both directions
// use it; the helper parses nothing richer.

/** One plan record: [op, ...args]. */
export type Rec = string[];

/** Encodes records for the helper's sync socket: one buffer, written in place (a plan is ~100 records). */
export function encodeRecords(recs: Rec[]): Buffer {
  const payloads = recs.map((rec) => {
    for (const s of rec) {
      if (s.includes("\0"))
        throw new Error(`plan value contains a NUL byte: ${JSON.stringify(s.slice(0, 40))}`);
    }
    return `${rec.join("\0")}\0`;
  });
  const sizes = payloads.map((p) => Buffer.byteLength(p, "utf8"));
  const out = Buffer.allocUnsafe(sizes.reduce((sum, n) => sum + 4 + n, 0));
  let at = 0;
  payloads.forEach((p, i) => {
    at = out.writeUInt32LE(sizes[i], at);
    at += out.write(p, at, "utf8");
  });
  return out;
}

/** Incremental decoder: push() bytes as they arrive, get whole records back. */
export class RecordDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Rec[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Rec[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32LE(0);
      if (this.buf.length < 4 + len) break;
      const payload = this.buf.subarray(4, 4 + len).toString("utf8");
      this.buf = this.buf.subarray(4 + len);
      const fields = payload.endsWith("\0") ? payload.slice(0, -1).split("\0") : payload.split("\0");
      out.push(fields);
    }
    return out;
  }

  /** Bytes of an incomplete record still buffered. */
  get pending(): number {
    return this.buf.length;
  }
}
