// The VM-mode lifecycle (src/runtime/vm.ts), the supervisor and the stand-in, with the guest agent
// replaced by host processes (test/support/hostagent-supervisor.ts): stand-in registration with fd passing,
// the stdio relay, exit codes (incl. 137 for kill 9 and 255 when the supervisor dies), signal
// forwarding, the stand-in's size, and that every path leaves nothing behind. No VM boots here.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ReadStream as TtyReadStream } from "node:tty";
import { detectLayout, ownCgroupDir, parseProcCgroup } from "../../src/engine/cgroups";
import { cgroupJoinMs, median, REPO, receiveConsole, rssKb, tempDir } from "../helpers";

const tmp = tempDir("kata-vm-relay-");
const root = join(tmp.path, "root");
// The test entry, bundled once (running it through tsx costs ~1.5 s per command on a busy host).
const ENTRY = join(tmp.path, "vmcli.cjs");
const env = {
  ...process.env,
  // The supervisor with its VM replaced by host processes (test/support/hostagent-supervisor.ts).
  KATA_TS_SUPERVISOR: join(tmp.path, "kata-supervisor.cjs"),
  KATA_TS_NATIVE_DIR: join(REPO, "native", "build"),
  // A CA file (made in before()) that node loads at start: kata-ts's own node children must not.
  NODE_EXTRA_CA_CERTS: join(tmp.path, "ca.pem"),
};

function vm(args: string[], input = ""): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [ENTRY, "--root", root, ...args], {
    cwd: REPO,
    env,
    input,
    encoding: "utf8",
    timeout: 30_000,
  });
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

/**
 * `create`: the container's stdio is the CLI's, and the supervisor keeps it until the container exits,
 * so it goes to files here (a pipe would keep spawnSync waiting). Returns the exit code and the file.
 */
function vmCreate(args: string[]): { code: number; output: string } {
  const output = join(tmp.path, `${args[args.length - 1]}.out`);
  const fd = openSync(output, "w");
  try {
    const r = spawnSync(process.execPath, [ENTRY, "--root", root, "create", ...args], {
      cwd: REPO,
      env,
      stdio: ["ignore", fd, fd],
      timeout: 30_000,
    });
    return { code: r.status ?? 128, output };
  } finally {
    closeSync(fd);
  }
}

function vmBg(args: string[]): { child: ChildProcess; out: () => string; code: Promise<number> } {
  const child = spawn(process.execPath, [ENTRY, "--root", root, ...args], {
    cwd: REPO,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d) => {
    out += d;
  });
  child.stderr!.on("data", (d) => {
    out += d;
  });
  const code = new Promise<number>((r) => child.on("exit", (c, s) => r(c ?? (s ? 128 + 9 : 255))));
  return { child, out: () => out, code };
}

function bundle(name: string, args: string[], extra: Record<string, unknown> = {}): string {
  const dir = join(tmp.path, name);
  mkdirSync(join(dir, "rootfs"), { recursive: true });
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({
      ociVersion: "1.0.2",
      process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ["PATH=/usr/bin:/bin"], cwd: "/" },
      root: { path: "rootfs" },
      ...extra,
    }),
  );
  return dir;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function alive(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/\) [ZX] /.test(st);
  } catch {
    return false;
  }
}

/** Nothing of sandbox `id` is left: processes, sockets, mounts, state. */
function assertNothingLeft(id: string): void {
  const procs = spawnSync("pgrep", ["-af", `(kata-supervisor|kata-ts-standin).* ${id}( |$)`], {
    encoding: "utf8",
  });
  assert.equal(procs.stdout.trim(), "", `processes left for ${id}`);
  assert.equal(existsSync(join(root, "sandboxes", id)), false, `sandbox dir left for ${id}`);
  assert.equal(existsSync(join(root, id)), false, `state left for ${id}`);
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes(tmp.path));
  assert.deepEqual(mounts, [], "mounts left");
}

function state(id: string): { status: string; pid: number } {
  const r = vm(["state", id]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const LOOP = ["/bin/sh", "-c", "trap 'echo TERM; exit 3' TERM; while true; do sleep 0.05; done"];

describe("vm-mode lifecycle with a host agent", () => {
  before(() => {
    execFileSync("make", ["-s", "-C", join(REPO, "native")], { stdio: "inherit" });
    execFileSync(process.execPath, [join(REPO, "scripts", "build.mjs")], { cwd: REPO, stdio: "inherit" });
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kata-ts-test"].concat([
        "-keyout",
        join(tmp.path, "ca.key"),
        "-out",
        env.NODE_EXTRA_CA_CERTS,
      ]),
      { stdio: "ignore" },
    );
    for (const [entry, out] of [
      ["vmcli.ts", ENTRY],
      ["hostagent-supervisor.ts", env.KATA_TS_SUPERVISOR],
    ])
      execFileSync(
        join(REPO, "node_modules", ".bin", "esbuild"),
        [
          join(REPO, "test", "support", entry),
          "--bundle",
          "--platform=node",
          "--format=cjs",
          `--outfile=${out}`,
        ],
        { cwd: REPO, stdio: "inherit" },
      );
  });
  after(() => {
    // Anything a failed test left: delete --force every container, then the temp dir.
    for (const id of existsSync(root) ? readdirSync(root) : [])
      if (id !== "sandboxes") vm(["delete", "--force", id]);
    tmp.cleanup();
  });

  test("run relays stdin, stdout and stderr and returns the exit code", () => {
    const b = bundle("run", ["/bin/sh", "-c", "echo out; echo err >&2; read x; echo got $x; exit 7"]);
    const r = vm(["run", "--bundle", b, "run1"], "hello\n");
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, "out\ngot hello\n");
    assert.equal(r.stderr, "err\n");
    assertNothingLeft("run1");
  });

  test("large output arrives complete before the exit (backpressure, drain-then-exit)", () => {
    const b = bundle("big", ["/bin/sh", "-c", "head -c 8000000 /dev/zero | tr '\\0' x; exit 5"]);
    const r = spawnSync(
      "sh",
      ["-c", `node ${ENTRY} --root ${root} run --bundle ${b} big1 | wc -c; exit \${PIPESTATUS:-0}`],
      { cwd: REPO, env, encoding: "utf8", timeout: 60_000 },
    );
    assert.equal(r.stdout.trim(), "8000000", r.stderr);
    assertNothingLeft("big1");
  });

  test("create/start/state/exec/ps/kill/delete; the pid file names a small stand-in", async () => {
    const b = bundle("life", LOOP);
    const pidFile = join(tmp.path, "life.pid");
    const c = vmCreate(["--bundle", b, "--pid-file", pidFile, "life1"]);
    assert.equal(c.code, 0, readFileSync(c.output, "utf8"));
    const pid = Number(readFileSync(pidFile, "utf8"));
    assert.equal(readFileSync(`/proc/${pid}/comm`, "utf8").trim(), "kata-ts-standin");
    // The supervisor (a node process) did not get NODE_EXTRA_CA_CERTS, which node would load at start
    // (~75 ms with the system bundle); it is kept aside for an https OTLP export (src/nodeenv.ts).
    const { supervisorPid } = JSON.parse(
      readFileSync(join(root, "sandboxes", "life1", "sandbox.json"), "utf8"),
    );
    const environ = readFileSync(`/proc/${supervisorPid}/environ`, "utf8").split("\0");
    assert.ok(
      !environ.some((e) => e.startsWith("NODE_EXTRA_CA_CERTS=")),
      "the supervisor has no NODE_EXTRA_CA_CERTS",
    );
    assert.ok(environ.includes(`KATA_TS_NODE_EXTRA_CA_CERTS=${env.NODE_EXTRA_CA_CERTS}`));
    assert.deepEqual(state("life1"), { id: "life1", status: "created", pid });
    // The stand-in gave its stdio away: fds 0-2 are /dev/null now.
    assert.equal(readlinkSync(`/proc/${pid}/fd/1`), "/dev/null");
    const rss = rssKb(pid);
    assert.ok(rss > 0 && rss < 2048, `stand-in RSS ${rss} kB`);

    assert.equal(vm(["start", "life1"]).code, 0);
    assert.equal(state("life1").status, "running");
    assert.match(vm(["start", "life1"]).stderr, /cannot start an already running container/);
    assert.match(
      vm(["delete", "life1"]).stderr,
      /cannot delete container life1 that is not stopped: running/,
    );

    const e = vm(["exec", "life1", "/bin/sh", "-c", "echo in-exec; echo e2 >&2; exit 4"]);
    assert.equal(e.code, 4);
    assert.equal(e.stdout, "in-exec\n");
    assert.equal(e.stderr, "e2\n");
    const ps = JSON.parse(vm(["ps", "life1"]).stdout) as number[];
    assert.ok(ps.length >= 1);

    assert.equal(vm(["pause", "life1"]).code, 0);
    assert.equal(state("life1").status, "paused");
    assert.equal(vm(["resume", "life1"]).code, 0);
    assert.equal(state("life1").status, "running");

    assert.equal(vm(["kill", "life1", "TERM"]).code, 0);
    await until("stand-in exit", () => !alive(pid));
    assert.equal(state("life1").status, "stopped");
    // The workload's output went where create's stdout pointed, through the supervisor.
    assert.equal(readFileSync(c.output, "utf8"), "TERM\n");
    assert.equal(vm(["delete", "life1"]).code, 0);
    assertNothingLeft("life1");
  });

  test("the supervisor's move into the sandbox cgroup finds the join primed by create (no RCU wait)", async (t) => {
    // This host's unprimed joins, after a quiet spell each (a cgroup next to the test's own).
    const own = ownCgroupDir(detectLayout(), parseProcCgroup(readFileSync("/proc/self/cgroup", "utf8")));
    if (!own) return t.skip("no cgroup hierarchy mounted");
    const probe = join(own, `kata-ts-relay-prime-${process.pid}`);
    mkdirSync(probe, { recursive: true });
    const unprimed: number[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        await sleep(300);
        unprimed.push(await cgroupJoinMs(probe));
      }
    } finally {
      rmdirSync(probe);
    }
    const b = bundle("prime", LOOP);
    const primed: number[] = [];
    for (let i = 0; i < 3; i++) {
      await sleep(300);
      const c = vmCreate(["--bundle", b, `prime${i}`]);
      assert.equal(c.code, 0, readFileSync(c.output, "utf8"));
      const log = readFileSync(join(root, "sandboxes", `prime${i}`, "supervisor.log"), "utf8");
      const m = /joined the sandbox cgroup in ([\d.]+) ms/.exec(log);
      assert.ok(m, `no join in the supervisor's log:\n${log}`);
      primed.push(Number(m[1]));
      assert.equal(vm(["delete", "--force", `prime${i}`]).code, 0);
      assertNothingLeft(`prime${i}`);
    }
    t.diagnostic(
      `join ms: a process unprimed ${unprimed.map((x) => x.toFixed(2))}; the supervisor ${primed}`,
    );
    if (median(unprimed) < 2)
      return t.skip(`this host's joins do not wait (median ${median(unprimed).toFixed(2)} ms)`);
    // The supervisor moves itself into each v1 hierarchy (~10 writes here), well under one wait.
    assert.ok(median(primed) < 3, `the supervisor's joins took ${primed.join(", ")} ms`);
  });

  test("a signal to the stand-in reaches the workload; kill 9 gives 137", async () => {
    const b = bundle("sig", LOOP);
    const pidFile = join(tmp.path, "sig.pid");
    const r1 = vmBg(["run", "--bundle", b, "--pid-file", pidFile, "sig1"]);
    await until("pid file", () => existsSync(pidFile));
    await sleep(300);
    process.kill(Number(readFileSync(pidFile, "utf8")), "SIGTERM");
    assert.equal(await r1.code, 3);
    assert.equal(r1.out(), "TERM\n");
    assertNothingLeft("sig1");

    const pid2 = join(tmp.path, "sig2.pid");
    const r2 = vmBg(["run", "--bundle", b, "--pid-file", pid2, "sig2"]);
    await until("pid file", () => existsSync(pid2));
    await sleep(300);
    assert.equal(vm(["kill", "sig2", "9"]).code, 0);
    assert.equal(await r2.code, 137);
    assertNothingLeft("sig2");
  });

  test("the stand-in is killed: the workload goes with it, as a runc init's death ends the container", async () => {
    const nap = `${200_000 + (process.pid % 10_000)}`;
    const b = bundle("sk", ["/bin/sh", "-c", `exec sleep ${nap}`]);
    const pidFile = join(tmp.path, "sk.pid");
    assert.equal(vmCreate(["--bundle", b, "--pid-file", pidFile, "sk1"]).code, 0);
    assert.equal(vm(["start", "sk1"]).code, 0);
    const workload = () => spawnSync("pgrep", ["-f", `^sleep ${nap}$`], { encoding: "utf8" }).stdout.trim();
    await until("workload", () => workload() !== "");
    process.kill(Number(readFileSync(pidFile, "utf8")), "SIGKILL");
    await until("workload killed", () => workload() === "");
    assert.equal(state("sk1").status, "stopped");
    assert.equal(vm(["delete", "sk1"]).code, 0);
    assertNothingLeft("sk1");
  });

  test("the supervisor dies: stand-ins exit 255, state says stopped, delete --force cleans up", async () => {
    const b = bundle("die", LOOP);
    const pidFile = join(tmp.path, "die.pid");
    assert.equal(vmCreate(["--bundle", b, "--pid-file", pidFile, "die1"]).code, 0);
    assert.equal(vm(["start", "die1"]).code, 0);
    const standin = Number(readFileSync(pidFile, "utf8"));
    const sup = Number(readFileSync(join(root, "sandboxes", "die1", "supervisor.pid"), "utf8").split(" ")[0]);
    process.kill(sup, "SIGKILL");
    await until("stand-in exit", () => !alive(standin));
    assert.equal(state("die1").status, "stopped");
    assert.equal(vm(["delete", "--force", "die1"]).code, 0);
    assertNothingLeft("die1");

    // The foreground case: the exit code an engine would see.
    const pid2 = join(tmp.path, "die2.pid");
    const r = vmBg(["run", "--bundle", b, "--pid-file", pid2, "die2"]);
    await until("pid file", () => existsSync(pid2));
    await until("running", () => state("die2").status === "running");
    const sup2 = Number(
      readFileSync(join(root, "sandboxes", "die2", "supervisor.pid"), "utf8").split(" ")[0],
    );
    process.kill(sup2, "SIGKILL");
    assert.equal(await r.code, 255);
    assertNothingLeft("die2");
  });

  test("the CLI is killed mid-create: delete --force leaves nothing", async () => {
    const b = bundle("mid", LOOP);
    for (const [i, delay] of [0, 0, 10, 40, 80, 120, 250].entries()) {
      const id = `mid${i}`;
      const r = vmBg(["create", "--bundle", b, id]);
      await until("state dir", () => existsSync(join(root, id)), 10_000);
      await sleep(delay);
      r.child.kill("SIGKILL");
      await r.code;
      const d = vm(["delete", "--force", id]);
      assert.equal(d.code, 0, d.stderr);
      // The delete itself stops the supervisor, even one killed before anyone wrote its pid down.
      assertNothingLeft(id);
    }
  });

  test("terminal: the pty master goes to --console-socket and carries the workload's output and input", async () => {
    const consoleSock = join(tmp.path, "console.sock");
    const got = receiveConsole(consoleSock);
    const b = bundle("tty", ["/bin/sh", "-c", "echo tty-out; read line; echo got:$line; exit 6"], {});
    const cfg = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
    cfg.process.terminal = true;
    writeFileSync(join(b, "config.json"), JSON.stringify(cfg));
    const pidFile = join(tmp.path, "tty.pid");
    const c = vmCreate(["--bundle", b, "--pid-file", pidFile, "--console-socket", consoleSock, "tty1"]);
    assert.equal(c.code, 0, readFileSync(c.output, "utf8"));
    const { fd: master, name } = await got;
    assert.match(name, /^\/dev\/pts\/\d+$/);
    const standin = Number(readFileSync(pidFile, "utf8"));
    // The stand-in keeps the slave as its controlling terminal (for SIGWINCH); its stdio is /dev/null.
    assert.equal(readlinkSync(`/proc/${standin}/fd/1`), "/dev/null");
    const out = new TtyReadStream(master);
    let text = "";
    out.setEncoding("utf8");
    out.on("data", (d: string) => {
      text += d;
    });
    out.on("error", () => {});
    assert.equal(vm(["start", "tty1"]).code, 0);
    await until("tty output", () => text.includes("tty-out"));
    writeSync(master, "hello\n");
    await until("echoed input", () => text.includes("got:hello"));
    await until("stand-in exit", () => !alive(standin));
    out.destroy();
    assert.equal(vm(["delete", "tty1"]).code, 0);
    assertNothingLeft("tty1");
  });

  test("a failed create unwinds (missing rootfs in the guest spec path; bad mount source)", () => {
    const b = bundle("bad", ["/bin/true"], {
      mounts: [
        { destination: "/data", type: "bind", source: join(tmp.path, "does-not-exist"), options: ["bind"] },
      ],
    });
    const r = vmCreate(["--bundle", b, "bad1"]);
    assert.equal(r.code, 1);
    assert.match(readFileSync(r.output, "utf8"), /mount source .*does-not-exist does not exist/);
    assertNothingLeft("bad1");
  });
});
