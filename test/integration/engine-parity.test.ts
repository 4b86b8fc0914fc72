// The host engine (hypervisor = "none") against runc 1.1.5 on the same bundles, for behaviours where
// kata-ts used to differ: terminal ownership and size, seccomp's ENOSYS for syscalls the profile does
// not know, seccomp before startContainer hooks, exec's cwd before the user switch, procfs/sysfs on a
// symlink, and a read-only /dev. Each case asserts what the container saw (and, for refusals, that
// nothing is left on the host); where runc is installed the same case runs under it and must give
// the same answer. test/integration/engine-parity-vm.test.ts repeats them in the guest.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { closeFd, openpty, setWinsize } from "../../src/sys/native";
import {
  allowListUpTo,
  buildSyscallProbe,
  deleteRuncLeftovers,
  ENOSYS_PROBE_ARGS,
  ENOSYS_PROBE_EXPECTED,
  hostRuntimes,
  type Rt,
} from "../fixtures/parity";
import {
  cgroupDirs,
  cli,
  type Env,
  haveBusybox,
  type JsonSpec,
  makeBundle,
  makeEnv,
  mountsMentioning,
} from "../fixtures/probe/bundle";
import { BIN } from "../helpers";

const skip = !haveBusybox() ? "busybox-static is not installed (apt-get install -y busybox-static)" : false;

describe("engine parity with runc (hypervisor = none)", { skip }, () => {
  let env: Env;
  let runtimes: Rt[];
  let out: string;
  let seq = 0;
  const id = (rt: Rt, what: string) => `par-${rt.name}-${what}-${process.pid}-${seq++}`;
  before(() => {
    env = makeEnv();
    out = join(env.dir, "out");
    mkdirSync(out, { mode: 0o777 });
    chmodSync(out, 0o777); // a non-root workload writes its findings here
    runtimes = hostRuntimes(env);
  });
  after(() => {
    deleteRuncLeftovers(env);
    env.cleanup();
  });

  const run = (rt: Rt, args: string[], stdin?: string) =>
    cli(env, args, { bin: rt.bin, globals: rt.globals, stdin });
  const withOut = (s: JsonSpec) => {
    s.mounts.push({ destination: "/out", type: "bind", source: out, options: ["rbind", "rw"] });
  };
  const result = (name: string) => readFileSync(join(out, name), "utf8");

  /** Runs `args` with the three stdio fds on a fresh pty of the given size; returns the exit code. */
  function onPty(rows: number, cols: number, args: string[]): number {
    const pty = openpty();
    try {
      setWinsize(pty.master, rows, cols);
      const r = spawnSync(args[0], args.slice(1), {
        stdio: [pty.slave, pty.slave, pty.slave],
        timeout: 60_000,
      });
      return r.status ?? 128;
    } finally {
      closeFd(pty.master);
      closeFd(pty.slave);
    }
  }

  test("terminal: a non-root process owns its terminal (uid only, gid stays tty's) with the caller's size", () => {
    for (const rt of runtimes) {
      const b = makeBundle(env, `tty-${rt.name}`, (s) => {
        s.process.terminal = true;
        s.process.user = { uid: 1000, gid: 1000 };
        s.process.args = [
          "sh",
          "-c",
          `stat -c '%u %g %a' /dev/console $(tty) > /out/tty-${rt.name}; stty size >> /out/tty-${rt.name}`,
        ];
        withOut(s);
      });
      const code = onPty(21, 77, [rt.bin, ...rt.globals, "run", "--bundle", b, id(rt, "tty")]);
      assert.equal(code, 0, rt.name);
      const lines = result(`tty-${rt.name}`).split("\n");
      assert.deepEqual(lines.slice(0, 2), ["1000 5 620", "1000 5 620"], rt.name);
      // runc sets the size from its relay once the process runs (`stty size` sometimes fails under
      // runc); kata-ts sets it before.
      if (rt.name === "kata") assert.equal(lines[2], "21 77");
    }
  });

  test("stdio: a non-root process owns its stdout pipe (reopening /dev/stdout works); a caller's file keeps its owner", () => {
    for (const rt of runtimes) {
      const b = makeBundle(env, `pipe-${rt.name}`, (s) => {
        s.process.user = { uid: 1000, gid: 1000 };
        s.process.args = ["sh", "-c", "echo via-reopen > /dev/stdout; stat -L -c '%u' /dev/stdout"];
      });
      // a real pipe (Node's "pipe" is a socket, which /proc/self/fd/1 cannot reopen)
      const r = spawnSync(
        "sh",
        ["-c", '"$0" "$@" | cat', rt.bin, ...rt.globals, "run", "--bundle", b, id(rt, "pipe")],
        {
          stdio: ["ignore", "pipe", "pipe"],
          encoding: "utf8",
          timeout: 60_000,
        },
      );
      assert.equal(r.status, 0, `${rt.name}: ${r.stderr}`);
      assert.equal(r.stdout, "via-reopen\n1000\n", rt.name);
    }
    // kata-ts only (runc hands a caller's file to the container's uid): stdout is a host file
    const b = makeBundle(env, "file-kata", (s) => {
      s.process.user = { uid: 1000, gid: 1000 };
      s.process.args = ["true"];
    });
    const file = join(env.dir, "caller-file");
    writeFileSync(file, "");
    const fd = openSync(file, "w");
    try {
      const r = spawnSync(BIN, [...runtimes[0].globals, "run", "--bundle", b, id(runtimes[0], "file")], {
        stdio: ["ignore", fd, "pipe"],
        timeout: 60_000,
      });
      assert.equal(r.status, 0, String(r.stderr));
    } finally {
      closeSync(fd);
    }
    assert.equal(statSync(file).uid, 0, "the caller's file keeps its owner");
  });

  test("exec --tty: the size is the caller's terminal's before the process starts; --user owns it", () => {
    for (const rt of runtimes) {
      const c = id(rt, "exec-tty");
      const b = makeBundle(env, `exec-tty-${rt.name}`, (s) => {
        s.process.args = ["sleep", "1000"];
        withOut(s);
      });
      assert.equal(run(rt, ["run", "--detach", "--bundle", b, c]).code, 0);
      const f = `/out/exec-tty-${rt.name}`;
      const code = onPty(19, 66, [
        rt.bin,
        ...rt.globals,
        "exec",
        "--tty",
        "--user",
        "1000:1000",
        c,
        "sh",
        "-c",
        `stat -c '%u %g' $(tty) > ${f}; stty size >> ${f}`,
      ]);
      assert.equal(code, 0, rt.name);
      // runc's relay sets the size after the process started (its own race: `stty size` sometimes
      // sees 0 0 under runc); kata-ts sets it before, so only the owner is compared with runc.
      const [owner, size] = result(`exec-tty-${rt.name}`).trim().split("\n");
      assert.equal(owner, "1000 5", rt.name);
      if (rt.name === "kata") assert.equal(size, "19 66");
      if (rt.name === "kata") {
        // process.json's consoleSize, no terminal on our side (runc refuses that: "open /dev/tty"):
        // the size is set before the process runs.
        const pj = join(env.dir, "exec-size.json");
        writeFileSync(
          pj,
          JSON.stringify({
            terminal: true,
            consoleSize: { height: 33, width: 111 },
            user: { uid: 0, gid: 0 },
            args: ["sh", "-c", "stty size > /out/exec-size"],
            env: ["PATH=/bin"],
            cwd: "/",
          }),
        );
        assert.equal(run(rt, ["exec", "--process", pj, c], "").code, 0);
        assert.equal(result("exec-size"), "33 111\n");
      }
      assert.equal(run(rt, ["delete", "--force", c]).code, 0);
    }
  });

  test("seccomp: a syscall above the profile's highest one fails with ENOSYS, an unlisted lower one with EPERM", (t) => {
    const probe = buildSyscallProbe(env.dir);
    if (typeof probe !== "string") return t.skip(probe.skip);
    const allow = allowListUpTo(334, ["getpgrp"]);
    if (!Array.isArray(allow)) return t.skip(allow.skip);
    for (const rt of runtimes) {
      for (const nnp of [true, false]) {
        const b = makeBundle(env, `enosys-${rt.name}-${nnp}`, (s) => {
          execFileSync("cp", [probe, join(env.dir, `enosys-${rt.name}-${nnp}`, "rootfs", "bin", "sc")]);
          s.process.noNewPrivileges = nnp;
          s.process.args = ["/bin/sc", ...ENOSYS_PROBE_ARGS];
          s.linux.seccomp = {
            defaultAction: "SCMP_ACT_ERRNO",
            architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            syscalls: [{ names: allow, action: "SCMP_ACT_ALLOW" }],
          };
        });
        const r = run(rt, ["run", "--bundle", b, id(rt, "enosys")]);
        assert.equal(r.code, 0, `${rt.name} nnp=${nnp}: ${r.stderr}`);
        assert.equal(r.stdout, ENOSYS_PROBE_EXPECTED, `${rt.name} nnp=${nnp}`);
      }
    }
    // exec loads the same filter the same way
    const rt = runtimes[0];
    const c = id(rt, "enosys-exec");
    const b = makeBundle(env, "enosys-exec", (s) => {
      execFileSync("cp", [probe, join(env.dir, "enosys-exec", "rootfs", "bin", "sc")]);
      s.process.args = ["sleep", "1000"];
      s.linux.seccomp = {
        defaultAction: "SCMP_ACT_ERRNO",
        architectures: ["SCMP_ARCH_X86_64"],
        syscalls: [{ names: allow, action: "SCMP_ACT_ALLOW" }],
      };
    });
    assert.equal(run(rt, ["run", "--detach", "--bundle", b, c]).code, 0);
    const e = run(rt, ["exec", c, "/bin/sc", ...ENOSYS_PROBE_ARGS]);
    assert.equal(e.stdout, ENOSYS_PROBE_EXPECTED, e.stderr);
    assert.equal(run(rt, ["delete", "--force", c]).code, 0);
  });

  test("seccomp: startContainer hooks run under the filter, with and without noNewPrivileges", () => {
    for (const rt of runtimes) {
      for (const nnp of [true, false]) {
        const b = makeBundle(env, `hook-${rt.name}-${nnp}`, (s) => {
          s.root.readonly = false; // so only the filter can refuse the hook's mkdir
          s.process.noNewPrivileges = nnp;
          s.process.args = ["true"];
          s.linux.seccomp = {
            defaultAction: "SCMP_ACT_ALLOW",
            architectures: ["SCMP_ARCH_X86_64"],
            syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO" }],
          };
          s.hooks = { startContainer: [{ path: "/bin/mkdir", args: ["mkdir", "/tmp/hookdir"] }] };
        });
        const r = run(rt, ["run", "--bundle", b, id(rt, "hook")]);
        assert.notEqual(r.code, 0, `${rt.name} nnp=${nnp}: the hook was not filtered`);
        assert.match(r.stderr, /hook #0.*Operation not permitted/, `${rt.name} nnp=${nnp}`);
        assert.equal(existsSync(join(b, "rootfs", "tmp", "hookdir")), false);
      }
    }
  });

  test("exec --user: a cwd only root can reach is entered before the user switch", () => {
    for (const rt of runtimes) {
      const c = id(rt, "cwd");
      const b = makeBundle(env, `cwd-${rt.name}`, (s) => {
        s.root.readonly = false;
        s.process.args = [
          "sh",
          "-c",
          "mkdir -p /secret/in && chmod 700 /secret && touch /ready && exec sleep 1000",
        ];
      });
      assert.equal(run(rt, ["run", "--detach", "--bundle", b, c]).code, 0);
      for (let i = 0; i < 200 && !existsSync(join(b, "rootfs", "ready")); i++) spawnSync("sleep", ["0.05"]);
      const r = run(rt, ["exec", "--user", "1000:1000", "--cwd", "/secret/in", c, "sh", "-c", "pwd; id -u"]);
      assert.equal(r.code, 0, `${rt.name}: ${r.stderr}`);
      assert.equal(r.stdout, "/secret/in\n1000\n", rt.name);
      const missing = run(rt, ["exec", "--user", "1000:1000", "--cwd", "/nope", c, "true"]);
      assert.notEqual(missing.code, 0);
      assert.match(
        missing.stderr,
        /chdir to cwd \(\\?"\/nope\\?"\) set in config.json failed: no such file or directory/,
      );
      assert.equal(run(rt, ["delete", "--force", c]).code, 0);
    }
  });

  test("mount safety: procfs or sysfs on a symlink is refused and nothing is left behind", () => {
    for (const rt of runtimes) {
      for (const [dir, type] of [
        ["proc", "proc"],
        ["sys", "sysfs"],
      ]) {
        const b = makeBundle(env, `link-${rt.name}-${dir}`, (s) => {
          s.process.args = ["true"];
        });
        const rootfs = join(b, "rootfs");
        rmSync(join(rootfs, dir), { recursive: true });
        mkdirSync(join(rootfs, "elsewhere"));
        symlinkSync("/elsewhere", join(rootfs, dir));
        const c = id(rt, `link-${dir}`);
        const r = run(rt, ["run", "--bundle", b, c]);
        assert.notEqual(r.code, 0, `${rt.name} ${dir}`);
        assert.match(
          r.stderr,
          new RegExp(
            `error mounting \\\\?"${type}\\\\?" to rootfs at \\\\?"/${dir}\\\\?": filesystem \\\\?"${type}\\\\?" must be mounted on ordinary directory`,
          ),
          `${rt.name} ${dir}`,
        );
        assert.deepEqual(mountsMentioning(rootfs), [], "no mount left on the host");
        assert.deepEqual(cgroupDirs(c), [], "no cgroup left");
        if (rt.name === "kata") assert.equal(existsSync(join(env.root, c)), false, "no state left");
      }
    }
  });

  test("mount safety: a read-only /dev gets its devices, links and submounts, then is read-only", () => {
    for (const rt of runtimes) {
      const b = makeBundle(env, `rodev-${rt.name}`, (s) => {
        s.mounts.find((m: JsonSpec) => m.destination === "/dev").options.push("ro");
        s.process.args = [
          "sh",
          "-c",
          `grep ' /dev' /proc/self/mountinfo | cut -d' ' -f5,6,9; ls /dev | tr '\\n' ' '; echo; touch /dev/x 2>&1`,
        ];
      });
      const r = run(rt, ["run", "--bundle", b, id(rt, "rodev")]);
      assert.equal(r.code, 1, `${rt.name}: touch fails, nothing else does (${r.stderr})`);
      const lines = r.stdout.split("\n");
      assert.ok(lines.includes("/dev ro,nosuid tmpfs"), `${rt.name}: ${r.stdout}`);
      assert.ok(
        lines.some((l) => l.startsWith("/dev/pts rw,")),
        rt.name,
      );
      assert.ok(
        lines.some((l) => l.startsWith("/dev/shm rw,")),
        rt.name,
      );
      assert.match(r.stdout, /null .*ptmx pts .*stdout tty urandom zero/, rt.name);
      assert.match(r.stdout, /touch: \/dev\/x: Read-only file system/, rt.name);
    }
  });
});
