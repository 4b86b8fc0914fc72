// The spare helper (docs/guest.md): a kata-ts-helper started before it is needed, which gets its stdio
// over the sync socket when a launch takes it. Driven here on the host with a plan that clones fresh
// mount/uts/ipc/net/pid namespaces and runs a shell, without a rootfs (nothing it does reaches ours).
import assert from "node:assert/strict";
import { existsSync, readFileSync, readlinkSync } from "node:fs";
import { Socket } from "node:net";
import { describe, it } from "node:test";
import { helperPath, launch, type SpareHelper, spawnSpareHelper } from "../../src/engine/launcher";
import { CLONE_FLAGS } from "../../src/engine/plan";
import { closeFd, pipe } from "../../src/sys/native";

const FLAGS = ["mount", "uts", "ipc", "network", "pid"].reduce(
  (f, t) => f | CLONE_FLAGS[t as keyof typeof CLONE_FLAGS],
  0,
);

function built(): boolean {
  try {
    return existsSync(helperPath());
  } catch {
    return false;
  }
}

/** p's value, or "timeout" after ms (the timer also keeps the loop alive: a spare is unref'd). */
function within<T>(ms: number, p: Promise<T>): Promise<T | "timeout"> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"timeout">((r) => {
    timer = setTimeout(() => r("timeout"), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The helper's argv, as /proc shows it. */
function argvOf(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").slice(1, -1);
}

/** Polls (5 s) until the spare waits for its fds: it runs from the sealed memfd copy. */
async function waiting(s: SpareHelper): Promise<void> {
  for (let i = 0; i < 250; i++) {
    try {
      if (readFileSync(`/proc/${s.helper.pid}/stat`, "utf8").includes(") S ")) {
        const exe = readFileSync(`/proc/${s.helper.pid}/maps`, "utf8");
        if (exe.includes("/memfd:kata-ts-helper")) return;
      }
    } catch {
      // not there yet
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail("the spare helper did not get to its wait");
}

/**
 * Launches `echo out; exec sleep 60` with stdout on a pipe of ours (with `consoleFd`, the same pipe is
 * also the console fd); returns the helper's argv while the workload runs, what the workload wrote,
 * the helper's pid, and what the helper's fd 4 and our pipe are (readlink of /proc/PID/fd).
 * Kills the workload after.
 */
async function run(
  spare?: SpareHelper,
  consoleFd = false,
): Promise<{ argv: string[]; out: string; helperPid: number; fd4: string; pipe: string }> {
  const [r, w] = pipe();
  const reader = new Socket({ fd: r, readable: true, writable: false });
  let out = "";
  const said = new Promise<void>((resolve) =>
    reader.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("\n")) resolve();
    }),
  );
  let launched: Awaited<ReturnType<typeof launch>>;
  try {
    launched = await launch({
      phase1: [["clone", String(FLAGS), "wait"]],
      onPid: () => [["arg", "/bin/sh"], ["arg", "-c"], ["arg", "echo out; exec sleep 60"], ["go"]],
      expectReady: false,
      wait: true,
      stdio: ["ignore", w, "ignore"],
      consoleFd: consoleFd ? w : undefined,
      spare,
    });
  } finally {
    closeFd(w);
  }
  await said;
  const helperPid = launched.helper.pid ?? 0;
  const argv = argvOf(helperPid);
  const fd4 = linkOf(`/proc/${helperPid}/fd/4`);
  const pipeName = linkOf(`/proc/self/fd/${r}`);
  process.kill(launched.pid, "SIGKILL");
  assert.equal(await launched.exited, 137);
  reader.destroy();
  return { argv, out, helperPid, fd4, pipe: pipeName };
}

function linkOf(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return "(none)";
  }
}

describe("spare helper", {
  skip: (!built() && "native helper not built: make -C native") || (process.getuid?.() !== 0 && "needs root"),
}, () => {
  it("a waiting spare runs the next plan with the stdio sent to it", async () => {
    const spare = spawnSpareHelper();
    await waiting(spare);
    const r = await run(spare);
    assert.equal(r.helperPid, spare.helper.pid, "the launch took the spare instead of spawning");
    assert.deepEqual(r.argv, ["3", "spare"], "a fresh spare runs as it started");
    assert.equal(r.out, "out\n", "the workload's stdout is the pipe passed over the sync socket");
  });

  it("a fourth fd (the agent's console socket) lands after the sync fd, as a spawn places it", async () => {
    const spare = spawnSpareHelper();
    await waiting(spare);
    const r = await run(spare, true);
    assert.equal(r.helperPid, spare.helper.pid);
    assert.match(r.pipe, /^pipe:/);
    assert.equal(r.fd4, r.pipe, "the spare's fd 4 is the console fd it was sent");
    const spawned = await run(undefined, true);
    assert.equal(spawned.fd4, spawned.pipe, "where a spawned helper has it");
    assert.equal((await run(undefined)).fd4, "(none)", "and nothing there without a console fd");
  });

  it("a spare from a VM template executes itself again first (new process image, same pid)", async () => {
    const spare = spawnSpareHelper();
    await waiting(spare);
    spare.stale = true;
    const r = await run(spare);
    assert.equal(r.helperPid, spare.helper.pid);
    assert.deepEqual(r.argv, ["3"], "re-executed as a plain helper");
    assert.equal(r.out, "out\n");
  });

  it("a spare that is gone is not used: the launch spawns a helper of its own", async () => {
    const spare = spawnSpareHelper();
    await waiting(spare);
    spare.helper.kill("SIGKILL");
    assert.equal(await within(5000, spare.exited), 137);
    const r = await run(spare);
    assert.notEqual(r.helperPid, spare.helper.pid);
    assert.deepEqual(r.argv, ["3"]);
    assert.equal(r.out, "out\n");
  });

  it("a spare whose socket closes unused exits by itself", async () => {
    const spare = spawnSpareHelper();
    await waiting(spare);
    (spare.helper.stdio[3] as Socket).destroy();
    assert.equal(await within(5000, spare.exited), 0);
  });
});
