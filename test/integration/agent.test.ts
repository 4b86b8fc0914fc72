// The guest agent on the host, without a VM: the same engine runs here as in the guest. The agent serves
// on a unix socket (KATA_TS_AGENT_SOCKET, tests only); the "share" is a bind GuestMount of the bundle's
// rootfs, as the 9p share is in the guest.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AgentClient, AgentError, type AgentStream, Code } from "../../src/agent";
import { mountsUnder, unmountTree } from "../../src/sandbox/share";
import { unmountOrDetach } from "../../src/sys/native";
import { makeBundle } from "../conformance/bundle";
import { REPO, tempDir } from "../helpers";
import { assertNoLeaks, snapshotHost } from "../leaks";

const AGENT = join(REPO, "dist", "kata-agent.cjs");

function collect(s: AgentStream): Promise<string> {
  const parts: Buffer[] = [];
  return new Promise((resolve, reject) => {
    s.on("data", (c: Buffer) => parts.push(c));
    s.on("end", () => resolve(Buffer.concat(parts).toString()));
    s.on("error", reject);
  });
}

/** Resolves once the stream carried `text` (`times` times). */
function waitFor(s: AgentStream, text: string, times = 1): Promise<void> {
  let seen = "";
  return new Promise((resolve) => {
    const on = (c: Buffer) => {
      seen += c.toString();
      if (seen.split(text).length > times) {
        s.off("data", on);
        resolve();
      }
    };
    s.on("data", on);
  });
}

/** The agent's waiting spare helpers (`kata-ts-helper 3 spare`, its children): their pids. */
function spareHelpers(agentPid: number): number[] {
  const found: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== agentPid) continue;
      if (/kata-ts-helper\x003\x00spare\x00$/.test(readFileSync(`/proc/${d}/cmdline`, "latin1")))
        found.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** Polls (5 s) until the agent has one spare helper that is not one of `not`; its pid. */
async function nextSpare(agentPid: number, not: number[] = []): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const s = spareHelpers(agentPid).filter((p) => !not.includes(p));
    if (s.length === 1) return s[0];
    assert.ok(s.length <= 1, `one spare at a time, saw ${s}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`no new spare helper under the agent (pid ${agentPid}) within 5 s`);
}

function parentOf(pid: number): number {
  return Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
}

describe("guest agent on the host (no VM)", {
  skip: !existsSync(AGENT) && "build first: node scripts/build.mjs",
}, () => {
  const tmp = tempDir("kata-ts-agent-it-");
  const sock = join(tmp.path, "agent.sock");
  const state = join(tmp.path, "state");
  let agent: ChildProcess;
  let agentLog = "";
  let agentExit: Promise<number | null>;
  let client: AgentClient;
  const snap = snapshotHost();

  before(async () => {
    agent = spawn(process.execPath, [AGENT], {
      env: { ...process.env, KATA_TS_AGENT_SOCKET: sock, KATA_TS_AGENT_STATE: state },
      stdio: ["ignore", "inherit", "pipe"],
    });
    agent.stderr?.on("data", (c) => {
      agentLog += c.toString();
    });
    agentExit = new Promise((r) => agent.on("exit", (code) => r(code)));
    client = await AgentClient.connect(sock, { timeoutMs: 10_000 });
  });

  after(async () => {
    client?.close();
    // SIGTERM is the agent's own shutdown, which removes what a failed test left behind (container
    // processes, cgroups, mounts); SIGKILL only if it does not end.
    if (agent.exitCode === null) agent.kill("SIGTERM");
    const hard = setTimeout(() => agent.kill("SIGKILL"), 15_000);
    await agentExit;
    clearTimeout(hard);
    // A test that failed half-way may have left the agent's mounts: never rm -rf through them.
    unmountTree(tmp.path);
    assert.deepEqual(mountsUnder(tmp.path), [], "nothing of the agent's stays mounted");
    tmp.cleanup();
  });

  /** A created container of `sleep 1000` with no stdio, its rootfs "shared" like the 9p share. */
  async function created(id: string) {
    const b = makeBundle({ process: { args: ["/bin/sleep", "1000"] } }, { parent: tmp.path });
    const target = join(tmp.path, "guest", id, "rootfs");
    const { guestPid } = await client.call("createContainer", {
      containerId: id,
      spec: { ...b.spec, root: { path: target } },
      mounts: [{ source: b.rootfs, fstype: "bind", target, options: [] }],
      stdio: { terminal: false, stdin: 0, stdout: 0, stderr: 0 },
    });
    return { b, guestPid };
  }

  /** The same, started. */
  async function running(id: string) {
    const { b } = await created(id);
    await client.call("startContainer", { containerId: id });
    return b;
  }

  /** execProcess of `sh -c SCRIPT` as root in /, stdout and stderr on the given streams (0 = none). */
  function shExec(containerId: string, execId: string, script: string, stdout: number, stderr = 0) {
    return client.call("execProcess", {
      containerId,
      execId,
      process: { args: ["/bin/sh", "-c", script], cwd: "/", user: { uid: 0, gid: 0 }, env: ["PATH=/bin"] },
      stdio: { terminal: false, stdin: 0, stdout, stderr },
    });
  }

  it("ping answers with guest details", async () => {
    const d = await client.call("ping", {});
    assert.equal(d.kernelRelease, readFileSync("/proc/sys/kernel/osrelease", "utf8").trim());
    assert.match(d.bootId, /^[0-9a-f-]{36}$/);
    assert.ok(d.readyAt > 0);
  });

  it("create → start → stdout → exec → signal → wait 3 → remove, nothing left behind", async () => {
    const id = `agent-it-${process.pid}`;
    const b = makeBundle(
      {
        process: {
          args: ["/bin/sh", "-c", 'echo started; read line; echo "got:$line"; echo oops >&2; exit 3'],
        },
      },
      { parent: tmp.path },
    );
    const target = join(tmp.path, "guest", id, "rootfs");
    const spec = { ...b.spec, root: { path: target, readonly: false } };
    const [stdin, stdout, stderr] = [client.openStream(), client.openStream(), client.openStream()];
    const out = collect(stdout);
    const err = collect(stderr);
    const started = waitFor(stdout, "started\n");
    const created = await client.call("createContainer", {
      containerId: id,
      spec,
      mounts: [{ source: b.rootfs, fstype: "bind", target, options: [] }],
      stdio: { terminal: false, stdin: stdin.id, stdout: stdout.id, stderr: stderr.id },
    });
    assert.ok(created.guestPid > 0);
    // created: the init blocks on the exec fifo, it has not run the workload yet
    assert.match(readFileSync(`/proc/${created.guestPid}/cmdline`, "utf8"), /kata-ts-helper|init/);
    assert.ok(readFileSync("/proc/self/mountinfo", "utf8").includes(target), "the share is mounted");
    await client.call("startContainer", { containerId: id });
    await started;

    // exec with output and an exit code
    const [eo, ee] = [client.openStream(), client.openStream()];
    const execOut = collect(eo);
    await shExec(
      id,
      "e1",
      "echo exec-out $(hostname); cat /proc/1/cmdline | tr '\\0' ' '; exit 5",
      eo.id,
      ee.id,
    );
    assert.deepEqual(await client.call("waitProcess", { containerId: id, execId: "e1" }), { exitStatus: 5 });
    // the exec ran in the container's pid namespace: its pid 1 is the container's init
    assert.match(await execOut, /^exec-out \S+\n\/bin\/sh -c echo started/);

    // a long exec, stopped by a signal: 128 + 15
    const so = client.openStream();
    const sleeping = waitFor(so, "sleeping");
    await shExec(id, "e2", "echo sleeping; exec sleep 1000", so.id);
    await sleeping;
    const pids = (await client.call("listProcesses", { containerId: id })).pids;
    assert.ok(pids.length >= 2, `pids ${pids}`);
    await client.call("signalProcess", { containerId: id, execId: "e2", signal: 15, all: false });
    assert.equal((await client.call("waitProcess", { containerId: id, execId: "e2" })).exitStatus, 143);

    // unknown process and container map to NOT_FOUND
    await assert.rejects(
      client.call("waitProcess", { containerId: id, execId: "nope" }),
      (e: unknown) => e instanceof AgentError && e.code === Code.notFound,
    );
    await assert.rejects(client.call("startContainer", { containerId: "nope" }), /container nope not found/);

    // stdin reaches the init; it answers and exits 3
    stdin.end("hello\n");
    assert.deepEqual(await client.call("waitProcess", { containerId: id, execId: "" }), { exitStatus: 3 });
    assert.equal(await out, "started\ngot:hello\n");
    assert.equal(await err, "oops\n");

    await client.call("removeContainer", { containerId: id });
    assert.ok(!readFileSync("/proc/self/mountinfo", "utf8").includes(target), "the share is unmounted");
    assertNoLeaks(snap, { root: state, bundle: b.dir, id });
    b.cleanup();
  });

  it("exec shaped like the sandbox supervisor's: the spec's process, three streams, stdin open", async () => {
    const id = `agent-sx-${process.pid}`;
    const b = await running(id);
    // src/runtime/vm.ts vmExec → supervisor exec: the container's process with args and terminal replaced;
    // the supervisor opens stdin, stdout and stderr streams (no terminal).
    const [si, so, se] = [client.openStream(), client.openStream(), client.openStream()];
    const out = collect(so);
    const err = collect(se);
    const started = await client.call("execProcess", {
      containerId: id,
      execId: "exec-0123456789abcdef",
      process: {
        cwd: "/",
        user: { uid: 0, gid: 0 },
        ...b.spec.process,
        terminal: false,
        args: ["/bin/sh", "-c", "read l; echo in:$l; echo e >&2; exit 4"],
      },
      stdio: { terminal: false, stdin: si.id, stdout: so.id, stderr: se.id },
    });
    assert.ok(started.guestPid > 0);
    si.end("x\n");
    const w = await client.call("waitProcess", { containerId: id, execId: "exec-0123456789abcdef" });
    assert.equal(w.exitStatus, 4);
    assert.equal(await out, "in:x\n");
    assert.equal(await err, "e\n");
    await client.call("removeContainer", { containerId: id });
    assertNoLeaks(snap, { root: state, bundle: b.dir, id });
    b.cleanup();
  });

  it("stdio are real pipes: /dev/stdout and /dev/stderr can be reopened (init and exec)", async () => {
    const id = `agent-pipe-${process.pid}`;
    const script = "echo hi > /dev/stdout; echo err > /dev/stderr; readlink /proc/self/fd/1";
    const b = makeBundle({ process: { args: ["/bin/sh", "-c", script] } }, { parent: tmp.path });
    const target = join(tmp.path, "guest", id, "rootfs");
    const [io, ie] = [client.openStream(), client.openStream()];
    const [initOut, initErr] = [collect(io), collect(ie)];
    await client.call("createContainer", {
      containerId: id,
      spec: { ...b.spec, root: { path: target } },
      mounts: [{ source: b.rootfs, fstype: "bind", target, options: [] }],
      stdio: { terminal: false, stdin: 0, stdout: io.id, stderr: ie.id },
    });
    await client.call("startContainer", { containerId: id });
    assert.equal((await client.call("waitProcess", { containerId: id, execId: "" })).exitStatus, 0);
    assert.match(await initOut, /^hi\npipe:\[\d+\]\n$/);
    assert.equal(await initErr, "err\n");
    await client.call("removeContainer", { containerId: id });

    // exec: the same through a running container
    const id2 = `${id}-x`;
    const b2 = await running(id2);
    const [eo, ee] = [client.openStream(), client.openStream()];
    const [execOut, execErr] = [collect(eo), collect(ee)];
    await client.call("execProcess", {
      containerId: id2,
      execId: "p",
      process: { cwd: "/", user: { uid: 0, gid: 0 }, env: ["PATH=/bin"], args: ["/bin/sh", "-c", script] },
      stdio: { terminal: false, stdin: 0, stdout: eo.id, stderr: ee.id },
    });
    assert.equal((await client.call("waitProcess", { containerId: id2, execId: "p" })).exitStatus, 0);
    assert.match(await execOut, /^hi\npipe:\[\d+\]\n$/);
    assert.equal(await execErr, "err\n");
    await client.call("removeContainer", { containerId: id2 });
    assertNoLeaks(snap, { root: state, bundle: b.dir, id });
    assertNoLeaks(snap, { root: state, bundle: b2.dir, id: id2 });
    b.cleanup();
    b2.cleanup();
  });

  it("terminal: the init and an exec get a pty of the container's devpts; resizeTerminal reaches stty", async () => {
    const id = `agent-tty-${process.pid}`;
    const b = makeBundle(
      {
        process: { terminal: true, args: ["/bin/sh", "-c", "tty; read l; stty size; echo in:$l"] },
      },
      { parent: tmp.path },
    );
    const target = join(tmp.path, "guest", id, "rootfs");
    const [si, so] = [client.openStream(), client.openStream()];
    const out = collect(so);
    const asked = waitFor(so, "\n");
    await client.call("createContainer", {
      containerId: id,
      spec: { ...b.spec, root: { path: target } },
      mounts: [{ source: b.rootfs, fstype: "bind", target, options: [] }],
      stdio: { terminal: true, stdin: si.id, stdout: so.id, stderr: 0 },
    });
    await client.call("startContainer", { containerId: id });
    await asked; // tty printed: it now waits in read
    await client.call("resizeTerminal", { containerId: id, execId: "", rows: 41, cols: 101 });
    si.write("yes\r");
    assert.equal((await client.call("waitProcess", { containerId: id, execId: "" })).exitStatus, 0);
    // a pty: \r\n line ends, the input echoed, the slave in the container's own devpts
    assert.match(await out, /^\/dev\/pts\/\d+\r\nyes\r\n41 101\r\nin:yes\r\n$/);
    await client.call("removeContainer", { containerId: id });

    // exec with a terminal (the supervisor's shape: no stderr stream) and a console size
    const id2 = `${id}-x`;
    const b2 = await running(id2);
    const [ei, eo] = [client.openStream(), client.openStream()];
    const execOut = collect(eo);
    await client.call("execProcess", {
      containerId: id2,
      execId: "t",
      process: {
        terminal: true,
        consoleSize: { height: 12, width: 34 },
        cwd: "/",
        user: { uid: 0, gid: 0 },
        env: ["PATH=/bin"],
        args: ["/bin/sh", "-c", "tty; stty size; ps -o tty= -p $$ 2>/dev/null || true; exit 6"],
      },
      stdio: { terminal: true, stdin: ei.id, stdout: eo.id, stderr: 0 },
    });
    assert.equal((await client.call("waitProcess", { containerId: id2, execId: "t" })).exitStatus, 6);
    assert.match(await execOut, /^\/dev\/pts\/\d+\r\n12 34\r\n/);
    ei.end();
    await assert.rejects(
      client.call("resizeTerminal", { containerId: id2, execId: "nope", rows: 1, cols: 1 }),
      (e: unknown) => e instanceof AgentError && e.code === Code.notFound,
    );
    await client.call("removeContainer", { containerId: id2 });
    assertNoLeaks(snap, { root: state, bundle: b.dir, id });
    assertNoLeaks(snap, { root: state, bundle: b2.dir, id: id2 });
    b.cleanup();
    b2.cleanup();
  });

  it("mounts (mount(2), no spawned mount): a ro,nosuid bind is read-only in the container and keeps its source's nodev,noexec; removal unmounts; a bad fstype is one line and leaves no mount", async (t) => {
    const id = `agent-mnt-${process.pid}`;
    const b = makeBundle(
      { process: { args: ["/bin/sh", "-c", "echo x > /data/f; cat /data/seen"] } },
      { parent: tmp.path },
    );
    const target = join(tmp.path, "guest", id, "rootfs");
    const data = join(tmp.path, `data-${id}`);
    mkdirSync(data);
    // The source is a nodev,noexec mount: the bind's ro remount must keep both (it sets the flags whole).
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m,nodev,noexec", "none", data]);
    t.after(() => unmountOrDetach(data));
    writeFileSync(join(data, "seen"), "host file\n");
    const dataTarget = join(tmp.path, "guest", id, "data");
    const spec = {
      ...b.spec,
      root: { path: target },
      mounts: [
        ...(b.spec.mounts ?? []),
        { destination: "/data", type: "bind", source: dataTarget, options: ["rbind"] },
      ],
    };
    const stdout = client.openStream();
    const out = collect(stdout);
    const started = await client.call("createContainer", {
      containerId: id,
      spec,
      mounts: [
        { source: b.rootfs, fstype: "bind", target, options: [] },
        { source: data, fstype: "bind", target: dataTarget, options: ["ro", "nosuid"] },
      ],
      stdio: { terminal: false, stdin: 0, stdout: stdout.id, stderr: stdout.id },
    });
    assert.ok(started.guestPid > 0);
    const line = readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .find((l) => l.split(" ")[4] === dataTarget);
    const opts = (line ?? "").split(" ")[5]?.split(",") ?? [];
    for (const o of ["ro", "nosuid", "nodev", "noexec"])
      assert.ok(opts.includes(o), `the bind is ${o} on the host side: ${line}`);
    await client.call("startContainer", { containerId: id });
    const { exitStatus } = await client.call("waitProcess", { containerId: id, execId: "" });
    assert.match(await out, /Read-only file system[\s\S]*host file/);
    assert.equal(exitStatus, 0);
    assert.equal(readFileSync(join(data, "seen"), "utf8"), "host file\n");
    assert.equal(existsSync(join(data, "f")), false, "nothing was written through the ro bind");
    await client.call("removeContainer", { containerId: id });
    assert.ok(!readFileSync("/proc/self/mountinfo", "utf8").includes(dataTarget), "removal unmounted it");
    unmountOrDetach(data);

    const bad = join(tmp.path, "guest", `${id}-bad`, "rootfs");
    await assert.rejects(
      client.call("createContainer", {
        containerId: `${id}-bad`,
        spec: { ...b.spec, root: { path: bad } },
        mounts: [
          { source: b.rootfs, fstype: "bind", target: bad, options: [] },
          { source: "none", fstype: "tmpfs", target: join(bad, "t"), options: ["size=bogus"] },
        ],
        stdio: { terminal: false, stdin: 0, stdout: 0, stderr: 0 },
      }),
      (e: unknown) =>
        e instanceof AgentError && /^mount none on \S+ \(tmpfs\): mount: Invalid argument$/.test(e.message),
    );
    assert.ok(!readFileSync("/proc/self/mountinfo", "utf8").includes(join(tmp.path, "guest", `${id}-bad`)));
    assertNoLeaks(snap, { root: state, bundle: b.dir, id });
    b.cleanup();
  });

  it("a failing create unwinds: bad rootfs is INVALID_ARGUMENT and leaves no mount or state", async () => {
    const id = `agent-bad-${process.pid}`;
    const b = makeBundle({}, { parent: tmp.path });
    const target = join(tmp.path, "guest", id, "rootfs");
    await assert.rejects(
      client.call("createContainer", {
        containerId: id,
        spec: { ...b.spec, root: { path: join(target, "missing") } },
        mounts: [{ source: b.rootfs, fstype: "bind", target, options: [] }],
        stdio: { terminal: false, stdin: 0, stdout: 0, stderr: 0 },
      }),
      (e: unknown) =>
        e instanceof AgentError && e.code === Code.invalidArgument && /does not exist/.test(e.message),
    );
    assertNoLeaks(snap, { root: state, bundle: b.dir, id });
    b.cleanup();
  });

  it("a spare helper, started ahead, is the parent of the next init and exec; each use starts the next one", async () => {
    const id = `agent-spare-${process.pid}`;
    const pid = agent.pid ?? 0;
    const first = await nextSpare(pid);
    const { b, guestPid } = await created(id);
    assert.equal(parentOf(guestPid), first, "the init's helper is the spare that was waiting");
    const second = await nextSpare(pid, [first]);
    const out = client.openStream();
    const said = collect(out);
    await shExec(id, "e1", "echo out-$$", out.id);
    assert.deepEqual(await client.call("waitProcess", { containerId: id, execId: "e1" }), { exitStatus: 0 });
    // its stdout is the pipe the agent passed to the spare (fds 0-2 arrive over the sync socket)
    assert.match(await said, /^out-\d+\n$/);
    // after a launch the next spare waits until the guest is quiet (1 s); spareHelper starts it now
    assert.notEqual((await client.call("spareHelper", {})).spare, "off");
    const third = await nextSpare(pid, [first, second]);
    for (let i = 0; i < 100 && (await client.call("spareHelper", {})).spare !== "waiting"; i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.equal((await client.call("spareHelper", {})).spare, "waiting");
    // a wait-mode helper exits with its process: the second spare ran the exec
    assert.equal(existsSync(`/proc/${second}`), false, "the exec used the second spare");
    await client.call("removeContainer", { containerId: id });
    assertNoLeaks(snap, { root: state, bundle: b.dir, id });
    assert.deepEqual(spareHelpers(pid), [third], "only the waiting spare is left");
    b.cleanup();
  });

  it("removeContainer kills a running container; shutdown makes the agent exit 0", async () => {
    const id = `agent-rm-${process.pid}`;
    const { b, guestPid } = await created(id);
    await client.call("startContainer", { containerId: id });
    await client.call("pauseContainer", { containerId: id });
    const stats = await client.call("statsContainer", { containerId: id });
    assert.ok(typeof stats.data.pids === "object", JSON.stringify(stats.data));
    const wait = client.call("waitProcess", { containerId: id, execId: "" });
    await client.call("removeContainer", { containerId: id });
    assert.equal((await wait).exitStatus, 137);
    assert.equal(existsSync(`/proc/${guestPid}`), false);
    assertNoLeaks(snap, { root: state, bundle: b.dir, id });
    b.cleanup();
    await client.call("shutdown", {});
    assert.equal(await agentExit, 0, agentLog);
    assert.equal(existsSync(sock), false);
  });
});

describe("the agent's spare helper after kill -9 of the agent", {
  skip: !existsSync(AGENT) && "build first: node scripts/build.mjs",
}, () => {
  it("the spare sees its socket close and exits: nothing is left", async () => {
    const tmp = tempDir("kata-ts-agent-spare-");
    const snap = snapshotHost();
    const agent = spawn(process.execPath, [AGENT], {
      env: {
        ...process.env,
        KATA_TS_AGENT_SOCKET: join(tmp.path, "agent.sock"),
        KATA_TS_AGENT_STATE: join(tmp.path, "state"),
      },
      stdio: "ignore",
    });
    const exited = new Promise((r) => agent.on("exit", r));
    try {
      const spare = await nextSpare(agent.pid ?? 0);
      agent.kill("SIGKILL");
      await exited;
      for (let i = 0; i < 100 && existsSync(`/proc/${spare}`); i++)
        await new Promise((r) => setTimeout(r, 20));
      assert.equal(existsSync(`/proc/${spare}`), false, `spare helper ${spare} outlived its agent`);
      assertNoLeaks(snap, { root: join(tmp.path, "state"), bundle: tmp.path, id: "agent-spare" });
    } finally {
      if (agent.exitCode === null && agent.signalCode === null) agent.kill("SIGKILL");
      tmp.cleanup();
    }
  });
});
