// The ttrpc package's public surface: containerd's ttrpc protocol (client, server) and the protobuf
// schemas in proto/ (containerd 1.6's shim v2 API, task events, cgroup metrics). Framing and the
// Request/Response envelopes stay inside src/ttrpc/.
export { type CallOptions, type ClientOptions, TtrpcClient } from "./client";
export {
  type AnyMessage,
  DECODE_OPTIONS,
  decode,
  encode,
  findProtoDir,
  fromTimestamp,
  messageType,
  type ProtoObject,
  ProtoSchema,
  packAny,
  packJsonAny,
  SPEC_TYPE_URLS,
  schema,
  type Timestamp,
  timestamp,
  unpackAny,
} from "./proto";
export {
  type CallContext,
  type MethodSpec,
  type ServerOptions,
  type ServiceSpec,
  TtrpcServer,
} from "./server";
export { Code, type CodeNumber, codeName, type StatusDetail, statusOf, TtrpcError } from "./status";
