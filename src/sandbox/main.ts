// Entry of dist/kata-supervisor.cjs: `kata-supervisor --root R --sandbox ID [--config FILE]`, started
// detached (setsid) by the CLI's create with stdout/stderr on <sandbox>/supervisor.log and a pipe on
// fd 3 on which it reports readiness: "ok\n" once the agent answers and the control socket listens,
// or "error: <one line>\n". Tests only: KATA_TS_SUPERVISOR_AGENT=host replaces the VM by host processes;
// KATA_TS_SUPERVISOR_AGENT=socket:PATH uses a guest agent already serving on a host unix socket.
import { closeSync, writeSync } from "node:fs";
import { loadConfig } from "../config/config";
import { configureGuestNetwork, qemuNics, setupSandboxNetwork } from "../network";
import { connectVmAgent } from "./agent";
import { HostAgent } from "./hostagent";
import { SHARE_TAG } from "./paths";
import { Supervisor } from "./supervisor";

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

function report(line: string): void {
  try {
    writeSync(3, `${line}\n`);
    closeSync(3);
  } catch {}
}

async function main(argv: string[]): Promise<void> {
  const root = arg(argv, "--root");
  const sandboxId = arg(argv, "--sandbox");
  const configPath = arg(argv, "--config");
  const netns = arg(argv, "--netns");
  if (!root || !sandboxId)
    throw new Error("usage: kata-supervisor --root DIR --sandbox ID [--config FILE] [--netns PATH]");
  const log = (m: string) => process.stderr.write(`${new Date().toISOString()} ${m}\n`);
  const sup = new Supervisor({
    root,
    sandboxId,
    log,
    async boot(paths) {
      const which = process.env.KATA_TS_SUPERVISOR_AGENT ?? "";
      if (which === "host") return { agent: new HostAgent() };
      if (which.startsWith("socket:")) {
        // The real guest agent serving on a host socket (tests): it sees the host's share directory.
        const agent = await connectVmAgent(which.slice("socket:".length), 10_000);
        return { agent, share: { dir: paths.shared }, ownsAgent: false };
      }
      const { config } = loadConfig({ explicitPath: configPath });
      const { startVm } = await import("../hypervisor/qemu");
      // Taps for the pod's interfaces first: QEMU starts in that netns with a NIC per tap.
      const t0 = Date.now();
      const net = netns ? setupSandboxNetwork(netns, paths.dir, log) : undefined;
      if (net) log(`network: ${net.endpoints.length} NIC(s) from ${netns} in ${Date.now() - t0} ms`);
      // The share and the NICs are on the command line: microvm cannot hotplug devices.
      const vm = await startVm({
        id: sandboxId,
        dir: paths.vmDir,
        config: config.hypervisor,
        shares: [{ tag: SHARE_TAG, path: paths.shared }],
        netns: net?.netns,
        nics: qemuNics(net),
        onWarning: log,
      });
      try {
        const agent = await connectVmAgent(vm.agentSocket, Math.max(5, config.agent.dialTimeout) * 1000);
        if (net) {
          // The agent answers first (the guest boots meanwhile), so the time below is the setup's own.
          await agent.request("ping", {}, 120_000);
          const t1 = Date.now();
          await configureGuestNetwork(agent, net, 60_000);
          log(`network: guest NICs and routes configured in ${Date.now() - t1} ms`);
        }
        return { agent, vm };
      } catch (err) {
        vm.kill();
        await vm.waitExit();
        throw err;
      }
    },
  });
  process.on("SIGTERM", () => void sup.shutdown(0));
  process.on("SIGINT", () => void sup.shutdown(0));
  process.on("SIGHUP", () => {});
  try {
    await sup.start();
  } catch (err) {
    const msg = ((err as Error).message ?? String(err)).split("\n")[0];
    log(`start failed: ${msg}`);
    report(`error: ${msg}`);
    await sup.shutdown(1);
    return;
  }
  report("ok");
}

main(process.argv.slice(2)).catch((err) => {
  report(`error: ${(err as Error).message}`);
  process.exitCode = 1;
});
