// The guest agent (bundled to dist/kata-agent.cjs; started by the guest init as
// `node /opt/kata-ts/kata-agent.cjs`, see docs/protocol.md). It serves src/agent/api.ts on the
// virtio-serial port named $KATA_TS_AGENT_PORT (or, for tests on the host, on the unix socket
// $KATA_TS_AGENT_SOCKET) by running the container engine in the guest. Logs go to stderr (the console).
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { release } from "node:os";
import type { Duplex } from "node:stream";
import { AGENT_PORT_NAME, type GuestDetails } from "../../agent/api";
import { type AgentHandlers, serve } from "../../agent/server";
import { VERSION } from "../../version";
import { ContainerManager, DEFAULT_STATE_ROOT } from "./containers";
import { findPort, servePort } from "./port";

function log(msg: string): void {
  process.stderr.write(`kata-ts-agent: ${msg}\n`);
}

function uptime(): number {
  try {
    return Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]);
  } catch {
    return 0;
  }
}

function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

async function main(): Promise<void> {
  const env = process.env;
  const manager = new ContainerManager({ stateRoot: env.KATA_TS_AGENT_STATE || DEFAULT_STATE_ROOT, log });
  let stop: () => void = () => {};
  const details: GuestDetails = {
    kernelRelease: release(),
    bootId: bootId(),
    agentVersion: VERSION.version,
    readyAt: 0,
  };
  const shutdown = async (code: number) => {
    await manager.removeAll().catch((err) => log(`cleanup: ${(err as Error).message}`));
    rmSync(manager.stateRoot, { recursive: true, force: true });
    stop();
    if (env.KATA_TS_AGENT_SOCKET) process.exit(code);
    try {
      execFileSync("sync");
    } catch {}
    log("shutdown complete");
    // A thread-pool thread is blocked in read() on the port while the host stays connected, and Node's
    // exit joins the thread pool: exit() would hang. Nothing is left to flush, so end hard; the init
    // powers the VM off whatever our status.
    process.kill(process.pid, "SIGKILL");
  };
  const handlers: AgentHandlers = {
    ping: async () => details,
    addMount: async (m) => {
      await manager.addMount(m);
      return {};
    },
    createContainer: (req, ctx) => manager.createContainer(req, ctx.stream),
    startContainer: async (req) => {
      await manager.startContainer(req);
      return {};
    },
    execProcess: (req, ctx) => manager.execProcess(req, ctx.stream),
    signalProcess: async (req) => {
      await manager.signalProcess(req);
      return {};
    },
    waitProcess: (req) => manager.waitProcess(req),
    closeStdin: async (req) => {
      await manager.closeStdin(req);
      return {};
    },
    resizeTerminal: async (req) => {
      await manager.resizeTerminal(req);
      return {};
    },
    pauseContainer: async (req) => {
      await manager.pause(req);
      return {};
    },
    resumeContainer: async (req) => {
      await manager.resume(req);
      return {};
    },
    updateContainer: async (req) => {
      await manager.update(req);
      return {};
    },
    statsContainer: (req) => manager.stats(req),
    listProcesses: (req) => manager.listProcesses(req),
    removeContainer: async (req) => {
      await manager.removeContainer(req);
      return {};
    },
    shutdown: async () => {
      // answer first, then clean up and exit (the init powers the VM off when we exit)
      setTimeout(() => shutdown(0), 10);
      return {};
    },
  };
  const onError = (method: string, err: Error) => log(`${method}: ${err.message}`);
  const session = (io: Duplex) => {
    const s = serve(io, handlers, { onError });
    return s.closed;
  };
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => shutdown(0));

  if (env.KATA_TS_AGENT_SOCKET) {
    // Tests only: serve every connection on a unix socket we listen on.
    const path = env.KATA_TS_AGENT_SOCKET;
    rmSync(path, { force: true });
    const server = createServer((sock: Socket) => {
      session(sock);
    });
    await new Promise<void>((resolve, reject) => server.listen(path, resolve).once("error", reject));
    stop = () => {
      server.close();
      rmSync(path, { force: true });
    };
    log(`serving on ${path}`);
  } else {
    const device = findPort(env.KATA_TS_AGENT_PORT || AGENT_PORT_NAME);
    const port = servePort(device, session);
    stop = () => port.close();
    log(`serving on ${device}`);
  }
  details.readyAt = uptime();
}

main().catch((err) => {
  log(`fatal: ${(err as Error).message}`);
  process.exit(1);
});
