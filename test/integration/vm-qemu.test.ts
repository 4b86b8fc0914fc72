// VM mode for real: QEMU under TCG, the guest image with the agent, the sandbox supervisor and the
// stand-ins, driven through the VM lifecycle (src/runtime/vm.ts). Three boots in the file: one sandbox
// for the proofs (guest kernel, guest boot id, invisible workload), the lifecycle, exec, pod containers'
// runs (one writes through a shared mmap of a file on the share) and a kill -9 of QEMU; one for a kill
// -9 of the supervisor; one for a CLI killed while the VM boots. After each: no QEMU, supervisor or
// stand-in, socket, mount or state is left.
// The KVM probe (accel = "auto") runs once for all of them: a counting wrapper stands in for the probe
// binary, and the per-boot verdict cache (/run/kata-ts/kvm-probe.json) answers the later starts.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadConfig } from "../../src/config/config";
import { defaultSpec } from "../../src/oci/defaults";
import { alive, busyboxRootfs, REPO, rssKb, sleep, tempDir, until } from "../helpers";

const QEMU = "/usr/bin/qemu-system-x86_64";
const defaults = loadConfig({ explicitPath: join(REPO, "config", "configuration.toml") }).config.hypervisor;
// kata-ts's own kernel when built; otherwise Debian's, with a bootstrap initramfs loading its modules.
const KERNEL = process.env.KATA_TS_TEST_KERNEL ?? defaults.kernel;
const AGENT = join(REPO, "dist", "kata-agent.cjs");
const missing = [QEMU, AGENT, "/bin/busybox"].filter((f) => !existsSync(f));

const tmp = tempDir("kata-vm-qemu-");
const root = join(tmp.path, "root");
const ENTRY = join(tmp.path, "vmcli.cjs");
const CONFIG = join(tmp.path, "configuration.toml");
// The native outputs, with the KVM probe wrapped so that every run of it leaves a line in PROBE_LOG.
const NATIVE = join(tmp.path, "native");
const PROBE_LOG = join(tmp.path, "probe.log");
const MMAP_WRITE_C = join(REPO, "test", "fixtures", "mmap", "mmap-write.c");
const PROBE_CACHE = "/run/kata-ts/kvm-probe.json";
const savedProbeCache = existsSync(PROBE_CACHE) ? readFileSync(PROBE_CACHE) : undefined;
const env = {
  ...process.env,
  KATA_TS_SUPERVISOR: join(REPO, "dist", "kata-supervisor.cjs"),
  KATA_TS_NATIVE_DIR: NATIVE,
};
const hostBootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
const hostRelease = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();

function vm(args: string[], input = ""): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [ENTRY, "--root", root, "--config", CONFIG, ...args], {
    env,
    input,
    encoding: "utf8",
    timeout: 180_000,
  });
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

/** create with the container's stdio on a file (the supervisor holds it until the container exits). */
function vmCreate(args: string[]): { code: number; output: string } {
  const output = join(tmp.path, `${args[args.length - 1]}.out`);
  const fd = openSync(output, "w");
  try {
    const r = spawnSync(process.execPath, [ENTRY, "--root", root, "--config", CONFIG, "create", ...args], {
      env,
      stdio: ["ignore", fd, fd],
      timeout: 180_000,
    });
    return { code: r.status ?? 128, output };
  } finally {
    closeSync(fd);
  }
}

function vmBg(args: string[]): { child: ChildProcess; code: Promise<number> } {
  const child = spawn(process.execPath, [ENTRY, "--root", root, "--config", CONFIG, ...args], {
    env,
    stdio: "ignore",
  });
  return { child, code: new Promise((r) => child.on("exit", (c) => r(c ?? 137))) };
}

function bundle(name: string, args: string[], annotations?: Record<string, string>): string {
  const dir = join(tmp.path, name);
  busyboxRootfs(join(dir, "rootfs"));
  const spec = defaultSpec();
  spec.process = { ...(spec.process as NonNullable<typeof spec.process>) };
  spec.process.terminal = false;
  spec.process.args = args;
  spec.root = { path: "rootfs", readonly: false };
  if (annotations) spec.annotations = annotations;
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

function pgrep(pattern: string): string {
  return spawnSync("pgrep", ["-af", pattern], { encoding: "utf8" })
    .stdout.split("\n")
    .filter((l) => l && !l.includes("pgrep"))
    .join("\n");
}

function assertNothingLeft(sid: string, ids: string[] = [sid]): void {
  assert.equal(pgrep(`sandbox-${sid}( |,|$)`), "", `QEMU left for ${sid}`);
  assert.equal(pgrep(`kata-supervisor.* ${sid}( |$)`), "", `supervisor left for ${sid}`);
  for (const id of ids) assert.equal(pgrep(`kata-ts-standin .* ${id} `), "", `stand-in left for ${id}`);
  assert.equal(existsSync(join(root, "sandboxes", sid)), false, `sandbox dir left for ${sid}`);
  for (const id of ids) assert.equal(existsSync(join(root, id)), false, `state left for ${id}`);
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes(join(root, "sandboxes", sid)));
  assert.deepEqual(mounts, [], "mounts left");
}

function state(id: string): { status: string; pid: number } {
  const r = vm(["state", id]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe("VM sandboxes under QEMU", { skip: missing.length > 0 && `missing ${missing.join(", ")}` }, () => {
  before(async () => {
    execFileSync("make", ["-s", "-C", join(REPO, "native")], { stdio: "inherit" });
    execFileSync(process.execPath, [join(REPO, "scripts", "build.mjs")], { cwd: REPO, stdio: "inherit" });
    execFileSync(
      join(REPO, "node_modules", ".bin", "esbuild"),
      [
        join(REPO, "test", "support", "vmcli.ts"),
        "--bundle",
        "--platform=node",
        "--format=cjs",
        `--outfile=${ENTRY}`,
      ],
      { cwd: REPO, stdio: "inherit" },
    );
    mkdirSync(NATIVE);
    for (const f of readdirSync(join(REPO, "native", "build")))
      if (f !== "kata-ts-kvm-probe") symlinkSync(join(REPO, "native", "build", f), join(NATIVE, f));
    writeFileSync(
      join(NATIVE, "kata-ts-kvm-probe"),
      `#!/bin/sh\necho "$$" >> ${PROBE_LOG}\nexec ${join(REPO, "native", "build", "kata-ts-kvm-probe")} "$@"\n`,
      { mode: 0o755 },
    );
    const { buildImage, defaultSources } = await import("../../src/image/image");
    const img = await buildImage({ sources: defaultSources(), cacheDir: join(tmp.path, "cache") });
    let boot = [`path = "${QEMU}"`, `kernel = "${KERNEL}"`, `image = "${img.paths.image}"`, 'initrd = ""'];
    if (!existsSync(KERNEL)) {
      // Debian's kernel: virtio-blk, ext4 and 9p are modules, loaded by a bootstrap initramfs that then
      // switches to the image. The driver takes one of initrd/image, so a wrapper adds the image drive.
      const { ensureStockKernel } = await import("../../src/image/kernel");
      const { bootstrapModuleNames, buildBootstrapInitramfs } = await import("../support/bootstrap");
      const { moduleLoadOrder } = await import("../support/floor");
      const k = await ensureStockKernel();
      const mods = moduleLoadOrder(`/lib/modules/${k.id}`, [...bootstrapModuleNames(), "9pnet_virtio", "9p"]);
      const initrd = join(tmp.path, "bootstrap.cpio");
      writeFileSync(initrd, buildBootstrapInitramfs({ modules: mods }));
      const wrapper = join(tmp.path, "qemu-image.sh");
      writeFileSync(
        wrapper,
        `#!/bin/sh\nexec ${QEMU} "$@" -drive if=none,id=image,file=${img.paths.image},format=raw,readonly=on -device virtio-blk-device,drive=image\n`,
        { mode: 0o755 },
      );
      boot = [`path = "${wrapper}"`, `kernel = "${k.path}"`, `initrd = "${initrd}"`, 'image = ""'];
    }
    writeFileSync(
      CONFIG,
      ["[hypervisor.qemu]", ...boot, "default_memory = 512", "[runtime]", 'hypervisor = "qemu"', ""].join(
        "\n",
      ),
    );
  });
  after(() => {
    for (const id of existsSync(root) ? readdirSync(root) : [])
      if (id !== "sandboxes") vm(["delete", "--force", id]);
    // The cache now holds the wrapper's verdict: give the host its own back (or none).
    if (savedProbeCache) writeFileSync(PROBE_CACHE, savedProbeCache);
    else rmSync(PROBE_CACHE, { force: true });
    tmp.cleanup();
  });

  test("it is a VM: guest kernel and boot id, workload invisible to the host; lifecycle, pod run, exec, QEMU killed", async () => {
    // A sleep with a duration no host process uses: if the host could see the workload, pgrep would.
    const nap = `${100_000 + (process.pid % 10_000)}`;
    const b = bundle("vm1", [
      "/bin/sh",
      "-c",
      `uname -r; cat /proc/sys/kernel/random/boot_id; echo pid $$; exec sleep ${nap}`,
    ]);
    const c = vmCreate(["--bundle", b, "--pid-file", join(tmp.path, "vm1.pid"), "vm1"]);
    assert.equal(c.code, 0, readFileSync(c.output, "utf8"));
    const standin = Number(readFileSync(join(tmp.path, "vm1.pid"), "utf8"));
    assert.equal(readFileSync(`/proc/${standin}/comm`, "utf8").trim(), "kata-ts-standin");
    assert.equal(state("vm1").status, "created");
    assert.equal(vm(["start", "vm1"]).code, 0);
    assert.equal(state("vm1").status, "running");

    await until("the init's output", () => /pid \d+\n/.test(readFileSync(c.output, "utf8")));
    const [release, bootId, pidLine] = readFileSync(c.output, "utf8").trim().split("\n");
    assert.notEqual(release, hostRelease, "the container runs on the guest kernel");
    assert.match(bootId, /^[0-9a-f-]{36}$/);
    assert.notEqual(bootId, hostBootId, "the container sees the guest's boot id");
    assert.equal(pidLine, "pid 1");
    // The agent runs with the image's node flags (--jitless: docs/guest.md) and started from the image's
    // V8 code cache: the guest's V8 took what the build made under the same flags.
    const supLog = readFileSync(join(root, "sandboxes", "vm1", "supervisor.log"), "utf8");
    assert.match(supLog, /agent ready \(.*node flags --jitless, code cache accepted\)/, supLog);
    await sleep(200);
    assert.equal(pgrep(`sleep ${nap}`), "", "the host sees the workload");
    const guestPids = JSON.parse(vm(["ps", "vm1"]).stdout) as number[];
    assert.ok(guestPids.length >= 1, `guest pids ${guestPids}`);

    // A pod container joins this VM (no new boot) and `run` gives its exit code and output.
    const pod = bundle("pod1", ["/bin/sh", "-c", "cat /proc/sys/kernel/random/boot_id; exit 3"], {
      "io.kubernetes.cri.container-type": "container",
      "io.kubernetes.cri.sandbox-id": "vm1",
    });
    const run = vm(["run", "--bundle", pod, "pod1"]);
    assert.equal(run.code, 3, run.stderr);
    assert.equal(run.stdout.trim(), bootId, "the pod container runs in the same guest");
    assert.equal(existsSync(join(root, "pod1")), false);

    // A shared writable mmap of a file on the share (the rootfs), written and left without msync: 9p
    // cache=none refuses the mmap (EINVAL); with cache=mmap the guest writes the pages back when the
    // mapping closes at the process's exit, so the host has them when `run` returns.
    const mm = bundle("pod2", ["/mmap-write", "/data.txt", "written-through-mmap"], {
      "io.kubernetes.cri.container-type": "container",
      "io.kubernetes.cri.sandbox-id": "vm1",
    });
    execFileSync("gcc", ["-static", "-O2", "-o", join(mm, "rootfs", "mmap-write"), MMAP_WRITE_C]);
    const data = join(mm, "rootfs", "data.txt");
    writeFileSync(data, ".".repeat(4096));
    const mrun = vm(["run", "--bundle", mm, "pod2"]);
    assert.equal(mrun.code, 0, mrun.stderr);
    assert.equal(mrun.stdout, "mapped and written\n");
    assert.equal(readFileSync(data, "utf8").slice(0, 21), "written-through-mmap.");

    // kill -9 of QEMU: the stand-in ends (137), the container is stopped, delete --force cleans up.
    const info = JSON.parse(readFileSync(join(root, "sandboxes", "vm1", "sandbox.json"), "utf8"));
    process.kill(info.vmPid, "SIGKILL");
    await until("stand-in exit", () => !alive(standin));
    assert.equal(state("vm1").status, "stopped");
    assert.equal(vm(["delete", "--force", "vm1"]).code, 0);
    assertNothingLeft("vm1");
  });

  test("exec in a VM container: output and exit code; memory the guest frees goes back to the host", async () => {
    const b = bundle("vm4", ["/bin/sh", "-c", "sleep 100000"]);
    // A tmpfs in the guest: what is written there lives in guest RAM until it is removed.
    const specPath = join(b, "config.json");
    const spec = JSON.parse(readFileSync(specPath, "utf8"));
    spec.mounts.push({ destination: "/big", type: "tmpfs", source: "tmpfs", options: ["size=300m"] });
    writeFileSync(specPath, JSON.stringify(spec));
    const c = vmCreate(["--bundle", b, "vm4"]);
    assert.equal(c.code, 0, readFileSync(c.output, "utf8"));
    try {
      assert.equal(vm(["start", "vm4"]).code, 0);
      const ex = vm(["exec", "vm4", "/bin/sh", "-c", "echo from-exec; uname -r; exit 9"]);
      assert.equal(ex.code, 9, ex.stderr);
      assert.match(ex.stdout, /^from-exec\n/);
      assert.notEqual(ex.stdout.split("\n")[1], hostRelease);

      // Free page reporting (reclaim_guest_freed_memory, on by default for a cold VM): 200 MB written
      // to the guest's tmpfs raise QEMU's RSS on the host; once removed, the guest reports the freed
      // blocks and QEMU gives them back. Without the balloon the RSS would stay up.
      const { vmPid } = JSON.parse(readFileSync(join(root, "sandboxes", "vm4", "sandbox.json"), "utf8"));
      assert.match(
        readFileSync(`/proc/${vmPid}/cmdline`, "utf8"),
        /virtio-balloon-device,free-page-reporting=on/,
      );
      const rssMb = () => rssKb(vmPid) / 1024;
      const fill = vm(["exec", "vm4", "/bin/sh", "-c", "dd if=/dev/zero of=/big/f bs=1M count=200 2>&1"]);
      assert.equal(fill.code, 0, fill.stdout + fill.stderr);
      const full = rssMb();
      assert.equal(vm(["exec", "vm4", "/bin/rm", "/big/f"]).code, 0);
      await until(
        `QEMU's RSS falls from ${full.toFixed(0)} MB by 150 MB`,
        () => rssMb() < full - 150,
        30_000,
      );
      // Second sandbox start in this boot: the probe verdict came from the cache.
      if (existsSync("/dev/kvm")) {
        assert.equal(readFileSync(PROBE_LOG, "utf8").trim().split("\n").length, 1, "the probe ran once");
        assert.ok(JSON.parse(readFileSync(PROBE_CACHE, "utf8")).key.startsWith(`${hostBootId}|`));
      }
    } finally {
      assert.equal(vm(["delete", "--force", "vm4"]).code, 0);
      assertNothingLeft("vm4");
    }
  });

  test("start racing the exec fifo under QEMU: workloads that exit at once start, as on the host", async () => {
    // The guest's start reads the exec fifo again when the init is seen gone (engine/container.ts
    // releaseInit), as the host's does: a workload that writes, execs and exits between two polls starts.
    const sb = bundle("vm5", ["/bin/sh", "-c", "sleep 100000"]);
    const c = vmCreate(["--bundle", sb, "vm5"]);
    assert.equal(c.code, 0, readFileSync(c.output, "utf8"));
    try {
      assert.equal(vm(["start", "vm5"]).code, 0);
      const fast = bundle("vm5-fast", ["/bin/true"], {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "vm5",
      });
      for (let i = 0; i < 4; i++) {
        const id = `vm5-t${i}`;
        const pidFile = join(tmp.path, `${id}.pid`);
        const made = vmCreate(["--bundle", fast, "--pid-file", pidFile, id]);
        assert.equal(made.code, 0, readFileSync(made.output, "utf8"));
        const started = vm(["start", id]);
        assert.deepEqual({ code: started.code, stderr: started.stderr }, { code: 0, stderr: "" }, id);
        await until(`${id} exits`, () => !alive(Number(readFileSync(pidFile, "utf8"))));
        assert.equal(state(id).status, "stopped");
        assert.equal(vm(["delete", id]).code, 0);
      }
    } finally {
      assert.equal(vm(["delete", "--force", "vm5"]).code, 0);
      assertNothingLeft("vm5");
    }
  });

  test("the supervisor is killed: the container stops and delete --force leaves nothing", async () => {
    const b = bundle("vm2", ["/bin/sh", "-c", "sleep 100000"]);
    const c = vmCreate(["--bundle", b, "--pid-file", join(tmp.path, "vm2.pid"), "vm2"]);
    assert.equal(c.code, 0, readFileSync(c.output, "utf8"));
    assert.equal(vm(["start", "vm2"]).code, 0);
    const standin = Number(readFileSync(join(tmp.path, "vm2.pid"), "utf8"));
    const info = JSON.parse(readFileSync(join(root, "sandboxes", "vm2", "sandbox.json"), "utf8"));
    process.kill(info.supervisorPid, "SIGKILL");
    await until("stand-in exit", () => !alive(standin));
    assert.equal(state("vm2").status, "stopped");
    // QEMU runs with a parent-death signal: it goes with its supervisor, before any delete.
    await until("QEMU exit", () => !alive(info.vmPid));
    assert.equal(vm(["delete", "--force", "vm2"]).code, 0);
    assertNothingLeft("vm2");
  });

  test("the CLI is killed while the VM boots: delete --force leaves nothing", async () => {
    const b = bundle("vm3", ["/bin/true"]);
    const r = vmBg(["create", "--bundle", b, "vm3"]);
    await until("QEMU started", () => pgrep("sandbox-vm3( |,|$)") !== "");
    r.child.kill("SIGKILL");
    await r.code;
    assert.equal(vm(["delete", "--force", "vm3"]).code, 0);
    assertNothingLeft("vm3");
  });
});
