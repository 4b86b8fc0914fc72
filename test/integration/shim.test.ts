// containerd-shim-kata-ts-v2 under a real containerd 1.6, driven by `ctr` as a user would: a private
// containerd (test/support/cri.ts, everything under one temp dir, the shim's sockets and state too via
// KATA_TS_SHIM_DIR) runs containers with `--runtime io.containerd.kata-ts.v2`. Host mode (hypervisor
// "none", given per container with --runtime-config-path, which reaches the shim as the Create options)
// covers every Task method ctr can call; one VM container proves the same path boots a guest. After each
// container, and after containerd stops, nothing is left: no shim, QEMU, state, socket or mount.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { findProcesses } from "../../src/sys/proc";
import { mountsUnder, processesUnder } from "../engines/harness";
import { cgroupHierarchies, removeTestCgroupParent, sleep } from "../helpers";
import { skipUnless } from "../probes";
import {
  BUSYBOX_IMAGE,
  type CriContainerd,
  criPrerequisites,
  findKataShim,
  startCriContainerd,
} from "../support/cri";

const RUNTIME = "io.containerd.kata-ts.v2";
const NS = "k8s.io";
const PREREQS = criPrerequisites();
const SHIM = findKataShim();
const skip = skipUnless(PREREQS) || skipUnless(SHIM);
const VM_SKIP = existsSync("/var/cache/kata-ts/kata-ts-guest.img")
  ? false
  : "no guest image (/var/cache/kata-ts/kata-ts-guest.img): run scripts/setup.sh";

describe("containerd shim v2: ctr drives kata-ts", { skip, timeout: 600_000 }, () => {
  const base = mkdtempSync(join(tmpdir(), "kata-ts-shim-"));
  const shimDir = join(base, "shim");
  const hostConfig = join(base, "host.toml");
  const vmConfig = join(base, "vm.toml");
  // ctr's stdio fifos (by default in /run/containerd/fifo, where a detached task's would outlive the test).
  const fifoDir = join(base, "fifo");
  let cri: CriContainerd;

  /** One ctr call; stdout+stderr and the exit code. */
  function ctr(args: string[], input?: string, timeoutMs = 120_000) {
    const r = spawnSync("ctr", ["--address", cri.socket, "-n", NS, ...args], {
      encoding: "utf8",
      input,
      timeout: timeoutMs,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  }
  const run = (id: string, config: string, extra: string[], cmd: string[], input?: string) =>
    ctr(
      [
        "run",
        "--fifo-dir",
        fifoDir,
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        config,
        ...extra,
        BUSYBOX_IMAGE,
        id,
        ...cmd,
      ],
      input,
    );

  const shims = () => processesUnder(shimDir).filter((p) => p.cmdline.includes("containerd-shim-kata-ts-v2"));
  // QEMU runs from the sandbox directory in /run/kata-ts, not under base: any new one counts.
  const qemuPids = () => findProcesses((argv) => argv[0]?.includes("qemu-system") ?? false).map((p) => p.pid);
  let qemusBefore: number[] = [];
  let madeNsCgroup = false;
  const qemus = () => qemuPids().filter((p) => !qemusBefore.includes(p));
  const entries = (d: string) => (existsSync(d) ? readdirSync(d) : []);

  /** Nothing of the shim remains: its process, its socket, its state. */
  async function assertNothingLeft(what: string) {
    for (let i = 0; i < 100 && (shims().length || qemus().length); i++) await sleep(50);
    assert.deepEqual(shims(), [], `${what}: a shim process is left`);
    assert.deepEqual(qemus(), [], `${what}: a QEMU is left`);
    assert.deepEqual(entries(join(shimDir, "s")), [], `${what}: shim sockets are left`);
    assert.deepEqual(entries(join(shimDir, "state", NS)), [], `${what}: container state is left`);
    assert.deepEqual(ctr(["task", "ls", "-q"]).out.trim(), "", `${what}: containerd still lists a task`);
  }

  before(
    async () => {
      qemusBefore = qemuPids();
      // ctr's containers live in the cgroup /<namespace>/<id>: the parent is ours to remove if we made it.
      madeNsCgroup = !cgroupHierarchies().some((h) => existsSync(join(h, NS)));
      writeFileSync(hostConfig, '[runtime]\nhypervisor = "none"\n');
      writeFileSync(vmConfig, "");
      cri = await startCriContainerd(join(base, "c"), { env: { KATA_TS_SHIM_DIR: shimDir } });
    },
    { timeout: 120_000 },
  );

  after(
    async () => {
      if (cri) await cri.stop();
      assert.deepEqual(processesUnder(base), [], "processes are left under the test's directory");
      if (madeNsCgroup) assert.deepEqual(removeTestCgroupParent(NS), [], "cgroups left under /k8s.io");
      spawnSync("rm", ["-rf", base]);
    },
    { timeout: 120_000 },
  );

  it("run --rm: the fifos carry stdout and stderr, the exit code comes back, the shim goes", async () => {
    const r = run("once", hostConfig, ["--rm"], ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]);
    assert.equal(r.code, 3, r.err);
    assert.equal(r.out, "to-out\n");
    assert.match(r.err, /to-err/);
    await assertNothingLeft("after run --rm");
  });

  it("bad input: a missing executable fails in one line, and leaves no shim, state or mount", async () => {
    const mountsBefore = readFileSync("/proc/self/mountinfo", "utf8").split("\n").length;
    const r = run("bad", hostConfig, ["--rm"], ["/no/such/program"]);
    assert.notEqual(r.code, 0);
    assert.match(r.err, /no\/such\/program/);
    assert.doesNotMatch(r.err, /\n\s+at /, "a stack trace reached the user");
    ctr(["container", "rm", "bad"]);
    await assertNothingLeft("after a failed create");
    assert.deepEqual(mountsUnder(base), [], "mounts left under the test's directory");
    assert.equal(
      readFileSync("/proc/self/mountinfo", "utf8").split("\n").length,
      mountsBefore,
      "the caller's mount table changed",
    );
  });

  it("a detached task: exec (exit code, stdin to EOF), ps, pause/resume, metrics, kill, delete", async () => {
    assert.equal(run("det", hostConfig, ["-d"], ["sleep", "1000"]).code, 0);
    const [shim] = shims();
    assert.ok(shim, "no shim process serves the task");

    const e = ctr([
      "task",
      "exec",
      "--fifo-dir",
      fifoDir,
      "--exec-id",
      "e1",
      "det",
      "sh",
      "-c",
      "echo in-exec; exit 5",
    ]);
    assert.equal(e.code, 5, e.err);
    assert.equal(e.out, "in-exec\n");
    // stdin reaches the process, and its EOF does too (else cat never ends and ctr times out)
    const s = ctr(
      ["task", "exec", "--fifo-dir", fifoDir, "--exec-id", "e2", "det", "sh", "-c", "cat; echo done"],
      "line1\nline2\n",
      20_000,
    );
    assert.equal(s.code, 0, s.err);
    assert.equal(s.out, "line1\nline2\ndone\n");

    const ps = ctr(["task", "ps", "det"]);
    const initPid = Number(/^(\d+)/m.exec(ps.out.split("\n").slice(1).join("\n"))?.[1]);
    assert.ok(initPid > 0, ps.out);
    assert.match(readFileSync(`/proc/${initPid}/cmdline`, "utf8"), /sleep/);

    assert.equal(ctr(["task", "pause", "det"]).code, 0);
    assert.match(ctr(["task", "ls"]).out, /det\s+\d+\s+PAUSED/);
    assert.match(readFileSync(`/proc/${initPid}/status`, "utf8"), /State:\s+[DST]/);
    assert.equal(ctr(["task", "resume", "det"]).code, 0);
    assert.match(ctr(["task", "ls"]).out, /det\s+\d+\s+RUNNING/);

    const m = ctr(["task", "metrics", "det"]);
    assert.equal(m.code, 0, m.err);
    const usage = Number(/memory\.usage_in_bytes\s+(\d+)/.exec(m.out)?.[1]);
    assert.ok(usage > 0, `memory usage from Stats: ${m.out}`);

    // one shim serves every call: the same process after all of them
    assert.deepEqual(
      shims().map((p) => p.pid),
      [shim.pid],
    );
    assert.equal(ctr(["task", "kill", "-s", "KILL", "det"]).code, 0);
    for (let i = 0; i < 100 && !/STOPPED/.test(ctr(["task", "ls"]).out); i++) await sleep(50);
    assert.match(ctr(["task", "ls"]).out, /det\s+\d+\s+STOPPED/);
    assert.equal(existsSync(`/proc/${initPid}`), false, "the container's init outlived its kill");
    assert.equal(ctr(["task", "rm", "det"]).code, 0);
    assert.equal(ctr(["container", "rm", "det"]).code, 0);
    await assertNothingLeft("after kill + delete");
  });

  it("run -t: a terminal in the container, and ResizePty brings the caller's window size to it", async () => {
    // `script` gives ctr a pty of 31x101 as its stdin (the test runner has none). ctr sends ResizePty after
    // Start (as with runc's shim), so the container asks for its size once that has arrived.
    const cmd = [
      "ctr",
      "--address",
      cri.socket,
      "-n",
      NS,
      "run",
      "--rm",
      "-t",
      "--fifo-dir",
      fifoDir,
      "--runtime",
      RUNTIME,
      "--runtime-config-path",
      hostConfig,
      BUSYBOX_IMAGE,
      "tty1",
      "sh",
      "-c",
      "'sleep 1; stty size; tty'",
    ].join(" ");
    const r = spawnSync("script", ["-qec", `stty rows 31 cols 101; ${cmd}`, "/dev/null"], {
      encoding: "utf8",
      timeout: 60_000,
      stdio: ["ignore", "pipe", "pipe"],
    });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    const lines = r.stdout.split(/\r*\n/).map((l) => l.replace(/^\^@/, ""));
    assert.ok(lines.includes("31 101"), `no 31x101 window in the container: ${JSON.stringify(r.stdout)}`);
    assert.ok(
      lines.some((l) => /^\/dev\/pts\/\d+$/.test(l)),
      `no terminal in the container: ${JSON.stringify(r.stdout)}`,
    );
    await assertNothingLeft("after run -t");
  });

  it("a shim killed with SIGKILL: containerd's `shim delete` cleans up the container", async () => {
    assert.equal(run("crash", hostConfig, ["-d"], ["sleep", "1000"]).code, 0);
    const [shim] = shims();
    assert.ok(shim);
    const ps = ctr(["task", "ps", "crash"]);
    const initPid = Number(/^(\d+)/m.exec(ps.out.split("\n").slice(1).join("\n"))?.[1]);
    process.kill(shim.pid, "SIGKILL");
    for (let i = 0; i < 200 && existsSync(`/proc/${initPid}`); i++) await sleep(50);
    assert.equal(existsSync(`/proc/${initPid}`), false, "the container outlived its shim's cleanup");
    ctr(["task", "rm", "-f", "crash"]);
    assert.equal(ctr(["container", "rm", "crash"]).code, 0);
    await assertNothingLeft("after a shim crash");
  });

  it("Checkpoint is refused with a clear reason", async () => {
    assert.equal(run("ckpt", hostConfig, ["-d"], ["sleep", "1000"]).code, 0);
    try {
      const c = ctr(["task", "checkpoint", "ckpt"]);
      assert.notEqual(c.code, 0);
      assert.match(c.err, /checkpoint is not supported by kata-ts/);
    } finally {
      ctr(["task", "kill", "-s", "KILL", "ckpt"]);
      for (let i = 0; i < 100 && !/STOPPED/.test(ctr(["task", "ls"]).out); i++) await sleep(50);
      ctr(["task", "rm", "-f", "ckpt"]);
      ctr(["container", "rm", "ckpt"]);
    }
    await assertNothingLeft("after the checkpoint refusal");
  });

  it("in a VM: the same run boots a guest, and QEMU is gone after --rm", { skip: VM_SKIP }, async () => {
    const r = run("vm", vmConfig, ["--rm"], ["sh", "-c", "uname -r; echo err >&2; exit 4"]);
    assert.equal(r.code, 4, r.err);
    assert.match(r.out, /kata-ts/, "the guest kernel answered uname");
    assert.notEqual(r.out.trim(), spawnSync("uname", ["-r"], { encoding: "utf8" }).stdout.trim());
    await assertNothingLeft("after the VM run");
  });
});
