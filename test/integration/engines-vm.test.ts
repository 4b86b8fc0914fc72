// Real engines driving kata-ts in VM mode: every container (or pod) runs in its own QEMU guest. The
// same harness as engines.test.ts (test/engines/setup.sh, runtime-wrap.sh, teardown.sh), with a
// `hypervisor = "qemu"` configuration. Each VM boot costs 3-10 s under TCG (more on a loaded host), so
// the scenarios share containers: 7 VMs in all (podman 2, ctr 2, docker 3); one podman pod (infra +
// two members + one failing member) is ONE of them.
//
// Env: KATA_TS_ENGINE_VM_CONFIG=file   kata-ts config to use instead of the default VM config (kernel
//                                      /var/cache/kata-ts/vmlinux, image /var/cache/kata-ts/kata-ts-guest.img,
//                                      which CI's setup builds)
//      KATA_TS_ENGINE_ENGINES=a,b      subset of podman,ctr,docker (default all three)
//      KATA_TS_ENGINE_KEEP=1           keep the base dir and daemons (prints the path)
//      KATA_TS_ENGINE_FACTORY=1        [factory] enable_template on, `factory init` first: containers
//                                      without NICs start from template clones (which share the
//                                      template's boot id: the boot-id checks cannot tell them apart,
//                                      so the one-VM-per-sandbox check is skipped)
//      KATA_TS_ENGINE_FACTORY=cache    the same, plus vm_cache_number = 1: `factory init` runs as the
//                                      cache server for the whole file; containers without NICs take
//                                      its ready VMs, the others clone or boot
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { dockerCli, type EngineName, missingBinaries } from "../engines/drivers";
import {
  CTR_NAMESPACE,
  check,
  engineEnv,
  entries,
  formatTimings,
  IMAGE,
  inode,
  mountsUnder,
  processesUnder,
  RuntimeLog,
  runScript,
  scenarioTest,
  sh,
  shTty,
  type Timing,
  waitFor,
} from "../engines/harness";
import { BIN } from "../helpers";

const KERNEL = "/var/cache/kata-ts/vmlinux";
const GUEST_IMAGE = "/var/cache/kata-ts/kata-ts-guest.img";
const USER_CONFIG = process.env.KATA_TS_ENGINE_VM_CONFIG;
const SELECTED = (process.env.KATA_TS_ENGINE_ENGINES || "podman,ctr,docker").split(",").map((s) => s.trim());
const KEEP = process.env.KATA_TS_ENGINE_KEEP === "1";
const FACTORY = ["1", "cache"].includes(process.env.KATA_TS_ENGINE_FACTORY ?? "");
const CACHE = process.env.KATA_TS_ENGINE_FACTORY === "cache";
/** The cache server (`factory init` with vm_cache_number), for the whole file. */
let cacheServer: ChildProcess | undefined;
const ALL: EngineName[] = ["podman", "ctr", "docker"];
const missingGuest = USER_CONFIG ? [] : [KERNEL, GUEST_IMAGE].filter((f) => !existsSync(f));
const skipReason = new Map<EngineName, string | undefined>(
  ALL.map((e) => [e, SELECTED.includes(e) ? missingBinaries(e) : "not in KATA_TS_ENGINE_ENGINES"]),
);
const ENABLED = ALL.filter((e) => !skipReason.get(e));

const BASE = mkdtempSync(join(tmpdir(), "kata-ts-engines-vm-"));
const log = new RuntimeLog(BASE);
let env: NodeJS.ProcessEnv = process.env;
const timings: Timing[] = [];
/** Host pids the engines reported for containers (stand-ins): none may be left at the end. */
const standins = new Set<number>();
const hostBootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
/** One boot id per VM seen: every container outside the pod must have a VM of its own. */
const bootIds: { who: string; id: string }[] = [];
/** A VM create under TCG on a shared 2-core host: boot + agent + first container. */
const VM_MS = 150_000;
const BOOT_ID = "cat /proc/sys/kernel/random/boot_id";

const run = (cmd: string, args: string[], timeoutMs = VM_MS) => sh(cmd, args, { env, timeoutMs });

/** A boot id from a line of output; records it (with who saw it) and checks it is not the host's. */
function bootId(who: string, out: string): string {
  const m = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/.exec(out);
  assert.ok(m, `${who}: no boot id in ${JSON.stringify(out)}`);
  assert.notEqual(m[0], hostBootId, `${who} runs under the host kernel, not in a VM`);
  bootIds.push({ who, id: m[0] });
  return m[0];
}

/** The host's network interfaces. */
function hostLinks(): string[] {
  const out = check(sh("ip", ["-j", "link", "show"], { timeoutMs: 10_000 }), "ip link").stdout;
  return (JSON.parse(out) as { ifname: string }[]).map((l) => l.ifname);
}

/** Network namespaces bind-mounted at or below `base` (nsfs mounts in this mount namespace). */
function nsfsMountsUnder(base: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => / - nsfs /.test(l))
    .map((l) => l.split(" ")[4])
    .filter((mp) => mp === base || mp.startsWith(`${base}/`));
}

function vmConfig(): string {
  if (USER_CONFIG) return USER_CONFIG;
  const file = join(BASE, "vm.toml");
  writeFileSync(
    file,
    [
      "[runtime]",
      'hypervisor = "qemu"',
      "[hypervisor.qemu]",
      `kernel = "${KERNEL}"`,
      `image = "${GUEST_IMAGE}"`,
      "default_memory = 512",
      ...(FACTORY
        ? ["[factory]", "enable_template = true", `template_path = "${join(BASE, "templates")}"`]
        : []),
      ...(CACHE ? ["vm_cache_number = 1", `vm_cache_endpoint = "${join(BASE, "cache.sock")}"`] : []),
      "",
    ].join("\n"),
  );
  return file;
}

/** Waits until the cache server has a VM ready (the previous one may just have been taken). */
async function cacheReady(): Promise<void> {
  await waitFor(
    "a ready VM in the cache",
    () => {
      const st = sh(BIN, ["--config", vmConfig(), "factory", "status", "--json"], { env, timeoutMs: 10_000 });
      return (JSON.parse(st.stdout) as { cache: { idle: number } | null }).cache?.idle ? true : undefined;
    },
    VM_MS,
  );
}

describe("container engines drive kata-ts in VM mode", {
  skip:
    (missingGuest.length > 0 && `missing ${missingGuest.join(", ")} (scripts/setup.sh builds them)`) ||
    (ENABLED.length === 0 && "no engine installed"),
}, () => {
  before(
    async () => {
      const r = runScript("setup.sh", [BASE, BIN, ENABLED.join(",")], 180_000, {
        ...process.env,
        KATA_TS_ENGINE_CONFIG: vmConfig(),
      });
      timings.push({ engine: "all", scenario: "setup.sh", ms: r.ms, ok: r.code === 0 });
      if (r.code !== 0) throw new Error(`setup.sh failed (${r.code}):\n${r.stderr}`);
      env = engineEnv(BASE);
      if (FACTORY && !CACHE) {
        const f = sh(BIN, ["--config", vmConfig(), "factory", "init"], { env, timeoutMs: VM_MS });
        if (f.code !== 0) throw new Error(`factory init failed (${f.code}):\n${f.stderr}`);
      }
      if (CACHE) {
        const out = openSync(join(BASE, "cache-server.log"), "a");
        cacheServer = spawn(BIN, ["--config", vmConfig(), "factory", "init"], {
          env,
          stdio: ["ignore", out, out],
        });
        closeSync(out);
        await cacheReady();
      }
    },
    { timeout: 200_000 },
  );

  after(
    () => {
      console.log(formatTimings("engine timings in VM mode", timings));
      if (FACTORY) sh(BIN, ["--config", vmConfig(), "factory", "destroy"], { env, timeoutMs: 60_000 });
      cacheServer?.kill("SIGKILL");
      if (KEEP) {
        console.log(`KATA_TS_ENGINE_KEEP=1: left ${BASE} in place; run test/engines/teardown.sh ${BASE}`);
        return;
      }
      const r = runScript("teardown.sh", [BASE], 120_000);
      console.log(`teardown.sh took ${r.ms} ms`);
      assert.equal(r.code, 0, `teardown.sh left something behind:\n${r.stderr}`);
    },
    { timeout: 130_000 },
  );

  const scenario = (engine: EngineName, name: string, fn: () => Promise<void> | void) =>
    scenarioTest(log, timings, engine, name, fn, { timeout: 300_000 });

  const inspect = (cli: string, id: string, fmt: string) =>
    check(run(cli, ["inspect", "-f", fmt, id], 30_000), `${cli} inspect`).stdout.trim();

  describe("podman", { skip: skipReason.get("podman") }, () => {
    const pod = `ktvm-pod-${process.pid}`;
    const [a, b] = [`${pod}-a`, `${pod}-b`];

    scenario("podman", "run --rm: output, exit code, in a VM of its own", () => {
      const r = run("podman", ["run", "--rm", IMAGE, "sh", "-c", `${BOOT_ID}; echo err >&2; exit 7`]);
      assert.equal(r.code, 7, r.stderr);
      assert.match(r.stderr, /^err$/m);
      bootId("podman run --rm", r.stdout);
    });

    scenario(
      "podman",
      "pod: 2 members in ONE VM (boot id, localhost), exec -it, logs, pause, update, stop, kill, a bad command",
      async () => {
        check(run("podman", ["pod", "create", "--name", pod], 60_000), "podman pod create");
        try {
          // The infra container (catatonit) boots the VM; the members carry CRI-O's annotations
          // (ContainerType=container, SandboxID=<infra id>) and join it.
          check(
            run("podman", [
              "run",
              "-d",
              "--pod",
              pod,
              "--name",
              a,
              IMAGE,
              "sh",
              "-c",
              "echo log-line; exec sleep 1000",
            ]),
            "podman run --pod (a)",
          );
          check(
            run("podman", ["run", "-d", "--pod", pod, "--name", b, IMAGE, "sleep", "1000"]),
            "podman run --pod (b)",
          );
          for (const c of [a, b]) standins.add(Number(inspect("podman", c, "{{.State.Pid}}")));
          const idA = bootId(
            "pod member a",
            check(run("podman", ["exec", a, "sh", "-c", BOOT_ID]), "exec a").stdout,
          );
          const idB = bootId(
            "pod member b",
            check(run("podman", ["exec", b, "sh", "-c", BOOT_ID]), "exec b").stdout,
          );
          assert.equal(idA, idB, "the members of one pod run in one guest");
          // The pod's network is the VM's: a listener in a is reachable from b over 127.0.0.1.
          check(
            run("podman", ["exec", "-d", a, "nc", "-l", "-p", "8080", "-e", "echo", "pod-localhost"]),
            "nc -l",
          );
          const got = await waitFor(
            "b to reach a over the pod's localhost",
            () => {
              const r = run("podman", ["exec", b, "nc", "127.0.0.1", "8080"], 30_000);
              return r.stdout.includes("pod-localhost") ? r.stdout : undefined;
            },
            30_000,
          );
          assert.match(got, /pod-localhost/);
          // exec -it (under script): a terminal in the guest, exit code through.
          const tty = shTty("podman", ["exec", "-it", a, "sh", "-c", "tty; exit 6"], env, 60_000);
          assert.match(tty.stdout, /\/dev\/pts\/\d+/, tty.stdout);
          assert.equal(tty.code, 6);
          assert.ok(!tty.stdout.includes("\0"), "no NUL byte reaches the terminal (runc sends none)");
          // podman top reads /proc in the mount namespace of the pid-file process (psgo): the
          // stand-in's has an empty /proc, so no process of the host shows up (it used to list them all).
          const top = check(run("podman", ["top", a]), "podman top")
            .stdout.trim()
            .split("\n")
            .slice(1);
          assert.ok(
            top.every((l) => /kata-ts-standin/.test(l)),
            `podman top lists host processes: ${top.join(" | ")}`,
          );
          // logs: what a's init wrote reached conmon through the stand-in.
          assert.match(check(run("podman", ["logs", a]), "podman logs").stdout, /^log-line$/m);
          // pause/unpause: the engine's state follows, and the container works again after.
          check(run("podman", ["pause", a]), "podman pause");
          assert.equal(inspect("podman", a, "{{.State.Status}}"), "paused");
          check(run("podman", ["unpause", a]), "podman unpause");
          assert.equal(inspect("podman", a, "{{.State.Status}}"), "running");
          assert.equal(
            check(run("podman", ["exec", a, "echo", "alive"]), "exec after unpause").stdout,
            "alive\n",
          );
          // update --memory reaches b's cgroup in the guest (b reads it inside), not a's.
          check(run("podman", ["update", "--memory", "64m", b]), "podman update");
          const seen = (c: string) =>
            run("podman", ["exec", c, "cat", "/sys/fs/cgroup/memory.max"]).stdout.trim();
          assert.equal(seen(b), String(64 * 1024 * 1024));
          assert.equal(seen(a), "max");
          // A bad command in a member: the engine shows kata-ts's one-line error; the pod lives on.
          const bad = run("podman", ["run", "--rm", "--pod", pod, IMAGE, "/nonexistent"]);
          assert.equal(bad.code, 127, bad.stderr);
          assert.match(bad.stderr, /exec: "\/nonexistent": stat \/nonexistent: no such file or directory/);
          assert.equal(
            bad.stderr
              .trim()
              .split("\n")
              .filter((l) => l.includes("nonexistent")).length,
            1,
            bad.stderr,
          );
          // stop escalates to SIGKILL after -t 1 (sleep as PID 1 ignores TERM): 137; kill gives 137 too.
          const stop = run("podman", ["stop", "-t", "1", b]);
          assert.equal(stop.code, 0, stop.stderr);
          assert.ok(stop.ms >= 900, `stop -t 1 took ${stop.ms} ms`);
          assert.equal(check(run("podman", ["wait", b]), "wait b").stdout.trim(), "137");
          // the other member is untouched by b's stop
          assert.equal(
            check(run("podman", ["exec", a, "echo", "still"]), "exec a after b stopped").stdout,
            "still\n",
          );
          check(run("podman", ["kill", a]), "podman kill");
          assert.equal(check(run("podman", ["wait", a]), "wait a").stdout.trim(), "137");
        } finally {
          run("podman", ["pod", "rm", "-f", "-t", "0", pod], 120_000);
        }
      },
    );
  });

  describe("ctr", { skip: skipReason.get("ctr") }, () => {
    const wrap = () => join(BASE, "bin", "kata-ts");
    const runFlags = () => ["--runc-binary", wrap(), "--runc-root", join(BASE, "state", "ctr")];
    const c = (args: string[], timeoutMs = VM_MS) => run("ctr", ["-n", CTR_NAMESPACE, ...args], timeoutMs);

    scenario("ctr", "ctr run --rm: output and exit code", () => {
      const r = c([
        "run",
        "--rm",
        ...runFlags(),
        IMAGE,
        `ktvm-ctr-${process.pid}`,
        "sh",
        "-c",
        `${BOOT_ID}; exit 3`,
      ]);
      assert.equal(r.code, 3, r.stderr);
      bootId("ctr run --rm", r.stdout);
    });

    scenario("ctr", "ctr run -d + task exec (output, exit code) + task ps (the engine's pids)", async () => {
      const id = `ktvm-ctr-d-${process.pid}`;
      if (CACHE) await cacheReady();
      check(c(["run", "-d", ...runFlags(), IMAGE, id, "sleep", "1000"]), "ctr run -d");
      try {
        const e = c(["task", "exec", "--exec-id", "e1", id, "sh", "-c", `${BOOT_ID}; exit 5`]);
        assert.equal(e.code, 5, e.stderr);
        bootId("ctr task exec", e.stdout);
        const pid = Number(
          check(c(["task", "ls"]), "ctr task ls")
            .stdout.split("\n")
            .find((l) => l.startsWith(`${id} `))
            ?.trim()
            .split(/\s+/)[1],
        );
        standins.add(pid);
        // ps --format json gives host pids the shim knows: the init's stand-in is the task's pid.
        const ps = check(c(["task", "ps", id]), "ctr task ps").stdout;
        assert.match(ps, new RegExp(`^${pid}\\s`, "m"), ps);
        if (CACHE) {
          // The sandbox took a ready VM from the cache: a slot directory names its sandbox directory.
          const slots = join(BASE, "templates", "cache");
          const taken = entries(slots).filter((d) => {
            const f = join(slots, d, "sandbox");
            return existsSync(f) && readFileSync(f, "utf8").endsWith(`/${id}`);
          });
          assert.equal(taken.length, 1, `no cached VM serves ${id}: ${entries(slots).join(", ")}`);
        } else if (FACTORY) {
          // The sandbox's QEMU is a clone of the template: it loaded its state instead of booting.
          const qemu = processesUnder(BASE).find((p) => p.cmdline.includes(`-name sandbox-${id} `));
          assert.ok(qemu, "the container's QEMU");
          assert.match(qemu.cmdline, /-incoming defer/);
          assert.match(qemu.cmdline, /memory-backend-file,.*share=off/);
        }
      } finally {
        c(["task", "kill", "-s", "SIGKILL", id]);
        c(["task", "rm", "-f", id]);
        c(["container", "rm", id]);
      }
    });
  });

  describe("docker", { skip: skipReason.get("docker") }, () => {
    const docker = (args: string[], timeoutMs = VM_MS) => run(dockerCli(), args, timeoutMs);
    const flags = ["--runtime", "kata-ts", "--network", "none"];

    scenario("docker", "docker run --rm: output and exit code", () => {
      const r = docker(["run", "--rm", ...flags, IMAGE, "sh", "-c", `${BOOT_ID}; exit 3`]);
      assert.equal(r.code, 3, r.stderr);
      bootId("docker run --rm", r.stdout);
    });

    scenario("docker", "docker run -d + exec + top + stop; the prestart hook ran", () => {
      const id = `ktvm-docker-${process.pid}`;
      check(docker(["run", "-d", ...flags, "--name", id, IMAGE, "sleep", "1000"]), "docker run -d");
      try {
        const pid = Number(inspect(dockerCli(), id, "{{.State.Pid}}"));
        standins.add(pid);
        const e = docker(["exec", id, "sh", "-c", `${BOOT_ID}; exit 5`]);
        assert.equal(e.code, 5, e.stderr);
        bootId("docker exec", e.stdout);
        // docker top runs the host's ps on the pids `ps --format json` gave: the stand-ins'.
        const top = check(docker(["top", id]), "docker top").stdout;
        assert.match(top, new RegExp(`^\\S+\\s+${pid}\\s`, "m"), top);
        // Docker's libnetwork-setkey prestart hook ran on the host (create would have failed otherwise).
        const longId = inspect(dockerCli(), id, "{{.Id}}");
        const create = log.calls().find((c) => c.argv.includes(" create ") && c.argv.endsWith(longId));
        assert.ok(create, "no create call for the container in the runtime log");
        const spec = log.dump(create.seq, "config") as { hooks?: { prestart?: { args?: string[] }[] } };
        assert.ok(
          spec?.hooks?.prestart?.[0]?.args?.includes("libnetwork-setkey"),
          "no libnetwork-setkey hook",
        );
        const stop = docker(["stop", "-t", "1", id]);
        assert.equal(stop.code, 0, stop.stderr);
        assert.ok(stop.ms >= 900, `stop -t 1 took ${stop.ms} ms`);
        assert.equal(inspect(dockerCli(), id, "{{.State.ExitCode}}"), "137");
      } finally {
        docker(["rm", "-f", id]);
      }
    });

    scenario(
      "docker",
      "user-defined bridge network: the guest's eth0 has docker's address and reaches the gateway; nothing left",
      async () => {
        // docker gives the spec a new netns and moves the veth into the netns of the prestart hook
        // state's pid (libnetwork-setkey): kata-ts runs that hook before QEMU, in a netns it makes.
        const net = `ktnet-${process.pid}`;
        const subnet = `10.${100 + (process.pid % 50)}.${(process.pid >> 6) % 250}.0/24`;
        const id = `ktvm-docker-net-${process.pid}`;
        const ours = (l: string) => /^(veth|br-)/.test(l);
        const linksBefore = hostLinks().filter(ours);
        check(
          docker(["network", "create", "--driver", "bridge", "--subnet", subnet, net], 60_000),
          "network create",
        );
        let sandboxKey = "";
        let qemu: number | undefined;
        try {
          check(
            docker([
              "run",
              "-d",
              "--runtime",
              "kata-ts",
              "--network",
              net,
              "--name",
              id,
              IMAGE,
              "sleep",
              "1000",
            ]),
            "docker run -d --network",
          );
          standins.add(Number(inspect(dockerCli(), id, "{{.State.Pid}}")));
          // What docker assigned (the network's IPAM config names only the subnet).
          const [ip, prefix, gateway, mac] = inspect(
            dockerCli(),
            id,
            `{{with index .NetworkSettings.Networks "${net}"}}{{.IPAddress}} {{.IPPrefixLen}} {{.Gateway}} {{.MacAddress}}{{end}}`,
          ).split(" ");
          assert.ok(gateway, "docker's gateway");
          assert.ok(ip?.startsWith(subnet.slice(0, subnet.lastIndexOf("."))), `docker's address ${ip}`);
          const e = docker([
            "exec",
            id,
            "sh",
            "-c",
            `${BOOT_ID}; ip -4 addr show eth0; echo mac=$(cat /sys/class/net/eth0/address); ping -c1 -W2 ${gateway}`,
          ]);
          assert.equal(e.code, 0, `${e.stdout}${e.stderr}`);
          bootId("docker --network", e.stdout);
          assert.match(e.stdout, new RegExp(`inet ${ip.replace(/\./g, "\\.")}/${prefix} `), e.stdout);
          assert.match(e.stdout, / 1 packets received/, e.stdout);
          assert.ok(mac, "docker's MAC");
          assert.match(e.stdout, new RegExp(`mac=${mac}\n`), "the guest NIC has docker's MAC");
          // QEMU runs in docker's sandbox netns: the one the hook's pid named, whose veth is the NIC.
          sandboxKey = inspect(dockerCli(), id, "{{.NetworkSettings.SandboxKey}}");
          const longId = inspect(dockerCli(), id, "{{.Id}}");
          const vm = processesUnder(BASE).find((p) => p.cmdline.includes(`-name sandbox-${longId} `));
          qemu = vm?.pid;
          assert.ok(vm && qemu, "the container's QEMU");
          // With the factory on, a pod with one NIC is a clone of the one-NIC template (with the cache
          // too: a cached VM has no NIC), the NIC's MAC then set to docker's by the agent.
          if (FACTORY) assert.match(vm.cmdline, /-incoming defer/, "a clone, not a cold boot");
          assert.equal(inode(`/proc/${qemu}/ns/net`), inode(sandboxKey), "QEMU is in the container's netns");
        } finally {
          docker(["rm", "-f", id]);
          docker(["network", "rm", net], 60_000);
        }
        await waitFor("QEMU to exit", () => (existsSync(`/proc/${qemu}`) ? undefined : true), 30_000);
        assert.deepEqual(
          hostLinks().filter((l) => ours(l) && !linksBefore.includes(l)),
          [],
          "a veth or bridge left on the host",
        );
        // docker unmounts the sandbox key (its file goes in libnetwork's 60 s garbage collection); the
        // runtime's own netns (<root>/sandboxes/<id>/netns) went with the sandbox.
        assert.deepEqual(nsfsMountsUnder(BASE), [], "a network namespace is still mounted");
        assert.ok(sandboxKey.startsWith(`${BASE}/`), sandboxKey);
      },
    );
  });

  it("one VM per sandbox, and nothing left: no stand-in, supervisor, QEMU, mount or runtime state", async () => {
    // Every boot id outside the pod is distinct (a container of another pod sees another guest).
    // Member b was already checked against a; every other VM has a boot id of its own.
    const vms = bootIds.filter((b) => b.who !== "pod member b");
    // Template clones share the template's boot id: with the factory on, this check cannot be made.
    if (!FACTORY) assert.equal(new Set(vms.map((b) => b.id)).size, vms.length, JSON.stringify(bootIds));
    if (CACHE) {
      // The cache server keeps a VM ready by design: stopped first, it takes its idle VM with it.
      const d = sh(BIN, ["--config", vmConfig(), "factory", "destroy"], { env, timeoutMs: 60_000 });
      assert.equal(d.code, 0, d.stderr);
      assert.match(d.stdout, /stopped the VM cache server/);
    }
    const left = () =>
      processesUnder(BASE).filter((p) => /kata-supervisor|qemu-system|kata-ts-standin/.test(p.cmdline));
    await waitFor("supervisors and QEMU to exit", () => (left().length ? undefined : true), 30_000).catch(
      () => {
        assert.deepEqual(
          left().map((p) => `${p.pid} ${p.cmdline.slice(0, 200)}`),
          [],
          "processes left",
        );
      },
    );
    for (const pid of standins) assert.equal(existsSync(`/proc/${pid}`), false, `stand-in ${pid} left`);
    assert.deepEqual(mountsUnder(join(BASE, "state")), [], "mounts left under the runtime roots");
    for (const r of ["podman", "ctr/clients"]) {
      const dir = join(BASE, "state", r);
      assert.deepEqual(entries(dir), [], `runtime state root ${dir} is not empty`);
    }
    const moby = join(BASE, "docker", "exec", "runtime-runc", "moby");
    assert.deepEqual(entries(moby), [], `runtime state root ${moby} is not empty`);
    assert.deepEqual(
      log
        .calls()
        .filter((c) => c.rc === undefined)
        .map((c) => c.argv),
      [],
      "runtime calls that never finished",
    );
  });
});
