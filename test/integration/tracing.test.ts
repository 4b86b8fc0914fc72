// Tracing: with enable_tracing = true every verb exports a root span named after it, tagged with the
// container id, as OTLP/HTTP JSON; a collector that never answers does not hold the CLI up.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { BIN, tempDir } from "../helpers";

const tmp = tempDir();
const received: unknown[] = [];
let collector: Server;
let hanging: Server;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => resolve(body));
  });
}

function runCli(args: string[]): Promise<{ code: number; stderr: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c) => {
      stderr += c;
    });
    child.on("close", (code) => resolve({ code: code ?? 1, stderr, ms: Date.now() - t0 }));
  });
}

before(async () => {
  collector = createServer(async (req, res) => {
    received.push({ url: req.url, type: req.headers["content-type"], body: JSON.parse(await readBody(req)) });
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
  hanging = createServer(() => {}); // accepts, never answers
  const listen = (s: Server) => new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  await listen(collector);
  await listen(hanging);
});

after(() => {
  collector.close();
  hanging.closeAllConnections();
  hanging.close();
  tmp.cleanup();
});

function config(name: string, server: Server): string {
  const port = (server.address() as AddressInfo).port;
  const path = join(tmp.path, name);
  writeFileSync(
    path,
    `[runtime]\nhypervisor = "none"\nenable_tracing = true\notlp_endpoint = "http://127.0.0.1:${port}/v1/traces"\n`,
  );
  return path;
}

it("exports a root span named after the verb with the container id", async () => {
  const r = await runCli([
    "--root",
    join(tmp.path, "root"),
    "--config",
    config("c1.toml", collector),
    "state",
    "ghost",
  ]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'container "ghost" does not exist\n');
  assert.equal(received.length, 1);
  interface OtlpSpan {
    name: string;
    traceId: string;
    attributes: unknown[];
    status: { code: number; message?: string };
    startTimeUnixNano: string;
    endTimeUnixNano: string;
  }
  const { url, type, body } = received[0] as {
    url: string;
    type: string;
    body: { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
  };
  assert.equal(url, "/v1/traces");
  assert.equal(type, "application/json");
  const spans = body.resourceSpans[0].scopeSpans[0].spans;
  const root = spans.find((s) => s.name === "state");
  assert.ok(root, `no span named state in ${JSON.stringify(spans)}`);
  assert.deepEqual(root.attributes, [{ key: "container", value: { stringValue: "ghost" } }]);
  assert.equal(root.status.code, 2);
  assert.match(root.status.message ?? "", /does not exist/);
  assert.match(root.traceId, /^[0-9a-f]{32}$/);
  assert.ok(BigInt(root.endTimeUnixNano) >= BigInt(root.startTimeUnixNano));
});

it("a collector that never answers costs at most the flush deadline", async () => {
  const r = await runCli(["--root", join(tmp.path, "root"), "--config", config("c2.toml", hanging), "list"]);
  assert.equal(r.code, 0);
  assert.ok(r.ms < 3000, `took ${r.ms} ms`);
});
