// The VM-mode lifecycle with the real guest agent, minus the VM: the agent (dist/kata-agent.cjs) serves
// on a host unix socket and runs containers with the real engine; the supervisor connects to it
// (KATA_TS_SUPERVISOR_AGENT=socket:PATH) and sees the share directory directly. This exercises the
// real wire path — ttrpc calls, stdio streams with flow control, exit statuses, pause/ps via the
// agent, volumes through the share — without a boot. The QEMU story is vm-qemu.test.ts.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { defaultSpec } from "../../src/oci/defaults";
import { REPO, tempDir } from "../helpers";

const AGENT = join(REPO, "dist", "kata-agent.cjs");
const tmp = tempDir("kata-vm-agent-");
const root = join(tmp.path, "root");
const ENTRY = join(tmp.path, "vmcli.cjs");
const agentSock = join(tmp.path, "agent.sock");
// The agent runs on the host here, so its containers' cgroups are host cgroups named like the sandbox
// cgroup (both default to the id): freezing the container would freeze the supervisor with it.
const CONF = join(tmp.path, "configuration.toml");
writeFileSync(CONF, "[runtime]\nsandbox_cgroup_only = false\n");
const env = {
  ...process.env,
  KATA_CONF_FILE: CONF,
  KATA_TS_SUPERVISOR_AGENT: `socket:${agentSock}`,
  KATA_TS_SUPERVISOR: join(REPO, "dist", "kata-supervisor.cjs"),
  KATA_TS_NATIVE_DIR: join(REPO, "native", "build"),
};

function vm(args: string[], input = ""): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [ENTRY, "--root", root, ...args], {
    env,
    input,
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

function vmCreate(args: string[]): { code: number; output: string } {
  const output = join(tmp.path, `${args[args.length - 1]}.out`);
  const fd = openSync(output, "w");
  try {
    const r = spawnSync(process.execPath, [ENTRY, "--root", root, "create", ...args], {
      env,
      stdio: ["ignore", fd, fd],
      timeout: 60_000,
    });
    return { code: r.status ?? 128, output };
  } finally {
    closeSync(fd);
  }
}

function vmBg(args: string[]): { child: ChildProcess; code: Promise<number> } {
  const child = spawn(process.execPath, [ENTRY, "--root", root, ...args], { env, stdio: "ignore" });
  return { child, code: new Promise((r) => child.on("exit", (c) => r(c ?? 255))) };
}

function bundle(
  name: string,
  args: string[],
  extra: { annotations?: Record<string, string>; mounts?: object[] } = {},
) {
  const dir = join(tmp.path, name);
  const rootfs = join(dir, "rootfs");
  for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc", "root", "data"])
    mkdirSync(join(rootfs, d), { recursive: true });
  copyFileSync("/bin/busybox", join(rootfs, "bin", "busybox"));
  for (const a of execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).trim().split("\n"))
    if (a !== "busybox") symlinkSync("busybox", join(rootfs, "bin", a));
  writeFileSync(join(rootfs, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  const spec = defaultSpec();
  spec.process = { ...(spec.process as NonNullable<typeof spec.process>), terminal: false, args };
  spec.root = { path: "rootfs", readonly: false };
  if (extra.annotations) spec.annotations = extra.annotations;
  if (extra.mounts)
    spec.mounts = [...(spec.mounts ?? []), ...(extra.mounts as NonNullable<typeof spec.mounts>)];
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, fn: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function alive(pid: number): boolean {
  try {
    return !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

function state(id: string): { status: string; pid: number } {
  const r = vm(["state", id]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

async function assertNothingLeft(sid: string, ids: string[] = [sid]): Promise<void> {
  // The supervisor leaves right after answering the last delete.
  await until(`supervisor of ${sid} gone`, () => !existsSync(join(root, "sandboxes", sid)), 10_000).catch(
    () => {},
  );
  const procs = spawnSync("pgrep", ["-af", `(kata-supervisor|kata-ts-standin).* ${sid}( |$)`], {
    encoding: "utf8",
  });
  assert.equal(procs.stdout.trim(), "", `processes left for ${sid}`);
  assert.equal(existsSync(join(root, "sandboxes", sid)), false, `sandbox dir left for ${sid}`);
  for (const id of ids) assert.equal(existsSync(join(root, id)), false, `state left for ${id}`);
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes(join(root, "sandboxes", sid)));
  assert.deepEqual(mounts, [], "mounts left");
}

const LOOP = ["/bin/sh", "-c", "trap 'echo TERM; exit 3' TERM; while true; do sleep 0.05; done"];

describe("vm-mode lifecycle with the real agent on a host socket", {
  skip: !existsSync("/bin/busybox") && "needs a static /bin/busybox",
}, () => {
  let agent: ChildProcess;
  let agentLog = "";
  before(async () => {
    execFileSync("make", ["-s", "-C", join(REPO, "native")], { stdio: "inherit" });
    execFileSync(process.execPath, [join(REPO, "scripts", "build.mjs")], { cwd: REPO, stdio: "inherit" });
    execFileSync(
      join(REPO, "node_modules", ".bin", "esbuild"),
      [
        join(REPO, "test", "support", "vmcli.ts"),
        "--bundle",
        "--platform=node",
        "--format=cjs",
        `--outfile=${ENTRY}`,
      ],
      { cwd: REPO, stdio: "inherit" },
    );
    agent = spawn(process.execPath, [AGENT], {
      env: {
        ...process.env,
        KATA_TS_AGENT_SOCKET: agentSock,
        KATA_TS_AGENT_STATE: join(tmp.path, "agent-state"),
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    agent.stderr?.on("data", (c) => {
      agentLog += c.toString();
    });
    await until("agent socket", () => existsSync(agentSock));
  });
  after(async () => {
    for (const id of existsSync(root) ? readdirSync(root) : [])
      if (id !== "sandboxes") vm(["delete", "--force", id]);
    agent?.kill("SIGTERM");
    await sleep(200);
    agent?.kill("SIGKILL");
    tmp.cleanup();
  });

  test("run: stdin, stdout, stderr and the exit code through the agent's streams; own pid namespace", () => {
    const b = bundle("run", [
      "/bin/sh",
      "-c",
      "echo out; echo err >&2; read x; echo got $x; echo pid $$; exit 7",
    ]);
    const r = vm(["run", "--bundle", b, "ar1"], "hello\n");
    assert.equal(r.code, 7, `${r.stderr}\n${agentLog}`);
    assert.equal(r.stdout, "out\ngot hello\npid 1\n");
    assert.equal(r.stderr, "err\n");
    return assertNothingLeft("ar1");
  });

  test("create/start/exec/ps/pause/resume/kill/delete", async () => {
    const b = bundle("life", LOOP);
    const pidFile = join(tmp.path, "life.pid");
    const c = vmCreate(["--bundle", b, "--pid-file", pidFile, "al1"]);
    assert.equal(c.code, 0, readFileSync(c.output, "utf8"));
    const pid = Number(readFileSync(pidFile, "utf8"));
    assert.equal(state("al1").status, "created");
    assert.equal(vm(["start", "al1"]).code, 0);
    assert.equal(state("al1").status, "running");
    const e = vm(["exec", "al1", "/bin/sh", "-c", "echo in-exec; ls /proc | grep -c '^[0-9]'; exit 4"]);
    if (e.code !== 4) vm(["delete", "--force", "al1"]);
    assert.equal(e.code, 4, e.stderr);
    assert.match(e.stdout, /^in-exec\n\d+\n$/);
    const ps = JSON.parse(vm(["ps", "al1"]).stdout) as number[];
    assert.ok(ps.length >= 1, `ps ${ps}`);
    assert.equal(vm(["pause", "al1"]).code, 0);
    assert.equal(state("al1").status, "paused");
    assert.equal(vm(["resume", "al1"]).code, 0);
    assert.equal(state("al1").status, "running");
    assert.equal(vm(["kill", "al1", "TERM"]).code, 0);
    await until("stand-in exit", () => !alive(pid));
    assert.equal(state("al1").status, "stopped");
    assert.equal(readFileSync(c.output, "utf8"), "TERM\n");
    assert.equal(vm(["delete", "al1"]).code, 0);
    await assertNothingLeft("al1");
  });

  test("kill 9 gives 137 to the engine", async () => {
    const b = bundle("k9", LOOP);
    const pidFile = join(tmp.path, "k9.pid");
    const r = vmBg(["run", "--bundle", b, "--pid-file", pidFile, "ak1"]);
    await until("pid file", () => existsSync(pidFile));
    await until("running", () => state("ak1").status === "running");
    assert.equal(vm(["kill", "ak1", "9"]).code, 0);
    assert.equal(await r.code, 137);
    await assertNothingLeft("ak1");
  });

  test("a pod container joins its sandbox; a host volume reaches it through the share", async () => {
    const vol = join(tmp.path, "vol");
    mkdirSync(vol, { recursive: true });
    writeFileSync(join(vol, "hello.txt"), "from the host\n");
    const sb = bundle("sb", LOOP);
    const pidFile = join(tmp.path, "sb.pid");
    assert.equal(vmCreate(["--bundle", sb, "--pid-file", pidFile, "as1"]).code, 0);
    assert.equal(vm(["start", "as1"]).code, 0);
    const sup = readFileSync(join(root, "sandboxes", "as1", "supervisor.pid"), "utf8");
    const pod = bundle("pod", ["/bin/sh", "-c", "cat /data/hello.txt; exit 5"], {
      annotations: { "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "as1" },
      mounts: [{ destination: "/data", type: "bind", source: vol, options: ["rbind", "ro"] }],
    });
    const r = vm(["run", "--bundle", pod, "ap1"]);
    assert.equal(r.code, 5, `${r.stderr}\n${agentLog}`);
    assert.equal(r.stdout, "from the host\n");
    assert.equal(
      existsSync(join(root, "sandboxes", "as1", "shared", "ap1")),
      false,
      "the pod container's share is gone",
    );
    assert.equal(
      readFileSync(join(root, "sandboxes", "as1", "supervisor.pid"), "utf8"),
      sup,
      "same supervisor",
    );
    assert.equal(vm(["kill", "as1", "9"]).code, 0);
    await until("stand-in exit", () => !alive(Number(readFileSync(pidFile, "utf8"))));
    assert.equal(vm(["delete", "as1"]).code, 0);
    await assertNothingLeft("as1", ["as1", "ap1"]);
  });

  test("start racing the init's exec fifo: a workload that exits at once starts as on the host", async () => {
    // The init writes its byte to the exec fifo, execs and exits; `start` must see the byte even when the
    // exit is seen first (engine/container.ts releaseInit reads again). Same outcome per container on the
    // host engine (hypervisor = "none", bin/kata-ts) and in VM mode (the guest agent's engine).
    const N = 8;
    const hostRoot = join(tmp.path, "host-root");
    const conf = join(tmp.path, "host.toml");
    writeFileSync(conf, '[runtime]\nhypervisor = "none"\n');
    const sb = bundle("race-sb", LOOP);
    const sbPid = join(tmp.path, "race-sb.pid");
    assert.equal(vmCreate(["--bundle", sb, "--pid-file", sbPid, "ars"]).code, 0);
    assert.equal(vm(["start", "ars"]).code, 0);
    const outcome = async (
      run: (args: string[], out?: number) => { code: number; stdout: string; stderr: string },
      id: string,
      b: string,
    ) => {
      const pidFile = join(tmp.path, `${id}.pid`);
      const out = openSync(join(tmp.path, `${id}.out`), "w");
      let created: number;
      try {
        created = run(["create", "--bundle", b, "--pid-file", pidFile, id], out).code;
      } finally {
        closeSync(out);
      }
      const started = run(["start", id]);
      await until(`${id} exits`, () => !alive(Number(readFileSync(pidFile, "utf8"))));
      const status = JSON.parse(run(["state", id]).stdout || "{}").status as string;
      const deleted = run(["delete", id]).code;
      return { created, start: started.code, startErr: started.stderr, status, deleted };
    };
    const onVm = (args: string[], out?: number) => {
      if (out === undefined) return vm(args);
      const r = spawnSync(process.execPath, [ENTRY, "--root", root, ...args], {
        env,
        stdio: ["ignore", out, out],
        timeout: 60_000,
      });
      return { code: r.status ?? 128, stdout: "", stderr: "" };
    };
    const onHost = (args: string[], out?: number) => {
      const argv = [join(REPO, "bin", "kata-ts"), "--root", hostRoot, "--config", conf, ...args];
      const r = spawnSync(argv[0]!, argv.slice(1), {
        encoding: "utf8",
        stdio: out === undefined ? "pipe" : ["ignore", out, out],
        timeout: 60_000,
      });
      return { code: r.status ?? 128, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
    };
    const pod = { "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "ars" };
    const fast = bundle("race-fast", ["/bin/true"]);
    const fastPod = bundle("race-fast-pod", ["/bin/true"], { annotations: pod });
    const expected = { created: 0, start: 0, startErr: "", status: "stopped", deleted: 0 };
    for (let i = 0; i < N; i++) {
      assert.deepEqual(await outcome(onHost, `arh${i}`, fast), expected, `host, round ${i}`);
      assert.deepEqual(await outcome(onVm, `arv${i}`, fastPod), expected, `VM mode, round ${i}\n${agentLog}`);
    }
    assert.equal(vm(["kill", "ars", "9"]).code, 0);
    await until("stand-in exit", () => !alive(Number(readFileSync(sbPid, "utf8"))));
    assert.equal(vm(["delete", "ars"]).code, 0);
    await assertNothingLeft(
      "ars",
      Array.from({ length: N }, (_, i) => `arv${i}`),
    );
    assert.deepEqual(existsSync(hostRoot) ? readdirSync(hostRoot) : [], [], "host state left");
  });
});
