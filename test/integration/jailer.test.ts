// kata-ts-jailer for real, without a VM (seconds): a shell runs in the jail as an unprivileged uid with
// the 9p capabilities, and from the host we check what it is and what it saw: its uid, capabilities and
// bounding set, its own mount namespace, a root that shows only the binds (read-only where it must be),
// a root-owned 0600 file read through CAP_DAC_OVERRIDE, a host mount made below the shared directory
// after it started reaching it (how container rootfses reach QEMU's 9p server), the host's mount table
// untouched, and SIGKILL when its parent is killed with -9, leaving no mount anywhere.
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { JAIL_CAPS, JAIL_MOUNTPOINT, jailArgv, jailMounts } from "../../src/hypervisor/jail";
import { alive, REPO, tempDir, until } from "../helpers";

const JAILER = join(REPO, "native", "build", "kata-ts-jailer");
const NOBODY = 65534;
const skip =
  process.getuid?.() !== 0
    ? "needs root"
    : !existsSync(JAILER)
      ? "kata-ts-jailer not built (make -C native)"
      : false;

const tmp = tempDir("kata-jailer-");
const D = tmp.path;
const S = join(D, "share");

function mounts(): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(" ").slice(3, 5).join(" "))
    .sort();
}

function status(pid: number, key: string): string {
  const m = new RegExp(`^${key}:[ \\t]*(.*)$`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? m[1].trim() : "";
}

const SCRIPT = `
cat ${S}/secret > ${D}/out 2>/dev/null || echo denied > ${D}/out
echo made > ${S}/new
if touch /usr/x 2>/dev/null; then echo usr-writable; else echo usr-ro; fi >> ${D}/ro
if touch /x 2>/dev/null; then echo root-writable; else echo root-ro; fi >> ${D}/ro
echo ready > ${D}/ready
while [ ! -e ${S}/sub/mark ]; do sleep 0.05; done
echo seen > ${D}/seen
exec sleep 600
`;

after(() => {
  spawnSync("umount", ["-R", S]);
  tmp.cleanup();
});

describe("kata-ts-jailer", { skip }, () => {
  test("uid, capabilities, mount namespace, root view, propagation; host untouched; dies with its parent", async () => {
    mkdirSync(join(S, "sub"), { recursive: true });
    writeFileSync(join(S, "secret"), "root only\n");
    chmodSync(join(S, "secret"), 0o600);
    // As the supervisor does for the share: a mount of its own with shared propagation.
    execFileSync("mount", ["--bind", S, S]);
    execFileSync("mount", ["--make-shared", S]);
    const before = mounts();

    const m = jailMounts({ qemuPath: "/usr/bin/sh", writable: [D], readable: [], devices: ["/dev/null"] });
    const argv = jailArgv(
      {
        jailer: JAILER,
        root: JAIL_MOUNTPOINT,
        ...m,
        user: { uid: NOBODY, gid: NOBODY },
        caps: [...JAIL_CAPS],
      },
      ["/bin/sh", "-c", SCRIPT],
      null,
    );
    mkdirSync(JAIL_MOUNTPOINT, { recursive: true });
    // The jailed shell's parent is a bash we kill -9 at the end.
    const parent = spawn(
      "/bin/bash",
      ["-c", `"$1" --parent $$ "\${@:2}" & echo $! > ${D}/pid; wait`, "bash", ...argv],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let stderr = "";
    parent.stderr?.on("data", (d) => {
      stderr += d;
    });
    await until(
      "the jailed shell to start",
      () => existsSync(join(D, "ready")) || parent.exitCode !== null,
      20_000,
    );
    assert.ok(existsSync(join(D, "ready")), `the jail failed: ${stderr}`);
    const pid = Number(readFileSync(join(D, "pid"), "utf8"));

    // Who it is: nobody, with exactly the 9p capabilities, also as its bounding set and ambient set.
    assert.equal(status(pid, "Uid").split(/\s+/)[0], String(NOBODY));
    assert.equal(status(pid, "Gid").split(/\s+/)[0], String(NOBODY));
    assert.equal(status(pid, "Groups"), "");
    const mask = JAIL_CAPS.reduce((a, c) => a | (1 << c), 0);
    for (const k of ["CapEff", "CapPrm", "CapBnd", "CapAmb"])
      assert.equal(Number.parseInt(status(pid, k), 16), mask, k);
    assert.equal(status(pid, "NoNewPrivs"), "1");

    // Where it is: its own mount namespace, a root with only the binds.
    assert.notEqual(readlinkSync(`/proc/${pid}/ns/mnt`), readlinkSync("/proc/self/ns/mnt"));
    const top = readdirSync(`/proc/${pid}/root`).sort();
    const allowed = new Set([
      "usr",
      "bin",
      "sbin",
      "lib",
      "lib64",
      "lib32",
      "libx32",
      "dev",
      D.split("/")[1],
    ]);
    for (const e of top) assert.ok(allowed.has(e), `unexpected /${e} in the jail's root`);
    for (const hidden of ["etc", "root", "home", "var", "proc", "sys", "run"])
      assert.ok(!existsSync(`/proc/${pid}/root/${hidden}`), `/${hidden} is not visible`);
    assert.deepEqual(readdirSync(`/proc/${pid}/root/dev`), ["null"]);
    assert.deepEqual(readFileSync(join(D, "ro"), "utf8").trim().split("\n"), ["usr-ro", "root-ro"]);

    // What it can do there: read a root-owned 0600 file (CAP_DAC_OVERRIDE), create files (owned by it).
    assert.equal(readFileSync(join(D, "out"), "utf8"), "root only\n");
    assert.equal(statSync(join(S, "new")).uid, NOBODY);

    // A mount made on the host below the share after the jail started reaches it.
    const src = join(D, "later");
    mkdirSync(src);
    writeFileSync(join(src, "mark"), "");
    execFileSync("mount", ["--bind", src, join(S, "sub")]);
    await until("the jailed shell to see the later mount", () => existsSync(join(D, "seen")), 10_000);
    execFileSync("umount", [join(S, "sub")]);

    // The host's mount table is what it was: nothing of the jail's leaked out.
    assert.deepEqual(mounts(), before);
    assert.deepEqual(readdirSync(JAIL_MOUNTPOINT), [], "the jail's mount point stays empty on the host");

    // kill -9 of the parent: the jailed process gets SIGKILL (set after the uid change).
    process.kill(parent.pid!, "SIGKILL");
    await until("the jailed process to die with its parent", () => !alive(pid), 5000);
    assert.deepEqual(mounts(), before);
  });

  test("--parent: a spawner that is no longer the parent (it died first) means exit 125, the program never runs", () => {
    // The expected parent (pid 1 here, not the test process that spawns the jailer) stands for a CLI or
    // supervisor killed between its spawn and the jailer's prctl: the orphan must not start QEMU.
    const marker = join(D, "orphan-ran");
    const r = spawnSync(JAILER, ["--pdeathsig", "--parent", "1", "--", "/usr/bin/touch", marker], {
      encoding: "utf8",
    });
    assert.equal(r.status, 125);
    assert.equal(r.stderr, "kata-ts-jailer: parent exited: No such process\n");
    assert.equal(existsSync(marker), false, "the program did not run");
    const ok = spawnSync(JAILER, [
      "--pdeathsig",
      "--parent",
      String(process.pid),
      "--",
      "/usr/bin/touch",
      marker,
    ]);
    assert.equal(ok.status, 0, String(ok.stderr));
    assert.equal(existsSync(marker), true, "with the real parent it runs");
  });

  test("a bad bind source is one line on stderr and exit 125, nothing mounted", () => {
    const before = mounts();
    const r = spawnSync(
      JAILER,
      ["--root", JAIL_MOUNTPOINT, "--bind", "/nonexistent-kata", "--", "/bin/true"],
      {
        encoding: "utf8",
      },
    );
    assert.equal(r.status, 125);
    assert.equal(r.stderr, "kata-ts-jailer: stat /nonexistent-kata: No such file or directory\n");
    assert.deepEqual(mounts(), before);
  });
});
