// Tracing facade. Every CLI verb runs inside a root span named after it (attributes `container`,
// `sandbox`); library code opens child spans with `span(name, attrs, fn)` for its steps (boot VM,
// connect agent, create container, hooks). Spans are kept in memory and, only when
// `[runtime] enable_tracing = true`, exported at exit as OTLP/HTTP JSON (the OpenTelemetry wire format
// every collector accepts) with a short deadline, so a missing collector never slows the CLI. When
// tracing is off, `span()` is a direct call: no ids, no clocks, no async context.
import type { AsyncLocalStorage } from "node:async_hooks";
import { extraCaCertsFile } from "../nodeenv";

export type SpanAttributes = Record<string, string | number | boolean | undefined>;

export interface SpanRecord {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startNs: bigint;
  endNs?: bigint;
  attributes: SpanAttributes;
  error?: string;
}

export const DEFAULT_OTLP_ENDPOINT = "http://127.0.0.1:4318/v1/traces";

class Tracer {
  readonly finished: SpanRecord[] = [];
  private readonly context: AsyncLocalStorage<SpanRecord>;

  constructor(
    readonly endpoint: string,
    readonly serviceName: string,
  ) {
    const { AsyncLocalStorage: Als } = require("node:async_hooks") as typeof import("node:async_hooks");
    this.context = new Als<SpanRecord>();
  }

  current(): SpanRecord | undefined {
    return this.context.getStore();
  }

  run<T>(name: string, attributes: SpanAttributes, fn: () => T): T {
    const parent = this.current();
    const record: SpanRecord = {
      traceId: parent?.traceId ?? randomHex(16),
      spanId: randomHex(8),
      parentSpanId: parent?.spanId,
      name,
      startNs: nowNs(),
      attributes: { ...attributes },
    };
    const finish = (err?: unknown) => {
      record.endNs = nowNs();
      if (err !== undefined) record.error = err instanceof Error ? err.message : String(err);
      this.finished.push(record);
    };
    try {
      const result = this.context.run(record, fn);
      if (result instanceof Promise) {
        return result.then(
          (v) => {
            finish();
            return v;
          },
          (e) => {
            finish(e);
            throw e;
          },
        ) as T;
      }
      finish();
      return result;
    } catch (err) {
      finish(err);
      throw err;
    }
  }
}

let tracer: Tracer | undefined;

/** Turns tracing on for this process (called once the configuration says enable_tracing = true). */
export function enableTracing(opts: { endpoint?: string; serviceName?: string } = {}): void {
  tracer ??= new Tracer(opts.endpoint || DEFAULT_OTLP_ENDPOINT, opts.serviceName ?? "kata-ts");
}

export function tracingEnabled(): boolean {
  return tracer !== undefined;
}

/** Runs fn inside a span (a child of the current one); with tracing off, just runs fn. */
export function span<T>(name: string, attributes: SpanAttributes, fn: () => T): T {
  return tracer ? tracer.run(name, attributes, fn) : fn();
}

/** Adds attributes to the current span (e.g. the sandbox id once it is known). */
export function annotateSpan(attributes: SpanAttributes): void {
  const current = tracer?.current();
  if (current) Object.assign(current.attributes, attributes);
}

/** Renames the current span (the CLI's root span learns its verb from commander). */
export function renameSpan(name: string): void {
  const current = tracer?.current();
  if (current) current.name = name;
}

/** The finished spans, for tests and for export. */
export function finishedSpans(): readonly SpanRecord[] {
  return tracer?.finished ?? [];
}

/**
 * Sends the finished spans to the OTLP/HTTP endpoint; gives up silently after deadlineMs.
 * Returns true when the collector answered 2xx.
 */
export async function flushTracing(deadlineMs = 300): Promise<boolean> {
  if (!tracer || tracer.finished.length === 0) return false;
  const body = JSON.stringify(otlpPayload(tracer.finished, tracer.serviceName));
  tracer.finished.length = 0;
  const url = new URL(tracer.endpoint);
  const https = url.protocol === "https:";
  const http = require(https ? "node:https" : "node:http") as typeof import("node:http");
  return new Promise<boolean>((resolve) => {
    const req = http.request(
      url,
      {
        ...(https ? { ca: extraCa() } : {}),
        method: "POST",
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
        timeout: deadlineMs,
      },
      (res) => {
        res.resume();
        resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300);
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      resolve(false);
    }, deadlineMs);
    timer.unref();
    req.on("error", () => resolve(false));
    req.on("close", () => clearTimeout(timer));
    req.end(body);
  });
}

/** OTLP/HTTP JSON (opentelemetry-proto's ExportTraceServiceRequest in its JSON mapping). */
export function otlpPayload(spans: readonly SpanRecord[], serviceName: string): unknown {
  return {
    resourceSpans: [
      {
        resource: {
          attributes: attributesToOtlp({ "service.name": serviceName, "process.pid": process.pid }),
        },
        scopeSpans: [
          {
            scope: { name: "kata-ts" },
            spans: spans.map((s) => ({
              traceId: s.traceId,
              spanId: s.spanId,
              ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}),
              name: s.name,
              kind: 1, // SPAN_KIND_INTERNAL
              startTimeUnixNano: s.startNs.toString(),
              endTimeUnixNano: (s.endNs ?? s.startNs).toString(),
              attributes: attributesToOtlp(s.attributes),
              status: s.error ? { code: 2, message: s.error } : { code: 1 },
            })),
          },
        ],
      },
    ],
  };
}

function attributesToOtlp(attrs: SpanAttributes): unknown[] {
  const out: unknown[] = [];
  for (const [key, v] of Object.entries(attrs)) {
    if (v === undefined) continue;
    if (typeof v === "string") out.push({ key, value: { stringValue: v } });
    else if (typeof v === "boolean") out.push({ key, value: { boolValue: v } });
    else if (Number.isInteger(v)) out.push({ key, value: { intValue: String(v) } });
    else out.push({ key, value: { doubleValue: v } });
  }
  return out;
}

function randomHex(bytes: number): string {
  const { randomBytes } = require("node:crypto") as typeof import("node:crypto");
  return randomBytes(bytes).toString("hex");
}

// Wall-clock nanoseconds from a monotonic clock anchored once at the first use.
let clockBase: bigint | undefined;
function nowNs(): bigint {
  clockBase ??= BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  return clockBase + process.hrtime.bigint();
}

/**
 * The CAs an https export trusts: Node's own plus the NODE_EXTRA_CA_CERTS file that kata-ts's launcher
 * moved aside (src/nodeenv.ts), as Node would have trusted it; undefined (Node's default) otherwise.
 */
function extraCa(): string[] | undefined {
  const file = extraCaCertsFile();
  if (!file) return undefined;
  const { readFileSync } = require("node:fs") as typeof import("node:fs");
  const { rootCertificates } = require("node:tls") as typeof import("node:tls");
  try {
    return [...rootCertificates, readFileSync(file, "utf8")];
  } catch {
    return undefined; // as Node does with an unreadable file: its own CAs only
  }
}
