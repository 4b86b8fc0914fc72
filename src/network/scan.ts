// What the engine put in the pod's network namespace, read with `ip -json`: every Ethernet interface
// but lo and taps (ours from an earlier run, or tap endpoints Kata handles differently), with its MAC,
// MTU and addresses, and the main-table routes through those interfaces. Parsing is pure (unit-tested
// on captured output); scanNetns runs the three commands.
import type { IpAddress, NetInterface, NetRoute } from "../agent/api";
import type { NetnsRunner } from "../sys/netns";

interface IpLink {
  ifname?: string;
  address?: string;
  mtu?: number;
  link_type?: string;
  linkinfo?: { info_kind?: string };
  addr_info?: { family?: string; local?: string; prefixlen?: number; scope?: string }[];
}

interface IpRoute {
  dst?: string;
  gateway?: string;
  dev?: string;
  prefsrc?: string;
  scope?: string;
  metric?: number;
  type?: string;
}

function parseJsonArray<T>(text: string, what: string): T[] {
  const t = text.trim();
  if (!t) return [];
  try {
    const v = JSON.parse(t) as unknown;
    if (Array.isArray(v)) return v as T[];
  } catch {
    // not JSON (an old iproute2): the caller falls back to the text parser
  }
  throw new Error(`cannot parse the output of ${what}`);
}

/** Interfaces of `ip -json -d addr show` that become guest NICs. */
export function parseInterfaces(ipAddrJson: string): NetInterface[] {
  const out: NetInterface[] = [];
  for (const l of parseJsonArray<IpLink>(ipAddrJson, "ip -json -d addr show")) {
    if (!l.ifname || l.ifname === "lo" || l.link_type !== "ether" || !l.address) continue;
    if (l.linkinfo?.info_kind === "tun") continue;
    const addresses: IpAddress[] = [];
    for (const a of l.addr_info ?? []) {
      if (!a.local || a.prefixlen === undefined) continue;
      if (a.family === "inet") addresses.push({ family: 4, address: a.local, prefixLen: a.prefixlen });
      // The guest kernel makes its own link-local address from the same MAC.
      else if (a.family === "inet6" && a.scope !== "link")
        addresses.push({ family: 6, address: a.local, prefixLen: a.prefixlen });
    }
    out.push({ name: l.ifname, mac: l.address.toLowerCase(), mtu: l.mtu ?? 1500, addresses });
  }
  return out;
}

const SCOPES = new Set(["global", "link", "host"]);

/**
 * Routes of `ip [-6] -json route show table main` through `devices`; IPv6 link-local and multicast
 * routes are the guest kernel's own. Routes without a gateway come first: a gateway must be reachable
 * when its route is added.
 */
export function parseRoutes(json: string, family: 4 | 6, devices: Set<string>): NetRoute[] {
  const out: NetRoute[] = [];
  for (const r of parseJsonArray<IpRoute>(json, `ip -${family} -json route show`)) {
    if (!r.dst || !r.dev || !devices.has(r.dev)) continue;
    if (r.type && r.type !== "unicast") continue;
    if (family === 6 && /^(fe80:|ff00:|ff[0-9a-f]{2}:)/i.test(r.dst)) continue;
    const route: NetRoute = { family, dest: r.dst, device: r.dev };
    if (r.gateway) route.gateway = r.gateway;
    if (r.prefsrc) route.source = r.prefsrc;
    if (r.scope && SCOPES.has(r.scope)) route.scope = r.scope as NetRoute["scope"];
    if (r.metric !== undefined) route.metric = r.metric;
    out.push(route);
  }
  return sortRoutes(out);
}

/** Link routes before gateway routes (stable otherwise). */
export function sortRoutes(routes: NetRoute[]): NetRoute[] {
  return [...routes.filter((r) => !r.gateway), ...routes.filter((r) => r.gateway)];
}

/** Every link name of `ip -json addr show` (taps of other sandboxes included). */
export function parseLinkNames(ipAddrJson: string): string[] {
  return parseJsonArray<IpLink>(ipAddrJson, "ip -json -d addr show").flatMap((l) =>
    l.ifname ? [l.ifname] : [],
  );
}

/** Devices that have an ingress qdisc in `tc -json qdisc show`. */
export function parseIngressDevices(tcJson: string): Set<string> {
  const qs = parseJsonArray<{ kind?: string; dev?: string }>(tcJson, "tc -json qdisc show");
  return new Set(qs.flatMap((q) => (q.kind === "ingress" && q.dev ? [q.dev] : [])));
}

export interface NetnsScan {
  interfaces: NetInterface[];
  routes: NetRoute[];
  /** All link names, for picking free tap names. */
  links: string[];
  /** Interfaces that already have an ingress qdisc (someone else redirects them). */
  ingress: Set<string>;
}

export function scanNetns(netns: string, run: NetnsRunner): NetnsScan {
  const addrs = run(netns, ["ip", "-json", "-d", "addr", "show"]);
  const interfaces = parseInterfaces(addrs);
  const links = parseLinkNames(addrs);
  const devices = new Set(interfaces.map((i) => i.name));
  if (devices.size === 0) return { interfaces, routes: [], links, ingress: new Set() };
  const ingress = parseIngressDevices(run(netns, ["tc", "-json", "qdisc", "show"]));
  const routes = sortRoutes([
    ...parseRoutes(run(netns, ["ip", "-4", "-json", "route", "show", "table", "main"]), 4, devices),
    ...parseRoutes(run(netns, ["ip", "-6", "-json", "route", "show", "table", "main"]), 6, devices),
  ]);
  return { interfaces, routes, links, ingress };
}
