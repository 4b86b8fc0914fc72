// Kata's "tcfilter" model: per interface of the pod's netns a tap device next to it, and tc mirroring
// everything between the two (an ingress qdisc on each with a u32 match-all filter whose action is
// mirred egress redirect to the other). QEMU runs inside the netns with `-netdev tap,ifname=<tap>`;
// the guest NIC carries the interface's MAC, so to the peer on the other end of the veth the guest
// is that interface. The interface keeps its addresses: the netns's own stack never sees a frame
// (ingress redirection happens before it).
import type { NetInterface } from "../agent/api";
import type { NetnsRunner } from "../sys/netns";

export interface Endpoint {
  /** The interface in the pod's netns (its name, MAC, MTU and addresses go to the guest). */
  iface: NetInterface;
  /** The tap kata-ts made next to it (QEMU's -netdev). */
  tap: string;
  /** The tap's owner: a rootless QEMU may attach to it without CAP_NET_ADMIN. */
  owner?: { uid: number; gid: number };
}

/** Kata's names: tap0_kata, tap1_kata, ...: the first `count` not taken by a link of the netns. */
export function tapNames(count: number, taken: Iterable<string>): string[] {
  const used = new Set(taken);
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) if (!used.has(`tap${i}_kata`)) out.push(`tap${i}_kata`);
  return out;
}

/**
 * `ip -batch` input that makes a tap and brings it up. Persistent: QEMU attaches to it by name and it
 * outlives QEMU until removed. Owned by nobody, or by the jailed QEMU's uid (attaching to a tap one does
 * not own needs CAP_NET_ADMIN). Also what a one-NIC template boots on (factory/template.ts).
 */
export function tapAddBatch(tap: string, owner?: { uid: number; gid: number }, mtu?: number): string {
  return [
    `tuntap add dev ${tap} mode tap${owner ? ` user ${owner.uid} group ${owner.gid}` : ""}`,
    ...(mtu === undefined ? [] : [`link set dev ${tap} mtu ${mtu}`]),
    `link set dev ${tap} up`,
    "",
  ].join("\n");
}

/** `ip -batch` and `tc -batch` input that makes the tap and the two redirections. */
export function tcfilterSetup(ep: Endpoint): { ip: string; tc: string } {
  const dev = ep.iface.name;
  const redirect = (from: string, to: string) =>
    `filter add dev ${from} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev ${to}`;
  return {
    ip: tapAddBatch(ep.tap, ep.owner, ep.iface.mtu),
    tc: [
      `qdisc add dev ${dev} ingress`,
      redirect(dev, ep.tap),
      `qdisc add dev ${ep.tap} ingress`,
      redirect(ep.tap, dev),
      "",
    ].join("\n"),
  };
}

/** The reverse: the interface's ingress qdisc (its filter goes with it) and the tap (with its qdisc). */
export function tcfilterTeardown(ep: Endpoint): { ip: string; tc: string } {
  return { tc: `qdisc del dev ${ep.iface.name} ingress\n`, ip: `link del dev ${ep.tap}\n` };
}

export function applySetup(netns: string, eps: Endpoint[], run: NetnsRunner): void {
  for (const ep of eps) {
    const s = tcfilterSetup(ep);
    run(netns, ["ip", "-batch", "-"], s.ip);
    run(netns, ["tc", "-batch", "-"], s.tc);
  }
}

/** Best effort, every step: what a half-done setup made is removed, what is missing is no error. */
export function applyTeardown(netns: string, eps: Endpoint[], run: NetnsRunner): string[] {
  const errors: string[] = [];
  for (const ep of eps) {
    const t = tcfilterTeardown(ep);
    for (const [cmd, input] of [
      ["tc", t.tc],
      ["ip", t.ip],
    ] as const) {
      try {
        run(netns, [cmd, "-force", "-batch", "-"], input);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
  }
  return errors;
}
