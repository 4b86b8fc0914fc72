// runc parity of the CLI in VM mode (the real guest under TCG), where the behaviour lives in the VM path:
// (1) one detached container: exec's own failures exit 255 and the process's code passes through, exec
//     into a paused container is refused with runc's words, `exec --cgroup` is refused (the guest's
//     cgroups are not the host's), --debug exec writes debug lines, and the stand-in's mount namespace
//     shows no host process in /proc (what podman top reads);
// (2) a foreground `run` of a bundle with terminal: true (`kata-ts spec`'s default) and no console
//     socket, under a real pty (script): the output arrives, the caller's size reaches the guest, typed
//     input arrives first (no NUL byte ahead of it), the exit code passes through, the caller's terminal
//     is restored.
// Two VM boots in all.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { defaultSpec } from "../../src/oci/defaults";
import { BIN, busyboxRootfs, tempDir, vmTestEnv, vmTestKernel, writeVmTestConfig } from "../helpers";

const QEMU = "/usr/bin/qemu-system-x86_64";
const KERNEL = vmTestKernel();
const missing = [QEMU, KERNEL, "/bin/busybox", "/usr/bin/script"].filter((f) => !existsSync(f));

const tmp = tempDir("kata-vm-parity-");
const root = join(tmp.path, "root");
const CONFIG = join(tmp.path, "configuration.toml");
const env = vmTestEnv();
const TAG = `vpar${process.pid}`;

function cli(args: string[], globals: string[] = []): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(BIN, ["--root", root, "--config", CONFIG, ...globals, ...args], {
    env,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 240_000,
  });
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

function bundle(name: string, args: string[], terminal: boolean): string {
  const dir = join(tmp.path, name);
  busyboxRootfs(join(dir, "rootfs"));
  const spec = defaultSpec();
  spec.process = { ...(spec.process as NonNullable<typeof spec.process>), terminal, args };
  spec.root = { path: "rootfs", readonly: false };
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

describe("runc parity in VM mode", { skip: missing.length > 0 && `missing ${missing.join(", ")}` }, () => {
  before(async () => {
    await writeVmTestConfig(tmp.path, KERNEL);
  });
  after(() => {
    for (const id of existsSync(root) ? readdirSync(root) : [])
      if (id !== "sandboxes") cli(["delete", "--force", id]);
    tmp.cleanup();
  });

  test("exec: 255 for its own failures, the code passes through, paused refused, --cgroup refused; the stand-in shows no host process", (t) => {
    const id = `${TAG}-x`;
    t.after(() => {
      if (existsSync(join(root, id))) cli(["delete", "--force", id]);
    });
    // The container keeps the CLI's stdout/stderr: files, so nobody waits for a pipe to reach EOF.
    const out = openSync(join(tmp.path, "x.out"), "w");
    const c = spawnSync(
      BIN,
      [
        "--root",
        root,
        "--config",
        CONFIG,
        "run",
        "-d",
        "--bundle",
        bundle("x", ["sleep", "100000"], false),
        id,
      ],
      {
        env,
        stdio: ["ignore", out, out],
        timeout: 240_000,
      },
    );
    closeSync(out);
    assert.equal(c.status, 0, readFileSync(join(tmp.path, "x.out"), "utf8"));

    const own = cli(["exec", id, "sh", "-c", "exit 7"]);
    assert.equal(own.code, 7, own.stderr);
    const noExe = cli(["exec", id, "/nonexistent"]);
    assert.equal(noExe.code, 255, noExe.stderr);
    assert.equal(cli(["exec", `${TAG}-nosuch`, "true"]).code, 255);

    const sub = cli(["exec", "--cgroup", "sub", id, "true"]);
    assert.equal(sub.code, 255);
    assert.equal(sub.stderr.trim(), "exec --cgroup is not supported in VM mode");

    const dbg = cli(["exec", id, "true"], ["--debug"]);
    assert.equal(dbg.code, 0, dbg.stderr);
    assert.match(dbg.stderr, /level=debug msg="exec process exited".* status=0/);

    assert.equal(cli(["pause", id]).code, 0);
    const paused = cli(["exec", id, "true"]);
    assert.equal(paused.code, 255);
    assert.equal(paused.stderr.trim(), "cannot exec in a paused container (use --ignore-paused to override)");
    assert.equal(cli(["resume", id]).code, 0);
    assert.equal(cli(["exec", id, "true"]).code, 0, "exec works again once resumed");

    // podman top joins the pid-file process's mount namespace and lists /proc there: the stand-in's
    // namespace has an empty tmpfs for root (empty /proc) and no copy of the host's mounts to pin, while
    // the host's own mount namespace is untouched.
    const pid = JSON.parse(cli(["state", id]).stdout).pid as number;
    assert.deepEqual(
      readdirSync(`/proc/${pid}/root/proc`),
      [],
      "no process visible through the stand-in's /proc",
    );
    const mounts = readFileSync(`/proc/${pid}/mountinfo`, "utf8").trim().split("\n");
    assert.equal(mounts.length, 1, mounts.join("\n"));
    assert.match(mounts[0], / \/ ro,.* - tmpfs /);
    assert.ok(existsSync(`/proc/${process.pid}`), "the host's /proc is as it was");
    assert.ok(
      readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .every((l) => !/ \/proc .* - tmpfs /.test(l)),
      "no tmpfs over the host's /proc",
    );
    const exec = cli(["exec", id, "echo", "still-fine"]);
    assert.equal(exec.stdout, "still-fine\n", exec.stderr);
  });

  test("foreground run with terminal: true and no console socket attaches the caller's terminal", () => {
    const id = `${TAG}-t`;
    // Prints its tty and size, then reads two typed bytes and shows them in hex: a NUL ahead of the
    // typed input would show up as "00".
    const b = bundle(
      "t",
      ["sh", "-c", "tty; stty size; echo ready; dd bs=1 count=2 2>/dev/null | od -An -tx1; exit 5"],
      true,
    );
    const log = join(tmp.path, "typescript");
    const inner = join(tmp.path, "attached.sh");
    writeFileSync(
      inner,
      [
        "stty rows 31 cols 97",
        `${BIN} --root ${root} --config ${CONFIG} run --bundle ${b} ${id}`,
        "echo rc=$?",
        "stty -a | tr ' ;' '\\n\\n' | grep -x -e opost -e -opost -e echo -e -echo",
        "",
      ].join("\n"),
    );
    // script's stdin: the typed bytes come once the container said "ready" (polled from the typescript).
    const typer = `while ! grep -q ready ${log} 2>/dev/null; do sleep 0.2; done; printf "xy\\r"; sleep 2`;
    const r = spawnSync("sh", ["-c", `(${typer}) | script -qfec "sh ${inner}" ${log}`], {
      env,
      encoding: "latin1",
      timeout: 300_000,
    });
    const out = readFileSync(log, "latin1");
    assert.equal(r.status, 0, `${r.stderr}\n${out}`);
    assert.match(out, /\/dev\/pts\/\d+\r\n/, out);
    assert.match(out, /31 97\r\n/, "the caller's terminal size reached the guest");
    assert.match(out, /78 79/, "the typed bytes arrived first, with no NUL ahead of them");
    assert.ok(!out.includes("\0"), "no NUL byte in the terminal stream");
    assert.doesNotMatch(out, /\r\r\n/, "no double CR: output post-processing is off while attached");
    assert.match(out, /rc=5/, "the exit code passed through");
    // After the run, the caller's terminal is back in cooked mode.
    assert.match(out, /^opost\r?$/m, out);
    assert.match(out, /^echo\r?$/m, out);
    assert.equal(existsSync(join(root, id)), false, "run deleted the container");
  });
});
