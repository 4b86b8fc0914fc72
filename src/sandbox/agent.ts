// What the supervisor needs from the guest agent connection: typed RPCs (src/agent/api.ts) and the
// stdio streams of a process. The real implementation wraps the agent client over the VM's
// virtio-serial socket; tests of the relay logic plug in a host-process agent (./hostagent).
import type { Readable, Writable } from "node:stream";
import type { AgentMethod, AgentRequest, AgentResponse, StdioStreams } from "../agent/api";

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

/** The real agent: the guest agent behind the VM's virtio-serial socket. */
export async function connectVmAgent(socketPath: string, timeoutMs: number): Promise<SandboxAgent> {
  // Loaded here, not at the top: the host-agent test path must not need the wire code.
  const { AgentClient } = await import("../agent/client");
  const client = await AgentClient.connect(socketPath, { timeoutMs });
  let end!: () => void;
  const closed = new Promise<void>((r) => {
    end = r;
  });
  client.onClose(() => end());
  return {
    closed,
    request: (method, req, t) => client.call(method, req, t === undefined ? {} : { timeoutMs: t }),
    openStdio(w: StdioWanted): ProcessStdio {
      const stdin = w.stdin ? client.openStream() : undefined;
      const stdout = w.stdout ? client.openStream() : undefined;
      const stderr = w.stderr && !w.terminal ? client.openStream() : undefined;
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
    },
    close() {
      client.close();
      end();
    },
  };
}
