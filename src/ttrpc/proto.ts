// The protobuf schemas kata-ts speaks with containerd, loaded by reflection (protobufjs parses the .proto
// files at run time; nothing is generated): proto/ at the repository root holds containerd 1.6's shim v2
// Task service, its types, the task events, the ttrpc Events service and the cgroup metrics, written to
// be wire-compatible with containerd's (same packages, names and field numbers). google/protobuf/{any,
// empty,timestamp}.proto come from protobufjs (`protobuf.common`).
//
// Objects are plain JS, with the .proto's field names as written (keepCase: container_id, exec_id,
// type_url): 64-bit integers as Number (exact up to 2^53, and for 2^63-4096, cgroup v1's "no limit"),
// enums as numbers, bytes as Buffer, absent scalars as their defaults, absent messages as null.
//
// google.protobuf.Any and containerd's type URLs. containerd 1.6 packs and unpacks Any with
// github.com/containerd/typeurl v1.0.2, whose rules are:
//   - a protobuf message is packed with type_url = its bare full name, no prefix:
//     "containerd.events.TaskOOM", "io.containerd.cgroups.v1.Metrics", "containerd.runc.v1.Options";
//     unpacking looks that string up in the gogo registry by full name, so a prefixed URL
//     ("types.containerd.io/containerd.events.TaskOOM", "type.googleapis.com/...") does NOT unpack there
//     (`ctr events` drops such an event with "cannot unmarshal an event from Any": the integration test
//     checks both);
//   - Go types registered with typeurl.Register are JSON-encoded under the path they were registered
//     with; containerd 1.6 registers the runtime-spec ones (runtime/typeurl.go, client.go):
//     "types.containerd.io/opencontainers/runtime-spec/1/{Spec,Process,LinuxResources,WindowsResources}",
//     the value being the JSON of the Go struct (what config.json holds). ExecProcessRequest.spec is a
//     Process, UpdateTaskRequest.resources a LinuxResources.
// So packAny() writes the bare full name, packJsonAny() the registered URL with JSON, and unpackAny()
// reads the JSON URLs above, and for messages takes the name after the last "/" (so it also reads the
// prefixed forms other peers may send).
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { common, type IConversionOptions, parse, Root, type Type } from "protobufjs";
import { Code, TtrpcError } from "./status";

// biome-ignore lint/suspicious/noExplicitAny: decoded messages are free-form until a caller names its type
export type ProtoObject = Record<string, any>;

/** google.protobuf.Any as an object. */
export interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

/** google.protobuf.Timestamp as an object. */
export interface Timestamp {
  seconds: number;
  nanos: number;
}

/** The type URLs containerd 1.6 registers for JSON-encoded runtime-spec types (see the header). */
export const SPEC_TYPE_URLS = {
  Spec: "types.containerd.io/opencontainers/runtime-spec/1/Spec",
  Process: "types.containerd.io/opencontainers/runtime-spec/1/Process",
  LinuxResources: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
  WindowsResources: "types.containerd.io/opencontainers/runtime-spec/1/WindowsResources",
} as const;
const JSON_TYPE_URLS = new Set<string>(Object.values(SPEC_TYPE_URLS));

/** toObject options of every decode (see the header). */
export const DECODE_OPTIONS: IConversionOptions = { longs: Number, enums: Number, defaults: true };

/** A protobufjs Root with encode/decode by full message name and containerd's Any rules. */
export class ProtoSchema {
  constructor(readonly root: Root) {}

  /**
   * Parses every .proto file below `dir` (imports are paths relative to `dir`; google/protobuf/* come
   * from protobufjs) into one Root and resolves all references, so a typo fails here and not mid-call.
   */
  static fromDir(dir: string): ProtoSchema {
    const root = new Root();
    const files = protoFiles(dir);
    const known = new Set(files.map((f) => relative(dir, f).split(sep).join("/")));
    const google = new Set<string>();
    for (const file of files) {
      let parsed: ReturnType<typeof parse>;
      try {
        parsed = parse(readFileSync(file, "utf8"), root, { keepCase: true });
      } catch (err) {
        throw new Error(`${file}: ${(err as Error).message}`);
      }
      for (const imp of [...(parsed.imports ?? []), ...(parsed.weakImports ?? [])]) {
        if (common.get(imp)) google.add(imp);
        else if (!known.has(imp)) throw new Error(`${file}: import "${imp}" is not in ${dir}`);
      }
    }
    for (const imp of google) root.addJSON(common.get(imp)?.nested ?? {});
    root.resolveAll();
    return new ProtoSchema(root);
  }

  /** A schema from .proto source text (one file; google/protobuf/* imports allowed). */
  static fromSource(source: string): ProtoSchema {
    const root = new Root();
    const parsed = parse(source, root, { keepCase: true });
    for (const imp of parsed.imports ?? []) root.addJSON(common.get(imp)?.nested ?? {});
    root.resolveAll();
    return new ProtoSchema(root);
  }

  /** The message type by full name ("containerd.task.v2.CreateTaskRequest"); throws INTERNAL if unknown. */
  messageType(fullName: string): Type {
    try {
      return this.root.lookupType(fullName);
    } catch {
      throw new TtrpcError(Code.INTERNAL, `no protobuf message type ${fullName}`);
    }
  }

  /** Encodes a plain object; a field of the wrong type is an INVALID_ARGUMENT naming it. */
  encode(fullName: string, obj: object): Buffer {
    const t = this.messageType(fullName);
    const bad = t.verify(obj);
    if (bad) throw new TtrpcError(Code.INVALID_ARGUMENT, `${fullName}: ${bad}`);
    const b = t.encode(t.fromObject(obj)).finish();
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  }

  /** Decodes bytes into a plain object (DECODE_OPTIONS); malformed bytes are an INVALID_ARGUMENT. */
  decode<T = ProtoObject>(fullName: string, bytes: Uint8Array): T {
    const t = this.messageType(fullName);
    let msg: ReturnType<Type["decode"]>;
    try {
      msg = t.decode(bytes);
    } catch (err) {
      throw new TtrpcError(Code.INVALID_ARGUMENT, `${fullName}: ${(err as Error).message}`);
    }
    return t.toObject(msg, DECODE_OPTIONS) as T;
  }

  /** A message packed as containerd's typeurl does: type_url = the bare full name. */
  packAny(fullName: string, obj: object): AnyMessage {
    return { type_url: fullName, value: this.encode(fullName, obj) };
  }

  /**
   * The object inside an Any: JSON for the runtime-spec URLs, else the message named after the last "/"
   * of type_url. INVALID_ARGUMENT for a type this schema does not know.
   */
  unpackAny<T = ProtoObject>(any: AnyMessage): T {
    const url = any.type_url;
    if (JSON_TYPE_URLS.has(url)) {
      try {
        return JSON.parse(Buffer.from(any.value).toString("utf8")) as T;
      } catch (err) {
        throw new TtrpcError(Code.INVALID_ARGUMENT, `${url}: ${(err as Error).message}`);
      }
    }
    const name = url.slice(url.lastIndexOf("/") + 1);
    if (!name || !this.root.lookup(name))
      throw new TtrpcError(Code.INVALID_ARGUMENT, `cannot unpack an Any of type ${JSON.stringify(url)}`);
    return this.decode<T>(name, any.value);
  }
}

/** A JSON-encoded Any as containerd registers runtime-spec types (`SPEC_TYPE_URLS`). */
export function packJsonAny(typeUrl: string, value: unknown): AnyMessage {
  return { type_url: typeUrl, value: Buffer.from(JSON.stringify(value), "utf8") };
}

/** A Date (default now) as google.protobuf.Timestamp. */
export function timestamp(date: Date = new Date()): Timestamp {
  const ms = date.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1_000_000 };
}

/** A google.protobuf.Timestamp as a Date (millisecond precision). */
export function fromTimestamp(ts: Timestamp): Date {
  return new Date(ts.seconds * 1000 + Math.floor(ts.nanos / 1_000_000));
}

const MARKER = join("containerd", "task", "v2", "shim.proto");

/**
 * Where proto/ may be, in order: $KATA_TS_PROTO_DIR; next to the bundle (dist/*.cjs → ../proto); next to
 * the sources (src/ttrpc/proto.ts → ../../proto), for tests run through tsx.
 */
export function protoDirCandidates(from = __dirname, env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs = env.KATA_TS_PROTO_DIR ? [env.KATA_TS_PROTO_DIR] : [];
  dirs.push(join(from, "..", "proto"), join(from, "..", "..", "proto"));
  return dirs;
}

/** The first candidate holding containerd/task/v2/shim.proto. */
export function findProtoDir(from = __dirname, env: NodeJS.ProcessEnv = process.env): string {
  const dirs = protoDirCandidates(from, env);
  const dir = dirs.find((d) => existsSync(join(d, MARKER)));
  if (!dir) throw new Error(`the protobuf schemas (proto/${MARKER}) are not in ${dirs.join(", ")}`);
  return dir;
}

function protoFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...protoFiles(p));
    else if (e.name.endsWith(".proto")) out.push(p);
  }
  return out;
}

let loaded: ProtoSchema | undefined;

/** kata-ts's schemas (proto/), parsed on first use and kept for the process. */
export function schema(): ProtoSchema {
  loaded ??= ProtoSchema.fromDir(findProtoDir());
  return loaded;
}

export const messageType = (fullName: string): Type => schema().messageType(fullName);
export const encode = (fullName: string, obj: object): Buffer => schema().encode(fullName, obj);
export const decode = <T = ProtoObject>(fullName: string, bytes: Uint8Array): T =>
  schema().decode<T>(fullName, bytes);
export const packAny = (fullName: string, obj: object): AnyMessage => schema().packAny(fullName, obj);
export const unpackAny = <T = ProtoObject>(any: AnyMessage): T => schema().unpackAny<T>(any);
