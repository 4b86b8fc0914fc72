// What the supervisor needs from the guest agent connection: typed RPCs (src/agent/api.ts) and the
// stdio streams of a process. The real implementation wraps the agent client over the VM's
// virtio-serial socket (VmAgent); tests of the relay logic plug in a host-process agent
// (test/support/hostagent.ts).
import type { Readable, Writable } from "node:stream";
import type { AgentMethod, AgentRequest, AgentResponse, StdioStreams } from "../agent/api";
import type { AgentClient } from "../agent/client";

export interface ProcessStdio {
  /** Stream ids to put in the createContainer / execProcess request. */
  streams: StdioStreams;
  /** Ending it closes the process's stdin (closeStdin). */
  stdin?: Writable;
  /** With a terminal: the pty's output. */
  stdout?: Readable;
  stderr?: Readable;
}

export interface StdioWanted {
  terminal: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

export interface SandboxAgent {
  request<M extends AgentMethod>(
    method: M,
    req: AgentRequest<M>,
    timeoutMs?: number,
  ): Promise<AgentResponse<M>>;
  /** Opens the streams for one process (before the request that names their ids). */
  openStdio(wanted: StdioWanted): ProcessStdio;
  /** Resolves when the connection is gone (the VM died or close() was called). */
  readonly closed: Promise<void>;
  close(): void;
}

/** The real agent: the guest agent behind the VM's virtio-serial socket, over the ttrpc client. */
export class VmAgent implements SandboxAgent {
  readonly closed: Promise<void>;
  private end!: () => void;

  constructor(private readonly client: AgentClient) {
    this.closed = new Promise<void>((r) => {
      this.end = r;
    });
    client.onClose(() => this.end());
  }

  request<M extends AgentMethod>(
    method: M,
    req: AgentRequest<M>,
    timeoutMs?: number,
  ): Promise<AgentResponse<M>> {
    return this.client.call(method, req, timeoutMs === undefined ? {} : { timeoutMs });
  }

  openStdio(w: StdioWanted): ProcessStdio {
    const stdin = w.stdin ? this.client.openStream() : undefined;
    const stdout = w.stdout ? this.client.openStream() : undefined;
    const stderr = w.stderr && !w.terminal ? this.client.openStream() : undefined;
    return {
      streams: {
        terminal: w.terminal,
        stdin: stdin?.id ?? 0,
        stdout: stdout?.id ?? 0,
        stderr: stderr?.id ?? 0,
      },
      stdin,
      stdout,
      stderr,
    };
  }

  close(): void {
    this.client.close();
    this.end();
  }
}

/** Connects to the guest agent on a unix socket (the VM's, or a test agent's). */
export async function connectVmAgent(socketPath: string, timeoutMs: number): Promise<SandboxAgent> {
  // Loaded here, not at the top: a supervisor whose test boot replaces the VM never needs the wire code.
  const { AgentClient } = await import("../agent/client");
  return new VmAgent(await AgentClient.connect(socketPath, { timeoutMs }));
}
