import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  AgentError,
  Code,
  DataFlag,
  decodeRequest,
  decodeResponse,
  encodeFrame,
  encodeRequest,
  encodeResponse,
  type Frame,
  FrameDecoder,
  FrameType,
  MAX_MESSAGE,
} from "../../src/agent/wire";

const frames: Frame[] = [
  { streamId: 1, type: FrameType.request, flags: 0, payload: Buffer.from("hello") },
  { streamId: 2, type: FrameType.data, flags: DataFlag.eof | DataFlag.noData, payload: Buffer.alloc(0) },
  { streamId: 0xfffffffe, type: FrameType.response, flags: 0, payload: Buffer.from([0, 1, 2, 255]) },
  { streamId: 3, type: FrameType.data, flags: 0, payload: Buffer.alloc(300, 7) },
];

function norm(fs: Frame[]) {
  return fs.map((f) => ({ ...f, payload: f.payload.toString("hex") }));
}

describe("agent wire: ttrpc framing", () => {
  it("writes the 10-byte big-endian header: length, stream id, type, flags", () => {
    const b = encodeFrame({ streamId: 0x01020304, type: 2, flags: 0x11, payload: Buffer.from("abc") });
    assert.equal(b.subarray(0, 10).toString("hex"), "00000003010203040211");
    assert.equal(b.subarray(10).toString(), "abc");
  });

  it("decodes frames split at every byte boundary, and byte by byte", () => {
    const all = Buffer.concat(frames.map(encodeFrame));
    for (let i = 0; i <= all.length; i++) {
      const d = new FrameDecoder();
      const got = [...d.push(all.subarray(0, i)), ...d.push(all.subarray(i))];
      assert.deepEqual(norm(got), norm(frames), `split at ${i}`);
      assert.equal(d.pending, 0);
    }
    const d = new FrameDecoder();
    const got: Frame[] = [];
    for (let i = 0; i < all.length; i++) got.push(...d.push(all.subarray(i, i + 1)));
    assert.deepEqual(norm(got), norm(frames));
  });

  it("rejects messages over 4 MiB on both sides, accepts exactly 4 MiB", () => {
    assert.throws(
      () => encodeFrame({ streamId: 1, type: 1, flags: 0, payload: Buffer.alloc(MAX_MESSAGE + 1) }),
      (e: unknown) => e instanceof AgentError && e.code === Code.resourceExhausted,
    );
    const max = encodeFrame({ streamId: 1, type: 1, flags: 0, payload: Buffer.alloc(MAX_MESSAGE) });
    assert.equal(new FrameDecoder().push(max)[0].payload.length, MAX_MESSAGE);
    const head = Buffer.alloc(10);
    head.writeUInt32BE(MAX_MESSAGE + 1, 0);
    assert.throws(() => new FrameDecoder().push(head), /over the 4194304-byte limit/);
  });
});

describe("agent wire: ttrpc envelopes (protobuf)", () => {
  it("encodes Request exactly as protobuf does", () => {
    const b = encodeRequest({
      service: "s",
      method: "m",
      payload: Buffer.from("{}"),
      timeoutNano: 1000n,
      metadata: [["k", "v"]],
    });
    // field 1 "s", field 2 "m", field 3 "{}", field 4 varint 1000, field 5 {1:"k",2:"v"}
    assert.equal(b.toString("hex"), "0a017312016d1a027b7d20e8072a060a016b120176");
    const r = decodeRequest(b);
    assert.equal(r.service, "s");
    assert.equal(r.method, "m");
    assert.equal(r.payload.toString(), "{}");
    assert.equal(r.timeoutNano, 1000n);
    assert.deepEqual(r.metadata, [["k", "v"]]);
  });

  it("encodes Response {status {code, message}, payload} and skips unknown fields when decoding", () => {
    const b = encodeResponse({ status: { code: 5, message: "x" }, payload: Buffer.alloc(0) });
    assert.equal(b.toString("hex"), "0a050805120178");
    // an unknown varint field 9 and a fixed64 field 10 before the known ones
    const withUnknown = Buffer.concat([
      Buffer.from("4801", "hex"),
      Buffer.from("5100000000000000 00".replace(/ /g, ""), "hex"),
      b,
    ]);
    const r = decodeResponse(withUnknown);
    assert.deepEqual(r.status, { code: 5, message: "x" });
    assert.equal(r.payload.length, 0);
  });

  it("rejects truncated protobuf", () => {
    const b = encodeRequest({
      service: "svc",
      method: "m",
      payload: Buffer.from("xyz"),
      timeoutNano: 0n,
      metadata: [],
    });
    assert.throws(() => decodeRequest(b.subarray(0, b.length - 1)), /truncated/);
  });
});
