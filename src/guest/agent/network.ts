// The guest side of VM networking: the agent configures the NICs QEMU attached (virtio-net, each with
// the MAC of a pod interface on the host) in the guest's root network namespace, where containers that
// joined the pod's netns run. It uses `ip` (busybox's in the guest image; iproute2's on a test host):
// a few calls per sandbox, and the text output both print is parsed for the list calls.
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import type { IpAddress, NetInterface, NetRoute } from "../../agent/api";
import { sortRoutes } from "../../network/scan";

export type IpRunner = (args: string[]) => Promise<string>;

const SYS_NET = "/sys/class/net";

export const runIp: IpRunner = (args) =>
  new Promise((resolve, reject) => {
    execFile("ip", args, { encoding: "utf8", timeout: 10_000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const why = String(stderr).trim().split("\n").pop() || err.message.split("\n")[0];
      reject(new Error(`ip ${args.join(" ")}: ${why}`));
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

/** The guest's Ethernet links: name → MAC, MTU. */
export function guestLinks(): { name: string; mac: string; mtu: number }[] {
  let names: string[] = [];
  try {
    names = readdirSync(SYS_NET);
  } catch {}
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

export class GuestNetwork {
  constructor(private readonly ip: IpRunner = runIp) {}

  async listInterfaces(): Promise<NetInterface[]> {
    const addrs = parseIpAddrText(await this.ip(["-o", "addr", "show"]));
    return guestLinks().map((l) => ({ ...l, addresses: addrs.get(l.name) ?? [] }));
  }

  async listRoutes(): Promise<NetRoute[]> {
    const devices = new Set(guestLinks().map((l) => l.name));
    const v4 = parseIpRouteText(await this.ip(["-4", "route", "show"]), 4, devices);
    const v6 = parseIpRouteText(await this.ip(["-6", "route", "show"]).catch(() => ""), 6, devices);
    return [...v4, ...v6];
  }

  /** Finds the NIC by MAC, renames it to the pod interface's name, sets MTU and addresses, brings it up. */
  async updateInterface(want: NetInterface): Promise<NetInterface> {
    const mac = want.mac.toLowerCase();
    const links = guestLinks();
    const link = links.find((l) => l.mac === mac);
    if (!link) throw new Error(`no network interface with MAC ${mac} in the guest`);
    await this.ip(["link", "set", "dev", link.name, "down"]);
    if (link.name !== want.name) {
      // Another NIC may hold the name (virtio-mmio probe order is not the command line's): move it aside.
      const other = links.find((l) => l.name === want.name);
      if (other) await this.ip(["link", "set", "dev", other.name, "name", `kt${links.indexOf(other)}_tmp`]);
      await this.ip(["link", "set", "dev", link.name, "name", want.name]);
    }
    if (want.mtu > 0) await this.ip(["link", "set", "dev", want.name, "mtu", String(want.mtu)]);
    await this.ip(["addr", "flush", "dev", want.name]);
    for (const a of want.addresses)
      await this.ip([
        ...(a.family === 6 ? ["-6"] : []),
        "addr",
        "add",
        `${a.address}/${a.prefixLen}`,
        "dev",
        want.name,
      ]);
    await this.ip(["link", "set", "dev", want.name, "up"]);
    const now = (await this.listInterfaces()).find((l) => l.name === want.name);
    if (!now) throw new Error(`network interface ${want.name} vanished while configuring it`);
    return now;
  }

  /**
   * The IPv4 routes of the guest's NICs become exactly `routes` (the ones the kernel made for the
   * addresses included, as the host lists them); IPv6 routes are added or replaced. Link routes first.
   */
  async updateRoutes(routes: NetRoute[]): Promise<NetRoute[]> {
    for (const l of guestLinks()) await this.ip(["-4", "route", "flush", "dev", l.name]).catch(() => "");
    for (const r of sortRoutes(routes)) await this.ip(routeArgs(r));
    return this.listRoutes();
  }
}
