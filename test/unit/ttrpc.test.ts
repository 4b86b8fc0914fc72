// src/ttrpc: framing, envelopes, the proto/ schemas and containerd's Any rules, and the client and server
// against each other and against raw frames over real unix sockets.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { build } from "esbuild";
import fc from "fast-check";
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse } from "../../src/ttrpc/envelope";
import {
  encodeFrame,
  type Frame,
  FrameReader,
  HEADER_LENGTH,
  MESSAGE_LENGTH_MAX,
  MessageType,
  type ReadItem,
} from "../../src/ttrpc/frame";
import {
  Code,
  decode,
  encode,
  fromTimestamp,
  messageType,
  ProtoSchema,
  packAny,
  packJsonAny,
  SPEC_TYPE_URLS,
  schema,
  TtrpcClient,
  TtrpcError,
  TtrpcServer,
  timestamp,
  unpackAny,
} from "../../src/ttrpc/index";
import { protoDirCandidates } from "../../src/ttrpc/proto";

const REPO = join(__dirname, "..", "..");
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
async function until(fn: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !fn(); await sleep(10))
    if (Date.now() > end) throw new Error("timed out");
}

function hex(items: ReadItem[]) {
  return items.map((i) => ("payload" in i ? { ...i, payload: i.payload.toString("hex") } : i));
}

describe("ttrpc framing", () => {
  const frames: Frame[] = [
    { streamId: 1, type: MessageType.request, flags: 0, payload: Buffer.from("hello") },
    { streamId: 3, type: MessageType.response, flags: 0, payload: Buffer.alloc(0) },
    { streamId: 0xfffffffd, type: MessageType.data, flags: 0x5, payload: Buffer.from([0, 1, 255]) },
    { streamId: 5, type: MessageType.request, flags: 0, payload: Buffer.alloc(700, 9) },
  ];
  const wire = Buffer.concat(frames.map((f) => encodeFrame(f, f.payload)));

  it("writes the 10-byte header: u32 BE length, u32 BE stream id, u8 type, u8 flags", () => {
    const b = encodeFrame({ streamId: 0x01020304, type: 2, flags: 0x11 }, Buffer.from("abc"));
    assert.equal(b.subarray(0, HEADER_LENGTH).toString("hex"), "00000003010203040211");
    assert.equal(b.subarray(HEADER_LENGTH).toString(), "abc");
  });

  it("reads several messages from one chunk", () => {
    const r = new FrameReader();
    assert.deepEqual(hex(r.push(wire)), hex(frames));
    assert.equal(r.buffered, 0);
  });

  it("reads messages split at every byte boundary, and byte by byte", () => {
    for (let i = 0; i <= wire.length; i++) {
      const r = new FrameReader();
      assert.deepEqual(
        hex([...r.push(wire.subarray(0, i)), ...r.push(wire.subarray(i))]),
        hex(frames),
        `at ${i}`,
      );
    }
    const r = new FrameReader();
    const got: ReadItem[] = [];
    for (let i = 0; i < wire.length; i++) got.push(...r.push(wire.subarray(i, i + 1)));
    assert.deepEqual(hex(got), hex(frames));
  });

  it("refuses to write more than 4 MiB, with Go ttrpc's status; exactly 4 MiB passes", () => {
    assert.throws(
      () => encodeFrame({ streamId: 1, type: 1, flags: 0 }, Buffer.alloc(MESSAGE_LENGTH_MAX + 1)),
      (e: unknown) =>
        e instanceof TtrpcError &&
        e.code === Code.RESOURCE_EXHAUSTED &&
        e.message === "message length 4194305 exceed maximum message size of 4194304",
    );
    const max = encodeFrame({ streamId: 1, type: 1, flags: 0 }, Buffer.alloc(MESSAGE_LENGTH_MAX));
    const got = new FrameReader().push(max);
    assert.equal(got.length, 1);
    assert.equal("payload" in got[0] && got[0].payload.length, MESSAGE_LENGTH_MAX);
  });

  it("skips an oversized message's payload, reports its stream id, and reads the next message", () => {
    const big = Buffer.alloc(HEADER_LENGTH + MESSAGE_LENGTH_MAX + 5, 0xab);
    big.writeUInt32BE(MESSAGE_LENGTH_MAX + 5, 0);
    big.writeUInt32BE(7, 4);
    big[8] = MessageType.request;
    big[9] = 0;
    const next = encodeFrame({ streamId: 9, type: 1, flags: 0 }, Buffer.from("after"));
    const all = Buffer.concat([big, next]);
    for (const step of [all.length, 65536, 4093]) {
      const r = new FrameReader();
      const got: ReadItem[] = [];
      for (let i = 0; i < all.length; i += step) got.push(...r.push(all.subarray(i, i + step)));
      assert.deepEqual(hex(got), [
        { streamId: 7, type: 1, flags: 0, oversized: MESSAGE_LENGTH_MAX + 5 },
        { streamId: 9, type: 1, flags: 0, payload: Buffer.from("after").toString("hex") },
      ]);
    }
  });

  it("property: any frames, cut into any chunks, read back as written", () => {
    const frameArb = fc.record({
      streamId: fc.integer({ min: 0, max: 0xffffffff }),
      type: fc.integer({ min: 0, max: 255 }),
      flags: fc.integer({ min: 0, max: 255 }),
      payload: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    });
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (fs, cuts) => {
        const bytes = Buffer.concat(fs.map((f) => encodeFrame(f, f.payload)));
        const points = [...new Set(cuts.map((c) => (bytes.length ? c % bytes.length : 0)))].sort(
          (a, b) => a - b,
        );
        const r = new FrameReader();
        const got: ReadItem[] = [];
        let from = 0;
        for (const p of [...points, bytes.length]) {
          got.push(...r.push(bytes.subarray(from, p)));
          from = p;
        }
        assert.deepEqual(hex(got), hex(fs));
        assert.equal(r.buffered, 0);
      }),
      { numRuns: 300 },
    );
  });
});

describe("ttrpc envelopes", () => {
  it("encodes Request as protobuf (Go ttrpc's request.proto)", () => {
    const b = encodeRequest({
      service: "s",
      method: "m",
      payload: Buffer.from("p"),
      timeoutNano: 1000,
      metadata: [{ key: "k", value: "v" }],
    });
    // 1:"s" 2:"m" 3:"p" 4:varint 1000 5:{1:"k" 2:"v"}
    assert.equal(b.toString("hex"), "0a017312016d1a017020e8072a060a016b120176");
    assert.deepEqual(decodeRequest(b), {
      service: "s",
      method: "m",
      payload: Buffer.from("p"),
      timeoutNano: 1000,
      metadata: [{ key: "k", value: "v" }],
    });
  });

  it("round-trips Response with status details, and reads an empty Response as OK", () => {
    const details = [{ type_url: "x.Y", value: Buffer.from([1, 2]) }];
    const b = encodeResponse({ status: { code: 5, message: "gone", details }, payload: Buffer.from("z") });
    const r = decodeResponse(b);
    assert.equal(r.status.code, 5);
    assert.equal(r.status.message, "gone");
    assert.deepEqual(
      r.status.details.map((d) => ({ ...d, value: [...d.value] })),
      [{ type_url: "x.Y", value: [1, 2] }],
    );
    assert.equal(Buffer.from(r.payload).toString(), "z");
    assert.deepEqual(decodeResponse(Buffer.alloc(0)).status, { code: 0, message: "", details: [] });
  });
});

describe("ttrpc proto schemas (proto/)", () => {
  it("has containerd 1.6's Task service with its 17 methods and their message types", () => {
    const svc = schema().root.lookupService("containerd.task.v2.Task");
    const methods = Object.fromEntries(
      Object.entries(svc.methods).map(([n, m]) => [n, `${m.requestType} -> ${m.responseType}`]),
    );
    assert.deepEqual(Object.keys(methods), [
      "State",
      "Create",
      "Start",
      "Delete",
      "Pids",
      "Pause",
      "Resume",
      "Checkpoint",
      "Kill",
      "Exec",
      "ResizePty",
      "CloseIO",
      "Update",
      "Wait",
      "Stats",
      "Connect",
      "Shutdown",
    ]);
    assert.equal(methods.Kill, "KillRequest -> google.protobuf.Empty");
    assert.equal(methods.Pids, "PidsRequest -> PidsResponse");
    for (const name of [
      "containerd.events.TaskExit",
      "io.containerd.cgroups.v1.Metrics",
      "io.containerd.cgroups.v2.Metrics",
    ])
      assert.ok(messageType(name));
    assert.equal(
      schema().root.lookupService("containerd.services.events.ttrpc.v1.Events").methods.Forward.requestType,
      "ForwardRequest",
    );
  });

  it("encodes with containerd's field numbers (bytes checked by hand)", () => {
    // CreateTaskRequest: 1 id, 3 rootfs (Mount: 1 type, 2 source, 4 options), 4 terminal
    const b = encode("containerd.task.v2.CreateTaskRequest", {
      id: "c",
      rootfs: [{ type: "overlay", source: "s", options: ["ro"] }],
      terminal: true,
    });
    assert.equal(b.toString("hex"), "0a01631a100a076f7665726c61791201732202726f2001");
    // StateResponse.status = RUNNING (2) in field 4; exited_at in field 10
    const s = encode("containerd.task.v2.StateResponse", { status: 2, exited_at: { seconds: 1, nanos: 0 } });
    // (protobufjs writes the zero nanos it was given; Go reads it the same)
    assert.equal(s.toString("hex"), "2002" + "5204" + "0801" + "1000");
  });

  it("decodes to plain objects: snake_case names, defaults, numbers for longs and enums, Buffers", () => {
    const limit = 2 ** 63 - 4096; // cgroup v1's "no limit", exact as a double
    const b = encode("io.containerd.cgroups.v1.Metrics", {
      pids: { current: 3 },
      memory: { usage: { usage: 4096, limit } },
      blkio: { io_service_bytes_recursive: [{ op: "Read", major: 8, value: 512 }] },
    });
    const m = decode("io.containerd.cgroups.v1.Metrics", b);
    assert.deepEqual(m.pids, { current: 3, limit: 0 });
    assert.equal(m.memory.usage.limit, limit);
    assert.equal(m.memory.rss, 0);
    assert.equal(m.cpu, null);
    assert.deepEqual(m.hugetlb, []);
    assert.equal(m.blkio.io_service_bytes_recursive[0].op, "Read");
    const st = decode(
      "containerd.task.v2.StateResponse",
      encode("containerd.task.v2.StateResponse", { status: 3 }),
    );
    assert.equal(st.status, 3);
    const any = decode(
      "containerd.v1.types.ProcessInfo",
      encode("containerd.v1.types.ProcessInfo", { pid: 1, info: { type_url: "t", value: Buffer.from("x") } }),
    );
    assert.ok(Buffer.isBuffer(any.info.value));
    const upd = decode(
      "containerd.task.v2.UpdateTaskRequest",
      encode("containerd.task.v2.UpdateTaskRequest", { annotations: { a: "1" } }),
    );
    assert.deepEqual(upd.annotations, { a: "1" });
  });

  it("rejects a field of the wrong type with INVALID_ARGUMENT naming it, and unknown types with INTERNAL", () => {
    assert.throws(
      () => encode("containerd.task.v2.KillRequest", { id: 3 }),
      (e: unknown) =>
        e instanceof TtrpcError &&
        e.code === Code.INVALID_ARGUMENT &&
        /KillRequest: id: string expected/.test(e.message),
    );
    assert.throws(
      () => messageType("no.such.Type"),
      (e: unknown) => e instanceof TtrpcError && e.code === Code.INTERNAL,
    );
  });

  it("packs Any as containerd 1.6's typeurl does: bare full name for messages, registered URL + JSON for spec types", () => {
    const a = packAny("containerd.events.TaskOOM", { container_id: "c1" });
    assert.equal(a.type_url, "containerd.events.TaskOOM");
    assert.equal(Buffer.from(a.value).toString("hex"), "0a026331");
    assert.deepEqual(unpackAny(a), { container_id: "c1" });
    // other peers' prefixed forms still unpack here
    for (const prefix of ["types.containerd.io/", "type.googleapis.com/"])
      assert.deepEqual(unpackAny({ type_url: prefix + a.type_url, value: a.value }), { container_id: "c1" });
    const p = packJsonAny(SPEC_TYPE_URLS.Process, { args: ["sh"], cwd: "/" });
    assert.equal(p.type_url, "types.containerd.io/opencontainers/runtime-spec/1/Process");
    assert.deepEqual(unpackAny(p), { args: ["sh"], cwd: "/" });
    assert.throws(
      () => unpackAny({ type_url: "example.com/Nope", value: Buffer.alloc(0) }),
      (e: unknown) => e instanceof TtrpcError && e.code === Code.INVALID_ARGUMENT,
    );
  });

  it("converts timestamps both ways", () => {
    const d = new Date(1_700_000_000_123);
    assert.deepEqual(timestamp(d), { seconds: 1_700_000_000, nanos: 123_000_000 });
    assert.equal(fromTimestamp(timestamp(d)).getTime(), d.getTime());
    assert.deepEqual(timestamp(new Date(-1)), { seconds: -1, nanos: 999_000_000 });
  });

  it("finds proto/ next to the sources and next to a dist/ bundle", () => {
    assert.equal(protoDirCandidates(join(REPO, "src", "ttrpc"), {})[1], join(REPO, "proto"));
    assert.equal(protoDirCandidates(join(REPO, "dist"), {})[0], join(REPO, "proto"));
    assert.equal(protoDirCandidates("/x/dist", { KATA_TS_PROTO_DIR: "/p" })[0], "/p");
  });

  it("works from an esbuild bundle in dist/ (protobufjs bundled, proto/ found at run time)", async () => {
    const out = join(REPO, "dist", `.ttrpc-proto-test-${process.pid}.cjs`);
    try {
      await build({
        stdin: {
          contents:
            'const p = require("./src/ttrpc/proto");' +
            'const b = p.encode("containerd.events.TaskExit", { container_id: "c", pid: 7, exit_status: 3 });' +
            "console.log(p.findProtoDir(), JSON.stringify(p.decode('containerd.events.TaskExit', b)));",
          resolveDir: REPO,
          loader: "ts",
        },
        bundle: true,
        platform: "node",
        target: "node20",
        format: "cjs",
        outfile: out,
        logLevel: "error",
      });
      const r = spawnSync(process.execPath, [out], {
        encoding: "utf8",
        env: { ...process.env, KATA_TS_PROTO_DIR: "" },
      });
      assert.equal(r.status, 0, r.stderr);
      const [dir, json] = r.stdout.trim().split(" ");
      assert.equal(dir, join(REPO, "proto"));
      assert.deepEqual(JSON.parse(json), {
        container_id: "c",
        id: "",
        pid: 7,
        exit_status: 3,
        exited_at: null,
      });
    } finally {
      rmSync(out, { force: true });
    }
  });
});

// ---- client and server ----------------------------------------------------------------------------

const TEST_PROTO = `
syntax = "proto3";
package test.v1;
message EchoRequest { string text = 1; uint32 delay_ms = 2; uint32 size = 3; }
message EchoReply { string text = 1; bytes blob = 2; map<string, string> seen = 3; int64 timeout_nano = 4; }
`;
const SVC = "test.v1.Echo";
const REQ = "test.v1.EchoRequest";
const REP = "test.v1.EchoReply";

interface Echo {
  text: string;
  delay_ms: number;
  size: number;
}

describe("ttrpc client and server", () => {
  const testSchema = ProtoSchema.fromSource(TEST_PROTO);
  let dir: string;
  let n = 0;
  const sockPath = () => join(dir, `s${++n}.sock`);
  const seenSignals: AbortSignal[] = [];
  const errors: string[] = [];

  function newServer(): TtrpcServer {
    return new TtrpcServer({
      schema: testSchema,
      onError: (e, where) => errors.push(`${where}: ${e.message}`),
    }).register(SVC, {
      Echo: {
        request: REQ,
        response: REP,
        handler: async (req: Echo, ctx) => {
          if (req.delay_ms) await sleep(req.delay_ms);
          const seen = Object.fromEntries(Object.entries(ctx.metadata).map(([k, v]) => [k, v.join(",")]));
          return { text: req.text, seen, blob: Buffer.alloc(req.size) };
        },
      },
      Hang: {
        request: REQ,
        response: REP,
        handler: (_req: Echo, ctx) =>
          new Promise((_resolve, reject) => {
            seenSignals.push(ctx.signal);
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
          }),
      },
      Fail: {
        request: REQ,
        response: REP,
        handler: (req: Echo) => {
          const errs: Record<string, unknown> = {
            status: new TtrpcError(Code.NOT_FOUND, "container c1 not found"),
            coded: Object.assign(new Error("already\nstarted"), { code: Code.FAILED_PRECONDITION }),
            plain: new Error("disk\n  on fire"),
            errno: Object.assign(new Error("ENOENT: no such file"), { code: "ENOENT" }),
            outOfRange: Object.assign(new Error("odd"), { code: 42 }),
            string: "a thrown string",
          };
          throw errs[req.text];
        },
      },
      BadAnswer: { request: REQ, response: REP, handler: () => ({ text: 5 }) },
      Empty: { request: REQ, response: REP, handler: () => undefined },
    });
  }

  async function withPair(fn: (c: TtrpcClient, s: TtrpcServer, path: string) => Promise<void>) {
    const path = sockPath();
    const server = newServer();
    await server.listen(path);
    const client = await TtrpcClient.connect(path, { schema: testSchema });
    try {
      await fn(client, server, path);
    } finally {
      client.close();
      await server.close({ timeoutMs: 1000 });
    }
  }

  const echo = (c: TtrpcClient, req: Partial<Echo>, opts = {}) => c.call(SVC, "Echo", REQ, REP, req, opts);
  const rejectsWith = (code: number, message?: RegExp | string) => (e: unknown) => {
    assert.ok(e instanceof TtrpcError, `not a TtrpcError: ${e}`);
    assert.equal(e.code, code, `code ${e.code} (${e.message})`);
    if (typeof message === "string") assert.equal(e.message, message);
    else if (message) assert.match(e.message, message);
    return true;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "kata-ts-ttrpc-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("answers concurrent calls on one connection, each with its own answer, in completion order", async () => {
    await withPair(async (c) => {
      const order: number[] = [];
      const calls = Array.from({ length: 40 }, (_, i) =>
        echo(c, { text: `m${i}`, delay_ms: (40 - i) * 3 }).then((r) => {
          order.push(i);
          return r.text;
        }),
      );
      assert.equal(c.inFlight, 40);
      const texts = await Promise.all(calls);
      assert.deepEqual(
        texts,
        Array.from({ length: 40 }, (_, i) => `m${i}`),
      );
      assert.notDeepEqual(
        order,
        [...order].sort((a, b) => a - b),
        "answers came back out of order",
      );
      assert.equal(c.inFlight, 0);
    });
  });

  it("sends odd, increasing stream ids and the request envelope Go ttrpc expects", async () => {
    const path = sockPath();
    const seen: { id: number; req: ReturnType<typeof decodeRequest> }[] = [];
    const raw: Server = createServer((s) => {
      const r = new FrameReader();
      s.on("data", (chunk) => {
        for (const item of r.push(chunk)) {
          if (!("payload" in item)) continue;
          seen.push({ id: item.streamId, req: decodeRequest(item.payload) });
          s.write(
            encodeFrame(
              { streamId: item.streamId, type: MessageType.response, flags: 0 },
              encodeResponse({
                status: { code: 0, message: "", details: [] },
                payload: testSchema.encode(REP, { text: "ok" }),
              }),
            ),
          );
        }
      });
    });
    await new Promise<void>((r) => raw.listen(path, r));
    const c = await TtrpcClient.connect(path, { schema: testSchema });
    try {
      await echo(
        c,
        { text: "a" },
        { timeoutMs: 1500, metadata: { "containerd-namespace-ttrpc": "ns1", multi: ["x", "y"] } },
      );
      await Promise.all([echo(c, { text: "b" }), echo(c, { text: "c" })]);
    } finally {
      c.close();
      await new Promise((r) => raw.close(r));
    }
    assert.deepEqual(
      seen.map((s) => s.id),
      [1, 3, 5],
    );
    assert.equal(seen[0].req.service, SVC);
    assert.equal(seen[0].req.method, "Echo");
    assert.equal(seen[0].req.timeoutNano, 1_500_000_000);
    assert.deepEqual(seen[0].req.metadata, [
      { key: "containerd-namespace-ttrpc", value: "ns1" },
      { key: "multi", value: "x" },
      { key: "multi", value: "y" },
    ]);
    assert.equal(seen[1].req.timeoutNano, 0);
    assert.deepEqual(testSchema.decode(REQ, seen[0].req.payload), { text: "a", delay_ms: 0, size: 0 });
  });

  it("passes metadata to the handler as key -> values", async () => {
    await withPair(async (c) => {
      const r = await echo(c, { text: "m" }, { metadata: { a: "1", b: ["2", "3"] } });
      assert.deepEqual(r.seen, { a: "1", b: "2,3" });
    });
  });

  it("answers an unknown service or method UNIMPLEMENTED, worded as Go ttrpc", async () => {
    await withPair(async (c) => {
      await assert.rejects(
        c.call("no.Such", "Echo", REQ, REP, {}),
        rejectsWith(Code.UNIMPLEMENTED, "service no.Such"),
      );
      await assert.rejects(c.call(SVC, "Nope", REQ, REP, {}), rejectsWith(Code.UNIMPLEMENTED, "method Nope"));
      assert.equal((await echo(c, { text: "still fine" })).text, "still fine");
    });
  });

  it("maps handler errors: a gRPC code is kept, anything else is UNKNOWN, messages on one line", async () => {
    await withPair(async (c) => {
      const fail = (text: string) => c.call(SVC, "Fail", REQ, REP, { text });
      await assert.rejects(fail("status"), rejectsWith(Code.NOT_FOUND, "container c1 not found"));
      await assert.rejects(fail("coded"), rejectsWith(Code.FAILED_PRECONDITION, "already; started"));
      await assert.rejects(fail("plain"), rejectsWith(Code.UNKNOWN, "disk; on fire"));
      await assert.rejects(fail("errno"), rejectsWith(Code.UNKNOWN, "ENOENT: no such file"));
      await assert.rejects(fail("outOfRange"), rejectsWith(Code.UNKNOWN, "odd"));
      await assert.rejects(fail("string"), rejectsWith(Code.UNKNOWN, "a thrown string"));
      assert.ok(errors.includes("test.v1.Echo/Fail: container c1 not found"), errors.join("\n"));
      await assert.rejects(
        c.call(SVC, "BadAnswer", REQ, REP, {}),
        rejectsWith(Code.INTERNAL, /^ttrpc: error marshaling payload: .*text: string expected/),
      );
      assert.deepEqual(await c.call(SVC, "Empty", REQ, REP, {}), {
        text: "",
        blob: Buffer.alloc(0),
        seen: {},
        timeout_nano: 0,
      });
      // a request that does not fit its type is refused before anything is sent
      await assert.rejects(
        echo(c, { text: 1 as unknown as string }),
        rejectsWith(Code.INVALID_ARGUMENT, /text: string expected/),
      );
    });
  });

  it("times out: the client rejects DEADLINE_EXCEEDED and the handler's signal aborts with it", async () => {
    await withPair(async (c) => {
      seenSignals.length = 0;
      const t0 = Date.now();
      await assert.rejects(
        c.call(SVC, "Hang", REQ, REP, {}, { timeoutMs: 150 }),
        rejectsWith(Code.DEADLINE_EXCEEDED, /Hang: deadline exceeded after 150 ms/),
      );
      assert.ok(Date.now() - t0 >= 140);
      await sleep(50);
      assert.equal(seenSignals.length, 1);
      assert.ok(seenSignals[0].aborted);
      assert.equal((seenSignals[0].reason as TtrpcError).code, Code.DEADLINE_EXCEEDED);
      // the late answer is dropped; the connection keeps working
      assert.equal((await echo(c, { text: "after" })).text, "after");
    });
  });

  it("cancels a call by signal", async () => {
    await withPair(async (c) => {
      const ac = new AbortController();
      const p = c.call(SVC, "Hang", REQ, REP, {}, { signal: ac.signal });
      ac.abort();
      await assert.rejects(p, rejectsWith(Code.CANCELLED));
    });
  });

  it("fails every pending call when the connection is lost, and later calls at once", async () => {
    const path = sockPath();
    const server = newServer();
    await server.listen(path);
    const c = await TtrpcClient.connect(path, { schema: testSchema });
    const pending = [1, 2, 3].map(() =>
      c.call(SVC, "Hang", REQ, REP, {}).then(
        () => undefined,
        (e) => e,
      ),
    );
    await sleep(50);
    await server.close({ timeoutMs: 50 }); // gives up on the hanging calls and drops the connection
    for (const e of await Promise.all(pending)) rejectsWith(Code.UNAVAILABLE, /ttrpc: closed/)(e);
    assert.equal((await c.closed).code, Code.UNAVAILABLE);
    assert.ok(c.isClosed);
    await assert.rejects(echo(c, { text: "x" }), rejectsWith(Code.UNAVAILABLE));
    assert.ok(seenSignals.slice(-3).every((s) => s.aborted));
  });

  it("refuses oversized requests locally and answers oversized responses RESOURCE_EXHAUSTED", async () => {
    await withPair(async (c) => {
      await assert.rejects(
        echo(c, { text: "x".repeat(MESSAGE_LENGTH_MAX) }),
        rejectsWith(Code.RESOURCE_EXHAUSTED, /exceed maximum message size of 4194304/),
      );
      await assert.rejects(
        echo(c, { text: "big", size: MESSAGE_LENGTH_MAX }),
        rejectsWith(Code.RESOURCE_EXHAUSTED, /exceed maximum message size of 4194304/),
      );
      assert.equal((await echo(c, { text: "ok", size: 1 << 20 })).blob.length, 1 << 20);
    });
  });

  it("answers raw protocol errors on their stream id and keeps the connection", async () => {
    await withPair(async (_c, _s, path) => {
      const raw = await rawConnect(path);
      const ok = encodeRequest({
        service: SVC,
        method: "Echo",
        payload: testSchema.encode(REQ, { text: "r" }),
        timeoutNano: 0,
        metadata: [],
      });
      // an oversized request frame (header announces 4 MiB + 1; the bytes follow)
      const big = Buffer.alloc(HEADER_LENGTH + MESSAGE_LENGTH_MAX + 1);
      big.writeUInt32BE(MESSAGE_LENGTH_MAX + 1, 0);
      big.writeUInt32BE(1, 4);
      big[8] = MessageType.request;
      raw.socket.write(big);
      let a = await raw.next();
      assert.equal(a.id, 1);
      assert.equal(a.status.code, Code.RESOURCE_EXHAUSTED);
      // an even stream id
      raw.socket.write(encodeFrame({ streamId: 4, type: 1, flags: 0 }, ok));
      a = await raw.next();
      assert.deepEqual(
        [a.id, a.status.code, a.status.message],
        [4, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams"],
      );
      // garbage instead of a Request
      raw.socket.write(encodeFrame({ streamId: 5, type: 1, flags: 0 }, Buffer.from([0xff, 0xff])));
      a = await raw.next();
      assert.deepEqual([a.id, a.status.code], [5, Code.INVALID_ARGUMENT]);
      assert.match(a.status.message, /^unmarshal request error: /);
      // a payload that is not the request type (field 1 with the invalid wire type 7)
      const bad = encodeRequest({
        service: SVC,
        method: "Echo",
        payload: Buffer.from([0x0f]),
        timeoutNano: 0,
        metadata: [],
      });
      raw.socket.write(encodeFrame({ streamId: 7, type: 1, flags: 0 }, bad));
      a = await raw.next();
      assert.deepEqual([a.id, a.status.code], [7, Code.INTERNAL]);
      assert.match(a.status.message, /^ttrpc: error unmarshalling payload: /);
      // a data frame is ignored; a reused stream id is refused; the next good request is answered
      raw.socket.write(encodeFrame({ streamId: 9, type: MessageType.data, flags: 0 }, Buffer.from("x")));
      raw.socket.write(encodeFrame({ streamId: 7, type: 1, flags: 0 }, ok));
      a = await raw.next();
      assert.deepEqual([a.id, a.status.code], [7, Code.INVALID_ARGUMENT]);
      raw.socket.write(encodeFrame({ streamId: 11, type: 1, flags: 0 }, ok));
      a = await raw.next();
      assert.deepEqual([a.id, a.status.code], [11, Code.OK]);
      assert.equal(testSchema.decode(REP, a.payload).text, "r");
      raw.socket.destroy();
    });
  });

  it("survives peers that disconnect mid-call or mid-answer (EPIPE/ECONNRESET) and serves the next one", async () => {
    await withPair(async (c, server, path) => {
      const req = (delay: number) =>
        encodeFrame(
          { streamId: 1, type: 1, flags: 0 },
          encodeRequest({
            service: SVC,
            method: "Echo",
            payload: testSchema.encode(REQ, { text: "gone", delay_ms: delay, size: 3 << 20 }),
            timeoutNano: 0,
            metadata: [],
          }),
        );
      for (let i = 0; i < 3; i++) {
        // gone before the answer: it is dropped
        const early = await rawConnect(path);
        early.socket.write(req(30));
        await sleep(5);
        early.socket.destroy();
        // gone while the 3 MiB answer is being written: the server's write fails with EPIPE/ECONNRESET
        const late = createConnection({ path });
        late.on("error", () => {});
        late.once("data", () => late.destroy());
        late.write(req(0));
      }
      await sleep(200);
      assert.equal((await echo(c, { text: "alive" })).text, "alive");
      await until(() => server.connections === 1);
    });
  });

  it("creates its socket 0600, and close() waits for calls in flight, refuses new ones, removes the socket", async () => {
    const path = sockPath();
    const server = newServer();
    await server.listen(path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const c = await TtrpcClient.connect(path, { schema: testSchema });
    const slow = echo(c, { text: "slow", delay_ms: 200 });
    await sleep(20);
    const closing = server.close({ timeoutMs: 5000 });
    await sleep(20);
    assert.equal(existsSync(path), false);
    await assert.rejects(
      TtrpcClient.connect(path, { schema: testSchema }),
      rejectsWith(Code.UNAVAILABLE, /connect/),
    );
    await assert.rejects(echo(c, { text: "late" }), rejectsWith(Code.UNAVAILABLE, "ttrpc: server closed"));
    assert.equal((await slow).text, "slow");
    await closing;
    assert.equal(server.connections, 0);
    assert.equal((await c.closed).code, Code.UNAVAILABLE);
  });

  const noPython =
    spawnSync("python3", ["-c", ""]).status !== 0 && "python3 (which hands over the fd) is not installed";
  it("serves on an inherited listening fd (containerd starts a shim with its socket as fd 3)", {
    skip: noPython,
  }, async () => {
    const path = sockPath();
    const child = join(dir, "child.ts");
    writeFileSync(
      child,
      `import { ProtoSchema, TtrpcServer } from ${JSON.stringify(join(REPO, "src", "ttrpc", "index"))};
const schema = ProtoSchema.fromSource(${JSON.stringify(TEST_PROTO)});
const s = new TtrpcServer({ schema }).register(${JSON.stringify(SVC)}, {
  Echo: { request: ${JSON.stringify(REQ)}, response: ${JSON.stringify(REP)}, handler: (r) => ({ text: "fd3:" + r.text }) },
});
s.listenFd(3).then(() => process.stdout.write("ready\\n"));
process.on("SIGTERM", () => s.close().then(() => process.exit(0)));
`,
    );
    // python binds and listens, then execs node with the socket as fd 3 (what containerd's shim start does)
    const py = `import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(16)
os.dup2(s.fileno(), 3); os.set_inheritable(3, True)
os.execv(sys.argv[2], [sys.argv[2], "--import", "tsx", sys.argv[3]])`;
    const proc = spawn("python3", ["-c", py, path, process.execPath, child], {
      cwd: REPO,
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        proc.stdout.on("data", (d) => String(d).includes("ready") && resolve());
        proc.once("exit", (code) => reject(new Error(`child exited ${code}`)));
      });
      const c = await TtrpcClient.connect(path, { schema: testSchema });
      assert.equal((await echo(c, { text: "x" })).text, "fd3:x");
      c.close();
    } finally {
      proc.kill("SIGTERM");
      await new Promise((r) => (proc.exitCode !== null ? r(undefined) : proc.once("exit", r)));
    }
  });

  it("uses kata-ts's schemas by default (the shim's Task service)", async () => {
    const path = sockPath();
    const server = new TtrpcServer().register("containerd.task.v2.Task", {
      Connect: {
        request: "containerd.task.v2.ConnectRequest",
        response: "containerd.task.v2.ConnectResponse",
        handler: (req: { id: string }) => ({ shim_pid: process.pid, task_pid: 42, version: `v-${req.id}` }),
      },
    });
    await server.listen(path);
    const c = await TtrpcClient.connect(path);
    try {
      const r = await c.call(
        "containerd.task.v2.Task",
        "Connect",
        "containerd.task.v2.ConnectRequest",
        "containerd.task.v2.ConnectResponse",
        { id: "c9" },
      );
      assert.deepEqual(r, { shim_pid: process.pid, task_pid: 42, version: "v-c9" });
      await assert.rejects(
        c.call(
          "containerd.task.v2.Task",
          "Pids",
          "containerd.task.v2.PidsRequest",
          "containerd.task.v2.PidsResponse",
          { id: "c9" },
        ),
        rejectsWith(Code.UNIMPLEMENTED, "method Pids"),
      );
    } finally {
      c.close();
      await server.close();
    }
  });
});

/** A raw connection: write frames yourself, read decoded responses. */
async function rawConnect(path: string): Promise<{
  socket: Socket;
  next(): Promise<{ id: number; status: { code: number; message: string }; payload: Uint8Array }>;
}> {
  const socket = createConnection({ path });
  await new Promise((r, j) => socket.once("connect", r).once("error", j));
  socket.on("error", () => {});
  const reader = new FrameReader();
  const queue: Frame[] = [];
  let wake: (() => void) | undefined;
  socket.on("data", (chunk) => {
    for (const item of reader.push(chunk)) if ("payload" in item) queue.push(item);
    wake?.();
  });
  return {
    socket,
    async next() {
      while (queue.length === 0) await new Promise<void>((r) => (wake = r));
      const f = queue.shift()!;
      const resp = decodeResponse(f.payload);
      return { id: f.streamId, status: resp.status, payload: resp.payload };
    },
  };
}
