// VM networking logic without a VM or a namespace: scanning `ip -json` output (captured from iproute2
// 6.1), the tap + tc commands, the setup/teardown record with a recording runner, the QEMU NIC flags,
// the guest's parsing of busybox `ip` output, the guest spec's network namespace, route input.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  GuestNetwork,
  type IpCommand,
  ipScript,
  parseIpAddrText,
  parseIpRouteText,
  routeArgs,
  runIp,
} from "../../src/guest/network";
import { buildQemuArgs, inNetns, type QemuLaunch } from "../../src/hypervisor/qemu";
import {
  networkRecordPath,
  qemuNics,
  sandboxNetns,
  setupSandboxNetwork,
  specNetns,
  teardownSandboxNetwork,
} from "../../src/network";
import { parseIngressDevices, parseInterfaces, parseRoutes } from "../../src/network/scan";
import { tapNames, tcfilterSetup, tcfilterTeardown } from "../../src/network/tcfilter";
import type { Spec } from "../../src/oci/spec";
import { parseRoutesInput } from "../../src/runtime/network";
import { joinMadeNetns, makesNetns } from "../../src/sandbox/netns";
import { guestSpec } from "../../src/sandbox/supervisor";
import type { NetnsRunner } from "../../src/sys/netns";
import { tempDir } from "../helpers";

// `ip -json -d addr show` in a pod netns: lo, the engine's veth (v4, global v6, link-local v6), a
// leftover tap of ours, and the veth's peer end (also a candidate: every Ethernet link is).
const ADDR_JSON = JSON.stringify([
  { ifname: "lo", link_type: "loopback", address: "00:00:00:00:00:00", mtu: 65536, addr_info: [] },
  {
    ifname: "eth0",
    link_type: "ether",
    address: "02:00:00:00:00:05",
    mtu: 1450,
    linkinfo: { info_kind: "veth" },
    addr_info: [
      { family: "inet", local: "10.1.2.3", prefixlen: 24, scope: "global" },
      { family: "inet6", local: "fd00::3", prefixlen: 64, scope: "global", tentative: true },
      { family: "inet6", local: "fe80::ff:fe00:5", prefixlen: 64, scope: "link" },
    ],
  },
  {
    ifname: "tap0_kata",
    link_type: "ether",
    address: "16:fd:b8:94:ac:62",
    mtu: 1500,
    linkinfo: { info_kind: "tun", info_data: { type: "tap" } },
    addr_info: [],
  },
]);
const ROUTE4_JSON = JSON.stringify([
  { dst: "default", gateway: "10.1.2.1", dev: "eth0", flags: [] },
  { dst: "10.1.2.0/24", dev: "eth0", protocol: "kernel", scope: "link", prefsrc: "10.1.2.3", flags: [] },
  { dst: "192.168.9.0/24", dev: "other0", flags: [] },
  { type: "unreachable", dst: "10.66.0.0/16", flags: [] },
]);
const ROUTE6_JSON = JSON.stringify([
  { dst: "fd00::/64", dev: "eth0", protocol: "kernel", metric: 256, flags: [] },
  { dst: "fe80::/64", dev: "eth0", protocol: "kernel", metric: 256, flags: [] },
  { dst: "ff00::/8", dev: "eth0", metric: 256, flags: [] },
]);

const ETH0 = {
  name: "eth0",
  mac: "02:00:00:00:00:05",
  mtu: 1450,
  addresses: [
    { family: 4 as const, address: "10.1.2.3", prefixLen: 24 },
    { family: 6 as const, address: "fd00::3", prefixLen: 64 },
  ],
};

describe("scanning the pod netns", () => {
  test("Ethernet links but lo and taps, without link-local IPv6", () => {
    assert.deepEqual(parseInterfaces(ADDR_JSON), [ETH0]);
    assert.deepEqual(parseInterfaces(""), []);
    assert.throws(() => parseInterfaces("ip: error"), /cannot parse the output of ip -json -d addr show/);
  });

  test("routes through the scanned devices, link routes first, no link-local/multicast IPv6", () => {
    const devs = new Set(["eth0"]);
    assert.deepEqual(parseRoutes(ROUTE4_JSON, 4, devs), [
      { family: 4, dest: "10.1.2.0/24", device: "eth0", source: "10.1.2.3", scope: "link" },
      { family: 4, dest: "default", device: "eth0", gateway: "10.1.2.1" },
    ]);
    assert.deepEqual(parseRoutes(ROUTE6_JSON, 6, devs), [
      { family: 6, dest: "fd00::/64", device: "eth0", metric: 256 },
    ]);
  });

  test("ingress qdiscs and free tap names", () => {
    const tc = JSON.stringify([
      { kind: "noqueue", dev: "eth0", root: true },
      { kind: "ingress", dev: "eth1", parent: "ffff:fff1" },
    ]);
    assert.deepEqual([...parseIngressDevices(tc)], ["eth1"]);
    assert.deepEqual(tapNames(2, ["lo", "eth0"]), ["tap0_kata", "tap1_kata"]);
    assert.deepEqual(tapNames(2, ["tap0_kata", "tap2_kata"]), ["tap1_kata", "tap3_kata"]);
  });
});

describe("tcfilter commands", () => {
  test("a persistent tap with the interface's MTU and a match-all redirect both ways", () => {
    const s = tcfilterSetup({ iface: ETH0, tap: "tap0_kata" });
    assert.equal(
      s.ip,
      "tuntap add dev tap0_kata mode tap\nlink set dev tap0_kata mtu 1450\nlink set dev tap0_kata up\n",
    );
    assert.equal(
      s.tc,
      [
        "qdisc add dev eth0 ingress",
        "filter add dev eth0 parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev tap0_kata",
        "qdisc add dev tap0_kata ingress",
        "filter add dev tap0_kata parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev eth0",
        "",
      ].join("\n"),
    );
    assert.deepEqual(tcfilterTeardown({ iface: ETH0, tap: "tap0_kata" }), {
      tc: "qdisc del dev eth0 ingress\n",
      ip: "link del dev tap0_kata\n",
    });
  });
});

/** A runner that answers the scan from captured output and records every command. */
function recorder(answers: Record<string, string> = {}): { run: NetnsRunner; calls: string[] } {
  const calls: string[] = [];
  const run: NetnsRunner = (netns, argv, input) => {
    const line = `${netns}: ${argv.join(" ")}${input ? ` <<${input.trim().replace(/\n/g, "; ")}` : ""}`;
    calls.push(line);
    const key = argv.join(" ");
    if (key in answers) return answers[key];
    if (key.includes("-batch")) return "";
    throw new Error(`unexpected command ${key}`);
  };
  return { run, calls };
}

const SCAN = {
  "ip -json -d addr show": ADDR_JSON,
  "tc -json qdisc show": "[]",
  "ip -4 -json route show table main": ROUTE4_JSON,
  "ip -6 -json route show table main": ROUTE6_JSON,
};

/** A sandbox dir and a file standing in for a namespace (what matters is its identity: dev:ino). */
function inSandboxDir(fn: (dir: string, ns: string) => void): void {
  const tmp = tempDir("kata-net-unit-");
  try {
    const ns = join(tmp.path, "netns");
    writeFileSync(ns, "");
    fn(tmp.path, ns);
  } finally {
    tmp.cleanup();
  }
}

describe("sandbox network setup and teardown", () => {
  test("a tap per interface, recorded before it is made; teardown removes exactly that", () =>
    inSandboxDir((dir, ns) => {
      const { run, calls } = recorder(SCAN);
      const net = setupSandboxNetwork(ns, dir, () => {}, run);
      assert.ok(net);
      // tap1_kata: tap0_kata is taken by a leftover link in the namespace.
      assert.deepEqual(net.endpoints, [{ iface: ETH0, tap: "tap1_kata" }]);
      assert.deepEqual(qemuNics(net), [{ ifname: "tap1_kata", mac: "02:00:00:00:00:05" }]);
      assert.equal(net.routes.length, 3);
      assert.deepEqual(JSON.parse(readFileSync(networkRecordPath(dir), "utf8")), net);
      assert.deepEqual(
        calls.slice(4).map((c) => c.replace(/ <<.*/, "")),
        [`${ns}: ip -batch -`, `${ns}: tc -batch -`],
      );

      const t = recorder();
      assert.deepEqual(teardownSandboxNetwork(dir, t.run), []);
      assert.deepEqual(t.calls, [
        `${ns}: tc -force -batch - <<qdisc del dev eth0 ingress`,
        `${ns}: ip -force -batch - <<link del dev tap1_kata`,
      ]);
      assert.equal(existsSync(networkRecordPath(dir)), false);
      // Nothing recorded: nothing to do.
      assert.deepEqual(teardownSandboxNetwork(dir, t.run), []);
      assert.equal(t.calls.length, 2);
    }));

  test("a namespace that is no longer the recorded one is left alone", () =>
    inSandboxDir((dir, ns) => {
      setupSandboxNetwork(ns, dir, () => {}, recorder(SCAN).run);
      // The engine removed the namespace and another one took the path.
      writeFileSync(`${ns}.new`, "");
      renameSync(`${ns}.new`, ns);
      const t = recorder();
      teardownSandboxNetwork(dir, t.run);
      assert.deepEqual(t.calls, []);
      assert.equal(existsSync(networkRecordPath(dir)), false);
    }));

  test("a failed setup undoes itself; an interface redirected already is refused before anything is made", () =>
    inSandboxDir((dir, ns) => {
      const calls: string[] = [];
      const failing: NetnsRunner = (n, argv, input) => {
        calls.push(argv.join(" "));
        if (argv.join(" ") === "tc -batch -") throw new Error("tc -batch -: RTNETLINK answers: No such file");
        return recorder(SCAN).run(n, argv, input);
      };
      assert.throws(() => setupSandboxNetwork(ns, dir, () => {}, failing), /RTNETLINK answers/);
      assert.deepEqual(calls.slice(-2), ["tc -force -batch -", "ip -force -batch -"]);
      assert.equal(existsSync(networkRecordPath(dir)), false);

      const busy = recorder({
        ...SCAN,
        "tc -json qdisc show": JSON.stringify([{ kind: "ingress", dev: "eth0" }]),
      });
      assert.throws(
        () => setupSandboxNetwork(ns, dir, () => {}, busy.run),
        /^Error: interface eth0 in .* already has an ingress qdisc \(another sandbox in this network namespace\?\)$/,
      );
      assert.equal(busy.calls.filter((c) => c.includes("-batch")).length, 0);
      assert.equal(existsSync(networkRecordPath(dir)), false);
    }));

  test("the host's own netns, a netns with only lo, a missing netns", () =>
    inSandboxDir((dir, ns) => {
      const logs: string[] = [];
      const own = recorder(SCAN);
      assert.equal(
        setupSandboxNetwork("/proc/self/ns/net", dir, (m) => logs.push(m), own.run),
        undefined,
      );
      assert.deepEqual(own.calls, [], "the host's interfaces are never touched");
      assert.match(logs[0], /is the host's: the VM gets no network interface/);
      const loOnly = recorder({ "ip -json -d addr show": JSON.stringify([JSON.parse(ADDR_JSON)[0]]) });
      assert.equal(
        setupSandboxNetwork(ns, dir, () => {}, loOnly.run),
        undefined,
      );
      assert.equal(existsSync(networkRecordPath(dir)), false);
      // A namespace that cannot be examined is treated as not ours: no NIC. Root passes any mode bits,
      // but not ptrace access checks: pid 1's namespace is EACCES on the development machine.
      const noDir = join(dir, "noaccess");
      mkdirSync(noDir, { mode: 0o000 });
      const denied = recorder(SCAN);
      const unreadable = process.getuid?.() === 0 ? "/proc/1/ns/net" : join(noDir, "x");
      let examinable = true;
      try {
        statSync(unreadable);
      } catch (err) {
        examinable = (err as NodeJS.ErrnoException).code === "ENOENT";
      }
      if (!examinable) {
        assert.equal(
          setupSandboxNetwork(unreadable, dir, (m) => logs.push(m), denied.run),
          undefined,
        );
        assert.deepEqual(denied.calls, []);
        assert.match(logs[1], /cannot be examined \(E(ACCES|PERM)\): the VM gets no network interface/);
      }
      assert.throws(
        () => setupSandboxNetwork(join(dir, "nope"), dir),
        /^Error: network namespace .*nope does not exist$/,
      );
    }));
});

describe("QEMU NICs", () => {
  const base: QemuLaunch = {
    qemuPath: "/usr/bin/qemu-system-x86_64",
    machineType: "microvm",
    accel: "tcg",
    vcpus: 1,
    memoryMiB: 512,
    kernel: "/k/vmlinux",
    image: "/k/img",
    console: "serial",
    consoleLog: "/x/console.log",
    qmpSocket: "/x/qmp.sock",
    agentSocket: "/x/agent.sock",
    pidFile: "/x/qemu.pid",
  };
  const after = (argv: string[], flag: string) => argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));

  test("one tap netdev + virtio-net device with the interface's MAC per NIC; none without", () => {
    assert.deepEqual(after(buildQemuArgs(base), "-netdev"), []);
    const argv = buildQemuArgs({
      ...base,
      nics: [
        { ifname: "tap0_kata", mac: "02:00:00:00:00:05" },
        { ifname: "tap1_kata", mac: "02:00:00:00:00:06" },
      ],
    });
    assert.deepEqual(after(argv, "-netdev"), [
      "tap,id=net0,ifname=tap0_kata,script=no,downscript=no,vhost=off",
      "tap,id=net1,ifname=tap1_kata,script=no,downscript=no,vhost=off",
    ]);
    assert.ok(after(argv, "-device").includes("virtio-net-device,netdev=net0,mac=02:00:00:00:00:05"));
    assert.ok(after(argv, "-device").includes("virtio-net-device,netdev=net1,mac=02:00:00:00:00:06"));
    const pci = buildQemuArgs({
      ...base,
      machineType: "q35",
      nics: [{ ifname: "tap0_kata", mac: "02:00:00:00:00:05" }],
    });
    assert.ok(after(pci, "-device").includes("virtio-net-pci,netdev=net0,mac=02:00:00:00:00:05"));
    assert.throws(
      () => buildQemuArgs({ ...base, nics: [{ ifname: "a,b", mac: "02:00:00:00:00:05" }] }),
      /invalid tap name/,
    );
    assert.throws(() => buildQemuArgs({ ...base, nics: [{ ifname: "tap0", mac: "02:00" }] }), /invalid MAC/);
  });

  test("QEMU runs in the pod netns through nsenter, in front of the rest (setpriv stays)", () => {
    const argv = ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--", "/usr/bin/qemu-system-x86_64"];
    assert.deepEqual(inNetns(undefined, argv), argv);
    assert.deepEqual(inNetns("/run/netns/p", argv), [
      "/usr/bin/nsenter",
      "--net=/run/netns/p",
      "--",
      ...argv,
    ]);
  });
});

describe("guest side", () => {
  // busybox 1.35 `ip -o addr show` and `ip route` in the guest.
  const ADDR = [
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever",
    "1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever",
    "2: eth0    inet 10.213.7.2/24 scope global eth0\\       valid_lft forever preferred_lft forever",
    "2: eth0    inet6 fd00::3/64 scope global \\       valid_lft forever preferred_lft forever",
    "2: eth0    inet6 fe80::aa:bbff:fecc:dd01/64 scope link \\       valid_lft forever preferred_lft forever",
  ].join("\n");

  test("addresses per interface, link-local IPv6 left out", () => {
    const m = parseIpAddrText(ADDR);
    assert.deepEqual(m.get("eth0"), [
      { family: 4, address: "10.213.7.2", prefixLen: 24 },
      { family: 6, address: "fd00::3", prefixLen: 64 },
    ]);
    assert.deepEqual(m.get("lo")?.length, 2);
  });

  test("routes of busybox and iproute2 text output", () => {
    const text = [
      "default via 10.213.7.1 dev eth0 ",
      "10.213.7.0/24 dev eth0 scope link  src 10.213.7.2 ",
      "10.88.0.0/16 via 10.213.7.1 dev eth0 proto static metric 100",
      "unreachable 10.66.0.0/16",
      "192.168.0.0/24 dev lo scope link",
    ].join("\n");
    assert.deepEqual(parseIpRouteText(text, 4, new Set(["eth0"])), [
      { family: 4, dest: "default", device: "eth0", gateway: "10.213.7.1" },
      { family: 4, dest: "10.213.7.0/24", device: "eth0", source: "10.213.7.2", scope: "link" },
      { family: 4, dest: "10.88.0.0/16", device: "eth0", gateway: "10.213.7.1", metric: 100 },
    ]);
    const v6 = "fd00::/64 dev eth0 metric 256\nfe80::/64 dev eth0 metric 256\nff00::/8 dev eth0 metric 256";
    assert.deepEqual(parseIpRouteText(v6, 6, new Set(["eth0"])), [
      { family: 6, dest: "fd00::/64", device: "eth0", metric: 256 },
    ]);
  });

  test("one shell per RPC: commands in order, quoted, the first failure named; optional ones and marks", async () => {
    assert.equal(
      ipScript([
        ["link", "set", "dev", "it's", "up"],
        { args: ["-6", "route", "show"], optional: true },
        { mark: true },
      ]),
      [
        "'ip' 'link' 'set' 'dev' 'it'\\''s' 'up' || { echo 'kata-ts: failed: ip link set dev it'\\''s up' >&2; exit 1; }",
        "'ip' '-6' 'route' 'show' || true",
        "echo --kata-ts--",
      ].join("\n"),
    );
    // Real sh and ip (read-only commands; the failing one names a device that does not exist).
    assert.match(
      await runIp([["-o", "link", "show", "dev", "lo"], { mark: true }]),
      /^1: lo: .*\n--kata-ts--\n$/s,
    );
    await assert.rejects(
      runIp([
        { args: ["link", "show", "dev", "kt-none0"], optional: true },
        ["link", "set", "dev", "kt-none0", "up"],
        ["-o", "link"],
      ]),
      /^Error: ip link set dev kt-none0 up: .*(Cannot find device|does not exist|No such device).*$/,
    );
  });

  test("updateInterface: by MAC; a template clone's NIC by the template's MAC, given the pod's first", async () => {
    const pod = "02:42:0a:58:00:05";
    const tpl = "02:6b:74:00:00:01";
    const runs: string[][][] = [];
    const guest = (mac: string) =>
      new GuestNetwork(
        async (cmds) => {
          runs.push(cmds.filter((c): c is string[] => Array.isArray(c)));
          return `2: eth0    inet 10.88.0.5/16 brd 10.88.255.255 scope global eth0\n`;
        },
        () => [{ name: "eth0", mac, mtu: 1500 }],
      );
    const want = {
      name: "eth0",
      mac: pod,
      mtu: 1500,
      addresses: [{ family: 4 as const, address: "10.88.0.5", prefixLen: 16 }],
    };
    await guest(pod).updateInterface(want);
    assert.ok(!runs[0].some((c) => c.includes("address")), "the NIC has the pod's MAC already");
    await guest(tpl).updateInterface({ ...want, fromMac: tpl.toUpperCase() });
    assert.deepEqual(runs[1].slice(0, 2), [
      ["link", "set", "dev", "eth0", "down"],
      ["link", "set", "dev", "eth0", "address", pod],
    ]);
    await assert.rejects(
      guest(tpl).updateInterface(want),
      /no network interface with MAC 02:42:0a:58:00:05 in/,
    );
  });

  test("updateNetwork: NICs and routes in one script; routes flushed on the names the renames left", async () => {
    const scripts: IpCommand[][] = [];
    // Two NICs probed in the other order: the pod's eth0 is the guest's eth1 and its eth1 the guest's eth0.
    const links = [
      { name: "eth0", mac: "02:00:00:00:00:02", mtu: 1500 },
      { name: "eth1", mac: "02:00:00:00:00:01", mtu: 1500 },
    ];
    const net = new GuestNetwork(
      async (cmds) => {
        scripts.push(cmds);
        return [
          "2: eth0    inet 10.88.0.5/16 brd 10.88.255.255 scope global eth0",
          "3: eth1    inet 10.99.0.5/24 brd 10.99.0.255 scope global eth1",
          "--kata-ts--",
          "default via 10.88.0.1 dev eth0 ",
          "10.88.0.0/16 dev eth0 scope link  src 10.88.0.5 ",
          "--kata-ts--",
          "",
        ].join("\n");
      },
      () => links,
    );
    const iface = (name: string, mac: string, address: string) => ({
      name,
      mac,
      mtu: 1400,
      addresses: [{ family: 4 as const, address, prefixLen: 16 }],
    });
    const state = await net.updateNetwork({
      interfaces: [
        iface("eth0", "02:00:00:00:00:01", "10.88.0.5"),
        iface("eth1", "02:00:00:00:00:02", "10.99.0.5"),
      ],
      routes: [{ family: 4, dest: "default", gateway: "10.88.0.1", device: "eth0" }],
    });
    assert.equal(scripts.length, 1, "one spawn for the whole network");
    const run = scripts[0].map((c) =>
      Array.isArray(c) ? c.join(" ") : "mark" in c ? "MARK" : `${c.args.join(" ")} ?`,
    );
    assert.deepEqual(run.slice(0, 4), [
      "link set dev eth1 down",
      "link set dev eth0 name kt0_tmp",
      "link set dev eth1 name eth0",
      "link set dev eth0 mtu 1400",
    ]);
    assert.ok(run.includes("link set dev kt0_tmp down"), "the second NIC is found under its temporary name");
    assert.ok(run.includes("link set dev kt0_tmp name eth1"));
    // Every route command after every interface command, on the final names.
    const firstRoute = run.findIndex((c) => c.includes("route"));
    assert.ok(firstRoute > run.lastIndexOf("link set dev eth1 up"));
    // In link order: the guest's first NIC is now eth1, its second eth0.
    assert.deepEqual(run.slice(firstRoute, firstRoute + 3), [
      "-4 route flush dev eth1 ?",
      "-4 route flush dev eth0 ?",
      "route replace default via 10.88.0.1 dev eth0",
    ]);
    assert.deepEqual(
      state.interfaces.map((i) => [i.name, i.addresses[0]?.address]),
      [
        ["eth0", "10.88.0.5"],
        ["eth1", "10.99.0.5"],
      ],
    );
    assert.deepEqual(
      state.routes.map((r) => `${r.dest} ${r.gateway ?? ""}`),
      ["default 10.88.0.1", "10.88.0.0/16 "],
    );
    await assert.rejects(
      net.updateNetwork({ interfaces: [iface("eth0", "02:00:00:00:00:09", "10.0.0.1")], routes: [] }),
      /no network interface with MAC 02:00:00:00:00:09 in the guest/,
    );
    assert.equal(scripts.length, 1, "a NIC that is not there fails before anything runs");
  });

  test("ip route replace arguments", () => {
    assert.deepEqual(routeArgs({ family: 4, dest: "default", gateway: "10.0.0.1", device: "eth0" }), [
      ...["route", "replace", "default", "via", "10.0.0.1", "dev", "eth0"],
    ]);
    assert.deepEqual(
      routeArgs({
        family: 4,
        dest: "10.0.0.0/24",
        device: "eth0",
        scope: "link",
        source: "10.0.0.2",
        metric: 5,
      }),
      ["route", "replace", "10.0.0.0/24", "dev", "eth0", "src", "10.0.0.2", "scope", "link", "metric", "5"],
    );
    assert.deepEqual(routeArgs({ family: 6, dest: "fd00::/64", device: "eth0", scope: "global" }), [
      ...["-6", "route", "replace", "fd00::/64", "dev", "eth0"],
    ]);
  });
});

describe("the container's network namespace", () => {
  const spec = (network: { type: string; path?: string }): Spec =>
    ({
      ociVersion: "1.0.2",
      root: { path: "rootfs" },
      linux: { namespaces: [{ type: "pid" }, network, { type: "ipc", path: "/proc/1/ns/ipc" }] },
    }) as Spec;

  test("joined by path or new: the guest's root one (entry dropped); a new one has no NICs on the host", () => {
    const joined = spec({ type: "network", path: "/run/netns/pod" });
    assert.equal(specNetns(joined), "/run/netns/pod");
    assert.deepEqual(guestSpec(joined, "c1").spec.linux?.namespaces, [{ type: "pid" }, { type: "ipc" }]);
    const fresh = spec({ type: "network" });
    assert.equal(specNetns(fresh), undefined);
    assert.deepEqual(guestSpec(fresh, "c1").spec.linux?.namespaces, [{ type: "pid" }, { type: "ipc" }]);
  });
});

describe("internetworking_model", () => {
  test("tcfilter: the spec's netns; none: no NICs; macvtap: refused in one line; no path: nothing", () => {
    const spec = { linux: { namespaces: [{ type: "network", path: "/run/netns/p" }] } };
    assert.equal(sandboxNetns(spec, "tcfilter"), "/run/netns/p");
    assert.equal(sandboxNetns(spec, "none"), undefined);
    assert.throws(
      () => sandboxNetns(spec, "macvtap"),
      /^Error: internetworking_model = "macvtap" is not supported: use "tcfilter" or "none"$/,
    );
    assert.equal(sandboxNetns({ linux: { namespaces: [{ type: "network" }] } }, "macvtap"), undefined);
  });

  test("a netns kata-ts made (new netns + prestart hooks): the NICs' source; the guest drops the entry", () => {
    const fresh = {
      ociVersion: "1.0.2",
      root: { path: "rootfs" },
      linux: { namespaces: [{ type: "pid" }, { type: "network" }] },
    } as Spec;
    assert.equal(makesNetns(fresh), false, "no prestart hook: nothing could add an interface");
    const docker = { ...fresh, hooks: { prestart: [{ path: "/usr/bin/dockerd" }] } } as Spec;
    assert.equal(makesNetns(docker), true);
    assert.equal(makesNetns({ ...docker, linux: { namespaces: [{ type: "pid" }] } }), false, "host network");
    const joined = { ...docker, linux: { namespaces: [{ type: "network", path: "/run/netns/p" }] } } as Spec;
    assert.equal(makesNetns(joined), false, "the engine's netns by path");
    assert.equal(sandboxNetns(docker, "tcfilter", "/r/sandboxes/c1/netns"), "/r/sandboxes/c1/netns");
    assert.equal(sandboxNetns(joined, "tcfilter", "/r/sandboxes/c1/netns"), "/run/netns/p");
    assert.equal(sandboxNetns(docker, "none", "/r/sandboxes/c1/netns"), undefined);
    assert.throws(() => sandboxNetns(docker, "macvtap", "/r/sandboxes/c1/netns"), /macvtap/);
    const sent = joinMadeNetns(docker, "/r/sandboxes/c1/netns");
    assert.deepEqual(sent.linux?.namespaces, [
      { type: "pid" },
      { type: "network", path: "/r/sandboxes/c1/netns" },
    ]);
    assert.deepEqual(
      docker.linux?.namespaces,
      [{ type: "pid" }, { type: "network" }],
      "the record's spec is unchanged",
    );
    assert.deepEqual(
      guestSpec(sent, "c1").spec.linux?.namespaces,
      [{ type: "pid" }],
      "the guest's root netns",
    );
    assert.equal(joinMadeNetns(docker, undefined), docker);
  });
});

describe("update-routes input", () => {
  test("an array (or {routes}) of routes; the family from the addresses; one-line errors", () => {
    assert.deepEqual(
      parseRoutesInput(
        '[{"dest":"default","gateway":"10.0.0.1","device":"eth0"},{"dest":"fd00::/64","device":"eth0"}]',
      ),
      [
        { family: 4, dest: "default", gateway: "10.0.0.1", device: "eth0" },
        { family: 6, dest: "fd00::/64", device: "eth0" },
      ],
    );
    assert.equal(parseRoutesInput('{"routes":[]}').length, 0);
    assert.throws(() => parseRoutesInput("nope"), /^Error: update-routes: the input is not JSON$/);
    assert.throws(() => parseRoutesInput('[{"dest":"default"}]'), /route 0 needs "dest" and "device"/);
    assert.throws(() => parseRoutesInput('[{"dest":"x","device":"eth0","scope":"site"}]'), /scope must be/);
  });
});
