// src/ttrpc against a real containerd 1.6: a private containerd (everything under one temp dir, CRI off,
// as test/engines/setup.sh starts it) takes a TaskOOM event through its ttrpc Events service exactly as
// a shim forwards one, and `ctr events` prints it. The same run pins down containerd's Any rule (the
// bare full name unpacks, a "types.containerd.io/"-prefixed one does not) and that Go ttrpc's statuses
// reach our client with their codes. Stopping containerd leaves no process and no file.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { findProcesses } from "../../src/sys/proc";
import { Code, packAny, TtrpcClient, TtrpcError, timestamp } from "../../src/ttrpc/index";

const which = (cmd: string) => spawnSync("which", [cmd], { encoding: "utf8" }).stdout.trim();
const CONTAINERD = which("containerd");
const CTR = which("ctr");
const skip = !CONTAINERD
  ? "containerd is not installed (`which containerd` found nothing)"
  : !CTR
    ? "ctr is not installed"
    : process.getuid?.() !== 0
      ? "containerd needs root"
      : false;

const EVENTS = "containerd.services.events.ttrpc.v1.Events";
const FORWARD = "containerd.services.events.ttrpc.v1.ForwardRequest";
const EMPTY = "google.protobuf.Empty";
const NS = "ttrpc-test";
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe("ttrpc with a real containerd 1.6", { skip, timeout: 120_000 }, () => {
  let dir = "";
  let daemon: ChildProcess | undefined;
  let events: ChildProcess | undefined;
  let client: TtrpcClient | undefined;
  let eventsOut = "";
  let eventsErr = "";
  const grpcSock = () => join(dir, "containerd.sock");
  const ttrpcSock = () => join(dir, "containerd.sock.ttrpc");

  const exited = (p: ChildProcess) =>
    new Promise<void>((r) =>
      p.exitCode !== null || p.signalCode !== null ? r() : p.once("exit", () => r()),
    );
  /** Whether `p` exits within `ms` (the timer does not outlive the answer). */
  async function exitsWithin(p: ChildProcess, ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), ms);
    });
    const gone = await Promise.race([exited(p).then(() => true), timedOut]);
    clearTimeout(timer);
    return gone;
  }

  async function stop(p: ChildProcess | undefined): Promise<void> {
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill("SIGTERM");
    const killer = setTimeout(() => p.kill("SIGKILL"), 10_000);
    await exited(p);
    clearTimeout(killer);
  }

  function forward(topic: string, event: { type_url: string; value: Uint8Array }) {
    assert.ok(client);
    return client.call(
      EVENTS,
      "Forward",
      FORWARD,
      EMPTY,
      { envelope: { timestamp: timestamp(), namespace: NS, topic, event } },
      { timeoutMs: 10_000, metadata: { "containerd-namespace-ttrpc": NS } },
    );
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "kata-ts-ttrpc-ctd-"));
    writeFileSync(
      join(dir, "config.toml"),
      [
        "version = 2",
        `root = "${dir}/root"`,
        `state = "${dir}/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",',
        '  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",',
        '  "io.containerd.snapshotter.v1.devmapper"]',
        "[grpc]",
        `  address = "${grpcSock()}"`,
        "[ttrpc]",
        `  address = "${ttrpcSock()}"`,
        // the opt plugin would otherwise create /opt/containerd
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = "${dir}/opt"`,
        "",
      ].join("\n"),
    );
    const log = openSync(join(dir, "containerd.log"), "a");
    daemon = spawn(CONTAINERD, ["--config", join(dir, "config.toml")], {
      stdio: ["ignore", log, log],
      detached: true,
    });
    closeSync(log);
    for (let i = 0; ; i++) {
      const v = spawnSync(CTR, ["--address", grpcSock(), "version"], { encoding: "utf8" });
      if (v.status === 0 && existsSync(ttrpcSock())) break;
      if (i > 200 || daemon.exitCode !== null)
        throw new Error(
          `containerd did not come up: ${readFileSync(join(dir, "containerd.log"), "utf8").slice(-2000)}`,
        );
      await sleep(50);
    }
    client = await TtrpcClient.connect(ttrpcSock());
  });

  after(async () => {
    client?.close();
    await stop(events);
    await stop(daemon);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("Forward(Envelope{TaskOOM}) reaches containerd's subscribers: `ctr events` prints it", async () => {
    events = spawn(CTR, ["--address", grpcSock(), "events"], { stdio: ["ignore", "pipe", "pipe"] });
    events.stdout?.on("data", (d) => {
      eventsOut += d;
    });
    events.stderr?.on("data", (d) => {
      eventsErr += d;
    });
    const id = `oom-${process.pid}`;
    // ctr subscribes asynchronously: forward until its first line shows up (then once more, below)
    const deadline = Date.now() + 20_000;
    while (!eventsOut.includes(id)) {
      assert.ok(Date.now() < deadline, `ctr events printed nothing; stderr: ${eventsErr}`);
      await forward("/tasks/oom", packAny("containerd.events.TaskOOM", { container_id: id }));
      await sleep(200);
    }
    const line = eventsOut.split("\n").find((l) => l.includes(id)) ?? "";
    // "<timestamp> <namespace> <topic> <event as JSON>"
    const m = /^(\S+ \S+ \S+ \S+) (\S+) (\S+) (\{.*\})$/.exec(line);
    assert.ok(m, `unexpected ctr events line: ${line}`);
    assert.equal(m[2], NS);
    assert.equal(m[3], "/tasks/oom");
    assert.deepEqual(JSON.parse(m[4]), { container_id: id });
  });

  it("containerd 1.6 unpacks Any by the bare full name only (a types.containerd.io/ prefix is dropped)", async () => {
    const bare = packAny("containerd.events.TaskExit", {
      container_id: `exit-${process.pid}`,
      pid: 42,
      exit_status: 3,
    });
    const prefixed = {
      type_url: "types.containerd.io/containerd.events.TaskOOM",
      value: packAny("containerd.events.TaskOOM", { container_id: `prefixed-${process.pid}` }).value,
    };
    // containerd accepts both (it does not look inside), its subscriber can read only the first
    await forward("/tasks/oom", prefixed);
    await forward("/tasks/exit", bare);
    const deadline = Date.now() + 10_000;
    while (!eventsOut.includes(`exit-${process.pid}`)) {
      assert.ok(Date.now() < deadline, "the TaskExit event never came");
      await sleep(50);
    }
    const exitLine = eventsOut.split("\n").find((l) => l.includes(`exit-${process.pid}`)) ?? "";
    assert.match(exitLine, / \/tasks\/exit \{.*"pid":42.*"exit_status":3/);
    assert.ok(!eventsOut.includes(`prefixed-${process.pid}`), eventsOut);
    assert.match(eventsErr, /cannot unmarshal an event from Any/);
  });

  it("Go ttrpc's statuses reach the client with their codes", async () => {
    assert.ok(client);
    const oom = packAny("containerd.events.TaskOOM", { container_id: "x" });
    await assert.rejects(forward("no-leading-slash", oom), (e: unknown) => {
      assert.ok(e instanceof TtrpcError);
      assert.equal(e.code, Code.INVALID_ARGUMENT, e.message);
      assert.match(e.message, /topic/);
      return true;
    });
    await assert.rejects(
      client.call("no.such.Service", "Forward", FORWARD, EMPTY, {}),
      (e: unknown) =>
        e instanceof TtrpcError && e.code === Code.UNIMPLEMENTED && e.message === "service no.such.Service",
    );
    await assert.rejects(
      client.call(EVENTS, "Nope", FORWARD, EMPTY, {}),
      (e: unknown) => e instanceof TtrpcError && e.code === Code.UNIMPLEMENTED && e.message === "method Nope",
    );
  });

  it("stopping containerd: the client sees the connection go, and no process or file is left", async () => {
    assert.ok(client && daemon?.pid);
    const pid = daemon.pid;
    await stop(daemon);
    assert.equal((await client.closed).code, Code.UNAVAILABLE);
    await assert.rejects(
      forward("/tasks/oom", packAny("containerd.events.TaskOOM", { container_id: "late" })),
      (e: unknown) => e instanceof TtrpcError && e.code === Code.UNAVAILABLE,
    );
    // ctr events ends when its daemon does
    assert.ok(events);
    const ctrGone = await exitsWithin(events, 10_000);
    if (!ctrGone) await stop(events);
    assert.ok(ctrGone, "ctr events kept running after containerd stopped");
    assert.deepEqual(
      findProcesses((argv) => argv.some((a) => a.includes(dir))),
      [],
      "a process still names the test's directory",
    );
    assert.equal(existsSync(`/proc/${pid}`), false, "containerd is still there");
    rmSync(dir, { recursive: true, force: true });
    assert.equal(existsSync(dir), false);
  });
});
