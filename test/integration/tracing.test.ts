// Tracing: with enable_tracing = true every verb exports a root span named after it, tagged with the
// container id, as OTLP/HTTP JSON; a collector that never answers does not hold the CLI up.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { makeBundle } from "../conformance/bundle";
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

function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number; stderr: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"], env });
    let stderr = "";
    child.stderr.on("data", (c) => {
      stderr += c;
    });
    // 'exit', not 'close': a created container keeps the stdio it was given (the CLI's) open.
    child.on("exit", (code) =>
      setTimeout(() => resolve({ code: code ?? 1, stderr, ms: Date.now() - t0 }), 50),
    );
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

function config(name: string, server: Server, scheme = "http"): string {
  const port = (server.address() as AddressInfo).port;
  const path = join(tmp.path, name);
  writeFileSync(
    path,
    `[runtime]\nhypervisor = "none"\nenable_tracing = true\notlp_endpoint = "${scheme}://127.0.0.1:${port}/v1/traces"\n`,
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

it("create opens child spans for the engine and the hooks, tagged with the sandbox id", async () => {
  received.length = 0;
  const bundle = makeBundle({
    process: { args: ["true"] },
    hooks: { prestart: [{ path: "/bin/true" }], createRuntime: [{ path: "/bin/true" }] },
  });
  const conf = config("c3.toml", collector);
  const root = join(tmp.path, "root3");
  try {
    const r = await runCli(["--root", root, "--config", conf, "create", "--bundle", bundle.dir, "traced"]);
    assert.equal(r.code, 0, r.stderr);
    const spans = (
      received[0] as {
        body: {
          resourceSpans: {
            scopeSpans: {
              spans: {
                name: string;
                parentSpanId?: string;
                spanId: string;
                attributes: { key: string; value: { stringValue?: string } }[];
              }[];
            }[];
          }[];
        };
      }
    ).body.resourceSpans[0].scopeSpans[0].spans;
    const byName = new Map(spans.map((s) => [s.name, s]));
    for (const name of ["create", "engine.launch", "hooks.prestart", "hooks.createRuntime"])
      assert.ok(byName.has(name), `span ${name} in ${[...byName.keys()].join(", ")}`);
    const rootSpan = byName.get("create")!;
    assert.equal(byName.get("engine.launch")!.parentSpanId, rootSpan.spanId);
    assert.equal(byName.get("hooks.prestart")!.parentSpanId, byName.get("engine.launch")!.spanId);
    const attr = (s: typeof rootSpan, k: string) => s.attributes.find((a) => a.key === k)?.value.stringValue;
    assert.equal(attr(rootSpan, "container"), "traced");
    assert.equal(attr(rootSpan, "sandbox"), "traced");
  } finally {
    await runCli(["--root", root, "--config", conf, "delete", "--force", "traced"]);
    bundle.cleanup();
  }
});

it("an https collector signed by the CA in NODE_EXTRA_CA_CERTS gets the spans (the launcher moved the variable aside)", async () => {
  // A self-signed certificate for 127.0.0.1, trusted only through NODE_EXTRA_CA_CERTS.
  const key = join(tmp.path, "key.pem");
  const cert = join(tmp.path, "cert.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
      "-keyout",
      key,
      "-out",
      cert,
    ],
    { stdio: "ignore" },
  );
  const got: string[] = [];
  const tls = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, async (req, res) => {
    got.push(await readBody(req));
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
  await new Promise<void>((resolve) => tls.listen(0, "127.0.0.1", resolve));
  try {
    const conf = config("c4.toml", tls as unknown as Server, "https");
    const args = ["--root", join(tmp.path, "root4"), "--config", conf, "state", "ghost"];
    // Without the CA the collector is not trusted: nothing arrives (the probe that the CA matters).
    const untrusted = { ...process.env };
    delete untrusted.NODE_EXTRA_CA_CERTS;
    assert.equal((await runCli(args, untrusted)).code, 1);
    assert.equal(got.length, 0);
    const r = await runCli(args, { ...process.env, NODE_EXTRA_CA_CERTS: cert });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'container "ghost" does not exist\n', "no warning, one line");
    assert.equal(got.length, 1);
    assert.match(got[0], /"name":"state"/);
  } finally {
    tls.closeAllConnections();
    tls.close();
  }
});
