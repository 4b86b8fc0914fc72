// The agent package's public surface: the contract (api.ts), the host client and the guest server.
// Wire types (frames, envelopes) stay inside src/agent/.
export * from "./api";
export { AgentStream, type ChannelOptions, DEFAULT_WINDOW, type StreamStats } from "./channel";
export {
  AgentClient,
  type CallOptions,
  type ConnectOptions,
  connectAgent,
  DEFAULT_CALL_TIMEOUT_MS,
} from "./client";
export {
  type AgentHandler,
  type AgentHandlers,
  AgentServer,
  type CallContext,
  Session,
  serve,
} from "./server";
export { AgentError, Code, codeName, MAX_MESSAGE } from "./wire";
