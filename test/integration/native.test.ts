// The native addon against the real kernel, with real second processes on the other side of every lock,
// socket and terminal. Needs `make -C native` first.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  closeFd,
  dupFd,
  findNativeFile,
  flock,
  getWinsize,
  mount,
  mountFlagsOf,
  native,
  nsType,
  openpty,
  pipe,
  recvFds,
  sendFds,
  setCloexec,
  setWinsize,
  socketpair,
  unmountOrDetach,
} from "../../src/sys/native";
import { tempDir } from "../helpers";

const ADDON = findNativeFile("kata_native.node");

/** node -e source that loads the addon as `n` and then runs body. */
function withAddon(body: string): string {
  return `const m = { exports: {} }; process.dlopen(m, ${JSON.stringify(ADDON)}); const n = m.exports;\n${body}`;
}

/** O_CLOEXEC as /proc/self/fdinfo shows it (octal flags). */
function hasCloexec(fd: number): boolean {
  const flags = /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))![1];
  return (Number.parseInt(flags, 8) & 0o2000000) !== 0;
}

/** Reads lines from a child's stdout until one matches. */
function waitForLine(child: ReturnType<typeof spawn>, want: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString();
      if (buf.split("\n").includes(want)) {
        child.stdout!.off("data", onData);
        resolve();
      }
    };
    child.stdout!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`child exited (${code}) before printing ${want}: ${buf}`)));
  });
}

describe("native addon", () => {
  const t = tempDir();
  before(() => assert.ok(ADDON, "native addon not built: run `make -C native`"));
  after(() => t.cleanup());

  it("flock: a lock held by another process blocks a non-blocking try until it is released", async () => {
    const file = join(t.path, "lock");
    writeFileSync(file, "");
    const holder = spawn(
      process.execPath,
      [
        "-e",
        withAddon(`
          const fd = require("fs").openSync(${JSON.stringify(file)}, "r");
          n.flock(fd, "ex", false);
          console.log("locked");
          process.stdin.once("data", () => { n.flock(fd, "un", false); console.log("released"); });
        `),
      ],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    try {
      await waitForLine(holder, "locked");
      const fd = openSync(file, "r");
      try {
        assert.equal(flock(fd, "ex", true), false);
        assert.equal(flock(fd, "sh", true), false);
        const released = waitForLine(holder, "released");
        holder.stdin!.write("go\n");
        await released;
        assert.equal(flock(fd, "ex", true), true);
        // Now this process holds it: util-linux flock(1) in another process must see it taken.
        const r = spawnSync("flock", ["-n", "-E", "42", file, "true"]);
        assert.equal(r.status, 42);
        assert.equal(flock(fd, "un"), true);
        assert.equal(spawnSync("flock", ["-n", "-E", "42", file, "true"]).status, 0);
      } finally {
        closeSync(fd);
      }
    } finally {
      holder.kill();
    }
  });

  it("flock: errors carry the call, strerror and the errno code", () => {
    assert.throws(() => flock(987654, "ex", true), {
      message: "flock: Bad file descriptor",
      code: "EBADF",
      errno: -9,
      syscall: "flock",
    });
    assert.throws(() => native().flock(0, "xx" as "ex", true), TypeError);
  });

  it("sendFds/recvFds: another process passes an open file over a socketpair; its content is readable", async () => {
    const file = join(t.path, "passed");
    writeFileSync(file, "content of the passed file\n");
    const [mine, theirs] = socketpair();
    let theirsOpen = true;
    try {
      assert.ok(hasCloexec(mine) && hasCloexec(theirs));
      const sender = spawn(
        process.execPath,
        [
          "-e",
          withAddon(`
            const fs = require("fs");
            const fd = fs.openSync(${JSON.stringify(file)}, "r");
            fs.unlinkSync(${JSON.stringify(file)});
            n.sendFds(3, [fd, 1], Buffer.from("hello"));
          `),
        ],
        { stdio: ["ignore", "inherit", "inherit", theirs] },
      );
      const code = await new Promise((r) => sender.once("exit", r));
      assert.equal(code, 0);
      // The sender has exited and unlinked the file: only the passed descriptor keeps it alive.
      const got = recvFds(mine, 4, 64);
      assert.equal(got.data.toString(), "hello");
      assert.equal(got.fds.length, 2);
      const [fileFd, stdoutFd] = got.fds;
      try {
        assert.ok(hasCloexec(fileFd), "received fds are O_CLOEXEC");
        const buf = Buffer.alloc(100);
        const n = readSync(fileFd, buf, 0, 100, 0);
        assert.equal(buf.subarray(0, n).toString(), "content of the passed file\n");
        assert.equal(fstatSync(fileFd).nlink, 0);
        assert.equal(fstatSync(stdoutFd).ino, fstatSync(1).ino);
      } finally {
        for (const fd of got.fds) closeFd(fd);
      }
      // End of stream once the peer's last copy is closed.
      closeFd(theirs);
      theirsOpen = false;
      assert.equal(recvFds(mine, 1, 64).data.length, 0);
    } finally {
      closeSync(mine);
      if (theirsOpen) closeSync(theirs);
    }
  });

  it("recvFds: more fds than maxFds is an error and closes the surplus", () => {
    const [a, b] = socketpair();
    try {
      sendFds(a, [0, 1, 2], Buffer.from("x"));
      assert.throws(() => recvFds(b, 1, 16), { code: "EMSGSIZE", syscall: "recvmsg" });
      assert.throws(() => sendFds(a, [], Buffer.alloc(0)), TypeError);
    } finally {
      closeFd(a);
      closeFd(b);
    }
  });

  it("openpty: bytes cross the terminal both ways and a real process sees the window size", () => {
    const pty = openpty();
    try {
      assert.match(pty.name, /^\/dev\/pts\/\d+$/);
      assert.equal(statSync(pty.name).rdev, fstatSync(pty.slave).rdev);
      assert.ok(hasCloexec(pty.master) && hasCloexec(pty.slave));
      const buf = Buffer.alloc(256);

      writeSync(pty.slave, "from slave\n");
      let n = readSync(pty.master, buf, 0, buf.length, null);
      assert.equal(buf.subarray(0, n).toString(), "from slave\r\n"); // ONLCR: the line discipline is live

      setWinsize(pty.master, 33, 121);
      assert.deepEqual(getWinsize(pty.slave), { rows: 33, cols: 121 });
      const stty = spawnSync("stty", ["size"], { stdio: [pty.slave, "pipe", "pipe"], encoding: "utf8" });
      assert.equal(stty.stdout.trim(), "33 121");

      // stty echoed nothing; what the master writes arrives at the slave as a line (canonical mode).
      writeSync(pty.master, "to slave\n");
      n = readSync(pty.slave, buf, 0, buf.length, null);
      assert.equal(buf.subarray(0, n).toString(), "to slave\n");
    } finally {
      closeFd(pty.master);
      closeFd(pty.slave);
    }
  });

  it("setChildSubreaper: an orphaned grandchild is re-parented to the subreaper", () => {
    const r = spawnSync(
      process.execPath,
      [
        "-e",
        withAddon(`
          n.setChildSubreaper();
          const pid = require("child_process").execSync("sleep 5 >/dev/null 2>&1 & echo $!", { shell: "/bin/sh" }).toString().trim();
          const ppid = require("fs").readFileSync("/proc/" + pid + "/stat", "utf8").split(") ")[1].split(" ")[1];
          process.kill(Number(pid), "SIGKILL");
          console.log(JSON.stringify({ me: process.pid, ppid: Number(ppid) }));
        `),
      ],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 0, r.stderr);
    const { me, ppid } = JSON.parse(r.stdout);
    assert.equal(ppid, me);
  });

  it("dupFd/setCloexec: the duplicate is O_CLOEXEC above stdio, and the flag can be cleared", () => {
    const fd = dupFd(0);
    try {
      assert.ok(fd >= 3);
      assert.ok(hasCloexec(fd));
      setCloexec(fd, false);
      assert.equal(hasCloexec(fd), false);
      setCloexec(fd, true);
      assert.ok(hasCloexec(fd));
    } finally {
      closeFd(fd);
    }
    assert.throws(() => closeFd(fd), { code: "EBADF" });
  });

  it("mountFlagsOf: a mount's per-mount flags as MS_* flags for a remount (relatime as MS_RELATIME, never MS_BIND's value)", () => {
    const dir = tempDir("kata-ts-native-mnt-");
    const MS = { RDONLY: 1, NOSUID: 2, NODEV: 4, NOEXEC: 8, NOATIME: 0x400, BIND: 0x1000, RELATIME: 1 << 21 };
    try {
      mount("none", dir.path, "tmpfs", MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.NOATIME, "size=1m");
      assert.equal(mountFlagsOf(dir.path), MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.NOATIME);
      unmountOrDetach(dir.path);
      mount("none", dir.path, "tmpfs", MS.NODEV | MS.RELATIME, "size=1m");
      const flags = mountFlagsOf(dir.path);
      assert.equal(flags, MS.NODEV | MS.RELATIME, `got 0x${flags.toString(16)}`);
      assert.equal(flags & MS.BIND, 0);
    } finally {
      unmountOrDetach(dir.path);
      dir.cleanup();
    }
    assert.ok(!readFileSync("/proc/self/mountinfo", "utf8").includes(dir.path), "nothing left mounted");
  });

  it("nsType: the CLONE_NEW* type of namespace files; 0 for other files, a fifo is never opened", () => {
    assert.equal(nsType("/proc/self/ns/net"), 0x40000000);
    assert.equal(nsType("/proc/self/ns/mnt"), 0x00020000);
    assert.equal(nsType("/proc/self/ns/ipc"), 0x08000000);
    assert.equal(nsType(`/proc/${process.pid}/ns/cgroup`), 0x02000000);
    assert.equal(nsType("/etc/hostname"), 0);
    const fifo = join(t.path, "fifo");
    assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
    assert.equal(nsType(fifo), 0, "no writer: opening it for reading would have blocked");
    assert.throws(() => nsType(join(t.path, "missing")), { code: "ENOENT" });
  });
});

describe("pipe", () => {
  it("gives a real pipe that a child can reopen through /proc/self/fd (unlike a socketpair)", () => {
    const [r, w] = pipe();
    try {
      // `echo > /dev/stdout` in a container does exactly this reopen.
      const child = spawnSync("sh", ["-c", "echo via-proc > /proc/self/fd/1"], {
        stdio: ["ignore", w, "inherit"],
      });
      assert.equal(child.status, 0);
      const buf = Buffer.alloc(64);
      const n = readSync(r, buf);
      assert.equal(buf.subarray(0, n).toString(), "via-proc\n");
      assert.ok(fstatSync(r).isFIFO());
    } finally {
      closeFd(r);
      closeFd(w);
    }
  });
});
