// The host end of the agent channel: `AgentClient.connect(socketPath)` dials the QEMU chardev's unix
// socket (retrying until QEMU listens and the guest agent answers `ping`), `call()` runs one RPC,
// `openStream()` makes a stdio stream whose id goes into createContainer/execProcess requests.
import { connect as netConnect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { AgentMethod, AgentRequest, AgentResponse } from "./api";
import { type AgentStream, Channel, type ChannelOptions } from "./channel";
import {
  AGENT_SERVICE,
  AgentError,
  CONTENT_TYPE_KEY,
  Code,
  decodePayload,
  encodePayload,
  JSON_CONTENT_TYPE,
} from "./wire";

/** Calls without an explicit timeout get this one, except those that may legitimately take long. */
export const DEFAULT_CALL_TIMEOUT_MS = 60_000;
const NO_DEFAULT_TIMEOUT: ReadonlySet<AgentMethod> = new Set(["waitProcess"]);

export interface ConnectOptions extends ChannelOptions {
  /** Give up after this long (connect + first successful ping). Default 30 s. */
  timeoutMs?: number;
  /** Default per-call timeout (0 = none). */
  callTimeoutMs?: number;
}

export interface CallOptions {
  /** 0 = wait forever. Default: DEFAULT_CALL_TIMEOUT_MS (none for waitProcess). */
  timeoutMs?: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function dial(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect(path);
    s.once("connect", () => {
      s.removeAllListeners("error");
      resolve(s);
    });
    s.once("error", (err) => {
      s.destroy();
      reject(err);
    });
  });
}

export class AgentClient {
  private readonly channel: Channel;
  private readonly callTimeoutMs: number;

  constructor(io: Duplex, opts: ConnectOptions = {}) {
    this.channel = new Channel(io, opts);
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  /**
   * Connects to the agent behind a unix socket. QEMU may not listen yet and the guest agent may not
   * have opened its port yet (QEMU holds our bytes until it does), so both are retried until the first
   * `ping` answers or the deadline passes.
   */
  static async connect(socketPath: string, opts: ConnectOptions = {}): Promise<AgentClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    let lastError = "no attempt made";
    let attempt = 200;
    while (Date.now() < deadline) {
      let sock: Socket;
      try {
        sock = await dial(socketPath);
      } catch (err) {
        lastError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        await sleep(20);
        continue;
      }
      const client = new AgentClient(sock, opts);
      while (!client.closed && Date.now() < deadline) {
        try {
          await client.call("ping", {}, { timeoutMs: Math.max(1, Math.min(attempt, deadline - Date.now())) });
          return client;
        } catch (err) {
          lastError = (err as Error).message;
          // Unanswered pings stay queued; answers to timed-out ones are ignored. Back off.
          attempt = Math.min(attempt * 2, 2000);
          if (err instanceof AgentError && err.code === Code.unavailable) break;
          // Anything else is an answer: the agent is there but refuses.
          if (err instanceof AgentError && err.code !== Code.deadlineExceeded) {
            client.close();
            throw new Error(`connect to the agent at ${socketPath}: ping: ${err.message}`);
          }
        }
      }
      client.close();
      await sleep(20);
    }
    throw new Error(`connect to the agent at ${socketPath}: ${lastError}`);
  }

  get closed(): boolean {
    return this.channel.closed;
  }

  /** Runs one RPC; a non-OK status rejects with an AgentError carrying the status code and message. */
  async call<M extends AgentMethod>(
    method: M,
    req: AgentRequest<M>,
    opts: CallOptions = {},
  ): Promise<AgentResponse<M>> {
    const timeoutMs = opts.timeoutMs ?? (NO_DEFAULT_TIMEOUT.has(method) ? 0 : this.callTimeoutMs);
    const res = await this.channel.request(
      {
        service: AGENT_SERVICE,
        method,
        payload: encodePayload(req),
        timeoutNano: BigInt(timeoutMs) * 1_000_000n,
        metadata: [[CONTENT_TYPE_KEY, JSON_CONTENT_TYPE]],
      },
      timeoutMs,
    );
    if (res.status.code !== Code.ok)
      throw new AgentError(res.status.code, res.status.message || `agent ${method} failed`);
    return decodePayload(res.payload) as AgentResponse<M>;
  }

  /** A new stdio stream: write = bytes to the guest (stdin), read = bytes from the guest (stdout/stderr). */
  openStream(): AgentStream {
    return this.channel.openStream();
  }

  onClose(fn: (err: Error) => void): void {
    this.channel.onClose(fn);
  }

  close(): void {
    this.channel.destroy();
  }
}

export const connectAgent = AgentClient.connect;
