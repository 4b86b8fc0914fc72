// QmpClient against a fake QMP server on a unix socket: negotiation, ids, errors, timeouts, events,
// framing across chunks, and what happens when QEMU goes away.
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { QmpClient, QmpError } from "../../src/hypervisor/qemu/qmp";
import { tempDir } from "../helpers";

const GREETING = {
  QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: "Debian" }, capabilities: ["oob"] },
};

interface Cmd {
  execute: string;
  id?: string;
  arguments?: Record<string, unknown>;
}

type Handler = (cmd: Cmd, reply: (msg: object) => void, sock: Socket) => void;

/** A QMP server speaking just enough protocol; `handler` decides each answer. Records every command. */
function fakeQmp(path: string, handler: Handler, opts: { greet?: boolean } = {}) {
  const seen: Cmd[] = [];
  const server: Server = createServer((sock) => {
    const send = (m: object) => sock.write(`${JSON.stringify(m)}\r\n`);
    if (opts.greet !== false) send(GREETING);
    let buf = "";
    sock.on("data", (d) => {
      buf += d.toString();
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const cmd = JSON.parse(buf.slice(0, i)) as Cmd;
        buf = buf.slice(i + 1);
        seen.push(cmd);
        if (cmd.execute === "qmp_capabilities") send({ return: {}, id: cmd.id });
        else handler(cmd, send, sock);
      }
    });
    sock.on("error", () => {});
  });
  return {
    seen,
    listen: () => new Promise<void>((r) => server.listen(path, r)),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const tmp = tempDir("kata-ts-qmp-");
after(() => tmp.cleanup());
let n = 0;
const sockPath = () => join(tmp.path, `q${n++}.sock`);

async function withServer(handler: Handler, fn: (c: QmpClient, seen: Cmd[]) => Promise<void>) {
  const path = sockPath();
  const srv = fakeQmp(path, handler);
  await srv.listen();
  const c = await QmpClient.connect(path, { commandTimeoutMs: 2000 });
  try {
    await fn(c, srv.seen);
  } finally {
    c.close();
    await srv.close();
  }
}

describe("QmpClient", () => {
  test("connect reads the greeting and negotiates capabilities before anything else", async () => {
    await withServer(
      () => {},
      async (c, seen) => {
        assert.deepEqual(c.greeting, GREETING);
        assert.equal(seen.length, 1);
        assert.equal(seen[0].execute, "qmp_capabilities");
      },
    );
  });

  test("execute: unique ids, arguments passed, answers matched by id even out of order", async () => {
    const held: { cmd: Cmd; reply: (m: object) => void }[] = [];
    await withServer(
      (cmd, reply) => {
        held.push({ cmd, reply });
        if (held.length === 2) {
          // answer the second first
          held[1].reply({ return: { which: held[1].cmd.arguments?.n }, id: held[1].cmd.id });
          held[0].reply({ return: { which: held[0].cmd.arguments?.n }, id: held[0].cmd.id });
        }
      },
      async (c, seen) => {
        const [a, b] = await Promise.all([c.execute("echo", { n: 1 }), c.execute("echo", { n: 2 })]);
        assert.deepEqual(a, { which: 1 });
        assert.deepEqual(b, { which: 2 });
        const ids = seen.map((s) => s.id);
        assert.equal(new Set(ids).size, ids.length, "ids are unique");
        assert.deepEqual(seen[1].arguments, { n: 1 });
      },
    );
  });

  test("query-status, stop/cont, device_add map to their QMP commands", async () => {
    await withServer(
      (cmd, reply) => {
        if (cmd.execute === "query-status")
          reply({ return: { status: "running", running: true }, id: cmd.id });
        else reply({ return: {}, id: cmd.id });
      },
      async (c, seen) => {
        assert.deepEqual(await c.queryStatus(), { status: "running", running: true });
        await c.pause();
        await c.resume();
        await c.deviceAdd({ driver: "virtio-blk-pci", id: "d1", drive: "x" });
        assert.deepEqual(
          seen.slice(1).map((s) => s.execute),
          ["query-status", "stop", "cont", "device_add"],
        );
        assert.deepEqual(seen[4].arguments, { driver: "virtio-blk-pci", id: "d1", drive: "x" });
      },
    );
  });

  test("an error answer rejects with QmpError carrying class and description", async () => {
    await withServer(
      (cmd, reply) => reply({ error: { class: "DeviceNotFound", desc: "Device 'x' not found" }, id: cmd.id }),
      async (c) => {
        await assert.rejects(c.execute("device_del", { id: "x" }), (err: unknown) => {
          assert.ok(err instanceof QmpError);
          assert.equal(err.errorClass, "DeviceNotFound");
          assert.equal(err.message, "qmp: device_del: Device 'x' not found");
          return true;
        });
      },
    );
  });

  test("a command without an answer times out; its late answer is ignored, the next command works", async () => {
    let late: (() => void) | undefined;
    await withServer(
      (cmd, reply) => {
        if (cmd.execute === "slow") late = () => reply({ return: "late", id: cmd.id });
        else reply({ return: "ok", id: cmd.id });
      },
      async (c) => {
        await assert.rejects(c.execute("slow", undefined, 100), /qmp: slow: no answer within 100 ms/);
        late?.();
        assert.equal(await c.execute("fast"), "ok");
      },
    );
  });

  test("framing: two messages in one chunk, one message split across chunks", async () => {
    await withServer(
      (cmd, _reply, sock) => {
        const a = JSON.stringify({ event: "RESUME", timestamp: { seconds: 1, microseconds: 2 } });
        const b = JSON.stringify({ return: { done: true }, id: cmd.id });
        sock.write(`${a}\r\n${b.slice(0, 7)}`);
        setTimeout(() => sock.write(`${b.slice(7)}\r\n`), 20);
      },
      async (c) => {
        const events: string[] = [];
        c.on("event", (e) => events.push(e.event));
        assert.deepEqual(await c.execute("x"), { done: true });
        assert.deepEqual(events, ["RESUME"]);
      },
    );
  });

  test("events: emitted as 'event' and by name; waitEvent filters by data; times out", async () => {
    await withServer(
      (cmd, reply) => {
        reply({ return: {}, id: cmd.id });
        reply({ event: "DEVICE_DELETED", data: { device: "other" } });
        reply({ event: "DEVICE_DELETED", data: { device: "d1", path: "/machine/peripheral/d1" } });
        reply({ event: "STOP" });
      },
      async (c) => {
        const named: unknown[] = [];
        c.on("STOP", (d) => named.push(d ?? "no-data"));
        const stop = c.waitEvent("STOP", 1000);
        const deleted: unknown[] = [];
        c.on("DEVICE_DELETED", (d: { device: string }) => deleted.push(d.device));
        await c.deviceDel("d1", 1000); // resolves only on d1's DEVICE_DELETED, not on "other"'s
        assert.deepEqual(deleted, ["other", "d1"]);
        await stop;
        assert.deepEqual(named, ["no-data"]);
        await assert.rejects(c.waitEvent("SHUTDOWN", 50), /no SHUTDOWN event within 50 ms/);
      },
    );
  });

  test("quit resolves when QEMU closes the socket without answering; pending commands are rejected", async () => {
    await withServer(
      (cmd, _reply, sock) => {
        if (cmd.execute === "quit") sock.end();
      },
      async (c) => {
        const pending = c.execute("hangs");
        pending.catch(() => {});
        let closed = false;
        c.on("close", () => {
          closed = true;
        });
        await c.quit(1000);
        assert.equal(closed, true);
        assert.equal(c.isClosed, true);
        await assert.rejects(pending, /qmp: hangs: connection closed/);
        await assert.rejects(c.execute("after"), /connection closed/);
      },
    );
  });

  test("connect errors name the socket: no server; no greeting in time", async () => {
    const missing = sockPath();
    await assert.rejects(QmpClient.connect(missing, { timeoutMs: 500 }), (err: Error) => {
      assert.ok(err.message.startsWith(`qmp: ${missing}: `));
      assert.match(err.message, /ENOENT/);
      return true;
    });
    const path = sockPath();
    const mute = fakeQmp(path, () => {}, { greet: false });
    await mute.listen();
    await assert.rejects(QmpClient.connect(path, { timeoutMs: 100 }), /no greeting within 100 ms/);
    await mute.close();
  });
});
