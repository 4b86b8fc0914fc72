// VM networking for one sandbox (Kata v1's tcfilter model, see docs/sandbox.md "Networking"):
//   host  — the sandbox container's spec names the pod's network namespace (linux.namespaces network
//           path, made by the engine: netavark, CNI, docker); its interfaces are scanned and each gets
//           a tap with tc redirection both ways (./tcfilter); QEMU starts inside that netns with one
//           virtio-net device per tap, carrying the interface's MAC (microvm cannot hotplug: the NICs
//           must be known before QEMU starts);
//   guest — once the agent answers, it is given each interface (name, MAC, MTU, addresses) and the
//           routes, and configures the NICs in the guest's root network namespace, where containers
//           that joined the pod's netns by path run.
// <sandbox>/network.json records what was made, before it is made, so that cleanup (the supervisor's
// own, or `delete --force` after it was killed) removes exactly that and nothing else.
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentMethod, AgentRequest, AgentResponse, NetInterface, NetRoute } from "../agent/api";
import { type NetnsRunner, netnsId, netnsIdentity, runInNetns } from "../sys/netns";
import { scanNetns } from "./scan";
import { applySetup, applyTeardown, type Endpoint, tapNames } from "./tcfilter";

export type { Endpoint } from "./tcfilter";

export interface SandboxNetwork {
  /** The pod's netns path, as the spec named it. */
  netns: string;
  /** "dev:ino" of that namespace when it was set up: cleanup never touches another namespace. */
  netnsId: string;
  endpoints: Endpoint[];
  routes: NetRoute[];
}

export const NETWORK_RECORD = "network.json";

export function networkRecordPath(sandboxDir: string): string {
  return join(sandboxDir, NETWORK_RECORD);
}

/** The netns path a container spec joins, if any (linux.namespaces[type=network].path). */
export function specNetns(spec: { linux?: { namespaces?: { type: string; path?: string }[] } }) {
  return spec.linux?.namespaces?.find((n) => n.type === "network" && n.path)?.path;
}

/**
 * The netns whose interfaces become the sandbox VM's NICs, by `internetworking_model` ([runtime]):
 * "tcfilter" — the spec's, or the one kata-ts `made` for a spec asking for a new one (VM mode, prestart
 * hooks: src/sandbox/netns.ts); "none" — no NICs (the VM has only lo); "macvtap" is refused in one line.
 */
export function sandboxNetns(
  spec: Parameters<typeof specNetns>[0],
  model: "tcfilter" | "macvtap" | "none",
  made?: string,
): string | undefined {
  const netns = specNetns(spec) ?? made;
  if (!netns || model === "none") return undefined;
  if (model !== "tcfilter")
    throw new Error(`internetworking_model = "${model}" is not supported: use "tcfilter" or "none"`);
  return netns;
}

/**
 * Scans the pod's netns and makes a tap + tc redirection per interface. Returns undefined when there is
 * nothing to attach (no interface but lo, or the namespace is the host's own: its interfaces are never
 * redirected into a VM). A failure undoes what was made.
 */
export function setupSandboxNetwork(
  netns: string,
  sandboxDir: string,
  log: (msg: string) => void = () => {},
  run: NetnsRunner = runInNetns,
  tapOwner?: { uid: number; gid: number },
): SandboxNetwork | undefined {
  let id: string;
  try {
    id = netnsIdentity(netns);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new Error(`network namespace ${netns} does not exist`);
    // Another process's namespace we may not look at (here /proc/1/ns/net: EACCES): not ours to
    // redirect, and nsenter could not enter it either.
    log(`network namespace ${netns} cannot be examined (${code}): the VM gets no network interface`);
    return undefined;
  }
  if (id === netnsId("/proc/self/ns/net")) {
    log(`network namespace ${netns} is the host's: the VM gets no network interface`);
    return undefined;
  }
  const scan = scanNetns(netns, run);
  if (scan.interfaces.length === 0) return undefined;
  // Checked before anything is made, so that undoing a failed setup only ever touches our own.
  const busy = scan.interfaces.find((i) => scan.ingress.has(i.name));
  if (busy)
    throw new Error(
      `interface ${busy.name} in ${netns} already has an ingress qdisc (another sandbox in this network namespace?)`,
    );
  const taps = tapNames(scan.interfaces.length, scan.links);
  const net: SandboxNetwork = {
    netns,
    netnsId: id,
    endpoints: scan.interfaces.map((iface, i) => ({
      iface,
      tap: taps[i],
      ...(tapOwner ? { owner: tapOwner } : {}),
    })),
    routes: scan.routes,
  };
  writeFileSync(networkRecordPath(sandboxDir), `${JSON.stringify(net)}\n`);
  try {
    applySetup(netns, net.endpoints, run);
  } catch (err) {
    teardownSandboxNetwork(sandboxDir, run);
    throw err;
  }
  return net;
}

/**
 * Removes the taps and ingress qdiscs recorded in <sandbox>/network.json, if the namespace still is the
 * one they were made in (the engine may have removed it already: then they are gone with it).
 */
export function teardownSandboxNetwork(sandboxDir: string, run: NetnsRunner = runInNetns): string[] {
  const file = networkRecordPath(sandboxDir);
  if (!existsSync(file)) return [];
  let errors: string[] = [];
  try {
    const net = JSON.parse(readFileSync(file, "utf8")) as SandboxNetwork;
    if (netnsId(net.netns) === net.netnsId) errors = applyTeardown(net.netns, net.endpoints, run);
  } catch (err) {
    errors.push(`${file}: ${(err as Error).message}`);
  }
  rmSync(file, { force: true });
  return errors;
}

/** What the QEMU command line needs: one NIC per endpoint. */
export function qemuNics(net: SandboxNetwork | undefined): { ifname: string; mac: string }[] {
  return (net?.endpoints ?? []).map((e) => ({ ifname: e.tap, mac: e.iface.mac }));
}

/** The agent calls this module makes (a structural subset of the supervisor's SandboxAgent). */
export interface NetworkAgent {
  request<M extends AgentMethod>(
    method: M,
    req: AgentRequest<M>,
    timeoutMs?: number,
  ): Promise<AgentResponse<M>>;
}

/**
 * Gives the guest its NICs and routes in one agent call (which also waits for the booting agent). A template
 * clone's NICs still carry the template's MACs, `fromMacs` (in NIC order): the guest changes them.
 */
export async function configureGuestNetwork(
  agent: NetworkAgent,
  net: SandboxNetwork,
  timeoutMs: number,
  fromMacs: readonly string[] = [],
): Promise<void> {
  const interfaces = net.endpoints.map((e, i) =>
    fromMacs[i] ? { ...e.iface, fromMac: fromMacs[i] } : e.iface,
  );
  if (interfaces.length > 0 || net.routes.length > 0)
    await agent.request("updateNetwork", { interfaces, routes: net.routes }, timeoutMs);
}

export type NetworkAction = "listInterfaces" | "listRoutes" | "updateRoutes";

export interface NetworkResult {
  interfaces?: NetInterface[];
  routes?: NetRoute[];
}

/** `kata-ts network` in the supervisor: the guest's view, or new routes for it. */
export async function guestNetworkOp(
  agent: NetworkAgent,
  action: NetworkAction,
  routes?: NetRoute[],
): Promise<NetworkResult> {
  switch (action) {
    case "listInterfaces":
      return agent.request("listInterfaces", {});
    case "listRoutes":
      return agent.request("listRoutes", {});
    case "updateRoutes":
      return agent.request("updateRoutes", { routes: routes ?? [] });
    default:
      throw new Error(`network: unknown action ${JSON.stringify(action)}`);
  }
}
