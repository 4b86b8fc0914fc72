// runc parity of the CLI (hypervisor = "none"), each check against what runc 1.1.5 does on the same
// input: exec's exit codes, exec --cgroup, exec into a paused container, --debug lines for run and exec,
// the warning for a cgroup that already has processes, unified resources refused on a v1/hybrid host.
// Assertions are on what the process saw (/proc/self/cgroup), what the host has left, and the CLI's
// stderr and exit code.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { detectLayout } from "../../src/engine/cgroups";
import { alive, cli, type Env, haveBusybox, makeBundle, makeEnv, sleep } from "../fixtures/probe/bundle";
import { BIN } from "../helpers";

const skip = !haveBusybox() ? "busybox-static is not installed (apt-get install -y busybox-static)" : false;
const TAG = `par${process.pid}`;

/** The container's cgroup directories as its state record names them (controller → dir). */
function cgroupPaths(env: Env, id: string): Record<string, string> {
  const state = JSON.parse(readFileSync(join(env.root, id, "state.json"), "utf8"));
  return state.engine.cgroup.paths as Record<string, string>;
}

function pidsIn(dir: string): number[] {
  return readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
}

describe("runc parity of the CLI (hypervisor = none)", { skip }, () => {
  let env: Env;
  const id = `${TAG}-a`;
  before(() => {
    env = makeEnv();
    const b = makeBundle(env, "sleeper", (s) => {
      s.process.args = ["sleep", "1000"];
    });
    const r = cli(env, ["run", "-d", "-b", b, id]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(() => env.cleanup());

  test("exec: its own failures exit 255 (runc), the process's code passes through, usage errors exit 1", () => {
    const missing = cli(env, ["exec", `${TAG}-nosuch`, "true"]);
    assert.equal(missing.code, 255, missing.stderr);
    assert.match(missing.stderr, /does not exist/);
    assert.equal(missing.stderr.trim().split("\n").length, 1, "one line");
    const noArgs = cli(env, ["exec", id]);
    assert.equal(noArgs.code, 255);
    assert.match(noArgs.stderr, /^process args cannot be empty$/m);
    const badFile = cli(env, ["exec", "--process", join(env.dir, "nonexistent.json"), id]);
    assert.equal(badFile.code, 255, badFile.stderr);
    const badUser = cli(env, ["exec", "--user", "abc", id, "true"]);
    assert.equal(badUser.code, 255, badUser.stderr);
    const noExe = cli(env, ["exec", id, "/nonexistent"]);
    assert.equal(noExe.code, 255, noExe.stderr);
    const own = cli(env, ["exec", id, "sh", "-c", "exit 7"]);
    assert.equal(own.code, 7, own.stderr);
    const own255 = cli(env, ["exec", id, "sh", "-c", "exit 0"]);
    assert.equal(own255.code, 0, own255.stderr);
    const usage = cli(env, ["exec", "--bogus", id, "true"]);
    assert.equal(usage.code, 1, "urfave/cli's usage errors exit 1 under runc too");
  });

  test("exec --cgroup: the process joins the existing sub-cgroup; paths leaving the cgroup are refused", (t) => {
    const paths = cgroupPaths(env, id);
    const mode = detectLayout().mode;
    // v1/hybrid: one controller by name; v2: the whole tree (no controller prefix there).
    const ctrl = mode === "v2" ? "unified" : "pids";
    const base = paths[ctrl];
    if (!base) return t.skip(`the container has no ${ctrl} cgroup on this host (${mode})`);
    const sub = join(base, "sub");
    mkdirSync(sub);
    try {
      const arg = mode === "v2" ? "sub" : "pids:sub";
      const r = cli(env, ["exec", "--cgroup", arg, id, "cat", "/proc/self/cgroup"]);
      assert.equal(r.code, 0, r.stderr);
      const line = r.stdout.split("\n").find((l) => (mode === "v2" ? l.startsWith("0::") : /:pids:/.test(l)));
      assert.match(line ?? "", /\/sub$/, r.stdout);
      if (mode !== "v2") {
        // Only the named controller moved: the others are still the container's own cgroup.
        const mem = r.stdout.split("\n").find((l) => /:memory:/.test(l));
        if (mem) assert.doesNotMatch(mem, /\/sub$/);
      }
      // A second exec that stays: while it runs, its pid is listed in the sub-cgroup's cgroup.procs.
      const pidFile = join(env.dir, "sub.pid");
      const d = cli(env, ["exec", "-d", "--pid-file", pidFile, "--cgroup", arg, id, "sleep", "30"]);
      assert.equal(d.code, 0, d.stderr);
      const pid = Number(readFileSync(pidFile, "utf8"));
      assert.ok(pidsIn(sub).includes(pid), `${pid} in ${sub}`);
      process.kill(pid, "SIGKILL");
      for (let i = 0; i < 100 && alive(pid); i++) sleep(20);
    } finally {
      for (let i = 0; i < 50 && existsSync(sub); i++) {
        try {
          rmdirSync(sub);
        } catch {
          sleep(20);
        }
      }
    }
    // runc: "../x is not a sub cgroup path"; nothing runs, nothing is created.
    for (const bad of ["../x", mode === "v2" ? "sub/../../x" : "pids:sub/../../x"]) {
      const r = cli(env, ["exec", "--cgroup", bad, id, "true"]);
      assert.equal(r.code, 255, bad);
      assert.match(r.stderr, /is not a sub cgroup path$/m, r.stderr);
    }
    assert.equal(existsSync(join(base, "..", "x")), false, "nothing created next to the container's cgroup");
    const unknown = cli(env, ["exec", "--cgroup", "nosuchctrl:x", id, "true"]);
    assert.equal(unknown.code, 255);
    assert.match(unknown.stderr, /unknown controller nosuchctrl in SubCgroupPaths/);
    const two = cli(env, ["exec", "--cgroup", "a", "--cgroup", "b", id, "true"]);
    assert.equal(two.code, 255);
    assert.match(two.stderr, /invalid --cgroup argument: a \(missing <controller>: prefix\)/);
    const missingSub = cli(env, ["exec", "--cgroup", mode === "v2" ? "nosub" : "pids:nosub", id, "true"]);
    assert.equal(missingSub.code, 255, "the sub-cgroup must exist, as with runc");
    const init = JSON.parse(readFileSync(join(env.root, id, "state.json"), "utf8")).pid as number;
    assert.deepEqual(pidsIn(base), [init], "no refused exec left a process behind");
  });

  test("exec into a paused container is refused unless --ignore-paused (then it runs once resumed)", async () => {
    assert.equal(cli(env, ["pause", id]).code, 0);
    try {
      const r = cli(env, ["exec", id, "true"]);
      assert.equal(r.code, 255);
      assert.equal(r.stderr.trim(), "cannot exec in a paused container (use --ignore-paused to override)");
      // --ignore-paused: the process starts in the frozen cgroup and runs when the container resumes.
      const child = spawn(
        BIN,
        ["--root", env.root, "--config", env.config, "exec", "--ignore-paused", id, "echo", "ran"],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let out = "";
      child.stdout.on("data", (d) => {
        out += d;
      });
      const code = new Promise<number | null>((res) => child.on("exit", (c) => res(c)));
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(out, "", "nothing runs while the container is frozen");
      assert.equal(cli(env, ["resume", id]).code, 0);
      assert.equal(await code, 0);
      assert.equal(out, "ran\n");
    } finally {
      cli(env, ["resume", id]);
    }
  });

  test("--debug: run and exec write level=debug lines (text to stderr, JSON to --log)", () => {
    const e = cli(env, ["--debug", "exec", id, "true"], {
      globals: ["--root", env.root, "--config", env.config],
    });
    assert.equal(e.code, 0, e.stderr);
    const lines = e.stderr.trim().split("\n");
    assert.ok(lines.length >= 2, e.stderr);
    for (const l of lines) assert.match(l, /^time="[^"]+" level=debug msg="[^"]+"/);
    assert.ok(
      lines.some((l) => /msg="exec process exited".* status=0/.test(l)),
      e.stderr,
    );
    const quiet = cli(env, ["exec", id, "true"]);
    assert.equal(quiet.stderr, "", "no debug lines without --debug");

    const log = join(env.dir, "debug.json");
    const b = makeBundle(env, "dbg", (s) => {
      s.process.args = ["true"];
    });
    const r = cli(env, ["--debug", "--log-format", "json", "--log", log, "run", "-b", b, `${TAG}-dbg`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "", "with --log the lines go to the file");
    const entries = readFileSync(log, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.ok(entries.length >= 3, JSON.stringify(entries));
    for (const x of entries) {
      assert.equal(x.level, "debug");
      assert.equal(typeof x.msg, "string");
      assert.match(x.time, /^\d{4}-\d\d-\d\dT/);
    }
    assert.ok(entries.some((x) => x.msg === "container started" && x.id === `${TAG}-dbg`));
  });

  test("run/create warn (one line) when the container's cgroup already has processes; the neighbour survives", () => {
    const inner = readFileSync(join(env.root, id, "state.json"), "utf8");
    const cgPath = JSON.parse(inner).config.linux?.cgroupsPath as string | undefined;
    const b = makeBundle(env, "neighbour", (s) => {
      s.process.args = ["true"];
      // The same cgroup as the running container (its default is the id, relative to ours).
      s.linux.cgroupsPath = cgPath ?? id;
    });
    const initPid = JSON.parse(inner).pid as number;
    const r = cli(env, ["run", "-b", b, `${TAG}-n`]);
    assert.equal(r.code, 0, r.stderr);
    const warnings = r.stderr.split("\n").filter((l) => l.includes("level=warning"));
    assert.equal(warnings.length >= 1, true, r.stderr);
    assert.match(warnings[0], /msg="container's cgroup is not empty: 1 process\(es\) found"/);
    assert.equal(
      r.stderr.split("\n").filter((l) => l.includes("is not empty")).length,
      1,
      "one line about it",
    );
    // Deleting the newcomer (run does it on exit) leaves the first container's processes alone.
    assert.ok(alive(initPid), "the first container's init survived the second one's delete");
    const again = cli(env, ["exec", id, "true"]);
    assert.equal(again.code, 0, again.stderr);
  });

  test("unified resources on a v1/hybrid host: refused before anything is created (runc's words)", (t) => {
    const mode = detectLayout().mode;
    const cid = `${TAG}-u`;
    const b = makeBundle(env, "unified", (s) => {
      s.process.args = ["true"];
      s.linux.resources = { ...(s.linux.resources ?? {}), unified: { "pids.max": "10" } };
    });
    if (mode === "v2") {
      // A v2 host accepts it; the refusal is the v1 path (covered by the unit tests too).
      return t.skip("cgroup v2 host: unified resources are valid here");
    }
    for (const verb of ["run", "create"]) {
      const r = cli(env, [verb, "-b", b, cid]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr.trim(), "invalid configuration: cannot use unified on cgroup v1");
      assert.equal(existsSync(join(env.root, cid)), false, "no state left");
      for (const c of readdirSync("/sys/fs/cgroup"))
        assert.equal(existsSync(join("/sys/fs/cgroup", c, cid)), false, `no cgroup in ${c}`);
    }
    // An empty map is fine, as for runc.
    const ok = makeBundle(env, "unified-empty", (s) => {
      s.process.args = ["true"];
      s.linux.resources = { ...(s.linux.resources ?? {}), unified: {} };
    });
    const r = cli(env, ["run", "-b", ok, `${cid}2`]);
    assert.equal(r.code, 0, r.stderr);
  });
});
