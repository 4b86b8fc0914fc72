// ttrpc's own messages, the payloads of request and response frames (Go ttrpc's request.proto and
// google.rpc.Status), described to protobufjs here so that ttrpc needs no .proto file at run time:
//
//   message Request  { string service = 1; string method = 2; bytes payload = 3;
//                      int64 timeout_nano = 4; repeated KeyValue metadata = 5; }
//   message KeyValue { string key = 1; string value = 2; }
//   message Response { google.rpc.Status status = 1; bytes payload = 2; }
//   google.rpc.Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
import { Root, type Type } from "protobufjs";
import type { StatusDetail } from "./status";

const root = Root.fromJSON({
  nested: {
    ttrpc: {
      nested: {
        Request: {
          fields: {
            service: { type: "string", id: 1 },
            method: { type: "string", id: 2 },
            payload: { type: "bytes", id: 3 },
            timeout_nano: { type: "int64", id: 4 },
            metadata: { rule: "repeated", type: "KeyValue", id: 5 },
          },
        },
        KeyValue: { fields: { key: { type: "string", id: 1 }, value: { type: "string", id: 2 } } },
        Response: {
          fields: { status: { type: "google.rpc.Status", id: 1 }, payload: { type: "bytes", id: 2 } },
        },
      },
    },
    google: {
      nested: {
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: "int32", id: 1 },
                message: { type: "string", id: 2 },
                details: { rule: "repeated", type: "google.protobuf.Any", id: 3 },
              },
            },
          },
        },
        protobuf: {
          nested: {
            Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } },
          },
        },
      },
    },
  },
});
const RequestType = root.lookupType("ttrpc.Request");
const ResponseType = root.lookupType("ttrpc.Response");

export interface TtrpcRequest {
  service: string;
  method: string;
  payload: Uint8Array;
  /** Nanoseconds the caller will wait; 0 = no deadline. */
  timeoutNano: number;
  /** In order; a key may repeat (Go's MD is key → values). */
  metadata: { key: string; value: string }[];
}

export interface TtrpcResponse {
  status: { code: number; message: string; details: StatusDetail[] };
  payload: Uint8Array;
}

const EMPTY = new Uint8Array(0);
const asNumber = { longs: Number, defaults: true, arrays: true } as const;

function encodeWith(t: Type, obj: object): Buffer {
  const b = t.encode(t.fromObject(obj)).finish();
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

export function encodeRequest(r: TtrpcRequest): Buffer {
  return encodeWith(RequestType, {
    service: r.service,
    method: r.method,
    payload: r.payload,
    timeout_nano: r.timeoutNano,
    metadata: r.metadata,
  });
}

/** Throws protobufjs's error on bytes that are not a Request. */
export function decodeRequest(b: Uint8Array): TtrpcRequest {
  const o = RequestType.toObject(RequestType.decode(b), asNumber);
  return {
    service: o.service,
    method: o.method,
    payload: o.payload ?? EMPTY,
    timeoutNano: o.timeout_nano,
    metadata: o.metadata.map((kv: { key: string; value: string }) => ({ key: kv.key, value: kv.value })),
  };
}

export function encodeResponse(r: TtrpcResponse): Buffer {
  return encodeWith(ResponseType, r);
}

export function decodeResponse(b: Uint8Array): TtrpcResponse {
  const o = ResponseType.toObject(ResponseType.decode(b), asNumber);
  const st = o.status ?? {};
  return {
    status: { code: st.code ?? 0, message: st.message ?? "", details: st.details ?? [] },
    payload: o.payload ?? EMPTY,
  };
}
