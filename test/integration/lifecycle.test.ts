// The host engine end to end (hypervisor = "none"): create/start/run/kill/delete/exec through the real
// CLI on a busybox bundle, asserting on what the container saw and on what is left on the host.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  alive,
  cgroupDirs,
  cli,
  type Env,
  haveBusybox,
  type JsonSpec,
  makeBundle,
  makeEnv,
  mountsMentioning,
  parseReport,
  sleep,
} from "../fixtures/probe/bundle";
import { BIN } from "../helpers";
import { cgroupLayout } from "../probes";

const skip = !haveBusybox() ? "busybox-static is not installed (apt-get install -y busybox-static)" : false;

describe("lifecycle (hypervisor = none)", { skip }, () => {
  let env: Env;
  before(() => {
    env = makeEnv();
  });
  after(() => env.cleanup());

  test("run in the foreground: the container sees its own namespaces, hostname, caps, limits, masks", () => {
    const bundle = makeBundle(env, "report", (s) => {
      s.process.args = ["/report.sh"];
      s.hostname = "probe-host";
    });
    const r = cli(env, ["run", "--bundle", bundle, "report1"]);
    assert.equal(r.code, 0, r.stderr);
    const { fields, mounts } = parseReport(r.stdout);
    assert.equal(fields.hostname, "probe-host");
    assert.equal(fields.id, "uid=0(root) gid=0(root)");
    // runc's default caps: AUDIT_WRITE(29), KILL(5), NET_BIND_SERVICE(10)
    assert.equal(fields.CapEff, "0000000020000420");
    assert.equal(fields.CapBnd, "0000000020000420");
    assert.equal(fields.CapPrm, "0000000020000420");
    assert.equal(fields.NoNewPrivs, "1");
    assert.equal(fields.nofile, "1024");
    assert.equal(fields.umask, "0022");
    assert.equal(fields.pid1, "/bin/sh /report.sh");
    assert.equal(fields.mypid, "1");
    assert.match(fields.fds, /^0 1 2 3( \d+)?$/, "stdio, the fd ls opens, and the script sh reads");
    assert.match(fields.env, /HOME=\/root/);
    assert.equal(fields["root-ro"], "yes");
    assert.equal(fields["procsys-write"], "denied");
    assert.equal(fields.ptmx, "pts/ptmx");
    assert.match(fields.devices, /null .*ptmx .*pts .*shm .*tty .*urandom zero/);
    assert.equal(fields["dev-null"], "crw-rw-rw- 1, 3");
    assert.equal(fields["masked-dir /sys/firmware"], "0");
    assert.equal(fields["masked-file /proc/keys"], "0");
    // The container's /sys/fs/cgroup follows the host's layout (probe): v1 hierarchies bound read-only
    // under a tmpfs on v1/hybrid hosts, one cgroup2 mount on v2-only hosts.
    const v2only = cgroupLayout() === "v2";
    for (const m of [
      "/ ",
      "/proc proc",
      "/dev tmpfs",
      "/dev/pts devpts",
      "/sys sysfs",
      v2only ? "/sys/fs/cgroup cgroup2" : "/sys/fs/cgroup tmpfs",
    ])
      assert.ok(
        mounts.some((x) => x.startsWith(m)),
        `mount ${m} in ${mounts.join("|")}`,
      );
    if (!v2only)
      assert.ok(
        mounts.some((x) => /^\/sys\/fs\/cgroup\/memory cgroup ro,/.test(x)),
        "cgroup v1 hierarchies bound ro",
      );
    for (const ns of ["ipc", "mnt", "net", "pid", "uts"])
      assert.notEqual(fields[`ns-${ns}`], readlinkSync(`/proc/self/ns/${ns}`), `${ns} namespace is new`);
    assert.equal(fields["ns-user"], readlinkSync("/proc/self/ns/user"), "no user namespace requested");
    assert.deepEqual(cgroupDirs("report1"), [], "foreground run deletes its cgroups");
    assert.equal(existsSync(join(env.root, "report1")), false, "foreground run deletes its state");
  });

  test("run passes the exit code through, 128+signal when killed", async () => {
    const b = makeBundle(env, "exit", (s) => {
      s.process.args = ["sh", "-c", "exit 3"];
    });
    assert.equal(cli(env, ["run", "-b", b, "exit3"]).code, 3);
    const k = makeBundle(env, "killed", (s) => {
      s.process.args = ["sleep", "1000"];
    });
    const child = spawn(BIN, ["--root", env.root, "--config", env.config, "run", "-b", k, "killed"], {
      stdio: "ignore",
    });
    const code = new Promise<number | null>((res) => child.on("exit", (c) => res(c)));
    let status = "";
    for (let i = 0; i < 300 && status !== "running"; i++) {
      await new Promise((r) => setTimeout(r, 10));
      const st = cli(env, ["state", "killed"]);
      status = st.code === 0 ? JSON.parse(st.stdout).status : "";
    }
    assert.equal(status, "running");
    assert.equal(cli(env, ["kill", "killed", "KILL"]).code, 0);
    assert.equal(await code, 137);
    assert.equal(existsSync(join(env.root, "killed")), false, "deleted after exit");
  });

  test("create → created with a live pid and pid file; start runs it; kill + delete leave nothing", () => {
    const out = join(env.dir, "lc-out");
    const b = makeBundle(env, "lc", (s) => {
      s.process.args = ["sh", "-c", `echo started > /tmp/started; exec sleep 1000`];
      s.mounts.push({ destination: "/tmp", type: "bind", source: env.dir, options: ["rbind", "rw"] });
    });
    const pidFile = join(env.dir, "lc.pid");
    const c = cli(env, ["create", "--bundle", b, "--pid-file", pidFile, "lc"]);
    assert.equal(c.code, 0, c.stderr);
    const pid = Number(readFileSync(pidFile, "utf8"));
    assert.ok(pid > 0 && alive(pid), "init alive after create");
    let st = JSON.parse(cli(env, ["state", "lc"]).stdout);
    assert.equal(st.status, "created");
    assert.equal(st.pid, pid);
    assert.equal(existsSync(join(env.dir, "started")), false, "workload not started before start");
    assert.ok(cgroupDirs("lc").length > 0, "cgroups made");
    assert.ok(readFileSync(`/proc/${pid}/cgroup`, "utf8").includes("/lc"), "init placed in its cgroup");

    assert.equal(cli(env, ["start", "lc"]).code, 0);
    for (let i = 0; i < 200 && !existsSync(join(env.dir, "started")); i++) sleep(10);
    assert.equal(readFileSync(join(env.dir, "started"), "utf8"), "started\n");
    st = JSON.parse(cli(env, ["state", "lc"]).stdout);
    assert.equal(st.status, "running");
    assert.equal(existsSync(join(env.root, "lc", "exec.fifo")), false);

    const again = cli(env, ["start", "lc"]);
    assert.equal(again.code, 1);
    assert.equal(again.stderr.trim(), "cannot start an already running container");
    const del = cli(env, ["delete", "lc"]);
    assert.equal(del.code, 1);
    assert.equal(del.stderr.trim(), "cannot delete container lc that is not stopped: running");

    assert.equal(cli(env, ["kill", "lc", "KILL"]).code, 0);
    for (let i = 0; i < 200 && alive(pid); i++) sleep(10);
    assert.equal(alive(pid), false);
    assert.equal(JSON.parse(cli(env, ["state", "lc"]).stdout).status, "stopped");
    assert.equal(cli(env, ["start", "lc"]).stderr.trim(), "cannot start a container that has stopped");
    assert.equal(cli(env, ["kill", "lc"]).stderr.trim(), "container not running");
    assert.equal(cli(env, ["delete", "lc"]).code, 0);
    assert.equal(existsSync(join(env.root, "lc")), false, "state dir removed");
    assert.deepEqual(cgroupDirs("lc"), [], "cgroup dirs removed");
    assert.deepEqual(mountsMentioning(b), [], "no host mount mentions the bundle");
    assert.equal(existsSync(out), false);
  });

  test("kill accepts names with and without SIG and numbers; --all signals every process", () => {
    const b = makeBundle(env, "kl", (s) => {
      s.process.args = ["sh", "-c", "trap 'exit 0' USR1; sleep 1000 & wait"];
    });
    assert.equal(cli(env, ["run", "-d", "-b", b, "kl"]).code, 0);
    const pid = JSON.parse(cli(env, ["state", "kl"]).stdout).pid;
    assert.equal(cli(env, ["kill", "kl", "nope"]).stderr.trim(), 'unknown signal "nope"');
    assert.equal(cli(env, ["kill", "kl", "0"]).code, 1, "0 is not a signal");
    assert.equal(cli(env, ["kill", "kl", "WINCH"]).code, 0);
    assert.equal(cli(env, ["kill", "kl", "28"]).code, 0);
    assert.ok(alive(pid));
    assert.equal(cli(env, ["kill", "--all", "kl", "SIGKILL"]).code, 0);
    for (let i = 0; i < 200 && alive(pid); i++) sleep(10);
    assert.equal(alive(pid), false);
    assert.equal(cli(env, ["delete", "kl"]).code, 0);
  });

  test("delete --force kills a running container; delete --force of a missing id exits 0", () => {
    const b = makeBundle(env, "df", (s) => {
      s.process.args = ["sleep", "1000"];
    });
    assert.equal(cli(env, ["run", "--detach", "-b", b, "df"]).code, 0);
    const pid = JSON.parse(cli(env, ["state", "df"]).stdout).pid;
    assert.ok(alive(pid));
    assert.equal(cli(env, ["delete", "--force", "df"]).code, 0);
    assert.equal(alive(pid), false);
    assert.equal(existsSync(join(env.root, "df")), false);
    assert.deepEqual(cgroupDirs("df"), []);
    assert.equal(cli(env, ["delete", "--force", "df"]).code, 0);
    const missing = cli(env, ["delete", "nosuch"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nosuch/);
  });

  test("SIGTERM ends a created container (as runc's Go init does); the workload starts with default signals", () => {
    const b = makeBundle(env, "st", (s) => {
      s.process.args = ["grep", "-E", "^Sig(Ign|Cgt)", "/proc/self/status"];
      s.hooks = { startContainer: [{ path: "/bin/sh", args: ["sh", "-c", "exit 0"] }] };
    });
    const pidFile = join(env.dir, "st.pid");
    assert.equal(cli(env, ["create", "-b", b, "--pid-file", pidFile, "st"]).code, 0);
    const pid = Number(readFileSync(pidFile, "utf8"));
    assert.equal(cli(env, ["kill", "st", "TERM"]).code, 0);
    for (let i = 0; i < 200 && alive(pid); i++) sleep(10);
    assert.equal(alive(pid), false);
    assert.equal(JSON.parse(cli(env, ["state", "st"]).stdout).status, "stopped");
    assert.equal(cli(env, ["delete", "st"]).code, 0);
    const r = cli(env, ["run", "-b", b, "st2"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /SigIgn:\s+0000000000000000/, "nothing ignored (not even SIGPIPE after a hook)");
  });

  test("delete of a created container kills its init", () => {
    const b = makeBundle(env, "dc", (s) => {
      s.process.args = ["true"];
    });
    const pidFile = join(env.dir, "dc.pid");
    assert.equal(cli(env, ["create", "-b", b, "--pid-file", pidFile, "dc"]).code, 0);
    const pid = Number(readFileSync(pidFile, "utf8"));
    assert.equal(cli(env, ["delete", "dc"]).code, 0);
    assert.equal(alive(pid), false);
    assert.equal(existsSync(join(env.root, "dc")), false);
  });

  test("exec: argv form with env/cwd/user, exit codes, --detach with --pid-file, --process file", () => {
    const b = makeBundle(env, "ex", (s) => {
      s.process.args = ["sleep", "1000"];
    });
    assert.equal(cli(env, ["run", "-d", "-b", b, "ex"]).code, 0);
    const init = JSON.parse(cli(env, ["state", "ex"]).stdout).pid;
    const r = cli(env, [
      "exec",
      "--env",
      "FOO=bar",
      "--cwd",
      "/bin",
      "--user",
      "65534:65534",
      "ex",
      "sh",
      "-c",
      'echo "$FOO $(pwd) $(id -u):$(id -g)"; readlink /proc/self/ns/pid',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const [line, pidns] = r.stdout.trim().split("\n");
    assert.equal(line, "bar /bin 65534:65534");
    assert.equal(pidns, readlinkSync(`/proc/${init}/ns/pid`), "exec joined the container's pid namespace");
    assert.equal(cli(env, ["exec", "ex", "sh", "-c", "exit 5"]).code, 5);
    const over = cli(env, [
      "exec",
      "--env",
      "PATH=/bin",
      "ex",
      "sh",
      "-c",
      'echo "$PATH"; env | grep -c ^PATH=',
    ]);
    assert.equal(over.stdout, "/bin\n1\n", "exec --env replaces the container's PATH, no duplicate");
    const missing = cli(env, ["exec", "ex", "/nonexistent"]);
    assert.equal(missing.code, 255, "runc exits 255 when exec fails");
    assert.equal(
      missing.stderr.trim(),
      'unable to start container process: exec: "/nonexistent": stat /nonexistent: no such file or directory',
    );
    const pidFile = join(env.dir, "exec.pid");
    assert.equal(cli(env, ["exec", "-d", "--pid-file", pidFile, "ex", "sleep", "999"]).code, 0);
    const epid = Number(readFileSync(pidFile, "utf8"));
    assert.ok(alive(epid));
    assert.match(readFileSync(`/proc/${epid}/cmdline`, "utf8"), /^sleep\x00999/);
    assert.equal(readlinkSync(`/proc/${epid}/ns/mnt`), readlinkSync(`/proc/${init}/ns/mnt`));
    const procFile = join(env.dir, "process.json");
    writeFileSync(
      procFile,
      JSON.stringify({
        args: ["/bin/sh", "-c", "echo $X; exit 4"],
        env: ["X=from-process-file"],
        cwd: "/",
        user: { uid: 0, gid: 0 },
      }),
    );
    const pf = cli(env, ["exec", "--process", procFile, "ex"]);
    assert.equal(pf.code, 4);
    assert.equal(pf.stdout.trim(), "from-process-file");
    assert.equal(cli(env, ["delete", "-f", "ex"]).code, 0);
    assert.equal(alive(epid), false, "delete --force kills exec'd processes too");
  });

  test("--no-pivot: the container still sees only its rootfs", () => {
    const b = makeBundle(env, "np", (s) => {
      s.process.args = ["sh", "-c", "ls /; grep -c ' / ' /proc/self/mountinfo"];
    });
    const r = cli(env, ["run", "--no-pivot", "-b", b, "np"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^bin\ndev\netc\nproc\nreport\.sh\nsys\ntmp\n/);
  });

  test("a time namespace with a boottime offset shifts the container's uptime", () => {
    const b = makeBundle(env, "tns", (s) => {
      s.process.args = ["cat", "/proc/uptime"];
      s.linux.namespaces.push({ type: "time" });
      s.linux.timeOffsets = { boottime: { secs: 86400 * 365 } };
    });
    const r = cli(env, ["run", "-b", b, "tns"]);
    assert.equal(r.code, 0, r.stderr);
    const inside = Number(r.stdout.split(" ")[0]);
    const host = Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]);
    assert.ok(inside - host > 86400 * 364, `uptime inside ${inside}, host ${host}`);
  });

  test("a create killed mid-way (during a createRuntime hook) is cleaned up by delete --force", async () => {
    const b = makeBundle(env, "ck", (s) => {
      s.process.args = ["true"];
      s.hooks = { createRuntime: [{ path: "/bin/sleep", args: ["sleep", "3"] }] };
    });
    const child = spawn(BIN, ["--root", env.root, "--config", env.config, "create", "-b", b, "ck"], {
      stdio: "ignore",
    });
    let pid = 0;
    for (let i = 0; i < 500 && pid === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      try {
        pid = JSON.parse(readFileSync(join(env.root, "ck", "state.json"), "utf8")).pid;
      } catch {}
    }
    assert.ok(pid > 0, "the record names the init before hooks run");
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    for (let i = 0; i < 200 && alive(pid); i++) sleep(10);
    assert.equal(alive(pid), false, "the init gives up when its caller is gone");
    assert.ok(cgroupDirs("ck").length > 0, "cgroups were made");
    assert.equal(cli(env, ["delete", "--force", "ck"]).code, 0);
    assert.deepEqual(cgroupDirs("ck"), []);
    assert.equal(existsSync(join(env.root, "ck")), false);
  });

  test("recursive mount options: rro makes submounts read-only too, plain ro does not", () => {
    const src = join(env.dir, "rsrc");
    mkdirSync(join(src, "sub"), { recursive: true });
    assert.equal(spawnSync("mount", ["-t", "tmpfs", "tmpfs", join(src, "sub")]).status, 0);
    try {
      const b = makeBundle(env, "rro", (s) => {
        s.mounts.push({ destination: "/r", type: "bind", source: src, options: ["rbind", "rro"] });
        s.mounts.push({ destination: "/p", type: "bind", source: src, options: ["rbind", "ro"] });
        s.process.args = [
          "sh",
          "-c",
          "for f in /r/x /r/sub/x /p/x /p/sub/x; do touch $f 2>/dev/null && echo $f:rw || echo $f:ro; done",
        ];
      });
      const r = cli(env, ["run", "-b", b, "rro"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "/r/x:ro\n/r/sub/x:ro\n/p/x:ro\n/p/sub/x:rw\n");
    } finally {
      spawnSync("umount", ["-l", join(src, "sub")]);
    }
  });

  test("each container gets its own session keyring _ses.<id> (runc's), unless --no-new-keyring", () => {
    const b = makeBundle(env, "kr", (s) => {
      s.process.args = ["sleep", "1000"];
    });
    const id = `kr${process.pid}`;
    assert.equal(cli(env, ["run", "-d", "-b", b, id]).code, 0);
    const keys = readFileSync("/proc/keys", "utf8");
    assert.match(keys, new RegExp(`perm 3f1b0000 +0 +0 keyring +_ses\\.${id}:`));
    assert.equal(cli(env, ["delete", "-f", id]).code, 0);
    const id2 = `krn${process.pid}`;
    assert.equal(cli(env, ["run", "-d", "--no-new-keyring", "-b", b, id2]).code, 0);
    assert.doesNotMatch(readFileSync("/proc/keys", "utf8"), new RegExp(`_ses\\.${id2}:`));
    assert.equal(cli(env, ["delete", "-f", id2]).code, 0);
  });

  test("a missing executable fails create with runc's wording and leaves nothing", () => {
    const b = makeBundle(env, "nx", (s) => {
      s.process.args = ["nosuchbinary"];
    });
    const r = cli(env, ["create", "-b", b, "nx"]);
    assert.notEqual(r.code, 0);
    assert.equal(
      r.stderr.trim(),
      'unable to start container process: exec: "nosuchbinary": executable file not found in $PATH',
    );
    assert.equal(existsSync(join(env.root, "nx")), false);
    assert.deepEqual(cgroupDirs("nx"), []);
  });

  test("bad configs exit 1 with one line naming the field and leave nothing under --root", () => {
    const cases: [string, (s: JsonSpec) => void, RegExp][] = [
      [
        "bad-args",
        (s) => {
          s.process.args = "sh";
        },
        /process\.args/,
      ],
      [
        "bad-mount",
        (s) => {
          s.mounts.push({
            destination: "/x",
            type: "bind",
            source: "/definitely/not/here",
            options: ["bind"],
          });
        },
        /\/definitely\/not\/here/,
      ],
      [
        "bad-ns",
        (s) => {
          s.linux.namespaces = s.linux.namespaces.filter((n: { type: string }) => n.type !== "mount");
        },
        /mount namespace/,
      ],
    ];
    for (const [name, edit, re] of cases) {
      const b = makeBundle(env, name, edit);
      const r = cli(env, ["create", "-b", b, name]);
      assert.equal(r.code, 1, `${name}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, `${name}: one line`);
      assert.match(r.stderr, re);
      assert.equal(existsSync(join(env.root, name)), false, `${name}: no state left`);
      assert.deepEqual(cgroupDirs(name), []);
    }
  });

  test('hypervisor = "qemu" with shared_fs = "none" (no block-device rootfs yet): one-line error, nothing left', () => {
    const b = makeBundle(env, "vmfs", (s) => {
      s.process.args = ["true"];
    });
    const conf = join(env.dir, "nofs.toml");
    writeFileSync(conf, '[runtime]\nhypervisor = "qemu"\n[hypervisor.qemu]\nshared_fs = "none"\n');
    const r = cli(env, ["create", "-b", b, "vmfs"], { globals: ["--root", env.root, "--config", conf] });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      'shared_fs = "none" is not supported in VM mode: set shared_fs = "virtio-fs" or "virtio-9p" in [hypervisor.qemu]\n',
    );
    assert.equal(existsSync(join(env.root, "vmfs")), false);
    assert.equal(existsSync(join(env.root, "sandboxes", "vmfs")), false);
  });

  test("VM mode: a sizing annotation out of bounds or not enabled is refused in one line, nothing left", () => {
    const conf = join(env.dir, "sizing.toml");
    writeFileSync(
      conf,
      '[runtime]\nhypervisor = "qemu"\n[hypervisor.qemu]\nenable_annotations = ["default_memory"]\n',
    );
    const cases: [string, string, string, RegExp][] = [
      ["small", "default_memory", "64", /default_memory: 64 MiB is less than the minimum of 256 MiB/],
      ["nan", "default_memory", "lots", /default_memory: "lots" is not a positive integer/],
      ["cpus", "default_vcpus", "1", /default_vcpus is not enabled: see enable_annotations/],
    ];
    for (const [name, key, value, re] of cases) {
      const b = makeBundle(env, name, (s) => {
        s.process.args = ["true"];
        s.annotations = { [`io.katacontainers.config.hypervisor.${key}`]: value };
      });
      const r = cli(env, ["create", "-b", b, name], { globals: ["--root", env.root, "--config", conf] });
      assert.equal(r.code, 1, `${name}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, `${name}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(existsSync(join(env.root, name)), false, `${name}: state left`);
      assert.equal(existsSync(join(env.root, "sandboxes", name)), false, `${name}: sandbox dir left`);
      assert.deepEqual(cgroupDirs(name), [], `${name}: cgroups left`);
    }
  });

  test('hypervisor = "qemu" with a missing guest kernel: one-line error naming it, nothing left', () => {
    const b = makeBundle(env, "vm", (s) => {
      s.process.args = ["true"];
    });
    const qemuConf = join(env.dir, "qemu.toml");
    writeFileSync(
      qemuConf,
      '[runtime]\nhypervisor = "qemu"\n[hypervisor.qemu]\nkernel = "/nonexistent/vmlinux"\n',
    );
    const r = cli(env, ["create", "-b", b, "vm"], { globals: ["--root", env.root, "--config", qemuConf] });
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /\/nonexistent\/vmlinux/);
    assert.equal(existsSync(join(env.root, "vm")), false);
    assert.equal(existsSync(join(env.root, "sandboxes", "vm")), false);
  });
});

describe("engine security (hypervisor = none)", { skip }, () => {
  let env: Env;
  before(() => {
    env = makeEnv();
  });
  after(() => env.cleanup());

  test("CVE-2019-5736: the helper runs from a sealed memfd; writing it from the container fails", () => {
    const helper = join(__dirname, "..", "..", "native", "build", "kata-ts-helper");
    const before = readFileSync(helper);
    // Host pid namespace: the container's parent (the foreground helper) is visible in /proc.
    const b = makeBundle(env, "exe", (s) => {
      s.linux.namespaces = s.linux.namespaces.filter((n: { type: string }) => n.type !== "pid");
      s.process.capabilities = undefined;
      s.process.args = [
        "sh",
        "-c",
        'echo "exe: $(readlink /proc/$PPID/exe)"; (echo pwned > /proc/$PPID/exe) 2>/dev/null && echo "write: ok" || echo "write: failed"',
      ];
    });
    const r = cli(env, ["run", "-b", b, "exe"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /exe: \/memfd:kata-ts-helper/);
    assert.match(r.stdout, /write: failed/);
    assert.deepEqual(readFileSync(helper), before, "the helper on disk is unchanged");
    assert.ok(statSync(helper).size > 1000);
  });

  test("CVE-2021-30465: a symlinked mount destination stays inside the rootfs", () => {
    const target = join(env.dir, "outside");
    const b = makeBundle(env, "sym", (s) => {
      s.mounts.push({ destination: "/escape/sub", type: "tmpfs", source: "tmpfs", options: ["size=1m"] });
      s.process.args = ["sh", "-c", "echo inside > /escape/sub/marker && cat /escape/sub/marker"];
      s.root.readonly = false;
    });
    // /escape → an absolute host path: resolved in the rootfs it means <rootfs>/<that path>.
    symlinkSync(target, join(b, "rootfs", "escape"));
    const r = cli(env, ["run", "-b", b, "sym"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "inside", "the tmpfs is where the container sees /escape/sub");
    assert.equal(existsSync(target), false, "nothing was created on the host path");
    assert.ok(existsSync(join(b, "rootfs", target, "sub")), "the mount point was made inside the rootfs");
    assert.deepEqual(mountsMentioning(target), []);
  });

  test("only stdio (and --preserve-fds) reach the container even when the caller has fds 3 and 4 open", () => {
    const b = makeBundle(env, "fds", (s) => {
      s.process.args = ["sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"];
    });
    const { openSync, closeSync } = require("node:fs") as typeof import("node:fs");
    const f3 = openSync("/dev/null", "r");
    const f4 = openSync("/dev/null", "r");
    try {
      const r = cli(env, ["run", "-b", b, "fds"], { extraFds: [f3, f4] });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), "0 1 2 3", "fd 3 is the directory ls reads");
      const p = cli(env, ["run", "--preserve-fds", "2", "-b", b, "fds2"], { extraFds: [f3, f4] });
      assert.equal(p.code, 0, p.stderr);
      assert.equal(p.stdout.trim(), "0 1 2 3 4 5");
    } finally {
      closeSync(f3);
      closeSync(f4);
    }
  });
});

describe("hooks around the lifecycle (hypervisor = none)", { skip }, () => {
  let env: Env;
  before(() => {
    env = makeEnv();
  });
  after(() => env.cleanup());

  test("every hook kind runs once, in order, with the state on stdin; createContainer runs in the container's mount ns", () => {
    const log = join(env.dir, "hooks.log");
    writeFileSync(log, "");
    // Host-side hooks use the host's sh; container-side hooks run inside the container's namespaces
    // (createContainer before pivot: host paths still resolve; startContainer after: container paths).
    const host = (kind: string) => ({
      path: "/bin/sh",
      args: [
        "sh",
        "-c",
        `read -r s; echo "${kind} $(echo "$s" | grep -o '"status":"[a-z]*"') $(readlink /proc/self/ns/mnt)" >> ${log}`,
      ],
    });
    const b = makeBundle(env, "hk", (s) => {
      s.process.args = ["sh", "-c", "echo workload >> /hooklog"];
      s.root.readonly = false;
      s.mounts.push({ destination: "/hooklog", type: "bind", source: log, options: ["bind"] });
      s.hooks = {
        prestart: [host("prestart")],
        createRuntime: [host("createRuntime")],
        createContainer: [host("createContainer")],
        startContainer: [
          { path: "/bin/sh", args: ["sh", "-c", "read -r s; echo startContainer >> /hooklog"] },
        ],
        poststart: [host("poststart")],
        poststop: [host("poststop")],
      };
    });
    const r = cli(env, ["run", "-b", b, "hk"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = readFileSync(log, "utf8").trim().split("\n");
    const kinds = lines.map((l) => l.split(" ")[0]);
    assert.deepEqual(kinds.slice(0, 3), ["prestart", "createRuntime", "createContainer"]);
    assert.ok(
      kinds.indexOf("startContainer") < kinds.indexOf("workload"),
      "startContainer before the workload",
    );
    assert.ok(kinds.includes("poststart") && kinds.at(-1) === "poststop", kinds.join(","));
    const hostMnt = readlinkSync("/proc/self/ns/mnt");
    const byKind = Object.fromEntries(lines.map((l) => [l.split(" ")[0], l]));
    assert.match(byKind.prestart, /"status":"creating"/, "runc 1.1.5: creating");
    assert.match(byKind.createRuntime, /"status":"creating"/);
    assert.ok(byKind.prestart.endsWith(hostMnt), "prestart runs in the runtime's mount namespace");
    assert.match(byKind.createContainer, /"status":"creating"/);
    assert.ok(
      !byKind.createContainer.endsWith(hostMnt),
      "createContainer runs in the container's mount namespace",
    );
    assert.match(byKind.poststop, /"status":"stopped"/);
  });

  test("a failing createContainer hook fails create with the hook named, and unwinds", () => {
    const b = makeBundle(env, "hkf", (s) => {
      s.process.args = ["true"];
      s.hooks = { createContainer: [{ path: "/bin/sh", args: ["sh", "-c", "echo broken >&2; exit 3"] }] };
    });
    const r = cli(env, ["create", "-b", b, "hkf"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error running createContainer hook #0: exit status 3, output: broken/);
    assert.equal(existsSync(join(env.root, "hkf")), false);
    assert.deepEqual(cgroupDirs("hkf"), []);
  });

  test("a createContainer hook past its timeout is killed and named", () => {
    const b = makeBundle(env, "hkt", (s) => {
      s.process.args = ["true"];
      s.hooks = { createContainer: [{ path: "/bin/sh", args: ["sh", "-c", "sleep 30"], timeout: 1 }] };
    });
    const t0 = Date.now();
    const r = cli(env, ["create", "-b", b, "hkt"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /createContainer hook #0: hook ran past specified timeout of 1.0s/);
    assert.ok(Date.now() - t0 < 10_000);
    assert.equal(existsSync(join(env.root, "hkt")), false);
  });
});

describe("seccomp listener (SCMP_ACT_NOTIFY)", { skip }, () => {
  let env: Env;
  before(() => {
    env = makeEnv();
  });
  after(() => env.cleanup());

  test("the listener gets the notify fd and the process state; a closed listener fails the syscall", () => {
    const sock = join(env.dir, "seccomp.sock");
    const got = join(env.dir, "seccomp.out");
    // The listener: accept, take the fd, record what it is, then close it (the kernel then fails the
    // notified syscall with ENOSYS instead of blocking it forever).
    const listener = spawn("python3", [
      "-c",
      `import socket,os,sys
s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
c,_=s.accept(); msg,fds,_,_=socket.recv_fds(c,65536,1)
open(sys.argv[2],"w").write(os.readlink("/proc/self/fd/%d" % fds[0]) + "\\n" + msg.decode())
os.close(fds[0])`,
      sock,
      got,
    ]);
    for (let i = 0; i < 300 && !existsSync(sock); i++) sleep(10);
    const b = makeBundle(env, "sn", (s) => {
      s.root.readonly = false;
      s.process.args = ["sh", "-c", "mkdir /made 2>&1; echo rc=$?"];
      s.linux.seccomp = {
        defaultAction: "SCMP_ACT_ALLOW",
        listenerPath: sock,
        listenerMetadata: "meta",
        syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_NOTIFY" }],
      };
    });
    const r = cli(env, ["run", "-b", b, "sn"]);
    listener.kill();
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Function not implemented[\s\S]*rc=1/);
    const [kind, msg] = readFileSync(got, "utf8").split("\n");
    assert.equal(kind, "anon_inode:seccomp notify");
    const state = JSON.parse(msg);
    assert.deepEqual(state.fds, ["seccompFd"]);
    assert.equal(state.metadata, "meta");
    assert.equal(state.state.id, "sn");
    assert.ok(state.pid > 0);
  });
});

describe("terminals (hypervisor = none)", { skip }, () => {
  let env: Env;
  before(() => {
    env = makeEnv();
  });
  after(() => env.cleanup());

  test("run in the foreground with terminal: true relays the pty (like runc) and keeps the exit code", () => {
    const b = makeBundle(env, "tty", (s) => {
      s.process.terminal = true;
      s.process.args = ["sh", "-c", "tty; test -t 0 && echo stdin-is-tty; exit 4"];
    });
    const cmd = `${BIN} --root ${env.root} --config ${env.config} run -b ${b} tty`;
    const r = spawnSync("script", ["-qec", cmd, "/dev/null"], { encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 4, r.stdout + r.stderr);
    assert.match(r.stdout, /\/dev\/pts\/0\r\n/);
    assert.match(r.stdout, /stdin-is-tty/);
  });

  test("create --console-socket sends the pty master (SCM_RIGHTS) to the socket, as conmon expects", () => {
    const sock = join(env.dir, "console.sock");
    const got = join(env.dir, "console.out");
    // The receiving end, as conmon/containerd-shim do it: accept, recvmsg one fd, read the pty.
    const receiver = spawn("python3", [
      "-c",
      `import socket,os,sys
s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
c,_=s.accept(); msg,fds,_,_=socket.recv_fds(c,64,1)
out=b""
while True:
    try: d=os.read(fds[0],4096)
    except OSError: break
    if not d: break
    out+=d
open(sys.argv[2],"wb").write(msg+b"|"+out)`,
      sock,
      got,
    ]);
    for (let i = 0; i < 300 && !existsSync(sock); i++) sleep(10);
    const b = makeBundle(env, "cs", (s) => {
      s.process.terminal = true;
      s.process.args = ["sh", "-c", "echo on-the-console; tty"];
    });
    const c = cli(env, ["create", "--console-socket", sock, "-b", b, "cs"]);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(cli(env, ["start", "cs"]).code, 0);
    for (let i = 0; i < 500 && !existsSync(got); i++) sleep(10);
    receiver.kill();
    const text = readFileSync(got, "utf8");
    assert.match(text, /^\/dev\/ptmx\|/, "runc sends the name /dev/ptmx with the fd");
    assert.match(text, /on-the-console\r\n\/dev\/pts\/0/);
    assert.equal(cli(env, ["delete", "--force", "cs"]).code, 0);
  });
});
