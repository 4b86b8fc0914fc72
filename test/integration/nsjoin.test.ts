// Issue 9: namespace joins of the wrong type, and rootfsPropagation whatever the caller's propagation is.
//
// Joining a path of the wrong type once left the container's mount setup and pivot_root in the caller's
// own mount namespace: every process in it had its root swapped. So nothing here runs kata-ts in the test's
// mount namespace: each case runs it (via nsenter) inside a throw-away mount namespace held by a
// `sleep` (made with `unshare -m --propagation private`, so even a regression cannot reach the host),
// and asserts that the sleep's root, mount namespace and mount table are the same afterwards, and that
// no state, cgroup, process or mount is left. Host mode, the guest agent's engine (run on the host, in a
// throw-away namespace too), the helper's own defences (plans kata-ts would never send), and VM mode.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AgentClient, AgentError, Code } from "../../src/agent";
import { loadConfig } from "../../src/config/config";
import {
  cli,
  type Env,
  haveBusybox,
  type JsonSpec,
  makeBundle,
  makeEnv,
  sleep,
} from "../fixtures/probe/bundle";
import { BIN, REPO, writeVmTestConfig } from "../helpers";
import { assertNoLeaks, snapshotHost } from "../leaks";

const RUNC = "/usr/sbin/runc";
const AGENT = join(REPO, "dist", "kata-agent.cjs");
const DRIVER = join(REPO, "test", "fixtures", "nsjoin-driver.ts");

const missingTools = ["/usr/bin/unshare", "/usr/bin/nsenter"].filter((f) => !existsSync(f));
const skip = !haveBusybox()
  ? "busybox-static is not installed (apt-get install -y busybox-static)"
  : missingTools.length
    ? `missing ${missingTools.join(", ")} (util-linux)`
    : false;

/** A mount namespace that exists only for one test, held by a sleep that is "the caller under test". */
interface Throwaway {
  pid: number;
  stop(): void;
}

function throwaway(rootShared: boolean): Throwaway {
  // Private first (cut off from the host's peer groups), then rshared inside: the shared peer groups
  // are this namespace's own, so nothing made in it can propagate out.
  const script = `${rootShared ? "mount --make-rshared / && " : ""}exec sleep 600`;
  const child: ChildProcess = spawn("unshare", ["-m", "--propagation", "private", "sh", "-c", script], {
    stdio: "ignore",
  });
  const pid = child.pid ?? 0;
  for (let i = 0; i < 200; i++) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "sleep") break;
    } catch {}
    sleep(25);
  }
  assert.equal(readFileSync(`/proc/${pid}/comm`, "utf8").trim(), "sleep", "the throw-away namespace is up");
  assert.notEqual(readlinkSync(`/proc/${pid}/ns/mnt`), readlinkSync("/proc/self/ns/mnt"));
  // The setup is what the test says it is: "/" of the caller is shared, or it is not.
  assert.equal(/ shared:\d+/.test(rootLine(readFileSync(`/proc/${pid}/mountinfo`, "utf8"))), rootShared);
  return {
    pid,
    stop() {
      child.kill("SIGKILL");
    },
  };
}

/** The mountinfo line of "/". */
function rootLine(mountinfo: string): string {
  return (
    mountinfo
      .split("\n")
      .filter((l) => l.split(" ")[4] === "/")
      .pop() ?? ""
  );
}

/** What must not change for the caller: its root, its mount namespace, its mount table. */
function callerView(pid: number): { root: string; ns: string; mountinfo: string } {
  const st = statSync(`/proc/${pid}/root/`);
  return {
    root: `${st.dev}:${st.ino}`,
    ns: readlinkSync(`/proc/${pid}/ns/mnt`),
    mountinfo: readFileSync(`/proc/${pid}/mountinfo`, "utf8"),
  };
}

/**
 * The caller's root, mount namespace and mount table are unchanged. Mounts may only vanish where
 * another program on the machine removed its own mount point under /tmp (the kernel then detaches that
 * mount in every namespace); nothing may be added or changed.
 */
function assertSameCaller(
  after: ReturnType<typeof callerView>,
  before: ReturnType<typeof callerView>,
  what?: string,
): void {
  assert.equal(after.root, before.root, `${what ?? ""}: the caller's root`);
  assert.equal(after.ns, before.ns, `${what ?? ""}: the caller's mount namespace`);
  const lines = (m: string) => m.split("\n").filter(Boolean);
  const was = new Set(lines(before.mountinfo));
  const now = lines(after.mountinfo);
  assert.deepEqual(
    now.filter((l) => !was.has(l)),
    [],
    `${what ?? ""}: mounts added or changed in the caller's namespace`,
  );
  const nowSet = new Set(now);
  const gone = [...was].filter((l) => !nowSet.has(l));
  const foreign = (l: string) => {
    const mp = l.split(" ")[4];
    return mp.startsWith("/tmp/") && !existsSync(mp);
  };
  assert.deepEqual(
    gone.filter((l) => !foreign(l)),
    [],
    `${what ?? ""}: mounts removed from the caller's namespace`,
  );
}

/** A runtime CLI (kata-ts by default) run inside the throw-away namespace. */
function inNs(t: Throwaway, env: Env, args: string[], runtime: string[] = [BIN, "--config", env.config]) {
  return cli(env, args, { bin: "nsenter", globals: ["-t", String(t.pid), "-m", "--", ...runtime] });
}

function withNamespace(spec: JsonSpec, type: string, path: string): void {
  const nss = (spec.linux.namespaces as { type: string; path?: string }[]).filter((n) => n.type !== type);
  spec.linux.namespaces = [...nss, { type, path }];
}

/** The propagation of "/" as a container saw it in its mountinfo. */
function propagationOf(line: string): "shared" | "slave" | "private" {
  if (/ shared:\d+/.test(line)) return "shared";
  if (/ master:\d+/.test(line)) return "slave";
  return "private";
}

describe("namespace joins and rootfs propagation (hypervisor = none)", { skip }, () => {
  let env: Env;
  let seq = 0;
  const uid = () => `nsj-${process.pid}-${++seq}`;
  before(() => {
    env = makeEnv();
  });
  after(() => env.cleanup());

  describe("a path of the wrong type is refused before anything is created; the caller keeps its root", () => {
    let t: Throwaway;
    let netFile: string;
    before(() => {
      t = throwaway(false);
      // A bind-mounted nsfs file (as /run/netns/NAME is), made in the throw-away namespace only:
      // readlink tells nothing about it, only the kernel's NS_GET_NSTYPE does.
      netFile = join(env.dir, "netns-file");
      writeFileSync(netFile, "");
      const r = spawnSync("nsenter", [
        "-t",
        String(t.pid),
        "-m",
        "--",
        "mount",
        "--bind",
        "/proc/self/ns/net",
        netFile,
      ]);
      assert.equal(r.status, 0, String(r.stderr));
    });
    after(() => t.stop());

    const cases = () => [
      {
        what: "mount given a network namespace (the issue's config)",
        type: "mount",
        path: "/proc/self/ns/net",
        line: "linux.namespaces: /proc/self/ns/net is of type network, not the declared type mount",
      },
      {
        what: "ipc given a mount namespace",
        type: "ipc",
        path: `/proc/${t.pid}/ns/mnt`,
        line: `linux.namespaces: /proc/${t.pid}/ns/mnt is of type mount, not the declared type ipc`,
      },
      {
        what: "cgroup given an ipc namespace",
        type: "cgroup",
        path: `/proc/${t.pid}/ns/ipc`,
        line: `linux.namespaces: /proc/${t.pid}/ns/ipc is of type ipc, not the declared type cgroup`,
      },
      {
        what: "mount given a bind-mounted network namespace file",
        type: "mount",
        path: netFile,
        line: `linux.namespaces: ${netFile} is of type network, not the declared type mount`,
      },
      {
        what: "network given a file that is no namespace",
        type: "network",
        path: "/etc/hostname",
        line: "linux.namespaces: /etc/hostname is not a namespace (declared type network)",
      },
      {
        what: "mount given kata-ts's own mount namespace",
        type: "mount",
        path: "/proc/self/ns/mnt",
        line: "linux.namespaces: /proc/self/ns/mnt is kata-ts's own mount namespace; the container's mounts must not be made in it",
      },
    ];

    test("each case: one line naming the path and both types, exit 1, the caller untouched, nothing left", () => {
      // Root and mount namespace only: other tests on this machine mount in the host's namespace.
      const ownRoot = () => ({ root: callerView(process.pid).root, ns: readlinkSync("/proc/self/ns/mnt") });
      const testProcess = ownRoot();
      for (const c of cases()) {
        const id = uid();
        const bundle = makeBundle(env, id, (s) => withNamespace(s, c.type, c.path));
        const snap = snapshotHost();
        const before = callerView(t.pid);
        const r = inNs(t, env, ["--root", env.root, "create", "--bundle", bundle, id]);
        assert.equal(r.code, 1, `${c.what}: ${r.stderr}`);
        assert.equal(r.stderr.trim(), c.line, c.what);
        assertSameCaller(callerView(t.pid), before, `${c.what}: the caller's root, mount ns and mounts`);
        assert.ok(!existsSync(join(env.root, id)), `${c.what}: no state directory`);
        assertNoLeaks(snap, { root: env.root, bundle, id });
      }
      assert.deepEqual(ownRoot(), testProcess, "the test process's own root and mount namespace");
    });

    test("a path of the right type still joins (network namespace by path)", () => {
      const id = uid();
      const bundle = makeBundle(env, id, (s) => {
        withNamespace(s, "network", `/proc/${t.pid}/ns/net`);
        s.process.args = ["readlink", "/proc/self/ns/net"];
      });
      const before = callerView(t.pid);
      const r = inNs(t, env, ["--root", env.root, "run", "--bundle", bundle, id]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), readlinkSync(`/proc/${t.pid}/ns/net`));
      assertSameCaller(callerView(t.pid), before);
    });

    test("the helper on its own: a wrong-type setns and an init left in the caller's mount namespace abort", () => {
      const rootfs = join(
        makeBundle(env, uid(), () => {}),
        "rootfs",
      );
      const expect: Record<string, RegExp> = {
        "setns-wrong-type":
          /^linux\.namespaces: \/proc\/self\/ns\/net is of type network, not the declared type mount$/,
        "init-in-own-mntns":
          /^container init: its mount namespace mnt:\[\d+\] is the one kata-ts runs in; refusing to mount in it$/,
        "init-in-own-mntns-unsaid":
          /^container init: its mount namespace mnt:\[\d+\] is the one kata-ts runs in; refusing to mount in it$/,
      };
      for (const [plan, line] of Object.entries(expect)) {
        const before = callerView(t.pid);
        const r = spawnSync(
          "nsenter",
          [
            "-t",
            String(t.pid),
            "-m",
            `--wd=${REPO}`,
            "--",
            process.execPath,
            "--import",
            "tsx",
            DRIVER,
            plan,
            rootfs,
          ],
          { encoding: "utf8", timeout: 60_000 },
        );
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout.trim(), line, plan);
        assertSameCaller(callerView(t.pid), before, `${plan}: the caller's root, mount ns and mounts`);
      }
    });
  });

  describe("the guest agent's engine refuses the same (run on the host, in a throw-away namespace)", {
    skip: !existsSync(AGENT) && "build first: node scripts/build.mjs",
  }, () => {
    let t: Throwaway;
    let agent: ChildProcess;
    let client: AgentClient;
    before(async () => {
      t = throwaway(false);
      agent = spawn("nsenter", ["-t", String(t.pid), "-m", "--", process.execPath, AGENT], {
        env: {
          ...process.env,
          KATA_TS_AGENT_SOCKET: join(env.dir, "agent.sock"),
          KATA_TS_AGENT_STATE: join(env.dir, "agent-state"),
        },
        stdio: "ignore",
      });
      client = await AgentClient.connect(join(env.dir, "agent.sock"), { timeoutMs: 10_000 });
    });
    after(() => {
      client?.close();
      agent.kill("SIGKILL");
      t.stop();
    });

    test("createContainer with a mount namespace path of type network: INVALID_ARGUMENT, nothing made", async () => {
      const id = uid();
      const bundle = makeBundle(env, id, (s) => withNamespace(s, "mount", "/proc/self/ns/net"));
      const spec = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8"));
      spec.root = { path: join(bundle, "rootfs") };
      const before = callerView(t.pid);
      await assert.rejects(
        client.call("createContainer", {
          containerId: id,
          spec,
          mounts: [],
          stdio: { terminal: false, stdin: 0, stdout: 0, stderr: 0 },
        }),
        (e: unknown) =>
          e instanceof AgentError &&
          e.code === Code.invalidArgument &&
          e.message === "linux.namespaces: /proc/self/ns/net is of type network, not the declared type mount",
      );
      assertSameCaller(callerView(t.pid), before);
      assert.ok(!existsSync(join(env.dir, "agent-state", id)), "no state directory in the agent");
    });
  });

  describe("rootfsPropagation works whatever the caller's propagation is (as runc 1.1.5)", () => {
    // What runc 1.1.5 shows as the container's "/" on this kernel: the rootfs's parent mount is made
    // private before the rootfs is bound, so only a slave "/" (from a shared caller) keeps a master.
    const expected = (callerShared: boolean, prop: string) =>
      callerShared && (prop === "slave" || prop === "unset") ? "slave" : "private";
    for (const callerShared of [false, true]) {
      test(`caller's / ${callerShared ? "shared" : "private"}: shared, slave, private and unset all start`, () => {
        const t = throwaway(callerShared);
        try {
          for (const prop of ["shared", "slave", "private", "unset"]) {
            const id = uid();
            const bundle = makeBundle(env, id, (s) => {
              if (prop !== "unset") s.linux.rootfsPropagation = prop;
              s.process.args = ["awk", '$5 == "/"', "/proc/self/mountinfo"];
            });
            const snap = snapshotHost();
            const before = callerView(t.pid);
            const r = inNs(t, env, ["--root", env.root, "run", "--bundle", bundle, id]);
            assert.equal(r.code, 0, `${prop}: ${r.stderr}`);
            const got = propagationOf(rootLine(r.stdout));
            assert.equal(
              got,
              expected(callerShared, prop),
              `${prop}: the container's / (${r.stdout.trim()})`,
            );
            if (existsSync(RUNC)) {
              const rr = inNs(
                t,
                env,
                ["run", "--bundle", bundle, `${id}-runc`],
                [RUNC, "--root", join(env.dir, "runc-state")],
              );
              assert.equal(rr.code, 0, `runc ${prop}: ${rr.stderr}`);
              assert.equal(got, propagationOf(rootLine(rr.stdout)), `${prop}: as runc`);
            }
            assertSameCaller(callerView(t.pid), before, `${prop}: the caller's root, mount ns and mounts`);
            assertNoLeaks(snap, { root: env.root, bundle, id });
          }
        } finally {
          t.stop();
        }
      });
    }
  });
});

// ---- VM mode: the host refuses before it boots a VM; rootfsPropagation works in the guest ----

const KERNEL =
  process.env.KATA_TS_TEST_KERNEL ??
  loadConfig({ explicitPath: join(REPO, "config", "configuration.toml") }).config.hypervisor.kernel;
const vmMissing = ["/usr/bin/qemu-system-x86_64", KERNEL].filter((f) => !existsSync(f));
const vmSkip = skip || (vmMissing.length ? `missing ${vmMissing.join(", ")}` : false);

describe("namespace joins and rootfs propagation (VM mode)", { skip: vmSkip, timeout: 900_000 }, () => {
  let env: Env;
  let seq = 0;
  const uid = () => `nsjvm-${process.pid}-${++seq}`;
  const vmEnv = {
    ...process.env,
    KATA_TS_SUPERVISOR: join(REPO, "dist", "kata-supervisor.cjs"),
    KATA_TS_NATIVE_DIR: join(REPO, "native", "build"),
  };
  /** kata-ts in VM mode, from the test's own namespace (a VM boots slowly under TCG: generous timeout). */
  const vmCli = (args: string[]) => {
    const r = spawnSync(BIN, ["--root", env.root, "--config", env.config, ...args], {
      env: vmEnv,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 300_000,
    });
    return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
  };
  before(async () => {
    env = makeEnv();
    env.config = await writeVmTestConfig(env.dir, KERNEL);
  });
  after(() => env.cleanup());

  test("a mount path of type network is refused on the host in one line, before any VM boots", () => {
    const t = throwaway(false);
    try {
      const id = uid();
      const bundle = makeBundle(env, id, (s) => withNamespace(s, "mount", "/proc/self/ns/net"));
      const snap = snapshotHost();
      const before = callerView(t.pid);
      const started = Date.now();
      const r = inNs(t, env, ["--root", env.root, "create", "--bundle", bundle, id]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(
        r.stderr.trim(),
        "linux.namespaces: /proc/self/ns/net is of type network, not the declared type mount",
      );
      assert.ok(Date.now() - started < 15_000, "refused without booting a VM");
      assertSameCaller(callerView(t.pid), before);
      assert.ok(!existsSync(join(env.root, id)), "no state directory");
      assert.ok(!existsSync(join(env.root, "sandboxes", id)), "no sandbox directory");
      assertNoLeaks(snap, { root: env.root, bundle, id });
    } finally {
      t.stop();
    }
  });

  for (const prop of ["shared", "slave", "private"]) {
    test(`rootfsPropagation ${prop} starts in the guest`, () => {
      const id = uid();
      const bundle = makeBundle(env, id, (s) => {
        s.linux.rootfsPropagation = prop;
        s.process.args = ["awk", '$5 == "/"', "/proc/self/mountinfo"];
      });
      const snap = snapshotHost();
      const r = vmCli(["run", "--bundle", bundle, id]);
      assert.equal(r.code, 0, r.stderr);
      // The guest's "/" is private (the agent's own mount namespace), so is every container's.
      assert.equal(propagationOf(rootLine(r.stdout)), "private", r.stdout);
      const del = vmCli(["delete", "--force", id]);
      assert.ok(del.code === 0 || /not exist/.test(del.stderr), del.stderr);
      assertNoLeaks(snap, { root: env.root, bundle, id });
    });
  }
});
