// Differential test: the same bundle's report (test/fixtures/probe/report.sh) under Debian's runc and
// under kata-ts (hypervisor = "none") must match line by line — hostname, ids and groups, the five
// capability sets, no_new_privs, seccomp mode, rlimits, umask, cwd, env, every mount with its type and
// options, masked/readonly paths, /dev contents — except the differences docs/engine.md lists.
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { cli, type Env, haveBusybox, type JsonSpec, makeBundle, makeEnv } from "../fixtures/probe/bundle";

const RUNC = "/usr/sbin/runc";
const skip = !haveBusybox()
  ? "busybox-static is not installed"
  : !existsSync(RUNC)
    ? "runc is not installed (apt-get install -y runc)"
    : false;

/**
 * Lines that differ by design are dropped or normalised: namespace inodes are per container, cgroup
 * paths carry the container id, and pids of the report's own children depend on how many processes
 * the runtime's setup forked inside the pid namespace (runc's bootstrap forks; ours does not).
 */
function comparable(report: string, id: string): string[] {
  return report
    .split("\n")
    .filter((l) => l && !l.startsWith("ns-") && !l.startsWith("mypid: "))
    .map((l) =>
      l.replaceAll(id, "<id>").replace(/^domainname: .*/, "domainname: <ignored: runc 1.1 does not set it>"),
    );
}

const EXTRA_PROBES =
  'echo "oom: $(cat /proc/self/oom_score_adj)"; echo "core: $(ulimit -c)"; echo "hardnofile: $(ulimit -Hn)"; ' +
  'echo "cgroup: $(head -3 /proc/self/cgroup | tr "\\n" " ")"; mkdir /tmp/x 2>&1; ' +
  'echo "shm_rmid_forced: $(cat /proc/sys/kernel/shm_rmid_forced)"';

describe("differential: runc vs kata-ts on the same bundle", { skip }, () => {
  let env: Env;
  before(() => {
    env = makeEnv();
    // A user namespace's root (an unmapped host uid) must be able to walk to the rootfs.
    chmodSync(env.dir, 0o755);
  });
  after(() => env.cleanup());

  function compare(name: string, edit: (s: JsonSpec) => void): void {
    const bundle = makeBundle(env, name, (s) => {
      s.process.args = ["sh", "-c", `/report.sh; ${EXTRA_PROBES}`];
      edit(s);
    });
    mkdirSync(join(bundle, "rootfs", "tmp"), { recursive: true });
    const runcRoot = join(env.dir, "runc-root");
    const r = cli(env, ["run", "--bundle", bundle, `runc-${name}`], {
      bin: RUNC,
      globals: ["--root", runcRoot],
    });
    const k = cli(env, ["run", "--bundle", bundle, `kata-${name}`]);
    assert.equal(k.code, r.code, `exit codes: kata-ts stderr: ${k.stderr}`);
    const want = comparable(r.stdout + r.stderr, `runc-${name}`);
    const got = comparable(k.stdout + k.stderr, `kata-${name}`);
    assert.ok(want.length > 40, `runc produced a full report: ${r.stdout}${r.stderr}`);
    assert.deepEqual(got, want);
  }

  test("runc's default spec", () => {
    compare("default", () => {});
  });

  test("non-root user, groups, umask, cwd, custom caps (ambient), seccomp with args, rlimits, sysctl, oom, cgroupns, tmpfs", () => {
    compare("rich", (s) => {
      s.process.user = { uid: 1000, gid: 1000, additionalGids: [10, 20], umask: 0o027 };
      s.process.cwd = "/tmp";
      s.process.env.push("FOO=bar");
      const caps = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"];
      s.process.capabilities = {
        bounding: caps,
        effective: caps,
        permitted: caps,
        inheritable: caps,
        ambient: caps,
      };
      s.process.rlimits = [
        { type: "RLIMIT_NOFILE", soft: 512, hard: 1024 },
        { type: "RLIMIT_CORE", soft: 0, hard: 0 },
      ];
      s.process.noNewPrivileges = false;
      s.process.oomScoreAdj = 100;
      s.root.readonly = false;
      s.hostname = "rich";
      s.domainname = "example.org";
      s.linux.sysctl = { "kernel.shm_rmid_forced": "1", "net.ipv4.ip_forward": "1" };
      s.linux.namespaces.push({ type: "cgroup" });
      s.linux.seccomp = {
        defaultAction: "SCMP_ACT_ALLOW",
        architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        syscalls: [
          { names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 13 },
          {
            names: ["personality"],
            action: "SCMP_ACT_ERRNO",
            args: [{ index: 0, value: 8, op: "SCMP_CMP_EQ" }],
          },
          { names: ["no_such_syscall_name"], action: "SCMP_ACT_ERRNO" },
        ],
      };
      s.mounts.push({
        destination: "/data",
        type: "tmpfs",
        source: "tmpfs",
        options: ["size=1m", "mode=1777", "nosuid"],
      });
    });
  });

  test("user namespace with uid/gid mappings (devices bound from the host)", () => {
    compare("userns", (s) => {
      s.linux.namespaces.push({ type: "user" });
      s.linux.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      s.linux.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      s.root.readonly = false;
    });
  });

  test("exec into a running container: the exec'd process sees the same as under runc", () => {
    const bundle = makeBundle(env, "exec", (s) => {
      s.process.args = ["sleep", "1000"];
      s.process.env.push("BASE=1");
    });
    const runcRoot = join(env.dir, "runc-root");
    const runc = (args: string[]) => cli(env, args, { bin: RUNC, globals: ["--root", runcRoot] });
    assert.equal(runc(["run", "-d", "--bundle", bundle, "runc-exec"]).code, 0);
    assert.equal(cli(env, ["run", "-d", "--bundle", bundle, "kata-exec"]).code, 0);
    try {
      const flags = [
        "--env",
        "BASE=2",
        "--env",
        "EXTRA=x",
        "--cwd",
        "/bin",
        "--user",
        "1000:1000",
        "--additional-gids",
        "20",
        "--cap",
        "CAP_CHOWN",
      ];
      const r = runc(["exec", ...flags, "runc-exec", "/report.sh"]);
      const k = cli(env, ["exec", ...flags, "kata-exec", "/report.sh"]);
      assert.equal(k.code, r.code, k.stderr);
      const want = comparable(r.stdout + r.stderr, "runc-exec");
      assert.ok(want.length > 40, `runc produced a full report: ${r.stdout}${r.stderr}`);
      assert.deepEqual(comparable(k.stdout + k.stderr, "kata-exec"), want);
    } finally {
      runc(["delete", "--force", "runc-exec"]);
      cli(env, ["delete", "--force", "kata-exec"]);
    }
  });

  test("missing executable: same message, same failure", () => {
    const bundle = makeBundle(env, "missing", (s) => {
      s.process.args = ["/no/such/binary"];
    });
    const runcRoot = join(env.dir, "runc-root");
    const r = cli(env, ["run", "--bundle", bundle, "runc-missing"], {
      bin: RUNC,
      globals: ["--root", runcRoot],
    });
    const k = cli(env, ["run", "--bundle", bundle, "kata-missing"]);
    assert.notEqual(r.code, 0);
    assert.notEqual(k.code, 0);
    const msg = 'exec: "/no/such/binary": stat /no/such/binary: no such file or directory';
    assert.ok(r.stderr.replaceAll('\\"', '"').includes(msg), r.stderr);
    assert.ok(k.stderr.includes(msg), k.stderr);
  });
});
