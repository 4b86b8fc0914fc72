// VM networking for real (Kata's tcfilter model): the test plays the engine — it makes the pod's
// network namespace with one end of a veth pair (address, MAC, MTU, default route) and a peer
// namespace with the other end and a web server — and runs a VM-mode container whose spec joins the
// pod netns by path, through bin/kata-ts. The container must see the veth's address, MAC, MTU and
// routes on its eth0 and talk to the peer both ways; `kata-ts network` must list and update the
// guest's view. Cleanup: after `delete` (and after `delete --force` of a sandbox whose supervisor was
// killed) the pod netns holds no tap and no qdisc of ours, and no QEMU runs. Two VM boots in all.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadConfig } from "../../src/config/config";
import { defaultSpec } from "../../src/oci/defaults";
import { alive, BIN, busyboxRootfs, REPO, tempDir, until, writeVmTestConfig } from "../helpers";
import { findLeaks, type HostSnapshot, snapshotHost } from "../leaks";

const QEMU = "/usr/bin/qemu-system-x86_64";
// The kata-ts guest kernel (virtio-net built in): CI's setup builds it; Debian's has it as a module.
const KERNEL = loadConfig({ explicitPath: join(REPO, "config", "configuration.toml") }).config.hypervisor
  .kernel;
const missing = [QEMU, KERNEL, "/bin/busybox", "/usr/bin/nsenter", "/usr/sbin/tc"].filter(
  (f) => !existsSync(f),
);

const tmp = tempDir("kata-vm-net-");
const root = join(tmp.path, "root");
const CONFIG = join(tmp.path, "configuration.toml");
const tag = `${process.pid % 100_000}`;
const POD = `ktnet-pod-${tag}`;
const PEER = `ktnet-peer-${tag}`;
const PEER_IF = `ktnp${tag}`;
// A /24 of its own per run (loopback-only namespaces: nothing routes it anywhere else).
const NET = `10.${200 + (process.pid % 50)}.${process.pid % 250}`;
const HOST_IP = `${NET}.1`;
const GUEST_IP = `${NET}.2`;
const MAC = `02:6b:74:${((process.pid >> 8) & 0xff).toString(16).padStart(2, "0")}:${(process.pid & 0xff).toString(16).padStart(2, "0")}:02`;
const MTU = 1400;
const TOKEN = `peer-says-${process.pid}`;
const BACK = `guest-says-${process.pid}`;
let httpd: ChildProcess | undefined;
/** Taken once the test's own namespaces and server exist. */
let hostBefore: HostSnapshot;

function kataTs(args: string[], input = ""): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(BIN, ["--root", root, "--config", CONFIG, ...args], {
    input,
    encoding: "utf8",
    timeout: 180_000,
  });
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

/** create with the container's stdio on a file. */
function create(id: string, bundle: string, config = CONFIG): string {
  const out = join(tmp.path, `${id}.out`);
  const fd = openSync(out, "w");
  try {
    const r = spawnSync(BIN, ["--root", root, "--config", config, "create", "--bundle", bundle, id], {
      stdio: ["ignore", fd, fd],
      timeout: 180_000,
    });
    assert.equal(r.status, 0, readFileSync(out, "utf8"));
  } finally {
    closeSync(fd);
  }
  return out;
}

function inNs(ns: string, args: string[]): string {
  return execFileSync("ip", ["netns", "exec", ns, ...args], { encoding: "utf8", timeout: 30_000 });
}

function bundle(name: string, script: string): string {
  const dir = join(tmp.path, name);
  busyboxRootfs(join(dir, "rootfs"));
  const spec = defaultSpec();
  spec.process = { ...(spec.process as NonNullable<typeof spec.process>), terminal: false };
  spec.process.args = ["/bin/sh", "-c", script];
  spec.root = { path: "rootfs", readonly: false };
  // What podman/CNI/docker write: the network namespace the engine made, joined by path.
  spec.linux!.namespaces = spec.linux!.namespaces!.map((n) =>
    n.type === "network" ? { type: "network", path: `/run/netns/${POD}` } : n,
  );
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

/** The pod netns as the engine left it: links and qdiscs. */
function podLinks(): string[] {
  return (JSON.parse(inNs(POD, ["ip", "-j", "link", "show"])) as { ifname: string }[]).map((l) => l.ifname);
}

function podQdiscs(): string[] {
  return (JSON.parse(inNs(POD, ["tc", "-j", "qdisc", "show"])) as { kind: string; dev: string }[]).map(
    (q) => `${q.dev}:${q.kind}`,
  );
}

function sandboxInfo(id: string): { vmPid: number; supervisorPid: number } {
  return JSON.parse(readFileSync(join(root, "sandboxes", id, "sandbox.json"), "utf8"));
}

function assertPodNetnsClean(): void {
  assert.deepEqual(podLinks().sort(), ["eth0", "lo"], "a tap is left in the pod netns");
  assert.deepEqual(
    podQdiscs().filter((q) => q.endsWith(":ingress")),
    [],
    "an ingress qdisc is left in the pod netns",
  );
}

/**
 * The leak scanner's processes, mounts, cgroups, state and sockets. Its new-netns check is left out:
 * kata-ts makes no namespace files, and other test runs on the machine may add theirs meanwhile.
 */
function assertNoHostLeaks(bundle: string, id: string): void {
  const leaks = findLeaks(hostBefore, { root, bundle, id }).filter((l) => !l.startsWith("netns "));
  assert.deepEqual(leaks, [], `left behind by ${id}`);
}

describe("VM networking (tcfilter)", { skip: missing.length > 0 && `missing ${missing.join(", ")}` }, () => {
  before(async () => {
    await writeVmTestConfig(tmp.path, KERNEL);
    // The engine's part: pod netns with eth0 (address, MAC, MTU, default route), peer netns with the
    // other end and a web server.
    execFileSync("ip", ["netns", "add", POD]);
    execFileSync("ip", ["netns", "add", PEER]);
    execFileSync("ip", [
      ...["link", "add", PEER_IF, "netns", PEER, "mtu", String(MTU), "type", "veth"],
      ...["peer", "name", "eth0", "netns", POD, "address", MAC, "mtu", String(MTU)],
    ]);
    inNs(PEER, ["ip", "addr", "add", `${HOST_IP}/24`, "dev", PEER_IF]);
    inNs(PEER, ["ip", "link", "set", PEER_IF, "up"]);
    inNs(POD, ["ip", "addr", "add", `${GUEST_IP}/24`, "dev", "eth0"]);
    inNs(POD, ["ip", "link", "set", "eth0", "up"]);
    inNs(POD, ["ip", "route", "add", "default", "via", HOST_IP]);
    const www = join(tmp.path, "www");
    mkdirSync(www);
    writeFileSync(join(www, "token.txt"), `${TOKEN}\n`);
    httpd = spawn(
      "ip",
      ["netns", "exec", PEER, "/bin/busybox", "httpd", "-f", "-p", `${HOST_IP}:8080`, "-h", www],
      {
        stdio: "ignore",
      },
    );
    hostBefore = snapshotHost();
  });

  after(() => {
    for (const id of ["ktnet1", "ktnet2", "ktnet3"]) kataTs(["delete", "--force", id]);
    httpd?.kill("SIGKILL");
    for (const ns of [POD, PEER]) spawnSync("ip", ["netns", "del", ns]);
    tmp.cleanup();
  });

  test("the container sees the pod interface (address, MAC, MTU, routes), talks both ways; delete leaves nothing", async () => {
    const b = bundle(
      "b1",
      [
        "ip -o addr show dev eth0",
        "echo mac=$(cat /sys/class/net/eth0/address) mtu=$(cat /sys/class/net/eth0/mtu)",
        "ip route",
        `echo got=$(wget -qO- http://${HOST_IP}:8080/token.txt)`,
        `mkdir -p /tmp/www && echo ${BACK} > /tmp/www/back.txt`,
        "echo ready",
        "exec httpd -f -p 8081 -h /tmp/www",
      ].join("; "),
    );
    const out = create("ktnet1", b);
    // While the sandbox runs: QEMU is in the pod netns, with a tap there redirected both ways.
    const info = sandboxInfo("ktnet1");
    assert.equal(
      statSync(`/proc/${info.vmPid}/ns/net`).ino,
      statSync(`/run/netns/${POD}`).ino,
      "QEMU runs in the pod's network namespace",
    );
    const argv = readFileSync(`/proc/${info.vmPid}/cmdline`, "utf8").split("\0");
    assert.ok(
      argv.some((a) => /^tap,id=net0,ifname=tap0_kata,script=no,downscript=no,vhost=off$/.test(a)),
      argv.join(" "),
    );
    assert.ok(argv.includes(`virtio-net-device,netdev=net0,mac=${MAC}`), argv.join(" "));
    assert.ok(podLinks().includes("tap0_kata"));
    assert.deepEqual(
      podQdiscs()
        .filter((q) => q.endsWith(":ingress"))
        .sort(),
      ["eth0:ingress", "tap0_kata:ingress"],
    );

    assert.equal(kataTs(["start", "ktnet1"]).code, 0);
    await until("the container's report", () => readFileSync(out, "utf8").includes("ready"), 60_000);
    const report = readFileSync(out, "utf8");
    assert.match(report, new RegExp(`inet ${GUEST_IP.replace(/\./g, "\\.")}/24 `), report);
    assert.match(report, new RegExp(`mac=${MAC} mtu=${MTU}\\n`), report);
    assert.match(report, new RegExp(`default via ${HOST_IP.replace(/\./g, "\\.")} dev eth0`), report);
    assert.match(report, new RegExp(`got=${TOKEN}\\n`), "guest → peer over the veth");

    // peer → guest: the peer reaches the server the container runs on the pod's address.
    let back = "";
    await until("the guest's web server", () => {
      const r = spawnSync(
        "ip",
        ["netns", "exec", PEER, "/bin/busybox", "wget", "-qO-", `http://${GUEST_IP}:8081/back.txt`],
        {
          encoding: "utf8",
          timeout: 20_000,
        },
      );
      back = r.stdout.trim();
      return r.status === 0;
    });
    assert.equal(back, BACK, "peer → guest over the veth");

    // kata-ts network: the guest's view, and new routes for it.
    const ifaces = kataTs(["network", "list-ifaces", "ktnet1"]);
    assert.equal(ifaces.code, 0, ifaces.stderr);
    assert.deepEqual(JSON.parse(ifaces.stdout), [
      { name: "eth0", mac: MAC, mtu: MTU, addresses: [{ family: 4, address: GUEST_IP, prefixLen: 24 }] },
    ]);
    const routes = kataTs(["network", "list-routes", "ktnet1"]);
    assert.equal(routes.code, 0, routes.stderr);
    assert.ok(
      (JSON.parse(routes.stdout) as { dest: string; gateway?: string }[]).some(
        (r) => r.dest === "default" && r.gateway === HOST_IP,
      ),
      routes.stdout,
    );
    const newRoutes = [
      { dest: `${NET}.0/24`, device: "eth0", scope: "link", source: GUEST_IP },
      { dest: "10.99.0.0/16", gateway: HOST_IP, device: "eth0" },
    ];
    const upd = kataTs(["network", "update-routes", "ktnet1", "-"], JSON.stringify(newRoutes));
    assert.equal(upd.code, 0, upd.stderr);
    const now = JSON.parse(upd.stdout) as { dest: string; gateway?: string }[];
    assert.ok(
      now.some((r) => r.dest === "10.99.0.0/16" && r.gateway === HOST_IP),
      upd.stdout,
    );
    assert.ok(
      !now.some((r) => r.dest === "default"),
      `update-routes replaced the default route: ${upd.stdout}`,
    );
    const add = kataTs(["network", "add-iface", "ktnet1", "-"], JSON.stringify({ name: "eth1" }));
    assert.notEqual(add.code, 0);
    assert.match(add.stderr.trim(), /^add-iface: not supported with machine type microvm: [^\n]*$/);

    assert.equal(kataTs(["kill", "ktnet1", "9"]).code, 0);
    await until("stopped", () => JSON.parse(kataTs(["state", "ktnet1"]).stdout).status === "stopped");
    const del = kataTs(["delete", "ktnet1"]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(alive(info.vmPid), false, "QEMU left");
    assert.equal(existsSync(join(root, "sandboxes", "ktnet1")), false, "sandbox dir left");
    assertPodNetnsClean();
    assertNoHostLeaks(b, "ktnet1");
  });

  test("a killed supervisor: QEMU dies with it, delete --force removes the tap and the qdiscs", async () => {
    const b = bundle("b2", "sleep 100000");
    create("ktnet2", b);
    const info = sandboxInfo("ktnet2");
    assert.ok(podLinks().includes("tap0_kata"));
    process.kill(info.supervisorPid, "SIGKILL");
    await until("QEMU's exit", () => !alive(info.vmPid), 30_000);
    // Nobody removed them yet: that is delete --force's job.
    assert.ok(podLinks().includes("tap0_kata"), "the tap is still there before delete --force");
    const del = kataTs(["delete", "--force", "ktnet2"]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(existsSync(join(root, "sandboxes", "ktnet2")), false, "sandbox dir left");
    assert.equal(existsSync(join(root, "ktnet2")), false, "state left");
    assertPodNetnsClean();
    assertNoHostLeaks(b, "ktnet2");
  });

  test("with the factory: the pod's VM is a clone of the one-NIC template, with the pod's MAC and address", async () => {
    const templates = join(tmp.path, "templates");
    const factoryConfig = join(tmp.path, "factory.toml");
    writeFileSync(
      factoryConfig,
      `${readFileSync(CONFIG, "utf8")}\n[factory]\nenable_template = true\ntemplate_path = "${templates}"\n`,
    );
    const withFactory = (args: string[]) =>
      spawnSync(BIN, ["--root", root, "--config", factoryConfig, ...args], {
        encoding: "utf8",
        timeout: 300_000,
      });
    const netnsBefore = readdirSync("/run/netns");
    try {
      const init = withFactory(["factory", "init"]);
      assert.equal(init.status, 0, init.stderr);
      assert.match(init.stdout, /template created: .*\(1 NIC; /);
      // The template's own namespace (and its tap) went with its boot.
      assert.deepEqual(readdirSync("/run/netns").sort(), netnsBefore.sort());
      const b = bundle(
        "b3",
        [
          "echo mac=$(cat /sys/class/net/eth0/address)",
          "ip -o -4 addr show dev eth0",
          `echo got=$(wget -qO- http://${HOST_IP}:8080/token.txt)`,
        ].join("; "),
      );
      const out = create("ktnet3", b, factoryConfig);
      const log = readFileSync(join(root, "sandboxes", "ktnet3", "supervisor.log"), "utf8");
      assert.match(log, /factory: cloned template [0-9a-f]{16} in \d+ ms with 1 NIC\(s\)/, log);
      assert.doesNotMatch(readFileSync(out, "utf8"), /cold boot/, "a one-NIC template exists: no cold boot");
      assert.equal(withFactory(["start", "ktnet3"]).status, 0);
      await until("the container's report", () => readFileSync(out, "utf8").includes("got="), 60_000);
      const report = readFileSync(out, "utf8");
      assert.match(
        report,
        new RegExp(`mac=${MAC}\\n`),
        "the clone's NIC has the pod's MAC, not the template's",
      );
      assert.match(report, new RegExp(`inet ${GUEST_IP.replace(/\./g, "\\.")}/24 `), report);
      // A reply to the pod's MAC reached the guest: QEMU's receive filter follows the new address.
      assert.match(report, new RegExp(`got=${TOKEN}\\n`), "guest → peer and back over the veth");
      await until("stopped", () => JSON.parse(withFactory(["state", "ktnet3"]).stdout).status === "stopped");
      const del = withFactory(["delete", "ktnet3"]);
      assert.equal(del.status, 0, del.stderr);
      assertPodNetnsClean();
      assertNoHostLeaks(b, "ktnet3");
    } finally {
      const d = withFactory(["factory", "destroy"]);
      assert.equal(d.status, 0, d.stderr);
      assert.match(d.stdout, /removed 2 template\(s\)/);
    }
  });
});
