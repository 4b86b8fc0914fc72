// The supervisor process: `kata-supervisor --root R --sandbox ID [--config FILE] [--netns PATH]
// [--memory MIB --vcpus N]`, started detached (setsid) by the CLI's create (src/sandbox/launch.ts) with
// stdout/stderr on <sandbox>/supervisor.log and a pipe on fd 3 on which it reports readiness: "ok\n" once
// the agent answers and the control socket listens, or "error: <one line>\n"; before that "warning: ..."
// lines, and "joined" once it is in the sandbox's cgroup (the create primes that move until then). The
// VM boot lives here; tests may pass their own boot (test/support/hostagent-supervisor.ts), or set
// KATA_TS_SUPERVISOR_AGENT=socket:PATH to use a guest agent already serving on a host unix socket.
import { closeSync, mkdirSync, writeFileSync, writeSync } from "node:fs";
import { processConfig, type RuntimeConfig } from "../config/config";
import { firstLine } from "../errors";
import type { StartVmOptions, Vm } from "../hypervisor/driver";
import { describeJail, ensureJailUser } from "../hypervisor/jail";
import type { ShareSpec } from "../hypervisor/qemu/cmdline";
import { sharedFsFor, type Virtiofsd } from "../hypervisor/virtiofsd";
import { configureGuestNetwork, qemuNics, setupSandboxNetwork } from "../network";
import { processStartTime } from "../sys/proc";
import { connectVmAgent } from "./agent";
import { JOINED_LINE, joinSandboxCgroup } from "./cgroup";
import { GUEST_SHARED_DIR, type SandboxPaths, SHARE_TAG, sandboxPaths } from "./paths";
import { guestShareMount, makeSharedMount } from "./share";
import { type Booted, Supervisor, serveSandbox, type VmHandle } from "./supervisor";

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

/** A line for the CLI that started us before the final one: a warning (it prints it as its own), "joined". */
function tellCaller(line: string): void {
  try {
    writeSync(3, `${line}\n`);
  } catch {
    // fd 3 is gone: a warning is in our log only
  }
}

const warnCaller = (line: string) => tellCaller(`warning: ${line}`);

function report(line: string): void {
  try {
    writeSync(3, `${line}\n`);
    closeSync(3);
  } catch {
    // fd 3 is gone (the CLI that waited for us died): nobody to tell
  }
}

/**
 * Boots the sandbox VM with its share on the command line (microvm cannot hotplug devices). virtio-fs:
 * shared/ becomes a shared-propagation mount, then virtiofsd starts (its pid in virtiofsd.pid, for a
 * later `delete --force`), then QEMU; virtiofsd is stopped after QEMU and dies with us.
 */
async function bootVm(
  sandboxId: string,
  paths: SandboxPaths,
  config: RuntimeConfig,
  log: (m: string) => void,
  netns?: string,
): Promise<Booted> {
  const { startVm } = await import("../hypervisor/qemu");
  const q = config.hypervisor;
  // The jailed QEMU's uid (rootless) owns the taps, so it can attach to them without CAP_NET_ADMIN.
  const jailUser = q.rootless ? ensureJailUser(q.rootlessUser) : undefined;
  // Taps for the pod's interfaces first: QEMU starts in that netns with a NIC per tap.
  const t0 = Date.now();
  const net = netns ? setupSandboxNetwork(netns, paths.dir, log, undefined, jailUser) : undefined;
  if (net) log(`network: ${net.endpoints.length} NIC(s) from ${netns} in ${Date.now() - t0} ms`);
  const fs = sharedFsFor(q, log);
  const share: ShareSpec = { tag: SHARE_TAG, path: paths.shared, fs };
  // A daemon in a mount namespace of its own (virtiofsd always, QEMU in its jail) copies the mounts when
  // it starts; container rootfses are bound into the share later and must reach its copy.
  if (fs === "virtio-fs" || q.jailMountNamespace) makeSharedMount(paths.shared);
  let vfsd: Virtiofsd | undefined;
  if (fs === "virtio-fs") {
    const v = await import("../hypervisor/virtiofsd");
    mkdirSync(paths.vmDir, { recursive: true, mode: 0o700 });
    vfsd = await v.startVirtiofsd(
      {
        daemon: q.virtioFsDaemon,
        flavour: v.virtiofsdFlavour(q.virtioFsDaemon),
        socket: paths.virtiofsdSocket,
        source: paths.shared,
        cache: q.virtioFsCache,
        extraArgs: q.virtioFsExtraArgs,
      },
      { logFile: paths.virtiofsdLog },
    );
    writeFileSync(paths.virtiofsdPid, `${vfsd.pid} ${processStartTime(vfsd.pid) ?? 0}\n`);
    share.socket = paths.virtiofsdSocket;
  }
  const stopDaemon = async () => {
    await vfsd?.stop(2000);
  };
  const vmOptions = {
    id: sandboxId,
    dir: paths.vmDir,
    config: config.hypervisor,
    shares: [share],
    netns: net?.netns,
    nics: qemuNics(net),
    jailUser,
    onWarning: log,
  };
  // [factory] enable_template: a clone of the template when this sandbox can use one, else a cold boot.
  const clone = config.factory.enableTemplate
    ? await cloneFromTemplate(
        config,
        vmOptions,
        { nics: net?.endpoints.length ?? 0, virtioFs: fs === "virtio-fs" },
        log,
      )
    : undefined;
  const cloned = clone !== undefined;
  let vm: Vm;
  try {
    vm = clone?.vm ?? (await startVm(vmOptions));
  } catch (err) {
    vfsd?.kill();
    await stopDaemon();
    throw err;
  }
  log(
    `QEMU ${vm.pid} started${cloned ? " (a template clone)" : ""}; VMM jail: ${describeJail(q, config.runtime.sandboxCgroupOnly)}`,
  );
  // A virtiofsd that dies under a running guest leaves its file system hanging: end the VM, so the
  // supervisor tells every stand-in, as when QEMU itself dies.
  let stopping = false;
  void vfsd?.waitExit().then(() => {
    if (!stopping && !vm.exited) {
      log("virtiofsd exited while the VM runs: stopping the VM");
      vm.kill();
    }
  });
  const handle: VmHandle = {
    pid: vm.pid,
    async stop(timeoutMs) {
      stopping = true;
      const r = await vm.stop(timeoutMs);
      await stopDaemon();
      return r;
    },
    kill() {
      stopping = true;
      vm.kill();
      vfsd?.kill();
    },
    waitExit: () => vm.waitExit(),
  };
  try {
    const tConnect = Date.now();
    const agent = await connectVmAgent(vm.agentSocket, Math.max(5, config.agent.dialTimeout) * 1000);
    if (cloned) {
      log(`factory: the clone's agent answered in ${Date.now() - tConnect} ms`);
      // Before anything else runs in it: the clone's own entropy, the host's clock, its hostname.
      const t1 = Date.now();
      const { cloneIdentity } = await import("../factory/template");
      await agent.request("adoptClone", cloneIdentity(sandboxId), 30_000);
      log(`factory: clone identity applied in ${Date.now() - t1} ms`);
    }
    if (net) {
      // The agent answers first (the guest boots meanwhile), so the time below is the setup's own.
      await agent.request("ping", {}, 120_000);
      const t1 = Date.now();
      // A clone's NICs have the template's MACs until the agent gives them the pod's.
      await configureGuestNetwork(agent, net, 60_000, clone?.macs);
      log(`network: guest NICs and routes configured in ${Date.now() - t1} ms`);
    }
    return { agent, vm: handle, share: { dir: GUEST_SHARED_DIR, mount: guestShareMount(fs) } };
  } catch (err) {
    handle.kill();
    await vm.waitExit();
    await stopDaemon();
    throw err;
  }
}

/**
 * [factory] enable_template: a clone of the template with the sandbox's NIC count (and the MACs its
 * NICs have until the agent sets the pod's), or undefined (with a warning for the CLI and the log) when
 * there is none for this configuration, the sandbox cannot use one, or the restore failed. Never an
 * error: the caller boots cold.
 */
async function cloneFromTemplate(
  config: RuntimeConfig,
  vmOptions: Omit<StartVmOptions, "template" | "accel">,
  sandbox: { nics: number; virtioFs: boolean },
  log: (m: string) => void,
): Promise<{ vm: Vm; macs: string[] } | undefined> {
  const { findTemplate, templateAccel, templateRefusal } = await import("../factory/template");
  const { startVm } = await import("../hypervisor/qemu");
  const coldBoot = (why: string) => {
    log(`factory: cold boot: ${why}`);
    warnCaller(`factory: cold boot: ${why}`);
    return undefined;
  };
  const refusal = templateRefusal(sandbox);
  if (refusal) return coldBoot(refusal);
  const accel = await templateAccel(config);
  const found = findTemplate(config, accel.accel, sandbox.nics);
  if (!found.ok) return coldBoot(found.why);
  const t0 = Date.now();
  const macs = found.meta.macs;
  try {
    const vm = await startVm({
      ...vmOptions,
      // The devices as the template had them (the restored state carries its MACs); the pod's taps.
      nics: vmOptions.nics?.map((n, i) => ({ ...n, mac: macs[i] })),
      accel,
      template: { mode: "clone", memoryFile: found.files.memory, stateFile: found.files.state },
    });
    const withNics = macs.length ? ` with ${macs.length} NIC(s)` : "";
    log(`factory: cloned template ${found.files.key} in ${Date.now() - t0} ms${withNics}`);
    return { vm, macs };
  } catch (err) {
    return coldBoot(`restoring template ${found.files.key} failed: ${firstLine((err as Error).message)}`);
  }
}

/** A boot replacing the VM (tests): gets the sandbox paths, returns what the supervisor runs on. */
export type TestBoot = (paths: SandboxPaths) => Promise<Booted>;

async function run(argv: string[], testBoot?: TestBoot): Promise<void> {
  // A slot of the VM cache: a supervisor started before its sandbox is known (src/sandbox/slot.ts).
  if (argv.includes("--cache-slot")) return (await import("./slot")).runSlot(argv);
  const root = arg(argv, "--root");
  const sandboxId = arg(argv, "--sandbox");
  const configPath = arg(argv, "--config");
  const netns = arg(argv, "--netns");
  const memory = Number(arg(argv, "--memory") ?? 0);
  const vcpus = Number(arg(argv, "--vcpus") ?? 0);
  if (!root || !sandboxId)
    throw new Error(
      "usage: kata-supervisor --root DIR --sandbox ID [--config FILE] [--netns PATH] [--memory MIB --vcpus N]",
    );
  const log = (m: string) => process.stderr.write(`${new Date().toISOString()} ${m}\n`);
  // Into the sandbox's cgroup (sandbox_cgroup_only) before anything is started: QEMU and virtiofsd,
  // our children, are born in it.
  const tJoin = performance.now();
  if (joinSandboxCgroup(sandboxPaths(root, sandboxId))) {
    log(`joined the sandbox cgroup in ${(performance.now() - tJoin).toFixed(1)} ms`);
    tellCaller(JOINED_LINE);
  }
  const sup = new Supervisor({
    root,
    sandboxId,
    log,
    async boot(paths) {
      if (testBoot) return testBoot(paths);
      const which = process.env.KATA_TS_SUPERVISOR_AGENT ?? "";
      if (which.startsWith("socket:")) {
        // The real guest agent serving on a host socket (tests): it sees the host's share directory.
        const agent = await connectVmAgent(which.slice("socket:".length), 10_000);
        return { agent, share: { dir: paths.shared }, ownsAgent: false };
      }
      const { config } = processConfig(configPath);
      // The size the sandbox's annotations asked for (checked by the CLI): this VM's own defaults, so a
      // template of another size is not cloned (the factory then boots cold, and says why).
      const own = structuredClone(config);
      if (memory > 0) own.hypervisor.defaultMemory = memory;
      if (vcpus > 0) own.hypervisor.defaultVcpus = vcpus;
      return bootVm(sandboxId, paths, own, log, netns);
    },
  });
  process.on("SIGHUP", () => {});
  await serveSandbox(sup, log, report);
}

/** Runs the supervisor with this process's arguments (the bundles' entries call this). */
export function supervisorMain(testBoot?: TestBoot): void {
  run(process.argv.slice(2), testBoot).catch((err) => {
    report(`error: ${(err as Error).message}`);
    process.exitCode = 1;
  });
}
