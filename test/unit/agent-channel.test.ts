import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { Duplex } from "node:stream";
import { after, describe, it } from "node:test";
import { AgentClient, AgentError, type AgentHandlers, Code, DEFAULT_WINDOW, serve } from "../../src/agent";
import { encodeFrame, FrameType } from "../../src/agent/wire";
import { tempDir } from "../helpers";

/** Two in-memory duplexes wired to each other. */
function duplexPair(): [Duplex, Duplex] {
  let a: Duplex;
  let b: Duplex;
  const mk = (peer: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        peer().push(chunk);
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
    });
  a = mk(() => b);
  b = mk(() => a);
  return [a, b];
}

const details = { kernelRelease: "6.1", bootId: "b", agentVersion: "t", readyAt: 1 };

function pair(handlers: Partial<AgentHandlers>) {
  const [h, g] = duplexPair();
  const session = serve(g, handlers);
  const client = new AgentClient(h);
  return { client, session };
}

const tmp = tempDir("kata-ts-agent-unit-");
after(() => tmp.cleanup());

/** A client and a server over a real unix socket (what the host uses for the QEMU chardev). */
async function overUnixSocket(handlers: Partial<AgentHandlers>, name: string) {
  const path = join(tmp.path, name);
  let session: ReturnType<typeof serve> | undefined;
  const server: Server = createServer((sock: Socket) => {
    session = serve(sock, handlers);
  });
  await new Promise<void>((r) => server.listen(path, r));
  const client = await AgentClient.connect(path, { timeoutMs: 5000 });
  return {
    client,
    session: () => session as ReturnType<typeof serve>,
    close: async () => {
      client.close();
      await new Promise((r) => server.close(r));
    },
  };
}

describe("agent channel: calls", () => {
  it("round trip: request payload reaches the handler, the response comes back", async () => {
    let seen: unknown;
    const { client, session } = pair({
      ping: async () => details,
      startContainer: async (req) => {
        seen = req;
        return {};
      },
    });
    assert.deepEqual(await client.call("ping", {}), details);
    assert.deepEqual(await client.call("startContainer", { containerId: "c1" }), {});
    assert.deepEqual(seen, { containerId: "c1" });
    client.close();
    session.close();
  });

  it("concurrent calls each get their own answer, out of order", async () => {
    const { client, session } = pair({
      listProcesses: async (req) => {
        const n = Number(req.containerId);
        await new Promise((r) => setTimeout(r, (n * 7) % 13));
        return { pids: [n, n * 2] };
      },
    });
    const res = await Promise.all(
      Array.from({ length: 200 }, (_, i) => client.call("listProcesses", { containerId: String(i) })),
    );
    for (const [i, r] of res.entries()) assert.deepEqual(r.pids, [i, i * 2]);
    client.close();
    session.close();
  });

  it("errors cross as ttrpc status: code kept, message on one line; unknown method is UNIMPLEMENTED", async () => {
    const { client, session } = pair({
      waitProcess: async () => {
        throw new AgentError(Code.notFound, "container c9 not found");
      },
      signalProcess: async () => {
        throw new Error("kill 42: ESRCH\n  at somewhere");
      },
    });
    await assert.rejects(client.call("waitProcess", { containerId: "c9", execId: "" }), (e: unknown) => {
      assert.ok(e instanceof AgentError);
      assert.equal(e.code, Code.notFound);
      assert.equal(e.message, "container c9 not found");
      return true;
    });
    await assert.rejects(
      client.call("signalProcess", { containerId: "c", execId: "", signal: 9, all: false }),
      (e: unknown) =>
        e instanceof AgentError && e.code === Code.unknown && e.message === "kill 42: ESRCH; at somewhere",
    );
    await assert.rejects(client.call("shutdown", {}), (e: unknown) => {
      assert.ok(e instanceof AgentError);
      assert.equal(e.code, Code.unimplemented);
      assert.match(e.message, /unknown method "shutdown"/);
      return true;
    });
    client.close();
    session.close();
  });

  it("a call past its timeout fails with DEADLINE_EXCEEDED; the handler sees its signal abort", async () => {
    let aborted = false;
    const { client, session } = pair({
      pauseContainer: (_req, ctx) =>
        new Promise((resolve) =>
          ctx.signal.addEventListener("abort", () => {
            aborted = true;
            resolve({});
          }),
        ),
    });
    const t0 = Date.now();
    await assert.rejects(
      client.call("pauseContainer", { containerId: "c" }, { timeoutMs: 80 }),
      (e: unknown) =>
        e instanceof AgentError && e.code === Code.deadlineExceeded && /after 80 ms/.test(e.message),
    );
    assert.ok(Date.now() - t0 >= 75);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(aborted, true);
    // the channel still works after a late answer arrived for the timed-out call
    await assert.rejects(
      client.call("ping", {}),
      (e: unknown) => (e as AgentError).code === Code.unimplemented,
    );
    client.close();
    session.close();
  });

  it("pending calls fail with UNAVAILABLE when the connection closes", async () => {
    const { client, session } = pair({ waitProcess: () => new Promise(() => {}) });
    const p = client.call("waitProcess", { containerId: "c", execId: "" });
    setTimeout(() => session.close(), 10);
    await assert.rejects(p, (e: unknown) => e instanceof AgentError && e.code === Code.unavailable);
    await assert.rejects(
      client.call("ping", {}),
      (e: unknown) => (e as AgentError).code === Code.unavailable,
    );
  });

  it("an oversize frame from the peer ends the connection instead of buffering it", async () => {
    const [h, g] = duplexPair();
    const client = new AgentClient(h);
    const p = client.call("ping", {});
    const head = Buffer.alloc(10);
    head.writeUInt32BE((4 << 20) + 1, 0);
    head.writeUInt32BE(1, 4);
    head.writeUInt8(FrameType.response, 8);
    g.write(head);
    await assert.rejects(p, (e: unknown) => e instanceof AgentError && e.code === Code.resourceExhausted);
    assert.equal(client.closed, true);
  });

  it("a request frame on an even id is ignored (ttrpc: requests use odd ids)", async () => {
    const [h, g] = duplexPair();
    let called = 0;
    serve(g, {
      ping: async () => {
        called++;
        return details;
      },
    });
    const got: Buffer[] = [];
    h.on("data", (c) => got.push(c));
    h.write(encodeFrame({ streamId: 2, type: FrameType.request, flags: 0, payload: Buffer.alloc(0) }));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(called, 0);
    assert.equal(got.length, 0);
  });

  it("connect() retries until the socket exists and the agent answers ping", async () => {
    const path = join(tmp.path, "late.sock");
    let server: Server | undefined;
    setTimeout(() => {
      server = createServer((s) => serve(s, { ping: async () => details }));
      server.listen(path);
    }, 200);
    const t0 = Date.now();
    const client = await AgentClient.connect(path, { timeoutMs: 5000 });
    assert.ok(Date.now() - t0 >= 190);
    assert.deepEqual(await client.call("ping", {}), details);
    client.close();
    await new Promise((r) => server?.close(r));
    await assert.rejects(AgentClient.connect(join(tmp.path, "never.sock"), { timeoutMs: 100 }), /ENOENT/);
  });
});

describe("agent channel: stdio streams", () => {
  it("carries bytes both ways with an independent EOF per direction", async () => {
    const { client, session } = pair({
      createContainer: async (req, ctx) => {
        const s = ctx.stream(req.stdio.stdin);
        // echo upper-cased, then half-close our direction only after theirs ended
        const parts: Buffer[] = [];
        s.on("data", (c: Buffer) => parts.push(c));
        s.on("end", () => s.end(Buffer.concat(parts).toString().toUpperCase()));
        return { guestPid: 1 };
      },
    });
    const s = client.openStream();
    assert.equal(s.id % 2, 0);
    s.write("early bytes, ");
    await client.call("createContainer", {
      containerId: "c",
      spec: { ociVersion: "1.2.0" },
      mounts: [],
      stdio: { terminal: false, stdin: s.id, stdout: s.id, stderr: 0 },
    });
    s.end("late bytes");
    const out: Buffer[] = [];
    for await (const c of s) out.push(c as Buffer);
    assert.equal(Buffer.concat(out).toString(), "EARLY BYTES, LATE BYTES");
    assert.equal(s.remoteClosed, true);
    client.close();
    session.close();
  });

  it("100 MB stdout burst arrives intact with bounded buffering; the sender pauses for a slow reader", async () => {
    const total = 100 * 1024 * 1024;
    const block = randomBytes(1024 * 1024);
    const sent = createHash("sha256");
    let senderStats: import("../../src/agent").StreamStats | undefined;
    const conn = await overUnixSocket(
      {
        ping: async () => details,
        execProcess: async (req, ctx) => {
          const s = ctx.stream(req.stdio.stdout);
          senderStats = s.stats;
          (async () => {
            for (let off = 0; off < total; off += block.length) {
              sent.update(block);
              if (!s.write(block)) await new Promise((r) => s.once("drain", r));
            }
            s.end();
          })();
          return { guestPid: 2 };
        },
      },
      "burst.sock",
    );
    const s = conn.client.openStream();
    const t0 = process.hrtime.bigint();
    await conn.client.call("execProcess", {
      containerId: "c",
      execId: "e",
      process: { args: ["x"], cwd: "/", user: { uid: 0, gid: 0 } },
      stdio: { terminal: false, stdin: 0, stdout: s.id, stderr: 0 },
    });
    const got = createHash("sha256");
    let n = 0;
    let stalled = false;
    for await (const c of s) {
      got.update(c as Buffer);
      n += (c as Buffer).length;
      if (!stalled && n > 10 * 1024 * 1024) {
        // a slow consumer: stop reading for a while; the sender must run out of credit and wait
        stalled = true;
        const before = senderStats?.bytesSent ?? 0;
        await new Promise((r) => setTimeout(r, 300));
        const during = (senderStats?.bytesSent ?? 0) - before;
        assert.ok(
          during <= DEFAULT_WINDOW,
          `sender kept sending ${during} bytes while the reader was stalled`,
        );
      }
    }
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    assert.equal(n, total);
    assert.equal(got.digest("hex"), sent.digest("hex"));
    assert.ok(senderStats);
    assert.ok(senderStats.maxInFlight <= DEFAULT_WINDOW, `in flight ${senderStats.maxInFlight}`);
    assert.ok(senderStats.creditWaits > 0, "the sender never had to wait for credit");
    assert.ok(s.stats.maxBuffered <= DEFAULT_WINDOW, `receiver buffered ${s.stats.maxBuffered}`);
    console.log(
      `# 100 MB in ${secs.toFixed(2)} s = ${(total / 1048576 / secs).toFixed(0)} MiB/s; credit waits ${senderStats.creditWaits}, max in flight ${senderStats.maxInFlight}`,
    );
    await conn.close();
  });

  it("RPC round trip over a unix socket (measured)", async () => {
    const conn = await overUnixSocket({ ping: async () => details }, "rtt.sock");
    for (let i = 0; i < 200; i++) await conn.client.call("ping", {});
    const n = 2000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await conn.client.call("ping", {});
    const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
    console.log(`# ping round trip over a unix socket: ${us.toFixed(1)} µs`);
    assert.ok(us < 5000);
    await conn.close();
  });

  it("destroying a stream resets it on the other side; the connection closing ends every stream", async () => {
    let guestStream: import("../../src/agent").AgentStream | undefined;
    const { client, session } = pair({
      execProcess: async (req, ctx) => {
        guestStream = ctx.stream(req.stdio.stdout);
        return { guestPid: 1 };
      },
    });
    const a = client.openStream();
    const b = client.openStream();
    const stdio = { terminal: false, stdin: 0, stdout: a.id, stderr: 0 };
    await client.call("execProcess", {
      containerId: "c",
      execId: "e",
      process: { args: ["x"], cwd: "/", user: { uid: 0, gid: 0 } },
      stdio,
    });
    const closed = new Promise((r) => guestStream?.on("close", r));
    a.destroy();
    await closed;
    assert.equal(guestStream?.destroyed, true);
    const bClosed = new Promise((r) => b.on("close", r));
    session.close();
    await bClosed;
    assert.match(String(b.abortError?.message), /connection closed/);
    assert.equal(b.destroyed, true);
  });
});
