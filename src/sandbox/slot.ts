// A slot of the VM cache (src/factory/cache.ts): a sandbox supervisor started ahead of its sandbox,
// `kata-supervisor --cache-slot DIR [--config FILE]`, by the cache server (src/sandbox/cacheserver.ts).
//
// Idle, it holds a template clone whose agent has answered: QEMU runs in DIR/vm, the 9p share is DIR/shared
// (a shared-propagation mount of itself). It tells the server "ready" on fd 3, a socketpair it keeps
// open: when the server dies, fd 3 ends and an idle slot stops its clone and removes DIR. A `create` that
// took it from the server connects to DIR/slot.sock and sends one JSON line, its sandbox
// ({"root","sandboxId","netns"?}); from then on the slot is that sandbox's supervisor:
//   - it closes fd 3 (the server starts another slot) and moves itself and QEMU into the sandbox's cgroup
//     (then "joined", when the create asked for that line: it primes the move until then);
//   - the sandbox's shared/ becomes a bind of DIR/shared (one peer group: container mounts reach QEMU);
//   - the clone gets its identity (entropy, clock, hostname) and the supervisor serves as usual.
// It answers the `create` on the same connection as a supervisor answers on its fd 3: "warning: ..."
// lines, then "ok" or "error: ...". "refused: WHY" means this sandbox cannot use a cached VM (a pod with
// network interfaces: a clone has no NIC); the slot then stops and `create` starts a supervisor as usual.
// QEMU stays this process's child throughout (it dies with it: the parent-death signal holds).
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, Socket } from "node:net";
import { join } from "node:path";
import { processConfig } from "../config/config";
import { firstLine } from "../errors";
import {
  SANDBOX_SLOT_RECORD,
  SLOT_PID,
  SLOT_SANDBOX,
  SLOT_SOCKET,
  type SlotAssignment,
} from "../factory/cache";
import {
  cloneIdentity,
  findTemplate,
  templateAccel,
  templateRefusal,
  warmUpContainer,
} from "../factory/template";
import type { Vm } from "../hypervisor/driver";
import { ensureJailUser } from "../hypervisor/jail";
import { setupSandboxNetwork, teardownSandboxNetwork } from "../network";
import { processStartTime } from "../sys/proc";
import { connectVmAgent, type SandboxAgent } from "./agent";
import { JOINED_LINE, joinSandboxCgroup } from "./cgroup";
import { GUEST_SHARED_DIR, SHARE_TAG, sandboxPaths } from "./paths";
import { bindShare, guestShareMount, makeSharedMount, unmountTree } from "./share";
import { Supervisor, serveSandbox, type VmHandle } from "./supervisor";

/** A `create` that took the slot and never said which sandbox: the slot stays idle. */
const ASSIGNMENT_WAIT_MS = 10_000;

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

/** Runs a slot: `--cache-slot DIR [--config FILE]`. */
export async function runSlot(argv: string[]): Promise<void> {
  const dir = arg(argv, "--cache-slot") ?? "";
  const configPath = arg(argv, "--config");
  // The log follows the slot: its own directory while idle, the sandbox's once it has one.
  let logFile = join(dir, "supervisor.log");
  const log = (m: string) => {
    try {
      appendFileSync(logFile, `${new Date().toISOString()} ${m}\n`);
    } catch {
      // the directory is gone (we are stopping): nothing to log to
    }
  };
  const server = new Socket({ fd: 3, readable: true, writable: true });
  server.on("error", () => {});
  writeFileSync(join(dir, SLOT_PID), `${process.pid} ${processStartTime(process.pid) ?? 0}\n`);

  let vm: Vm | undefined;
  let agent: SandboxAgent | undefined;
  let listener: Server | undefined;
  let state: "booting" | "idle" | "assigned" | "stopping" = "booting";
  const stopIdle = async (why: string, code = 0) => {
    if (state === "stopping" || state === "assigned") return;
    state = "stopping";
    log(`slot: stopping (${why})`);
    listener?.close();
    agent?.close();
    if (vm) await vm.stop(3000).catch(() => vm?.kill());
    server.destroy();
    unmountTree(dir);
    rmSync(dir, { recursive: true, force: true });
    process.exit(code);
  };
  server.on("close", () => void stopIdle("the cache server is gone"));
  process.on("SIGTERM", () => void stopIdle("SIGTERM"));
  process.on("SIGINT", () => void stopIdle("SIGINT"));
  process.on("SIGHUP", () => {});

  try {
    const { config } = processConfig(configPath);
    const q = config.hypervisor;
    const refusal = templateRefusal({ nics: 0, virtioFs: q.sharedFs === "virtio-fs" });
    if (refusal) throw new Error(refusal);
    const accel = await templateAccel(config);
    const found = findTemplate(config, accel.accel);
    if (!found.ok) throw new Error(found.why);
    const shared = join(dir, "shared");
    makeSharedMount(shared);
    const t0 = Date.now();
    const { startVm } = await import("../hypervisor/qemu");
    vm = await startVm({
      id: `cache-${dir.split("/").pop()}`,
      dir: join(dir, "vm"),
      config: q,
      accel,
      shares: [{ tag: SHARE_TAG, path: shared, fs: "virtio-9p" }],
      jailUser: q.rootless ? ensureJailUser(q.rootlessUser) : undefined,
      template: { mode: "clone", memoryFile: found.files.memory, stateFile: found.files.state },
      onWarning: log,
    });
    const idleVm = vm;
    void idleVm.waitExit().then(() => void stopIdle("QEMU exited", 1));
    agent = await connectVmAgent(vm.agentSocket, Math.max(5, config.agent.dialTimeout) * 1000);
    // Entropy and clock now as well (the guest runs meanwhile), and the guest's first calls translated
    // under TCG before a `create` waits for them; the sandbox's own identity follows when it is taken.
    await agent.request("adoptClone", cloneIdentity(`cache-${process.pid}`), 30_000);
    await agent.request("ping", {}, 30_000);
    const restored = Date.now() - t0;
    // While nobody waits: the share mounted in the guest (it is this directory for whichever sandbox
    // takes the VM) and a throw-away container run, so that a sandbox's first container does not pay
    // for either (under TCG each QEMU translates the guest's code afresh: ~1 s of a first create).
    const ready = agent;
    await ready.request("addMount", guestShareMount("virtio-9p"), 30_000);
    await warmUpContainer({ call: (m, r) => ready.request(m, r, 60_000) });
    log(
      `slot: clone of ${found.files.key} restored in ${restored} ms, warmed up in ${Date.now() - t0 - restored} ms (QEMU ${vm.pid})`,
    );
  } catch (err) {
    const msg = firstLine((err as Error).message);
    server.write(`error: ${msg}\n`);
    await stopIdle(`start failed: ${msg}`, 1);
    return;
  }

  const bootedVm = vm;
  const bootedAgent = agent;
  listener = createServer((sock) => {
    sock.on("error", () => {});
    sock.setEncoding("utf8");
    let buf = "";
    const timer = setTimeout(() => sock.destroy(), ASSIGNMENT_WAIT_MS);
    sock.on("data", (d: string) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl < 0 || state !== "idle") return;
      clearTimeout(timer);
      let a: SlotAssignment;
      try {
        a = JSON.parse(buf.slice(0, nl)) as SlotAssignment;
      } catch {
        sock.end("error: the assignment is not JSON\n");
        return;
      }
      state = "assigned";
      void assign(a, sock);
    });
  });
  const socketPath = join(dir, SLOT_SOCKET);
  await new Promise<void>((resolve) => listener?.listen(socketPath, resolve));
  state = "idle";
  server.write("ready\n");

  /** From here on the slot is the sandbox's supervisor; `reply` is the create's readiness line. */
  async function assign(a: SlotAssignment, caller: Socket): Promise<void> {
    const reply = (line: string) => caller.end(`${line}\n`);
    const paths = sandboxPaths(a.root, a.sandboxId);
    if (!existsSync(paths.dir)) {
      reply(`error: sandbox directory ${paths.dir} does not exist`);
      state = "idle";
      return;
    }
    if (a.netns) {
      // A cached VM has no NIC and microvm cannot hot-plug one: a pod with interfaces gets a VM of its
      // own (a clone of the one-NIC template when it has one NIC).
      const net = setupSandboxNetwork(a.netns, paths.dir, log);
      if (net) {
        teardownSandboxNetwork(paths.dir);
        reply(`refused: the pod has ${net.endpoints.length} network interface(s) and a cached VM has none`);
        state = "idle";
        await stopIdle("refused a pod with network interfaces");
        return;
      }
    }
    // Detached from the server (it starts another slot); the directory goes with this sandbox now.
    listener?.close();
    rmSync(socketPath, { force: true });
    server.removeAllListeners("close");
    server.destroy();
    writeFileSync(join(dir, SLOT_SANDBOX), paths.dir);
    writeFileSync(join(paths.dir, SANDBOX_SLOT_RECORD), dir);
    try {
      appendFileSync(paths.log, readFileSync(logFile));
    } catch {
      // no slot log yet: nothing to carry over
    }
    logFile = paths.log;
    log(`slot ${dir}: serving sandbox ${a.sandboxId}`);
    const tJoin = performance.now();
    if (joinSandboxCgroup(paths)) {
      joinSandboxCgroup(paths, bootedVm.pid);
      log(`slot and QEMU joined the sandbox cgroup in ${(performance.now() - tJoin).toFixed(1)} ms`);
      if (a.joinedLine) caller.write(`${JOINED_LINE}\n`);
    }
    const handle: VmHandle = {
      pid: bootedVm.pid,
      stop: (ms) => bootedVm.stop(ms),
      kill: () => bootedVm.kill(),
      waitExit: () => bootedVm.waitExit(),
    };
    const sup = new Supervisor({
      root: a.root,
      sandboxId: a.sandboxId,
      log,
      async boot(p) {
        bindShare(join(dir, "shared"), p.shared);
        const t1 = Date.now();
        await bootedAgent.request("adoptClone", cloneIdentity(a.sandboxId), 30_000);
        log(`factory: clone identity applied in ${Date.now() - t1} ms`);
        return {
          agent: bootedAgent,
          vm: handle,
          // Mounted in the guest while the slot waited.
          share: { dir: GUEST_SHARED_DIR },
        };
      },
    });
    await serveSandbox(sup, log, reply);
  }
}
