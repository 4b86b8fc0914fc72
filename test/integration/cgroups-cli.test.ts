// ps/pause/resume/update/events through the real CLI on real containers (hypervisor = "none"): every
// check looks at the kernel's view (cgroup files, a counter the container bumps, /proc) rather than at
// what the command printed alone.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BIN, tempDir, until } from "../helpers";
import { hybridCgroups, skipUnless } from "../probes";

const BUSYBOX = "/bin/busybox";
// The checks read the v1 hierarchies' files (/sys/fs/cgroup/<controller>/...): hybrid layout probed.
const skip = existsSync(BUSYBOX) ? skipUnless(hybridCgroups()) : "busybox-static is not installed";
const BASE = `/kata-ts-clitest-${process.pid}`;
const tmp = tempDir("kata-ts-cgcli-");
const root = join(tmp.path, "state");
const config = join(tmp.path, "configuration.toml");

let seq = 0;
/** Runs the CLI with its stdout/stderr in files: a container's init inherits them, so pipes never close. */
function k(args: string[], input?: string) {
  const out = join(tmp.path, `out-${++seq}`);
  const o = openSync(out, "w");
  const e = openSync(`${out}.err`, "w");
  let r: ReturnType<typeof spawnSync>;
  try {
    r = spawnSync(BIN, ["--root", root, "--config", config, ...args], {
      input,
      stdio: [input === undefined ? "ignore" : "pipe", o, e],
      timeout: 60_000,
    });
  } finally {
    closeSync(o);
    closeSync(e);
  }
  return {
    code: r.status ?? -1,
    stdout: readFileSync(out, "utf8"),
    stderr: readFileSync(`${out}.err`, "utf8"),
  };
}

// biome-ignore lint/suspicious/noExplicitAny: parsed JSON checked field by field
function bundle(name: string, args: string[], edit: (s: any) => void = () => {}): string {
  const b = join(tmp.path, name);
  const rootfs = join(b, "rootfs");
  mkdirSync(join(rootfs, "bin"), { recursive: true });
  mkdirSync(join(rootfs, "tmp"), { recursive: true });
  spawnSync("cp", [BUSYBOX, join(rootfs, "bin/busybox")]);
  spawnSync("chroot", [rootfs, "/bin/busybox", "--install", "-s", "/bin"]);
  const r = spawnSync(BIN, ["spec", "--bundle", b], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const spec = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
  spec.process.terminal = false;
  spec.process.args = args;
  spec.root.readonly = false;
  spec.linux.cgroupsPath = `${BASE}/${name}`;
  edit(spec);
  writeFileSync(join(b, "config.json"), JSON.stringify(spec));
  return b;
}

function startContainer(id: string, b: string): number {
  const c = k(["create", "--bundle", b, id]);
  assert.equal(c.code, 0, c.stderr);
  const s = k(["start", id]);
  assert.equal(s.code, 0, s.stderr);
  return JSON.parse(k(["state", id]).stdout).pid;
}

const sleepMs = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cgfile = (ctrl: string, id: string, f: string) =>
  readFileSync(`/sys/fs/cgroup/${ctrl}${BASE}/${id}/${f}`, "utf8").trim();
// The counter is replaced by rename: a read never sees the file truncated and not yet written.
const COUNTER = [
  "sh",
  "-c",
  "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.02; done",
];

before(() => {
  writeFileSync(config, '[runtime]\nhypervisor = "none"\n');
});

after(() => {
  for (const id of ["ctr", "upd", "ev", "oom"]) k(["delete", "--force", id]);
  spawnSync("sh", ["-c", `for d in /sys/fs/cgroup/*${BASE}; do rmdir "$d" 2>/dev/null; done`]);
  tmp.cleanup();
});

describe("cgroup commands on a live container", { skip }, () => {
  test("ps lists the container's processes (json = host pids; table = filtered ps output, ps args passed)", async () => {
    const b = bundle("ctr", COUNTER);
    const pid = startContainer("ctr", b);
    await sleepMs(200);
    const j = k(["ps", "--format", "json", "ctr"]);
    assert.equal(j.code, 0, j.stderr);
    const pids: number[] = JSON.parse(j.stdout);
    assert.ok(pids.includes(pid), `${pids} has init ${pid}`);
    const procs = cgfile("pids", "ctr", "cgroup.procs").split("\n").map(Number);
    for (const p of pids) assert.ok(procs.includes(p) || !existsSync(`/proc/${p}`), `${p} is in the cgroup`);
    const t = k(["ps", "ctr"]);
    assert.equal(t.code, 0, t.stderr);
    const lines = t.stdout.trim().split("\n");
    assert.match(lines[0]!, /^UID\s+PID\s+PPID/);
    assert.ok(
      lines.some((l) => l.includes(String(pid)) && l.includes("while")),
      t.stdout,
    );
    assert.ok(!lines.some((l) => /kata-ts|node /.test(l)), "only the container's processes");
    const custom = k(["ps", "ctr", "-o", "pid,comm"]);
    assert.equal(custom.code, 0, custom.stderr);
    assert.match(custom.stdout, new RegExp(`^\\s*${pid} sh$`, "m"));
    assert.match(k(["ps", "--format", "xml", "ctr"]).stderr, /invalid format option/);
  });

  test("pause freezes the processes and resume thaws them, with runc's errors", async () => {
    const count = join(tmp.path, "ctr/rootfs/tmp/count");
    const readCount = () => {
      try {
        return Number(readFileSync(count, "utf8").trim() || 0);
      } catch {
        return 0; // before the first write
      }
    };
    const p = k(["pause", "ctr"]);
    assert.equal(p.code, 0, p.stderr);
    assert.equal(cgfile("freezer", "ctr", "freezer.state"), "FROZEN");
    assert.equal(JSON.parse(k(["state", "ctr"]).stdout).status, "paused");
    const a = readCount();
    await sleepMs(400);
    assert.equal(readCount(), a, "the container kept running while paused");
    const again = k(["pause", "ctr"]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /container not running/);
    const r = k(["resume", "ctr"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(cgfile("freezer", "ctr", "freezer.state"), "THAWED");
    assert.equal(JSON.parse(k(["state", "ctr"]).stdout).status, "running");
    // Polled, not a fixed sleep: a loaded host may take a while to schedule the thawed loop.
    await until("the container resumes counting", () => readCount() > a, 10_000);
    const r2 = k(["resume", "ctr"]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /container not paused/);
  });

  test("delete removes every cgroup directory it made", () => {
    assert.equal(k(["kill", "ctr", "9"]).code, 0);
    spawnSync("sleep", ["0.3"]);
    const d = k(["delete", "ctr"]);
    assert.equal(d.code, 0, d.stderr);
    for (const c of ["memory", "pids", "freezer", "cpu", "devices", "unified"])
      assert.equal(existsSync(`/sys/fs/cgroup/${c}${BASE}/ctr`), false, `${c} left behind`);
    assert.notEqual(k(["ps", "ctr"]).code, 0);
  });

  test("update: docker's JSON on stdin (zero = unchanged), podman's file, runc's flags; stored in the config", () => {
    const b = bundle("upd", ["sleep", "300"], (s) => {
      s.linux.resources = { ...(s.linux.resources ?? {}), cpu: { shares: 512 }, pids: { limit: 50 } };
    });
    startContainer("upd", b);
    assert.equal(cgfile("cpu", "upd", "cpu.shares"), "512");
    const docker = {
      memory: { limit: 67108864, reservation: 0, swap: 134217728, kernel: 0 },
      cpu: { shares: 0, quota: 0, period: 0 },
      blockIO: { weight: 0 },
    };
    const u = k(["update", "--resources", "-", "upd"], JSON.stringify(docker));
    assert.equal(u.code, 0, u.stderr);
    assert.equal(cgfile("memory", "upd", "memory.limit_in_bytes"), "67108864");
    assert.equal(cgfile("memory", "upd", "memory.memsw.limit_in_bytes"), "134217728");
    assert.equal(cgfile("cpu", "upd", "cpu.shares"), "512", "zero shares left the value alone");
    assert.equal(cgfile("pids", "upd", "pids.max"), "50");
    const podman = join(tmp.path, "podman-resources.json");
    writeFileSync(podman, JSON.stringify({ memory: { limit: 33554432, swap: 67108864 } }));
    assert.equal(k(["update", `--resources=${podman}`, "upd"]).code, 0);
    assert.equal(cgfile("memory", "upd", "memory.limit_in_bytes"), "33554432");
    assert.equal(cgfile("memory", "upd", "memory.memsw.limit_in_bytes"), "67108864");
    const f = k([
      "update",
      "--pids-limit",
      "33",
      "--cpu-quota",
      "50000",
      "--cpu-period",
      "100000",
      "--memory",
      "48m",
      "upd",
    ]);
    assert.equal(f.code, 0, f.stderr);
    assert.equal(cgfile("pids", "upd", "pids.max"), "33");
    assert.equal(cgfile("cpu", "upd", "cpu.cfs_quota_us"), "50000");
    assert.equal(cgfile("memory", "upd", "memory.limit_in_bytes"), String(48 << 20));
    const stored = JSON.parse(readFileSync(join(root, "upd", "state.json"), "utf8")).config.linux.resources;
    assert.equal(stored.memory.limit, 48 << 20);
    assert.equal(stored.memory.swap, 67108864);
    assert.equal(stored.pids.limit, 33);
    assert.equal(stored.cpu.shares, 512);
    assert.equal(stored.cpu.quota, 50000);
    const bad = k(["update", "--resources", "-", "upd"], "{not json");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid resources JSON/);
  });

  test("events --stats prints one runc-shaped stats event", () => {
    const e = k(["events", "--stats", "upd"]);
    assert.equal(e.code, 0, e.stderr);
    const ev = JSON.parse(e.stdout);
    assert.equal(ev.type, "stats");
    assert.equal(ev.id, "upd");
    assert.equal(ev.data.memory.usage.limit, 48 << 20);
    assert.equal(ev.data.pids.current, 1);
    assert.equal(ev.data.pids.limit, 33);
    assert.ok(ev.data.cpu.usage.total > 0);
    k(["kill", "upd", "9"]);
    spawnSync("sleep", ["0.3"]);
    const stopped = k(["events", "--stats", "upd"]);
    assert.equal(stopped.code, 1);
    assert.match(stopped.stderr, /container with id upd is not running/);
    assert.equal(k(["delete", "upd"]).code, 0);
  });

  test("events streams stats every interval and reports OOM kills, ending when the container stops", async () => {
    // Allocates 64 MiB under a 16 MiB limit every 0.5 s: each attempt is OOM-killed.
    const b = bundle(
      "oom",
      [
        "sh",
        "-c",
        "sleep 1; for i in 1 2 3; do dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 0.5; done; sleep 1",
      ],
      (s) => {
        s.linux.resources = { ...(s.linux.resources ?? {}), memory: { limit: 16 << 20, swap: 16 << 20 } };
      },
    );
    startContainer("oom", b);
    const child = spawn(BIN, ["--root", root, "--config", config, "events", "--interval", "300ms", "oom"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    const code = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => {
        child.kill("SIGKILL");
        resolve(null);
      }, 20_000);
      child.on("exit", (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    assert.equal(code, 0, `events did not end by itself when the container stopped: ${out}`);
    const events = out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.ok(events.filter((e) => e.type === "stats").length >= 3, out);
    assert.ok(
      events.some((e) => e.type === "oom" && e.id === "oom"),
      `no oom event in ${out}`,
    );
    assert.equal(k(["delete", "oom"]).code, 0);
  });
});
