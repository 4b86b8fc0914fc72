// `kata-ts network` (Kata's `kata-runtime kata-network`): the guest network of a VM-mode container's
// sandbox, through its supervisor. list-ifaces / list-routes show the guest's view; update-routes
// replaces the guest's routes. NICs are attached when QEMU starts (microvm has no hotplug, and kata-ts
// does no NIC hotplug on q35/pc either), so add-iface / del-iface are refused in one line.

import type { NetInterface, NetRoute } from "../agent/api";
import { processConfig } from "../config/config";
import { sandboxCall } from "../sandbox/launch";
import type { RuntimeContext } from "./options";
import { containerStatus } from "./status";
import { StateStore } from "./store";

export type NetworkVerb = "add-iface" | "del-iface" | "list-ifaces" | "update-routes" | "list-routes";

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what}: the input is not JSON`);
  }
}

/** Routes as `update-routes` takes them: a JSON array of {dest, gateway?, device, source?, scope?, metric?}. */
export function parseRoutesInput(text: string): NetRoute[] {
  const v = parseJson(text, "update-routes");
  const list = Array.isArray(v) ? v : (v as { routes?: unknown })?.routes;
  if (!Array.isArray(list)) throw new Error("update-routes: expected a JSON array of routes");
  return list.map((r: Partial<NetRoute>, i) => {
    if (!r || typeof r.dest !== "string" || typeof r.device !== "string" || !r.dest || !r.device)
      throw new Error(`update-routes: route ${i} needs "dest" and "device"`);
    const family = r.family ?? (`${r.dest}${r.gateway ?? ""}`.includes(":") ? 6 : 4);
    if (family !== 4 && family !== 6) throw new Error(`update-routes: route ${i}: family must be 4 or 6`);
    const out: NetRoute = { family, dest: r.dest, device: r.device };
    if (r.gateway) out.gateway = String(r.gateway);
    if (r.source) out.source = String(r.source);
    if (r.scope) {
      if (r.scope !== "global" && r.scope !== "link" && r.scope !== "host")
        throw new Error(`update-routes: route ${i}: scope must be global, link or host`);
      out.scope = r.scope;
    }
    if (r.metric !== undefined) out.metric = Number(r.metric);
    return out;
  });
}

export async function containerNetwork(
  ctx: RuntimeContext,
  id: string,
  verb: NetworkVerb,
  input?: () => string,
): Promise<NetInterface[] | NetRoute[] | NetInterface> {
  const store = new StateStore(ctx.root);
  const record = store.read(id);
  if (record.hypervisor !== "qemu")
    throw new Error(`container ${id} runs on the host (hypervisor = "none"): it has no guest network`);
  if (containerStatus(store, record) === "stopped") throw new Error(`container ${id} is not running`);
  const call = (action: "listInterfaces" | "listRoutes" | "updateRoutes", routes?: NetRoute[]) =>
    sandboxCall({ root: ctx.root, id: record.sandboxId }, "network", { action, routes });
  switch (verb) {
    case "list-ifaces":
      return (await call("listInterfaces")).interfaces ?? [];
    case "list-routes":
      return (await call("listRoutes")).routes ?? [];
    case "update-routes":
      return (await call("updateRoutes", parseRoutesInput(input?.() ?? ""))).routes ?? [];
    case "add-iface":
    case "del-iface": {
      parseJson(input?.() ?? "", verb);
      const machine = processConfig(ctx.configPath).config.hypervisor.machineType || "microvm";
      throw new Error(
        `${verb}: not supported with machine type ${machine}: kata-ts attaches NICs when the VM starts (no hotplug)`,
      );
    }
    default:
      throw new Error(`network: unknown command ${JSON.stringify(verb)}`);
  }
}
