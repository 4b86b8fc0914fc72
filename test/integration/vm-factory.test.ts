// The VM template (factory) with real VMs: no template → a cold boot with a warning; `factory init`
// boots and saves one; containers then start from clones of it (the supervisor's log says so) and
// work; two clones read different /dev/urandom bytes and have the host's clock; a changed kernel
// command line gets a template of its own; a truncated or garbled template means a cold boot with a
// warning, never a failed create; kill -9 of a clone's QEMU then `delete --force` and `factory destroy`
// leave nothing (leak scanner, template directory); so does kill -9 of `factory init` while it boots the
// one-NIC template, once `factory destroy` ran (its network namespace, its unfinished directory).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { sandboxPaths } from "../../src/sandbox/paths";
import {
  alive,
  BIN,
  type CliResult,
  createOnFiles,
  kata,
  processesNaming,
  shellBundle,
  sleep,
  tempDir,
  until,
  vmTestEnv,
  vmTestKernel,
  vmTestSkip,
  writeVmTestConfig,
} from "../helpers";
import { assertNoLeaks, snapshotHost } from "../leaks";

const hasStrace = spawnSync("strace", ["-V"]).status === 0;

const skip = vmTestSkip();

const tmp = tempDir("kata-vm-factory-");
const root = join(tmp.path, "root");
const templates = join(tmp.path, "templates");
const env = vmTestEnv();
const SUFFIX = Math.random().toString(36).slice(2, 8);
let CONFIG = "";

function cli(args: string[], config = CONFIG): CliResult {
  return kata(["--root", root, "--config", config, ...args], { env });
}

function bundle(id: string, script: string, ownUts = true): string {
  return shellBundle(join(tmp.path, id), script, (spec) => {
    if (ownUts) return;
    // The guest's own UTS namespace: the container sees the guest kernel's hostname.
    spec.hostname = undefined;
    spec.linux = { ...spec.linux, namespaces: spec.linux?.namespaces?.filter((n) => n.type !== "uts") };
  });
}

/** `run` of a one-shot container, then the leak scanner. */
function runOnce(
  name: string,
  script: string,
  ownUts = true,
): { r: CliResult; id: string; before: ReturnType<typeof snapshotHost> } {
  const id = `kfa-${name}-${SUFFIX}`;
  const b = bundle(id, script, ownUts);
  const before = snapshotHost();
  const r = cli(["run", "--bundle", b, id]);
  assertNoLeaks(before, { root, bundle: b, id });
  return { r, id, before };
}

/** `create` with the container's stdio on files (the stand-in keeps them open while it runs). */
function create(id: string, b: string): CliResult {
  return createOnFiles(["--root", root, "--config", CONFIG], b, id, tmp.path, 120_000);
}

/** Processes whose command line names the template directory (a template VM, or a clone's QEMU). */
function templateProcesses(): string[] {
  return processesNaming(`${templates}/`);
}

/** A container that sleeps, created from the template, with a host snapshot taken before. */
function createSleeper(name: string) {
  const id = `kfa-${name}-${SUFFIX}`;
  const b = bundle(id, "sleep 60");
  const before = snapshotHost();
  const c = create(id, b);
  assert.equal(c.code, 0, c.stderr);
  return { id, b, before };
}

interface Status {
  templates: string[];
  current: { dir: string; key: string } | null;
  reason?: string;
}

function status(config = CONFIG): Status {
  const r = cli(["factory", "status", "--json"], config);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

describe("VM factory: template and clones", { skip }, () => {
  before(async () => {
    CONFIG = await writeVmTestConfig(tmp.path, vmTestKernel());
    appendFileSync(CONFIG, `[factory]\nenable_template = true\ntemplate_path = "${templates}"\n`);
  });
  after(() => {
    cli(["factory", "destroy"]);
    tmp.cleanup();
  });

  test("no template: the container runs from a cold boot, with a warning naming `factory init`", () => {
    const { r } = runOnce("cold", "echo cold-ok");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /cold-ok/);
    assert.match(r.stderr, /factory: cold boot: no template at .*kata-ts factory init/);
  });

  test("bad input: a QEMU that fails, or virtio-fs, is one line and leaves no template directory", () => {
    const broken = join(tmp.path, "broken.toml");
    writeFileSync(
      broken,
      readFileSync(CONFIG, "utf8").replace("[hypervisor.qemu]", '[hypervisor.qemu]\npath = "/bin/false"'),
    );
    const r = cli(["factory", "init"], broken);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /factory init: qemu: \/bin\/false exited during start/);
    assert.equal(
      r.stderr
        .trim()
        .split("\n")
        .filter((l) => !/level=info/.test(l)).length,
      1,
      r.stderr,
    );
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    // The same failure under the cache server (vm_cache_number > 0 builds the templates first): said once.
    const brokenCache = join(tmp.path, "broken-cache.toml");
    writeFileSync(
      brokenCache,
      readFileSync(broken, "utf8").replace(
        "[factory]",
        `[factory]\nvm_cache_number = 1\nvm_cache_endpoint = "${join(tmp.path, "cache.sock")}"`,
      ),
    );
    const c = cli(["factory", "init"], brokenCache);
    assert.notEqual(c.code, 0);
    assert.match(c.stderr, /^factory init: qemu: \/bin\/false exited during start/m);
    assert.doesNotMatch(c.stderr, /factory init: factory init/);
    assert.equal(existsSync(join(tmp.path, "cache.sock")), false, "the endpoint is not left");
    const vfs = join(tmp.path, "vfs.toml");
    writeFileSync(
      vfs,
      readFileSync(CONFIG, "utf8").replace("[hypervisor.qemu]", '[hypervisor.qemu]\nshared_fs = "virtio-fs"'),
    );
    const v = cli(["factory", "init"], vfs);
    assert.notEqual(v.code, 0);
    assert.match(v.stderr, /factory init: shared_fs = virtio-fs cannot be templated/);
    // Nothing was made or left: no template (finished or half-made), no process.
    assert.deepEqual(existsSync(templates) ? readdirSync(templates) : [], []);
    assert.deepEqual(templateProcesses(), []);
  });

  test("factory init saves the templates (no NIC, one NIC); a second init leaves them as they are", () => {
    const r = cli(["factory", "init"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /template created: .*\(0 NICs; /);
    assert.match(r.stdout, /template created: .*\(1 NIC; /);
    const s = status();
    assert.ok(s.current, s.reason);
    assert.equal(s.templates.length, 2);
    const files = readdirSync(s.current.dir).sort();
    assert.deepEqual(files, ["memory", "state", "template.json"]);
    // Nothing of the template VM stays: no QEMU with the template's name, no temporary directory.
    assert.deepEqual(templateProcesses(), []);
    assert.equal(readdirSync(templates).length, 2);
    const again = cli(["factory", "init"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /template up to date/);
  });

  test("clones run containers; two clones read different random bytes and keep the host's clock", async () => {
    // A clone resumes with the template's clock: give the template an age the check below would see.
    const made = Date.parse(
      (
        JSON.parse(readFileSync(join(status().current?.dir ?? "", "template.json"), "utf8")) as {
          created: string;
        }
      ).created,
    );
    await sleep(Math.max(0, made + 5000 - Date.now()));
    const script =
      "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; cat /proc/sys/kernel/hostname";
    const outs: { bytes: string; guest: number; from: number; to: number; host: string }[] = [];
    for (const n of [1, 2]) {
      const from = Date.now() / 1000;
      const { r, id } = runOnce(`clone${n}`, script, false);
      const to = Date.now() / 1000;
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /cold boot/, "a template exists: no cold boot");
      const [bytes, secs, host] = r.stdout.trim().split("\n");
      assert.match(bytes, /^[0-9a-f]{64}$/);
      outs.push({ bytes, guest: Number(secs), from, to, host });
      assert.equal(host, id, "the clone's kernel hostname is its sandbox's");
    }
    assert.notEqual(outs[0].bytes, outs[1].bytes, "two clones must not share their CRNG state");
    for (const o of outs) {
      // `date +%s` is whole seconds: within 1 s of the host's interval around the run.
      assert.ok(
        o.guest >= Math.floor(o.from) - 1 && o.guest <= Math.ceil(o.to) + 1,
        `guest ${o.guest}, host ${o.from}..${o.to}`,
      );
    }
  });

  test("an idle clone's kernel stops its tick (NO_HZ): far fewer than HZ = 100 timer interrupts a second", () => {
    // Without ARAT in the TCG CPU model the guest kept a periodic tick: ~100 local timer interrupts a
    // second in idle, each a TCG exit, whatever the workload did.
    const script =
      "loc() { awk '/^ *LOC:/ {print $2}' /proc/interrupts; }; a=$(loc); sleep 4; b=$(loc); echo $((b - a))";
    const { r } = runOnce("tick", script);
    assert.equal(r.code, 0, r.stderr);
    const perSecond = Number(r.stdout.trim()) / 4;
    assert.ok(Number.isFinite(perSecond), `output: ${r.stdout}`);
    assert.ok(perSecond < 50, `${perSecond} local timer interrupts a second in an idle guest`);
  });

  test("an idle clone's QEMU main loop sleeps: far fewer than 75 wake-ups a second (no emulated PIT)", {
    skip: !hasStrace && "needs strace (scripts/setup.sh installs it)",
  }, async () => {
    // With microvm's i8254 PIT, QEMU's main loop woke ~75 times a second in an idle sandbox (its ppoll
    // timed out every ~13 ms), ~5 times without. strace watches the main thread's ppoll calls only.
    const { id, b, before } = createSleeper("idle");
    try {
      const pid = Number(readFileSync(join(sandboxPaths(root, id).vmDir, "qemu.pid"), "utf8").trim());
      await sleep(2000);
      const out = join(tmp.path, "ppoll.txt");
      spawnSync("timeout", ["4", "strace", "-p", String(pid), "-e", "trace=ppoll", "-o", out]);
      const lines = readFileSync(out, "utf8").split("\n");
      assert.ok(
        lines.some((l) => l.startsWith("ppoll(")),
        `strace saw QEMU's main loop: ${lines.slice(0, 3)}`,
      );
      const timeoutsPerSecond = lines.filter((l) => /= 0 \(Timeout\)/.test(l)).length / 4;
      assert.ok(
        timeoutsPerSecond < 30,
        `QEMU's main loop timed out ${timeoutsPerSecond} times a second in idle`,
      );
    } finally {
      const d = cli(["delete", "--force", id]);
      assert.equal(d.code, 0, d.stderr);
    }
    assertNoLeaks(before, { root, bundle: b, id });
  });

  test("the supervisor log of a clone says it was cloned, and the create took no cold boot", async () => {
    const { id, b, before } = createSleeper("log");
    try {
      const log = readFileSync(sandboxPaths(root, id).log, "utf8");
      assert.match(log, /factory: cloned template [0-9a-f]{16} in \d+ ms/);
      assert.match(log, /factory: clone identity applied/);
      assert.match(log, /\(a template clone\)/);
      // A clone has the template's device set: no balloon, even with reclaim_guest_freed_memory on (the
      // default), since QEMU 7.2 would punch reported ranges out of the template's memory file.
      const { vmPid } = JSON.parse(readFileSync(sandboxPaths(root, id).info, "utf8"));
      const qemuArgs = readFileSync(`/proc/${vmPid}/cmdline`, "utf8").split("\0");
      assert.ok(
        qemuArgs.some((a) => a.includes("share=off")),
        "the clone maps the template's memory",
      );
      assert.ok(!qemuArgs.some((a) => a.includes("balloon")), qemuArgs.join(" "));
      // Where the create went, in the supervisor's log (docs/sandbox.md reads these).
      assert.match(
        log,
        new RegExp(
          `container ${id} created \\(stand-in \\d+ ms, host share \\d+ ms, .*guest create \\d+ ms\\)`,
        ),
      );
      // And an exec's.
      assert.equal(cli(["start", id]).code, 0);
      const e = cli(["exec", id, "true"]);
      assert.equal(e.code, 0, e.stderr);
      assert.match(
        readFileSync(sandboxPaths(root, id).log, "utf8"),
        new RegExp(`process ${id}/\\S+ started \\(stand-in \\d+ ms, guest exec \\d+ ms\\)`),
      );
    } finally {
      const d = cli(["delete", "--force", id]);
      assert.equal(d.code, 0, d.stderr);
    }
    assertNoLeaks(before, { root, bundle: b, id });
  });

  test("a clone cannot write its template's memory: QEMU holds the file read-only, its jail binds it read-only", async () => {
    // Every clone of a template maps the same file: a clone's QEMU that could write it would change the
    // memory of every other clone. QEMU 7.2 opens mem-path O_RDWR even with share=off; native/memro
    // makes that open O_RDONLY, so the jail can bind the file read-only.
    const memory = join(status().current?.dir ?? "", "memory");
    const { id, b, before } = createSleeper("memro");
    try {
      const { vmPid } = JSON.parse(readFileSync(sandboxPaths(root, id).info, "utf8"));
      const fds = readdirSync(`/proc/${vmPid}/fd`).filter((fd) => {
        try {
          return readlinkSync(`/proc/${vmPid}/fd/${fd}`) === memory;
        } catch {
          return false;
        }
      });
      assert.equal(fds.length, 1, `QEMU has the template's memory ${memory} open once`);
      const flags = Number.parseInt(
        /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/${vmPid}/fdinfo/${fds[0]}`, "utf8"))?.[1] ?? "2",
        8,
      );
      assert.equal(flags & 3, 0, `the memory file is open O_RDONLY (flags ${flags.toString(8)})`);
      const mount = readFileSync(`/proc/${vmPid}/mountinfo`, "utf8")
        .split("\n")
        .map((l) => l.split(" "))
        .find((f) => f[4] === memory);
      assert.ok(mount, "the jail binds the memory file");
      assert.ok(mount[5].split(",").includes("ro"), `the jail's bind is read-only: ${mount[5]}`);
      // From inside the jail's mount namespace, even root cannot open it for writing.
      const w = spawnSync("nsenter", ["-t", String(vmPid), "-m", "--", "sh", "-c", `: >> '${memory}'`], {
        encoding: "utf8",
      });
      assert.notEqual(w.status, 0, "a write into the template's memory from the clone's jail must fail");
      assert.match(w.stderr, /Read-only file system/);
      // The clone runs on it: the guest's writes land in the clone's own copies of the pages.
      assert.equal(cli(["start", id]).code, 0);
      const e = cli(["exec", id, "echo", "memro-ok"]);
      assert.equal(e.code, 0, e.stderr);
      assert.equal(e.stdout.trim(), "memro-ok");
    } finally {
      const d = cli(["delete", "--force", id]);
      assert.equal(d.code, 0, d.stderr);
    }
    assertNoLeaks(before, { root, bundle: b, id });
  });

  test("a changed kernel command line has no template until init makes a second one", () => {
    const changed = join(tmp.path, "changed.toml");
    writeFileSync(
      changed,
      readFileSync(CONFIG, "utf8").replace(
        "[hypervisor.qemu]",
        '[hypervisor.qemu]\nkernel_params = "loglevel=4"',
      ),
    );
    const s = status(changed);
    assert.equal(s.current, null);
    assert.match(s.reason ?? "", /stale/);
    const r = cli(["factory", "init"], changed);
    assert.equal(r.code, 0, r.stderr);
    const after = status(changed);
    assert.ok(after.current);
    assert.equal(after.templates.length, 4);
    assert.notEqual(after.current.key, status().current?.key);
  });

  test("a corrupt template (truncated, then garbled) means a cold boot with a warning", () => {
    const s = status();
    assert.ok(s.current);
    const state = join(s.current.dir, "state");
    const good = readFileSync(state);
    try {
      truncateSync(state, 100);
      const t = runOnce("trunc", "echo trunc-ok").r;
      assert.equal(t.code, 0, t.stderr);
      assert.match(t.stdout, /trunc-ok/);
      assert.match(t.stderr, /factory: cold boot: template .* is corrupt/);
      // Same size, wrong bytes: only QEMU's restore can tell, and it fails.
      writeFileSync(state, Buffer.alloc(good.length, 0x5a));
      const g = runOnce("garbled", "echo garbled-ok").r;
      assert.equal(g.code, 0, g.stderr);
      assert.match(g.stdout, /garbled-ok/);
      assert.match(g.stderr, /factory: cold boot: restoring template [0-9a-f]{16} failed/);
    } finally {
      writeFileSync(state, good);
    }
  });

  test("kill -9 of a clone's QEMU: delete --force and factory destroy leave nothing", async () => {
    const { id, b, before } = createSleeper("kill");
    const pid = Number(readFileSync(join(sandboxPaths(root, id).vmDir, "qemu.pid"), "utf8").trim());
    assert.ok(alive(pid));
    process.kill(pid, "SIGKILL");
    await until("QEMU gone", () => !alive(pid));
    const d = cli(["delete", "--force", id]);
    assert.equal(d.code, 0, d.stderr);
    assertNoLeaks(before, { root, bundle: b, id });
    const r = cli(["factory", "destroy"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /removed 4 template\(s\)/);
    assert.deepEqual(readdirSync(templates), []);
  });

  test("kill -9 of factory init while it boots the one-NIC template: factory destroy leaves nothing", async () => {
    const netns = () => readdirSync("/run/netns").filter((n) => n.startsWith("kata-ts-template-"));
    const netnsBefore = existsSync("/run/netns") ? netns() : [];
    const init = spawn(BIN, ["--root", root, "--config", CONFIG, "factory", "init"], {
      env,
      stdio: "ignore",
    });
    try {
      await until(
        "the one-NIC template's network namespace",
        () => existsSync("/run/netns") && netns().length > netnsBefore.length,
        240_000,
        50,
      );
    } finally {
      init.kill("SIGKILL");
    }
    await until("factory init gone", () => init.exitCode !== null || init.signalCode !== null);
    // Its QEMU dies with it (parent-death signal); its namespace and unfinished directory stay.
    await until("the template VM gone", () => templateProcesses().length === 0, 30_000);
    assert.ok(netns().length > netnsBefore.length, "the namespace outlived its init");
    const r = cli(["factory", "destroy"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /removed 1 network namespace\(s\) of unfinished templates/);
    assert.deepEqual(netns(), netnsBefore);
    assert.deepEqual(readdirSync(templates), []);
  });
});
