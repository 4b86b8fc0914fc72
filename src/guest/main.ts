// The guest agent (bundled to dist/kata-agent.cjs; started by the guest init as
// `node /opt/kata-ts/kata-agent.cjs`, see docs/protocol.md). It serves src/agent/api.ts on the
// virtio-serial port named $KATA_TS_AGENT_PORT (or, for tests on the host, on the unix socket
// $KATA_TS_AGENT_SOCKET) by running the container engine in the guest. Logs go to stderr (the console).
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { release } from "node:os";
import type { Duplex } from "node:stream";
import { AGENT_PORT_NAME, type GuestDetails } from "../agent/api";
import { type AgentHandlers, serve } from "../agent/server";
import { VERSION } from "../version";
import { ContainerManager, DEFAULT_STATE_ROOT } from "./containers";
import { adoptClone } from "./identity";
import { GuestNetwork } from "./network";
import { findPort, readsSettled, servePort } from "./port";
import { warmUp } from "./warmup";

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

/** Resolves when every session has written out what it buffered (the last answers). */
async function flushed(sessions: Set<Duplex>): Promise<void> {
  while ([...sessions].some((io) => !io.destroyed && io.writableLength > 0))
    await new Promise((r) => setTimeout(r, 2));
}

/** true when `p` settled within `ms`. */
function within(ms: number, p: Promise<unknown>): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    p.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function main(): Promise<void> {
  const env = process.env;
  const manager = new ContainerManager({
    stateRoot: env.KATA_TS_AGENT_STATE || DEFAULT_STATE_ROOT,
    log,
    spareHelper: true,
  });
  let stop: () => void = () => {};
  const details: GuestDetails = {
    kernelRelease: release(),
    bootId: bootId(),
    agentVersion: VERSION.version,
    readyAt: 0,
    codeCache: (globalThis as { kataTsCodeCache?: GuestDetails["codeCache"] }).kataTsCodeCache ?? "none",
    nodeFlags: process.execArgv,
  };
  const net = new GuestNetwork();
  const sessions = new Set<Duplex>();
  let stopping = false;
  // Shutdown: the answer is out first, then cleanup, sync and exit; the init powers the VM off when we
  // exit (whatever our status). Every step is bounded so a stuck umount cannot keep the VM up.
  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await within(1000, flushed(sessions));
    const cleaned = await within(
      10_000,
      manager.removeAll().catch((err) => log(`cleanup: ${(err as Error).message}`)),
    );
    if (!cleaned) log("cleanup did not finish in 10 s: going on");
    rmSync(manager.stateRoot, { recursive: true, force: true });
    stop();
    if (env.KATA_TS_AGENT_SOCKET) process.exit(code);
    try {
      execFileSync("sync", { timeout: 5000 });
    } catch {
      // sync failed or timed out: the power-off goes ahead anyway
    }
    // Node's exit joins the thread pool, and a pool thread stays blocked in read() on the port while the
    // host is connected: a clean exit only once the host hung up (the supervisor closes its end after
    // the answer). If it stays connected, end hard: nothing is left to flush, and the init powers off
    // on any exit of ours.
    if (await readsSettled(2000)) {
      log("shutdown complete");
      process.exit(code);
    }
    log("shutdown complete (the host is still connected: ending hard)");
    process.kill(process.pid, "SIGKILL");
  };
  const handlers: AgentHandlers = {
    ping: async () => details,
    spareHelper: async () => ({ spare: manager.spareNow() }),
    adoptClone: async (req) => {
      const adopted = adoptClone(req);
      manager.adoptedClone();
      return adopted;
    },
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
    updateInterface: (req) => net.updateInterface(req),
    updateRoutes: async (req) => ({ routes: await net.updateRoutes(req.routes ?? []) }),
    updateNetwork: (req) => net.updateNetwork({ interfaces: req.interfaces ?? [], routes: req.routes ?? [] }),
    listInterfaces: async () => ({ interfaces: await net.listInterfaces() }),
    listRoutes: async () => ({ routes: await net.listRoutes() }),
    shutdown: async () => {
      // answer first (shutdown waits for it to be written), then clean up and exit
      setImmediate(() => shutdown(0));
      return {};
    },
  };
  const onError = (method: string, err: Error) => log(`${method}: ${err.message}`);
  const session = (io: Duplex) => {
    sessions.add(io);
    const s = serve(io, handlers, { onError });
    return s.closed.finally(() => sessions.delete(io));
  };
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => shutdown(0));

  if (env.KATA_TS_AGENT_WARMUP === "1") {
    // The build, for the code cache: exercise the first container's paths and leave.
    await warmUp({ ping: handlers.ping });
    process.exit(0);
  }
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
  setImmediate(() => manager.refillSpare());
  // Where boot time goes under TCG: the guest's uptime vs the agent's own (node start included).
  log(
    `ready at guest uptime ${details.readyAt.toFixed(2)} s, ${process.uptime().toFixed(2)} s after node started`,
  );
}

main().catch((err) => {
  log(`fatal: ${(err as Error).message}`);
  process.exit(1);
});
