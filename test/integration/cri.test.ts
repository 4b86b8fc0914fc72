// The Kubernetes CRI path: a private containerd 1.6 with its CRI plugin (test/support/cri.ts) driven over
// gRPC as the kubelet drives it, once per runtime handler. `runc` validates the harness; `kata-ts`
// (containerd-shim-kata-ts-v2, runtime_type io.containerd.kata-ts.v2) runs the same scenario when the
// shim is on containerd's PATH, else it is skipped with that reason. See docs/kubernetes.md.
//
// Env: KATA_TS_CRI_HANDLERS=runc,kata-ts   the handlers to run (default both)
//      KATA_TS_CRI_SHIM_DIR=dir            put first on containerd's PATH, where it looks for the shim
//                                          (default: the repo's bin/)
//      KATA_TS_CRI_KATA_CONFIG=file        the kata-ts handler's options.ConfigPath
//      KATA_TS_CRI_LOG_LEVEL=debug         containerd's log level (its log is printed when a step fails)
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync } from "node:fs";
import { get } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { findProcesses } from "../../src/sys/proc";
import { formatTimings, mountsUnder, processesUnder, type Timing } from "../engines/harness";
import { alive, sleep } from "../helpers";
import { skipUnless } from "../probes";
import {
  type CriContainerd,
  cgroupHierarchies,
  criPrerequisites,
  DEFAULT_SHIM_DIR,
  findKataShim,
  HANDLERS,
  type Handler,
  type PodSandboxConfig,
  startCriContainerd,
  streamExec,
} from "../support/cri";

const SELECTED = (process.env.KATA_TS_CRI_HANDLERS || HANDLERS.join(",")).split(",").map((s) => s.trim());
const SHIM_DIR = process.env.KATA_TS_CRI_SHIM_DIR || DEFAULT_SHIM_DIR;
const PREREQS = criPrerequisites();

function handlerSkip(handler: Handler): string | false {
  if (!SELECTED.includes(handler)) return "not in KATA_TS_CRI_HANDLERS";
  return handler === "kata-ts" ? skipUnless(findKataShim(SHIM_DIR)) : false;
}

// Deadlines: a kata-ts pod boots a VM (about 5 s under TCG, more on a loaded 2-core host).
const POD_MS = 180_000;
const CALL_MS = 90_000;
const STEP_MS = 240_000;

const timings: Timing[] = [];

/** The kata-ts pod asks for a VM of this many MiB (the configuration's default is 2048). */
const POD_VM_MIB = 768;
const MEMORY_ANNOTATION = "io.katacontainers.config.hypervisor.default_memory";

/** One GET with a short deadline: the status and the body. */
function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get(url, { timeout: 3000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url}: no answer in 3 s`)));
    req.on("error", reject);
  });
}

/** The netns path, the host-side veth and the sandbox's host pid, from containerd's verbose pod info. */
interface PodHostFacts {
  netns: string;
  veth: string;
  pid: number;
}

/** Every directory under `dir` (recursive), deepest first. */
function subdirs(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .flatMap((e) => [...subdirs(join(dir, e.name)), join(dir, e.name)]);
}

/** /var/run/netns, where the CRI would put pod netns files without netns_mounts_under_state_dir. */
function netnsEntries(): string[] {
  return existsSync("/var/run/netns") ? readdirSync("/var/run/netns") : [];
}

const ipv4 = (out: string) => /inet (\d+\.\d+\.\d+\.\d+)\//.exec(out)?.[1];

function inSubnet(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split("/");
  const n = (a: string) => a.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
  const mask = 2 ** 32 - 2 ** (32 - Number(bits));
  return (n(ip) & mask) >>> 0 === (n(net!) & mask) >>> 0;
}

describe("CRI: containerd 1.6 drives a runtime handler", { skip: skipUnless(PREREQS) }, () => {
  const base = mkdtempSync(join(tmpdir(), "kata-ts-cri-"));
  let cri: CriContainerd;
  let netnsBefore: string[] = [];

  before(
    async () => {
      const t0 = performance.now();
      cri = await startCriContainerd(base, {
        shimDir: SHIM_DIR,
        kataConfigPath: process.env.KATA_TS_CRI_KATA_CONFIG || undefined,
        logLevel: process.env.KATA_TS_CRI_LOG_LEVEL === "debug" ? "debug" : "info",
      });
      timings.push({ engine: "-", scenario: "start containerd + import images", ms: ms(t0), ok: true });
      netnsBefore = netnsEntries();
    },
    { timeout: 120_000 },
  );

  after(
    async () => {
      console.log(formatTimings("CRI timings", timings));
      if (!cri) return;
      const t0 = performance.now();
      await cri.stop(); // throws naming whatever it could not remove
      console.log(`CRI teardown took ${ms(t0)} ms`);
      const created = netnsEntries().filter((n) => n.startsWith("cni-") && !netnsBefore.includes(n));
      assert.deepEqual(created, [], "the CRI made network namespaces in /var/run/netns");
      assert.equal(existsSync(base), false);
    },
    { timeout: 300_000 },
  );

  it("serves CRI v1 and finds the images locally (no registry)", async () => {
    const v = await cri.client.version();
    assert.equal(v.runtimeName, "containerd");
    assert.equal(v.runtimeApiVersion, "v1");
    assert.match(v.runtimeVersion, /^1\.6\./);
    const tags = (await cri.client.listImages()).flatMap((i) => i.repoTags);
    for (const image of ["localhost/kata-ts-pause:latest", "localhost/busybox:latest"]) {
      assert.ok(tags.includes(image), `${image} not in ${tags.join(", ")}`);
      assert.ok(await cri.client.imageStatus(image), `ImageStatus(${image})`);
    }
    assert.equal(await cri.client.imageStatus("localhost/not-there:latest"), null);
  });

  for (const handler of HANDLERS) {
    describe(`handler ${handler}`, { skip: handlerSkip(handler) }, () => {
      let podConfig: PodSandboxConfig;
      let podId = "";
      let podIp = "";
      let facts: PodHostFacts | undefined;
      const containers: string[] = [];
      const cgroupsPaths: string[] = []; // cgroupsPath of the sandbox and each container (runtime spec)

      function step(name: string, fn: () => Promise<void>) {
        it(name, { timeout: STEP_MS }, async () => {
          const t0 = performance.now();
          let ok = false;
          try {
            await fn();
            ok = true;
          } catch (e) {
            const log = readFileSync(cri.logPath, "utf8").trimEnd().split("\n").slice(-25).join("\n");
            throw new Error(`${(e as Error).message}\n--- containerd log (last lines) ---\n${log}`, {
              cause: e,
            });
          } finally {
            timings.push({ engine: handler, scenario: name, ms: ms(t0), ok });
          }
        });
      }

      const need = (what: string, v: string) => {
        if (!v) throw new Error(`an earlier step failed: no ${what}`);
        return v;
      };

      async function exec(id: string, cmd: string[]) {
        const r = await cri.client.execSync(id, cmd, 60, { timeoutMs: CALL_MS });
        return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
      }

      async function runSleeper(name: string): Promise<string> {
        const id = await cri.client.createContainer(
          need("pod", podId),
          cri.containerConfig(name, ["sleep", "1000"]),
          podConfig,
          { timeoutMs: CALL_MS },
        );
        containers.push(id);
        await cri.client.startContainer(id, { timeoutMs: CALL_MS });
        const { status, info } = await cri.client.containerStatus(id, true);
        assert.equal(status.state, "CONTAINER_RUNNING");
        cgroupsPaths.push(JSON.parse(info.info!).runtimeSpec.linux.cgroupsPath);
        return id;
      }

      step("RunPodSandbox: the pod is ready, with an IP from the bridge's subnet", async () => {
        podConfig = cri.podConfig(`pod-${handler}`);
        // Kata's sizing annotation (containerd passes it on: pod_annotations). runc has no VM to size.
        if (handler === "kata-ts") podConfig.annotations = { [MEMORY_ANNOTATION]: String(POD_VM_MIB) };
        podId = await cri.client.runPodSandbox(podConfig, handler, { timeoutMs: POD_MS });
        const { status, info } = await cri.client.podSandboxStatus(podId, true);
        assert.equal(status.state, "SANDBOX_READY");
        assert.equal(status.runtimeHandler, handler);
        assert.equal(status.metadata?.name, podConfig.metadata.name);
        podIp = status.network?.ip ?? "";
        assert.ok(podIp && inSubnet(podIp, cri.subnet), `pod IP ${podIp} not in ${cri.subnet}`);
        const pods = await cri.client.listPodSandbox({ id: podId });
        assert.deepEqual(
          pods.map((p) => [p.id, p.state, p.runtimeHandler]),
          [[podId, "SANDBOX_READY", handler]],
        );

        // Host side: the netns (under the base: netns_mounts_under_state_dir) and the veth on our bridge.
        const i = JSON.parse(info.info!);
        const netns: string = i.runtimeSpec.linux.namespaces.find(
          (n: { type: string }) => n.type === "network",
        ).path;
        assert.ok(netns.startsWith(`${cri.base}/`), `netns ${netns} outside ${cri.base}`);
        assert.ok(mountsUnder(netns).length > 0, `${netns} is not a mounted netns`);
        const ifaces = i.cniResult.Interfaces as Record<string, { Sandbox: string }>;
        const veth = Object.keys(ifaces).find((n) => n !== cri.bridge && ifaces[n]!.Sandbox === "") ?? "";
        assert.ok(existsSync(`/sys/class/net/${veth}/master`), `host veth ${veth} missing`);
        assert.match(
          readFileSync(`/sys/class/net/${veth}/master/uevent`, "utf8"),
          new RegExp(`INTERFACE=${cri.bridge}\\n`),
        );
        const leases = readdirSync(join(cri.base, "cni", "ipam", cri.bridge));
        assert.ok(leases.includes(podIp), `host-local has no lease for ${podIp}: ${leases.join(" ")}`);
        facts = { netns, veth, pid: Number(i.pid) };
        cgroupsPaths.push(i.runtimeSpec.linux.cgroupsPath);
      });

      step("CreateContainer + StartContainer: busybox `sleep 1000` runs", async () => {
        const id = await runSleeper("first");
        const list = await cri.client.listContainers({ podSandboxId: podId });
        assert.deepEqual(
          list.map((c) => [c.id, c.state, c.metadata?.name]),
          [[id, "CONTAINER_RUNNING", "first"]],
        );
      });

      step("ExecSync: eth0 has the pod's IP, lo is up, the hostname is the pod's", async () => {
        const first = need("container", containers[0] ?? "");
        const eth0 = await exec(first, ["ip", "-4", "addr", "show", "eth0"]);
        assert.equal(eth0.code, 0, eth0.err);
        assert.equal(ipv4(eth0.out), need("pod IP", podIp), eth0.out);
        const lo = await exec(first, ["ip", "-4", "addr", "show", "lo"]);
        assert.match(lo.out, /inet 127\.0\.0\.1\/8/);
        assert.match(lo.out, /<[^>]*\bUP\b/);
        assert.equal((await exec(first, ["hostname"])).out.trim(), podConfig.hostname);
      });

      step("ExecSync: the pod reaches the host's bridge address (ping)", async () => {
        const r = await exec(need("container", containers[0] ?? ""), [
          "ping",
          "-c",
          "1",
          "-W",
          "5",
          cri.gateway,
        ]);
        assert.equal(r.code, 0, `${r.out}${r.err}`);
        assert.match(r.out, /1 packets received/);
      });

      step("the pod IP answers HTTP from the host (a server in the first container)", async () => {
        const first = need("container", containers[0] ?? "");
        const serve = await exec(first, [
          "sh",
          "-c",
          "mkdir -p /tmp/pub && echo from-the-pod >/tmp/pub/index.html && httpd -p 0.0.0.0:8081 -h /tmp/pub",
        ]);
        assert.equal(serve.code, 0, serve.err);
        let got: { status: number; body: string } | Error = new Error("not tried");
        for (let i = 0; i < 50; i++) {
          got = await httpGet(`http://${need("pod IP", podIp)}:8081/`).catch((e: Error) => e);
          if (!(got instanceof Error)) break;
          await sleep(200);
        }
        assert.ok(!(got instanceof Error), `GET from the host: ${got}`);
        assert.deepEqual(got, { status: 200, body: "from-the-pod\n" });
      });

      if (handler === "kata-ts")
        step("the pod's VM has the memory its annotation asked for, not default_memory", async () => {
          const r = await exec(need("container", containers[0] ?? ""), ["cat", "/proc/meminfo"]);
          const kib = Number(/^MemTotal:\s+(\d+) kB/m.exec(r.out)?.[1]);
          // The guest kernel keeps some of the RAM for itself: MemTotal is a little under the VM's size.
          assert.ok(
            kib > (POD_VM_MIB - 128) * 1024 && kib <= POD_VM_MIB * 1024,
            `MemTotal ${kib} kB for a ${POD_VM_MIB} MiB VM`,
          );
        });

      step("ExecSync passes the exit code and both output streams through", async () => {
        const first = need("container", containers[0] ?? "");
        const r = await exec(first, ["sh", "-c", "echo out; echo err >&2; exit 7"]);
        assert.deepEqual(r, { code: 7, out: "out\n", err: "err\n" });
        assert.equal((await exec(first, ["true"])).code, 0);
        // A command that cannot be exec'd is a failed call (as the kubelet sees it), not an exit code.
        await assert.rejects(exec(first, ["/no/such/binary"]), /CRI ExecSync: .*\/no\/such\/binary/);
      });

      step(
        "Exec, streamed over WebSocket (remotecommand v4): stdout, stderr, stdin and the exit code",
        async () => {
          const first = need("container", containers[0] ?? "");
          const url = await cri.client.exec(first, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
          assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/exec\//);
          assert.deepEqual(await streamExec(url), { stdout: "out\n", stderr: "err\n", exitCode: 3 });
          // stdin: one line through to the process (head exits after it, so no EOF is needed).
          const echo = await cri.client.exec(first, ["head", "-n", "1"], { stdin: true });
          assert.deepEqual(await streamExec(echo, "through-stdin\n"), {
            stdout: "through-stdin\n",
            stderr: "",
            exitCode: 0,
          });
          // A terminal with stdin, as `kubectl exec -it`: the process's stdio is a pty (the shim's console
          // socket, named short enough for sun_path with 64-hex ids), the pty echoes the line it reads, and
          // the stream ends when the process does (the host's pty slave is not held after it).
          const t0 = performance.now();
          const tty = await streamExec(
            await cri.client.exec(first, ["sh", "-c", "tty; read x; echo got-$x"], {
              tty: true,
              stdin: true,
            }),
            "hi\n",
          );
          // The echo of "hi" comes whenever the line arrives: before or after the output of `tty`.
          const lines = tty.stdout.split("\r\n");
          assert.deepEqual(lines.slice(-2), ["got-hi", ""], tty.stdout);
          assert.deepEqual(
            lines.slice(0, 2).sort(),
            [lines.find((l) => /^\/dev\/pts\/\d+$/.test(l)), "hi"].sort(),
            tty.stdout,
          );
          assert.equal(tty.exitCode, 0);
          assert.ok(
            performance.now() - t0 < 2500,
            `the terminal exec took ${Math.round(performance.now() - t0)} ms`,
          );
          // A URL is good for one attach only (the kubelet's token cache).
          await assert.rejects(streamExec(url), /streamed exec/);
        },
      );

      step(
        "a second container shares the pod's network (same IP and MAC, the first's localhost server)",
        async () => {
          const first = need("container", containers[0] ?? "");
          const second = await runSleeper("second");
          const [a, b] = [
            await exec(first, ["ip", "addr", "show", "eth0"]),
            await exec(second, ["ip", "addr", "show", "eth0"]),
          ];
          assert.equal(ipv4(b.out), podIp, b.out);
          const mac = (s: string) => /link\/ether (\S+)/.exec(s)?.[1];
          assert.equal(mac(b.out), mac(a.out));
          // httpd daemonizes (stdio to /dev/null), so ExecSync returns; it serves only on the pod's loopback.
          const serve = await exec(first, [
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo served-by-first >/tmp/www/index.html && httpd -p 127.0.0.1:8080 -h /tmp/www",
          ]);
          assert.equal(serve.code, 0, serve.err);
          let got = { code: -1, out: "", err: "" };
          for (let i = 0; i < 50 && got.code !== 0; i++) {
            got = await exec(second, ["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"]);
            if (got.code !== 0) await sleep(100);
          }
          assert.deepEqual([got.code, got.out], [0, "served-by-first\n"], got.err);
          // Each container has its own PID namespace (as the kubelet asks): PID 1 is its own sleep.
          assert.equal(
            (await exec(second, ["cat", "/proc/1/cmdline"])).out.replace(/\0/g, " ").trim(),
            "sleep 1000",
          );
        },
      );

      step("ContainerStatus, ListContainers and ContainerStats describe both containers", async () => {
        const [first, second] = containers;
        const { status } = await cri.client.containerStatus(need("container", first ?? ""));
        assert.equal(status.state, "CONTAINER_RUNNING");
        assert.equal(status.metadata?.name, "first");
        assert.equal(status.image?.image, "localhost/busybox:latest");
        assert.match(status.imageRef, /^sha256:[0-9a-f]{64}$/);
        assert.ok(BigInt(status.startedAt) >= BigInt(status.createdAt) && BigInt(status.createdAt) > 0n);
        assert.equal(status.finishedAt, "0");
        assert.equal(status.logPath, join(podConfig.logDirectory!, "first.log"));
        const list = await cri.client.listContainers({
          podSandboxId: podId,
          state: { state: "CONTAINER_RUNNING" },
        });
        assert.deepEqual(list.map((c) => c.id).sort(), [first, second].sort());
        const stats = await cri.client.containerStats(first!);
        assert.equal(stats.attributes?.id, first);
        assert.ok(BigInt(stats.memory?.workingSetBytes?.value ?? "0") > 0n, JSON.stringify(stats.memory));
        assert.ok(BigInt(stats.cpu?.usageCoreNanoSeconds?.value ?? "0") > 0n, JSON.stringify(stats.cpu));
      });

      step("UpdateContainerResources: the container's own cgroup gets the new limits", async () => {
        const second = need("second container", containers[1] ?? "");
        // The container's view of its own cgroup: v2 in the guest (kata-ts), v1 on this host (runc), where
        // cpu and cpuacct may share one hierarchy ("cpu,cpuacct", with "cpu" a link to it).
        const read = async () => {
          const r = await exec(second, [
            "sh",
            "-c",
            "cd /sys/fs/cgroup; if [ -f memory.max ]; then cat memory.max; cut -d ' ' -f 1 cpu.max; " +
              "else cat memory/memory.limit_in_bytes; cat cpu*/cpu.cfs_quota_us | head -n 1; fi",
          ]);
          assert.equal(r.code, 0, r.err);
          return r.out.trim().split("\n");
        };
        const bytes = 200 * 1024 * 1024;
        assert.notDeepEqual(await read(), [String(bytes), "50000"]);
        await cri.client.updateContainerResources(
          second,
          { memoryLimitInBytes: String(bytes), cpuPeriod: "100000", cpuQuota: "50000", cpuShares: "512" },
          { timeoutMs: CALL_MS },
        );
        assert.deepEqual(await read(), [String(bytes), "50000"]);
      });

      step("StopContainer (grace 0) + RemoveContainer of the second: exit 137, then gone", async () => {
        const second = need("second container", containers[1] ?? "");
        await cri.client.stopContainer(second, 0, { timeoutMs: CALL_MS });
        const { status } = await cri.client.containerStatus(second);
        assert.equal(status.state, "CONTAINER_EXITED");
        assert.equal(status.exitCode, 137);
        assert.ok(BigInt(status.finishedAt) > 0n);
        await cri.client.removeContainer(second, { timeoutMs: CALL_MS });
        const ids = (await cri.client.listContainers({ podSandboxId: podId })).map((c) => c.id);
        assert.deepEqual(ids, [containers[0]]);
      });

      step("StopPodSandbox + RemovePodSandbox leave nothing of the pod on the host", async () => {
        const f = facts;
        if (!f) throw new Error("an earlier step failed: no pod facts");
        const ids = [podId, ...containers];
        const pidsOf = () =>
          processesUnder(cri.base)
            .filter((p) => ids.some((id) => p.cmdline.includes(id)))
            .map((p) => `${p.pid} ${p.cmdline}`);
        assert.ok(pidsOf().length > 0, "no shim process names the pod before the stop");
        const mountsOfPod = () =>
          mountsUnder(cri.base).filter((m) => ids.some((id) => m.includes(id)) || m === f.netns);
        assert.ok(mountsOfPod().length > 0, "no mount of the pod before the stop");
        const hierarchies = cgroupHierarchies();
        const cgroupsOfPod = () =>
          hierarchies.flatMap((h) => cgroupsPaths.map((p) => join(h, p)).filter((d) => existsSync(d)));
        assert.ok(
          cgroupsOfPod().length > 0,
          `none of the pod's cgroups exists before the stop: ${cgroupsPaths}`,
        );

        await cri.client.stopPodSandbox(podId, { timeoutMs: POD_MS });
        const { status } = await cri.client.podSandboxStatus(podId);
        assert.equal(status.state, "SANDBOX_NOTREADY");
        await cri.client.removePodSandbox(podId, { timeoutMs: POD_MS });
        assert.deepEqual(await cri.client.listPodSandbox({ id: podId }), []);
        await assert.rejects(cri.client.podSandboxStatus(podId), /NotFound|not found/i);
        assert.deepEqual(await cri.client.listContainers({ podSandboxId: podId }), []);

        // The shim exits after replying; give it a moment.
        for (let i = 0; i < 100 && pidsOf().length; i++) await sleep(50);
        assert.deepEqual(pidsOf(), [], "processes of the pod left");
        if (f.pid > 0) assert.equal(alive(f.pid), false, `sandbox pid ${f.pid} still alive`);
        assert.deepEqual(mountsOfPod(), [], "mounts of the pod left");
        assert.equal(existsSync(f.netns), false, `netns file ${f.netns} left`);
        assert.equal(existsSync(`/sys/class/net/${f.veth}`), false, `veth ${f.veth} left`);
        assert.equal(
          readdirSync(join(cri.base, "cni", "ipam", cri.bridge)).includes(podIp),
          false,
          "IP not released",
        );
        if (existsSync("/var/lib/cni/results"))
          assert.deepEqual(
            readdirSync("/var/lib/cni/results").filter((n) => n.includes(podId)),
            [],
            "libcni result cache of the pod left",
          );
        // cgroups: no container's or sandbox's cgroup in any hierarchy, and the pod's parent (the kubelet's
        // to remove) holds no child, so it can be removed.
        assert.deepEqual(cgroupsOfPod(), [], "sandbox or container cgroups left");
        const podParent = podConfig.linux!.cgroupParent!;
        for (const h of hierarchies) {
          const dir = join(h, podParent);
          assert.deepEqual(subdirs(dir), [], `cgroups left under ${dir}`);
          if (existsSync(dir)) rmdirSync(dir);
        }
      });

      if (handler === "kata-ts")
        step(
          "kill -9 of the pod's shim, then StopPodSandbox + RemovePodSandbox, leaves nothing",
          async () => {
            const config = cri.podConfig("pod-shim-crash");
            const pod = await cri.client.runPodSandbox(config, handler, { timeoutMs: POD_MS });
            const cid = await cri.client.createContainer(
              pod,
              cri.containerConfig("victim", ["sleep", "1000"]),
              config,
              { timeoutMs: CALL_MS },
            );
            await cri.client.startContainer(cid, { timeoutMs: CALL_MS });
            // Anything on the host naming the pod or its container: the shim, the sandbox supervisor, QEMU.
            const ofPod = () =>
              findProcesses((argv) => argv.some((a) => a.includes(pod) || a.includes(cid))).map((p) => p.pid);
            const shim = processesUnder(cri.base).find(
              (p) => p.cmdline.includes("containerd-shim-kata-ts-v2") && p.cmdline.includes(pod),
            );
            assert.ok(shim, "no shim serves the pod");
            assert.ok(ofPod().length > 1, "the pod has no process besides its shim");
            process.kill(shim.pid, "SIGKILL");

            await cri.client.stopPodSandbox(pod, { timeoutMs: POD_MS });
            await cri.client.removePodSandbox(pod, { timeoutMs: POD_MS });
            assert.deepEqual(await cri.client.listPodSandbox({ id: pod }), []);
            for (let i = 0; i < 200 && ofPod().length; i++) await sleep(50);
            assert.deepEqual(ofPod(), [], "processes of the crashed pod left");
            const state = "/run/kata-ts-shim/state/k8s.io";
            const left = existsSync(state) ? readdirSync(state).filter((n) => n === pod || n === cid) : [];
            assert.deepEqual(left, [], "kata-ts state of the crashed pod left");
            assert.deepEqual(
              mountsUnder(cri.base).filter((m) => m.includes(pod) || m.includes(cid)),
              [],
              "mounts of the crashed pod left",
            );
            for (const h of cgroupHierarchies()) {
              const dir = join(h, config.linux!.cgroupParent!);
              assert.deepEqual(subdirs(dir), [], `cgroups left under ${dir}`);
              if (existsSync(dir)) rmdirSync(dir);
            }
          },
        );
    });
  }
});

function ms(t0: number): number {
  return Math.round(performance.now() - t0);
}
