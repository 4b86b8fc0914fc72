// The guest side of VM networking: the agent configures the NICs QEMU attached (virtio-net, each with
// the MAC of a pod interface on the host) in the guest's root network namespace, where containers that
// joined the pod's netns run. It uses `ip` (busybox's in the guest image; iproute2's on a test host),
// every command of one RPC in one `sh` (under TCG each spawn from node costs ~0.1-0.25 s: node's fork;
// busybox sh forks cheaply), and the text output both print is parsed for the list calls.

import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import type {
  InterfaceUpdate,
  IpAddress,
  NetInterface,
  NetRoute,
  NetworkState,
  NetworkUpdate,
} from "../agent/api";
import { firstLine } from "../errors";
import { sortRoutes } from "../network/scan";

/**
 * One `ip` command; `optional`: its failure does not stop the script; `mark`: a separator line in the
 * output between listings.
 */
export type IpCommand = string[] | { args: string[]; optional: true } | { mark: true };

/** Runs the `ip` commands in order, stopping at the first failed one; resolves with their stdout. */
export type IpRunner = (cmds: IpCommand[]) => Promise<string>;

const SYS_NET = "/sys/class/net";
const FAILED = "kata-ts: failed: ";
/** Separates the outputs of the list commands run in one script. */
const MARK = "--kata-ts--";

const quote = (a: string) => `'${a.replace(/'/g, "'\\''")}'`;

/** The shell script for a list of commands (exported for the unit test). */
export function ipScript(cmds: IpCommand[]): string {
  return cmds
    .map((c) => {
      if ("mark" in c) return `echo ${MARK}`;
      const args = Array.isArray(c) ? c : c.args;
      const line = ["ip", ...args].map(quote).join(" ");
      if (!Array.isArray(c)) return `${line} || true`;
      return `${line} || { echo ${quote(`${FAILED}ip ${args.join(" ")}`)} >&2; exit 1; }`;
    })
    .join("\n");
}

export const runIp: IpRunner = (cmds) =>
  new Promise((resolve, reject) => {
    execFile("sh", ["-c", ipScript(cmds)], { encoding: "utf8", timeout: 20_000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const lines = String(stderr).trim().split("\n");
      const failed = lines.find((l) => l.startsWith(FAILED))?.slice(FAILED.length);
      const why = lines.filter((l) => l && !l.startsWith(FAILED)).pop() || firstLine(err.message);
      reject(new Error(failed ? `${failed}: ${why}` : why));
    });
  });

function readSys(name: string, attr: string): string {
  try {
    return readFileSync(`${SYS_NET}/${name}/${attr}`, "utf8").trim();
  } catch {
    return "";
  }
}

/** ARPHRD_ETHER in /sys/class/net/<dev>/type: NICs, not lo or the tunnel devices the kernel adds (sit0). */
const ARPHRD_ETHER = "1";

interface GuestLink {
  name: string;
  mac: string;
  mtu: number;
}

/** The guest's Ethernet links: name → MAC, MTU. */
export function guestLinks(): GuestLink[] {
  let names: string[] = [];
  try {
    names = readdirSync(SYS_NET);
  } catch {
    // no sysfs net directory: no interfaces to list
  }
  return names
    .filter((n) => n !== "lo" && readSys(n, "type") === ARPHRD_ETHER)
    .map((name) => ({
      name,
      mac: readSys(name, "address").toLowerCase(),
      mtu: Number(readSys(name, "mtu")),
    }));
}

/** `ip -o addr show` (busybox or iproute2): addresses per interface, link-local IPv6 left out. */
export function parseIpAddrText(text: string): Map<string, IpAddress[]> {
  const out = new Map<string, IpAddress[]>();
  for (const line of text.split("\n")) {
    const m = /^\d+:\s+(\S+)\s+(inet6?)\s+([0-9a-fA-F.:]+)\/(\d+)(.*)$/.exec(line);
    if (!m) continue;
    const [, dev, fam, address, plen, rest] = m;
    if (fam === "inet6" && /\bscope link\b/.test(rest)) continue;
    const list = out.get(dev) ?? [];
    list.push({ family: fam === "inet" ? 4 : 6, address, prefixLen: Number(plen) });
    out.set(dev, list);
  }
  return out;
}

const ROUTE_TYPES = new Set([
  "unicast",
  "local",
  "broadcast",
  "multicast",
  "unreachable",
  "blackhole",
  "prohibit",
  "throw",
]);

/** `ip [-6] route show` lines (busybox or iproute2) → unicast routes through `devices`. */
export function parseIpRouteText(text: string, family: 4 | 6, devices: Set<string>): NetRoute[] {
  const out: NetRoute[] = [];
  for (const line of text.split("\n")) {
    const t = line.trim().split(/\s+/).filter(Boolean);
    if (t.length === 0) continue;
    if (ROUTE_TYPES.has(t[0])) {
      if (t[0] !== "unicast") continue;
      t.shift();
    }
    const dest = t[0];
    const kv = new Map<string, string>();
    for (let i = 1; i + 1 < t.length; i++)
      if (/^(via|dev|src|scope|metric|proto)$/.test(t[i])) kv.set(t[i], t[++i]);
    const device = kv.get("dev");
    if (!dest || !device || !devices.has(device)) continue;
    // IPv6 link-local and multicast routes are the kernel's own, as on the host side.
    if (family === 6 && /^(fe80:|ff[0-9a-f]{2}:)/i.test(dest)) continue;
    const r: NetRoute = { family, dest, device };
    const via = kv.get("via");
    if (via) r.gateway = via;
    const src = kv.get("src");
    if (src) r.source = src;
    const scope = kv.get("scope");
    if (scope === "link" || scope === "host" || scope === "global") r.scope = scope;
    const metric = kv.get("metric");
    if (metric !== undefined && /^\d+$/.test(metric)) r.metric = Number(metric);
    out.push(r);
  }
  return out;
}

/** `ip route replace` arguments for a route. */
export function routeArgs(r: NetRoute): string[] {
  const a = r.family === 6 ? ["-6", "route", "replace", r.dest] : ["route", "replace", r.dest];
  if (r.gateway) a.push("via", r.gateway);
  a.push("dev", r.device);
  if (r.source) a.push("src", r.source);
  if (r.scope && r.scope !== "global") a.push("scope", r.scope);
  if (r.metric !== undefined) a.push("metric", String(r.metric));
  return a;
}

/**
 * The `ip` commands that give the NIC with `want.mac` (or, in a template clone, `want.fromMac`) the pod
 * interface's MAC, name, MTU and addresses and bring it up. `links` are the guest's NICs as listed
 * before; `names` their names as earlier commands of the same script leave them (updated here).
 */
function interfaceCommands(want: InterfaceUpdate, links: GuestLink[], names: string[]): IpCommand[] {
  const mac = want.mac.toLowerCase();
  const from = want.fromMac?.toLowerCase();
  let i = links.findIndex((l) => l.mac === mac);
  if (i < 0 && from !== undefined) i = links.findIndex((l) => l.mac === from);
  if (i < 0) throw new Error(`no network interface with MAC ${mac}${from ? ` or ${from}` : ""} in the guest`);
  const name = names[i];
  const cmds: IpCommand[] = [["link", "set", "dev", name, "down"]];
  // virtio-net takes the new address over its control queue, so QEMU's receive filter follows it.
  if (links[i].mac !== mac) cmds.push(["link", "set", "dev", name, "address", mac]);
  if (name !== want.name) {
    // Another NIC may hold the name (virtio-mmio probe order is not the command line's): move it aside.
    const other = names.indexOf(want.name);
    if (other >= 0) {
      names[other] = `kt${other}_tmp`;
      cmds.push(["link", "set", "dev", want.name, "name", names[other]]);
    }
    cmds.push(["link", "set", "dev", name, "name", want.name]);
    names[i] = want.name;
  }
  if (want.mtu > 0) cmds.push(["link", "set", "dev", want.name, "mtu", String(want.mtu)]);
  cmds.push(["addr", "flush", "dev", want.name]);
  for (const a of want.addresses)
    cmds.push([
      ...(a.family === 6 ? ["-6"] : []),
      "addr",
      "add",
      `${a.address}/${a.prefixLen}`,
      "dev",
      want.name,
    ]);
  cmds.push(["link", "set", "dev", want.name, "up"]);
  return cmds;
}

/** Flushes the IPv4 routes of the NICs `devices`, then adds `routes` (link routes first). */
function routeCommands(devices: string[], routes: NetRoute[]): IpCommand[] {
  const cmds: IpCommand[] = devices.map((d) => ({
    args: ["-4", "route", "flush", "dev", d],
    optional: true as const,
  }));
  for (const r of sortRoutes(routes)) cmds.push(routeArgs(r));
  return cmds;
}

export class GuestNetwork {
  constructor(
    private readonly ip: IpRunner = runIp,
    private readonly links: typeof guestLinks = guestLinks,
  ) {}

  async listInterfaces(): Promise<NetInterface[]> {
    return this.withAddresses(await this.ip([["-o", "addr", "show"]]));
  }

  private withAddresses(ipAddrText: string): NetInterface[] {
    const addrs = parseIpAddrText(ipAddrText);
    return this.links().map((l) => ({ ...l, addresses: addrs.get(l.name) ?? [] }));
  }

  private parseRoutes(out: string): NetRoute[] {
    const devices = new Set(this.links().map((l) => l.name));
    const [v4, v6 = ""] = out.split(MARK);
    return [...parseIpRouteText(v4, 4, devices), ...parseIpRouteText(v6, 6, devices)];
  }

  async listRoutes(): Promise<NetRoute[]> {
    return this.parseRoutes(await this.ip(this.routeListing()));
  }

  /** The routes, v4 then v6 (which a guest kernel without IPv6 cannot list), split by the mark. */
  private routeListing(): IpCommand[] {
    return [["-4", "route", "show"], { mark: true }, { args: ["-6", "route", "show"], optional: true }];
  }

  /**
   * Finds the NIC by MAC (in a template clone: by the template's, `fromMac`, and gives it the pod's),
   * renames it to the pod interface's name, sets MTU and addresses, brings it up.
   */
  async updateInterface(want: InterfaceUpdate): Promise<NetInterface> {
    const links = this.links();
    const cmds = [
      ...interfaceCommands(
        want,
        links,
        links.map((l) => l.name),
      ),
      ["-o", "addr", "show"],
    ];
    return this.configured(await this.ip(cmds), want.name);
  }

  private configured(ipAddrText: string, name: string): NetInterface {
    const now = this.withAddresses(ipAddrText).find((l) => l.name === name);
    if (!now) throw new Error(`network interface ${name} vanished while configuring it`);
    return now;
  }

  /**
   * updateInterface for each NIC, then updateRoutes, in one script: what a sandbox's network needs at
   * its start, for one `sh` spawn instead of one per RPC (~0.15-0.25 s each under TCG).
   */
  async updateNetwork(want: NetworkUpdate): Promise<NetworkState> {
    const links = this.links();
    // The links' names as the script goes: an interface update renames its NIC (and maybe moves another aside).
    const names = links.map((l) => l.name);
    const cmds: IpCommand[] = [];
    for (const w of want.interfaces) cmds.push(...interfaceCommands(w, links, names));
    if (want.routes.length > 0) cmds.push(...routeCommands(names, want.routes));
    const out = await this.ip([...cmds, ["-o", "addr", "show"], { mark: true }, ...this.routeListing()]);
    const cut = out.indexOf(`${MARK}\n`);
    const addrText = cut < 0 ? out : out.slice(0, cut);
    const interfaces = want.interfaces.map((w) => this.configured(addrText, w.name));
    return { interfaces, routes: this.parseRoutes(cut < 0 ? "" : out.slice(cut + MARK.length + 1)) };
  }

  /**
   * The IPv4 routes of the guest's NICs become exactly `routes` (the ones the kernel made for the
   * addresses included, as the host lists them); IPv6 routes are added or replaced. Link routes first.
   */
  async updateRoutes(routes: NetRoute[]): Promise<NetRoute[]> {
    const cmds = routeCommands(
      this.links().map((l) => l.name),
      routes,
    );
    return this.parseRoutes(await this.ip([...cmds, ...this.routeListing()]));
  }
}
