// Real container engines (podman 4.3 + conmon, containerd 1.6 via ctr, dockerd 20.10) driving a runtime
// binary in place of runc. The runtime under test is KATA_TS_ENGINE_RUNTIME (default: the repo's
// bin/kata-ts, i.e. kata-ts with hypervisor = "none"); the harness is validated with /usr/sbin/runc.
// test/engines/setup.sh isolates all three engines under one temp dir and registers the runtime as
// "kata-ts" behind a logging wrapper; teardown.sh removes everything. See test/engines/README.md.
//
// Env: KATA_TS_ENGINE_RUNTIME=/path   runtime binary (default bin/kata-ts)
//      KATA_TS_ENGINE_CONFIG=file     kata-ts config for the runtime (default: hypervisor = "none")
//      KATA_TS_ENGINE_ENGINES=a,b     subset of podman,ctr,docker (default all three)
//      KATA_TS_ENGINE_REPORT=file     write timings + the runtime argv shapes each engine sent (JSON)
//      KATA_TS_ENGINE_KEEP=1          keep the base dir and daemons for debugging (prints the path)
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe } from "node:test";
import {
  ctr,
  type Driver,
  docker,
  dockerCli,
  type EngineName,
  missingBinaries,
  podman,
  waitStatus,
} from "../engines/drivers";
import {
  argvShape,
  cgroupDir,
  cgroupDirs,
  engineEnv,
  entries,
  formatTimings,
  inode,
  mountsUnder,
  processesUnder,
  RuntimeLog,
  readTrim,
  runScript,
  scenarioTest,
  sleep,
  type Timing,
  waitFor,
} from "../engines/harness";
import { BIN } from "../helpers";

const RUNTIME = process.env.KATA_TS_ENGINE_RUNTIME || BIN;
const SELECTED = (process.env.KATA_TS_ENGINE_ENGINES || "podman,ctr,docker").split(",").map((s) => s.trim());
const KEEP = process.env.KATA_TS_ENGINE_KEEP === "1";
const ALL: EngineName[] = ["podman", "ctr", "docker"];

const skipReason = new Map<EngineName, string | undefined>(
  ALL.map((e) => [e, SELECTED.includes(e) ? missingBinaries(e) : "not in KATA_TS_ENGINE_ENGINES"]),
);
const ENABLED = ALL.filter((e) => !skipReason.get(e));

const BASE = mkdtempSync(join(tmpdir(), "kata-ts-engines-"));
const log = new RuntimeLog(BASE);
let env: NodeJS.ProcessEnv = process.env;
const timings: Timing[] = [];
const argvReport: Record<string, { caller: string; shape: string }[]> = {};

const MiB = 1024 * 1024;
const SLEEPER = ["sleep", "1000"];
// PID 1 ignores SIGTERM unless it installs a handler; this one exits 143 on it.
const TERM_TRAP = ["sh", "-c", "trap 'exit 143' TERM; while :; do sleep 0.1; done"];

describe("container engines drive the runtime", {
  skip: ENABLED.length === 0 && "no engine installed",
}, () => {
  before(
    () => {
      const r = runScript("setup.sh", [BASE, RUNTIME, ENABLED.join(",")], 180_000);
      timings.push({
        engine: "all",
        scenario: `setup.sh (${ENABLED.join(",")})`,
        ms: r.ms,
        ok: r.code === 0,
      });
      if (r.code !== 0) throw new Error(`setup.sh failed (${r.code}):\n${r.stderr}`);
      env = engineEnv(BASE);
    },
    { timeout: 200_000 },
  );

  after(
    () => {
      console.log(formatTimings(`engine timings (runtime ${RUNTIME})`, timings));
      for (const [engine, shapes] of Object.entries(argvReport)) {
        console.log(
          `runtime calls from ${engine}:\n${shapes.map((s) => `  ${s.caller}: ${s.shape}`).join("\n")}`,
        );
      }
      if (KEEP) {
        console.log(`KATA_TS_ENGINE_KEEP=1: left ${BASE} in place; run test/engines/teardown.sh ${BASE}`);
        return;
      }
      const r = runScript("teardown.sh", [BASE], 120_000);
      timings.push({ engine: "all", scenario: "teardown.sh", ms: r.ms, ok: r.code === 0 });
      console.log(`teardown.sh took ${r.ms} ms`);
      if (process.env.KATA_TS_ENGINE_REPORT) {
        writeFileSync(
          process.env.KATA_TS_ENGINE_REPORT,
          `${JSON.stringify({ runtime: RUNTIME, timings, argv: argvReport }, null, 2)}\n`,
        );
      }
      assert.equal(r.code, 0, `teardown.sh left something behind:\n${r.stderr}`);
      assert.deepEqual(mountsUnder(BASE), [], "mounts left under the base dir");
      assert.deepEqual(
        processesUnder(BASE).map((p) => `${p.pid} ${p.cmdline}`),
        [],
        "processes left running from the base dir",
      );
    },
    { timeout: 130_000 },
  );

  for (const engine of ALL) {
    describe(engine, { skip: skipReason.get(engine) }, () => {
      let d: Driver;
      let suiteMark = 0;
      let baselineMounts: string[] = [];
      const ids: string[] = [];
      const cgroupsSeen = new Set<string>(); // every container's cgroup dirs: the runtime must remove them
      let n = 0;
      const newId = (what: string) => {
        const id = `kt-${engine}-${what}-${process.pid}-${++n}`;
        ids.push(id);
        return id;
      };

      before(() => {
        d = engine === "podman" ? podman(env) : engine === "ctr" ? ctr(env, BASE) : docker(env);
        suiteMark = log.mark();
        baselineMounts = mountsUnder(BASE);
      });

      function scenario(name: string, fn: () => Promise<void> | void, opts: { skip?: string } = {}) {
        scenarioTest(log, timings, engine, name, fn, { skip: opts.skip, timeout: 60_000 });
      }

      /** Runs `fn` with a detached container running `cmd`, always removing it afterwards. */
      async function withContainer(what: string, cmd: string[], fn: (id: string) => Promise<void> | void) {
        const id = newId(what);
        d.start(id, cmd);
        try {
          await waitStatus(d, id, "running");
          for (const dir of cgroupDirs(d.pid(id))) cgroupsSeen.add(dir);
          await fn(id);
        } finally {
          d.remove(id);
        }
      }

      scenario("run --rm echo hello prints hello, through the runtime under test", () => {
        const mark = log.mark();
        const r = d.run(["echo", "hello"], { id: newId("hello") });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, "hello\n");
        const verbs = log.calls(mark).map((c) => c.sub);
        assert.ok(
          verbs.includes("create"),
          `the engine never called the wrapped runtime: ${verbs.join(",")}`,
        );
        assert.ok(verbs.includes("start") && verbs.includes("delete"), `runtime verbs: ${verbs.join(",")}`);
      });

      scenario("exit codes pass through (sh -c 'exit 3' -> 3)", () => {
        assert.equal(d.run(["sh", "-c", "exit 3"], { id: newId("exit") }).code, 3);
        const r = d.run(["sh", "-c", "echo out; echo err >&2; exit 7"], { id: newId("exit") });
        assert.equal(r.code, 7);
        assert.equal(r.stdout, "out\n");
        assert.match(r.stderr, /^err$/m);
      });

      scenario("run -d + exec: exec output and exec exit code", () =>
        withContainer("exec", SLEEPER, (id) => {
          const r = d.exec(id, ["sh", "-c", "echo from-exec $$"]);
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, /^from-exec \d+\n$/);
          assert.notEqual(r.stdout, "from-exec 1\n", "exec must not be the container's init");
          assert.equal(d.exec(id, ["sh", "-c", "exit 5"]).code, 5);
          // exec sees the container's filesystem and pid namespace: PID 1 is the sleeper
          assert.equal(
            d.exec(id, ["cat", "/proc/1/cmdline"]).stdout.replace(/\0/g, " ").trim(),
            "sleep 1000",
          );
        }),
      );

      scenario("tty: run -t and exec -t get a terminal, exit codes still pass", async () => {
        const r = d.run(["sh", "-c", "tty; [ -t 0 ] && echo stdin-is-tty; exit 4"], {
          tty: true,
          id: newId("tty"),
        });
        assert.match(r.stdout, /\/dev\/pts\/\d+/, r.stdout);
        assert.match(r.stdout, /stdin-is-tty/);
        assert.equal(r.code, 4);
        await withContainer("tty", SLEEPER, (id) => {
          const e = d.exec(id, ["sh", "-c", "tty; exit 6"], { tty: true });
          assert.match(e.stdout, /\/dev\/pts\/\d+/, e.stdout);
          assert.equal(e.code, 6);
        });
      });

      scenario("kill -s KILL of a running container: the engine reports 137", async () => {
        const id = newId("kill");
        const run = d.runAsync(id, SLEEPER);
        try {
          const pid = await waitFor(`${id} running`, () => {
            try {
              return d.status(id) === "running" ? d.pid(id) : undefined;
            } catch {
              return undefined;
            }
          });
          assert.ok(pid > 1);
          for (const dir of cgroupDirs(pid)) cgroupsSeen.add(dir);
          d.kill(id, "KILL");
          const r = await run.done;
          assert.equal(r.code, 137, r.stderr);
          await waitFor(`pid ${pid} gone`, () => (entries(`/proc/${pid}`).length === 0 ? true : undefined));
        } finally {
          d.remove(id);
          await run.done;
        }
      });

      scenario("SIGTERM reaches the container's init (trap exits 143, quickly)", async () => {
        if (d.stop && d.wait) {
          const id = newId("term");
          const { stop, wait } = d as Required<Driver>;
          d.start(id, TERM_TRAP);
          try {
            await waitStatus(d, id, "running");
            const r = stop(id, 30);
            assert.equal(r.code, 0, r.stderr);
            assert.ok(r.ms < 10_000, `stop took ${r.ms} ms although the container exits on SIGTERM`);
            assert.equal(await wait(id), 143);
          } finally {
            d.remove(id);
          }
          return;
        }
        const id = newId("term");
        const run = d.runAsync(id, TERM_TRAP);
        try {
          await waitFor(`${id} running`, () => {
            try {
              return d.status(id) === "running" ? true : undefined;
            } catch {
              return undefined;
            }
          });
          await sleep(200); // let sh install the trap
          d.kill(id, "TERM");
          assert.equal((await run.done).code, 143);
        } finally {
          d.remove(id);
          await run.done;
        }
      });

      scenario(
        "stop of a SIGTERM-ignoring sleep escalates to SIGKILL after -t 1 (137)",
        async () => {
          const { stop, wait } = d as Required<Driver>;
          await withContainer("stop", SLEEPER, async (id) => {
            const r = stop(id, 1);
            assert.equal(r.code, 0, r.stderr);
            assert.ok(r.ms >= 900 && r.ms < 15_000, `stop -t 1 took ${r.ms} ms`);
            assert.equal(await wait(id), 137);
          });
        },
        { skip: engine === "ctr" ? "ctr 1.6 has no stop" : undefined },
      );

      scenario("pause freezes the container's cgroup, unpause thaws it", () =>
        withContainer("pause", SLEEPER, async (id) => {
          const freezer = join(cgroupDir(d.pid(id), "freezer"), "freezer.state");
          assert.equal(readTrim(freezer), "THAWED");
          d.pause(id);
          await waitStatus(d, id, "paused");
          assert.equal(readTrim(freezer), "FROZEN");
          d.resume(id);
          await waitStatus(d, id, "running");
          assert.equal(readTrim(freezer), "THAWED");
          assert.equal(d.exec(id, ["echo", "alive"]).stdout, "alive\n");
        }),
      );

      scenario(
        "update --memory sets the container's memory cgroup limit",
        () =>
          withContainer("update", SLEEPER, (id) => {
            const limit = join(cgroupDir(d.pid(id), "memory"), "memory.limit_in_bytes");
            const before = Number(readTrim(limit));
            assert.ok(before > 1024 * MiB, `unexpected initial limit ${before}`);
            const r = (d as Required<Driver>).updateMemory(id, 64 * MiB);
            assert.equal(r.code, 0, r.stderr);
            assert.equal(Number(readTrim(limit)), 64 * MiB);
            // the container's own view of its cgroup agrees
            const seen = d.exec(id, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]);
            assert.equal(Number(seen.stdout.trim()), 64 * MiB, seen.stderr);
          }),
        { skip: engine === "ctr" ? "ctr 1.6 has no task update" : undefined },
      );

      scenario("no network: the container has its own netns with only lo, up", () =>
        withContainer("netns", SLEEPER, (id) => {
          const pid = d.pid(id);
          assert.notEqual(inode(`/proc/${pid}/ns/net`), inode("/proc/self/ns/net"));
          const dev = d.exec(id, ["cat", "/proc/net/dev"]);
          assert.equal(dev.code, 0, dev.stderr);
          const ifaces = dev.stdout
            .split("\n")
            .slice(2)
            .map((l) => l.split(":")[0].trim())
            .filter(Boolean);
          assert.deepEqual(ifaces, ["lo"]);
          // up: ctr's namespace is ours to make (as runc, we bring its lo up); podman's and docker's theirs
          const flags = d.exec(id, ["cat", "/sys/class/net/lo/flags"]);
          assert.equal(flags.stdout.trim(), "0x9", `lo flags: ${flags.stdout}${flags.stderr}`);
        }),
      );

      if (engine === "docker") {
        scenario("docker's libnetwork-setkey prestart hook runs (and gets the state)", () =>
          withContainer("hook", SLEEPER, (id) => {
            const full = spawnSync(
              dockerCli(),
              ["inspect", "-f", "{{.Id}} {{.NetworkSettings.SandboxKey}}", id],
              {
                env,
                encoding: "utf8",
              },
            ).stdout.trim();
            const [longId, sandboxKey] = full.split(" ");
            const create = log
              .calls(suiteMark)
              .find((c) => c.argv.includes(" create ") && c.argv.endsWith(longId));
            assert.ok(create, "no create call for the container in the runtime log");
            const spec = log.dump(create.seq, "config") as { hooks?: { prestart?: { args?: string[] }[] } };
            const hook = spec?.hooks?.prestart?.[0]?.args ?? [];
            assert.ok(hook.includes("libnetwork-setkey"), `prestart hook: ${JSON.stringify(hook)}`);
            // The hook makes dockerd bind-mount the container's netns at the sandbox key: same nsfs inode.
            assert.equal(inode(sandboxKey), inode(`/proc/${d.pid(id)}/ns/net`));
          }),
        );
      }

      scenario("leaves nothing behind (containers, processes, mounts, runtime state)", async () => {
        const calls = log.calls(suiteMark);
        argvReport[engine] = [
          ...new Map(
            calls.map((c) => {
              const shape = argvShape(c.argv, BASE, ids);
              return [
                `${c.caller.replace(/\[\d+\]/, "")} ${shape}`,
                { caller: c.caller.replace(/\[\d+\]/, ""), shape },
              ];
            }),
          ).values(),
        ];
        for (const id of d.list()) d.remove(id);
        assert.deepEqual(d.list(), [], "containers the engine still lists");
        // shims and conmon exit asynchronously after the container is removed
        const leftovers = () =>
          processesUnder(BASE).filter(
            (p) =>
              p.comm === "conmon" || p.comm.startsWith("containerd-shim") || p.root.startsWith(`${BASE}/`),
          );
        try {
          await waitFor("container processes, conmon and shims to exit", () =>
            leftovers().length ? undefined : true,
          );
        } catch {
          assert.deepEqual(
            leftovers().map((p) => `${p.pid} ${p.comm} ${p.cmdline}`),
            [],
            "processes left",
          );
        }
        assert.deepEqual(
          mountsUnder(BASE).filter((m) => !baselineMounts.includes(m)),
          [],
          "mounts left under BASE",
        );
        assert.ok(cgroupsSeen.size > 0, "no container cgroup was observed");
        const cgroupsLeft = () => [...cgroupsSeen].filter((c) => existsSync(c));
        try {
          await waitFor(
            "container cgroups to be removed",
            () => (cgroupsLeft().length ? undefined : true),
            5_000,
          );
        } catch {
          assert.deepEqual(cgroupsLeft(), [], "container cgroups left behind");
        }
        const roots = new Set<string>();
        for (const c of calls) {
          if (c.injectedRoot) roots.add(c.injectedRoot);
          const m = /--root(?:=| )(\S+)/.exec(c.argv);
          if (m) roots.add(m[1]);
        }
        assert.ok(roots.size > 0, "no runtime state root seen in the runtime log");
        for (const r of roots) assert.deepEqual(entries(r), [], `runtime state root ${r} is not empty`);
        const failed = calls.filter((c) => c.rc === undefined);
        assert.deepEqual(
          failed.map((c) => c.argv),
          [],
          "runtime calls that never finished",
        );
      });
    });
  }
});
