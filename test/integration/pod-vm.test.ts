// Pods in VM mode through the CLI, as CRI engines drive them: a sandbox container and two members
// (containerd's CRI annotations, namespaces given by host paths as the engine gives them; one member
// shares the pid namespace too) share ONE guest; a second sandbox is another guest. Two VM boots in
// all. What each member sees is read inside the guest (boot id, namespaces, its cgroup), and the host
// side is checked after every delete.
//
// Env: KATA_TS_POD_CONFIG=file   kata-ts config (default: hypervisor = "qemu" with the kernel and image
//                                 that CI's setup builds under /var/cache/kata-ts)
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { defaultSpec } from "../../src/oci/defaults";
import type { Namespace } from "../../src/oci/spec";
import { BIN, removeTestCgroupParent, tempDir } from "../helpers";

const KERNEL = "/var/cache/kata-ts/vmlinux";
const IMAGE = "/var/cache/kata-ts/kata-ts-guest.img";
const USER_CONFIG = process.env.KATA_TS_POD_CONFIG;
const missing = USER_CONFIG ? [] : [KERNEL, IMAGE, "/bin/busybox"].filter((f) => !existsSync(f));

const tmp = tempDir("kata-pod-vm-");
const root = join(tmp.path, "root");
const CONFIG = USER_CONFIG ?? join(tmp.path, "configuration.toml");
const ROOTFS = join(tmp.path, "rootfs");
const hostBootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
const CRI_TYPE = "io.kubernetes.cri.container-type";
const CRI_SANDBOX = "io.kubernetes.cri.sandbox-id";
const MiB = 1024 * 1024;

function kata(args: string[], timeout = 180_000): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(BIN, ["--root", root, "--config", CONFIG, ...args], { encoding: "utf8", timeout });
  return { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

function ok(args: string[]): string {
  const r = kata(args);
  assert.equal(r.code, 0, `kata-ts ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/**
 * A verb whose process outlives it (create, exec --detach): its stand-in holds the stdio until the
 * process exits, so the stdio is a file, not a pipe the caller would wait on.
 */
function detached(name: string, args: string[]): void {
  const out = join(tmp.path, `${name}.out`);
  const fd = openSync(out, "w");
  try {
    const r = spawnSync(BIN, ["--root", root, "--config", CONFIG, ...args], {
      stdio: ["ignore", fd, fd],
      timeout: 180_000,
    });
    assert.equal(r.status, 0, `${args.join(" ")}: ${readFileSync(out, "utf8")}`);
  } finally {
    closeSync(fd);
  }
}

function create(id: string, bundle: string): void {
  detached(id, ["create", "--bundle", bundle, id]);
  ok(["start", id]);
}

/** A bundle over the shared busybox rootfs; pod members name the sandbox's namespaces by host paths. */
function bundle(
  id: string,
  args: string[],
  sandbox?: { id: string; member: boolean; sharePid?: boolean },
): string {
  const dir = join(tmp.path, id);
  mkdirSync(dir, { recursive: true });
  const spec = defaultSpec();
  spec.process = { ...(spec.process as NonNullable<typeof spec.process>), terminal: false, args };
  spec.root = { path: ROOTFS, readonly: false };
  const byPath = (type: Namespace["type"]): Namespace => ({
    type,
    path: `/proc/1/ns/${type === "network" ? "net" : type}`,
  });
  const ns: Namespace[] = [
    sandbox?.sharePid ? byPath("pid") : { type: "pid" },
    { type: "mount" },
    byPath("network"),
  ];
  if (sandbox?.member) ns.push(byPath("ipc"), byPath("uts"));
  else ns.push({ type: "ipc" }, { type: "uts" });
  spec.linux = { ...spec.linux, namespaces: ns, cgroupsPath: `/kata-pod-vm/${id}` };
  if (sandbox)
    spec.annotations = { [CRI_TYPE]: sandbox.member ? "container" : "sandbox", [CRI_SANDBOX]: sandbox.id };
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

function exec(id: string, script: string): string {
  return ok(["exec", id, "sh", "-c", script]);
}

function status(id: string): string {
  const r = kata(["state", id]);
  return r.code === 0 ? (JSON.parse(r.stdout) as { status: string }).status : "gone";
}

function pgrep(pattern: string): string[] {
  return spawnSync("pgrep", ["-af", pattern], { encoding: "utf8" })
    .stdout.split("\n")
    .filter((l) => l && !l.includes("pgrep"));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => T | undefined, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function assertSandboxGone(sid: string): void {
  assert.deepEqual(pgrep(`sandbox-${sid}( |,|$)`), [], `QEMU left for ${sid}`);
  assert.deepEqual(pgrep(`kata-supervisor.* ${sid}( |$)`), [], `supervisor left for ${sid}`);
  assert.equal(existsSync(join(root, "sandboxes", sid)), false, `sandbox dir left for ${sid}`);
}

describe("pods in VM mode (CLI)", { skip: missing.length > 0 && `missing ${missing.join(", ")}` }, () => {
  const P = `pod${process.pid}`;
  const [M1, M2, Q] = [`${P}-m1`, `${P}-m2`, `q${process.pid}`];
  after(() => {
    for (const id of [M1, M2, P, Q]) kata(["delete", "--force", id], 60_000);
    tmp.cleanup();
    assert.deepEqual(removeTestCgroupParent("/kata-pod-vm"), [], "cgroups left under /kata-pod-vm");
  });

  test("two members share the sandbox's guest, network, ipc and uts (one its pid ns too); ps, kill --all, update and delete stay per container", {
    timeout: 600_000,
  }, async () => {
    for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc", "root"])
      mkdirSync(join(ROOTFS, d), { recursive: true });
    copyFileSync("/bin/busybox", join(ROOTFS, "bin", "busybox"));
    for (const a of execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).trim().split("\n"))
      if (a !== "busybox") symlinkSync("busybox", join(ROOTFS, "bin", a));
    writeFileSync(join(ROOTFS, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    if (!USER_CONFIG)
      writeFileSync(
        CONFIG,
        `[runtime]\nhypervisor = "qemu"\n[hypervisor.qemu]\nkernel = "${KERNEL}"\nimage = "${IMAGE}"\ndefault_memory = 512\n`,
      );

    // The pod: its sandbox container boots the VM, the members join it.
    create(P, bundle(P, ["sleep", "1000"], { id: P, member: false }));
    create(M1, bundle(M1, ["sleep", "1001"], { id: P, member: true }));
    // Member 2 also shares the sandbox's pid namespace (podman's --share pid, CRI's PodPIDNamespace).
    create(M2, bundle(M2, ["sleep", "1002"], { id: P, member: true, sharePid: true }));
    // Another sandbox (no annotations: its own), whose network path also means its VM's network.
    create(Q, bundle(Q, ["sleep", "1003"]));

    const BOOT = "cat /proc/sys/kernel/random/boot_id";
    const boot = Object.fromEntries([P, M1, M2, Q].map((id) => [id, exec(id, BOOT).trim()]));
    assert.notEqual(boot[P], hostBootId, "the sandbox runs in a VM");
    assert.equal(boot[M1], boot[P], "member 1 is in the sandbox's guest");
    assert.equal(boot[M2], boot[P], "member 2 is in the sandbox's guest");
    assert.notEqual(boot[Q], boot[P], "another pod has another guest");

    // Namespaces given by path: the members are in the sandbox's net, ipc and uts; pid and mount are their own.
    const ns = (id: string) =>
      Object.fromEntries(
        exec(id, "for n in net ipc uts pid mnt; do echo $n $(readlink /proc/self/ns/$n); done")
          .trim()
          .split("\n")
          .map((l) => l.split(" ") as [string, string]),
      );
    const [nsP, ns1, ns2] = [ns(P), ns(M1), ns(M2)];
    for (const t of ["net", "ipc", "uts"]) {
      assert.equal(ns1[t], nsP[t], `member 1 ${t}`);
      assert.equal(ns2[t], nsP[t], `member 2 ${t}`);
    }
    for (const t of ["pid", "mnt"]) assert.notEqual(ns1[t], nsP[t], `member 1 has its own ${t}`);
    assert.equal(ns2.pid, nsP.pid, "member 2 shares the sandbox's pid namespace");
    assert.notEqual(ns2.mnt, nsP.mnt, "member 2 has its own mount namespace");
    // In the shared pid namespace, PID 1 is the sandbox's init and member 2's sleep is another pid.
    assert.equal(exec(M2, "cat /proc/1/cmdline").replace(/\0/g, " ").trim(), "sleep 1000");
    assert.equal(exec(M1, "cat /proc/1/cmdline").replace(/\0/g, " ").trim(), "sleep 1001");

    // The pod's localhost: a listener in member 1, reached from member 2 over 127.0.0.1.
    detached("nc-listener", [
      "exec",
      "--detach",
      M1,
      "nc",
      "-l",
      "-p",
      "8080",
      "-e",
      "echo",
      "hello-over-localhost",
    ]);
    const got = await until("member 2 to reach member 1 over localhost", () => {
      const r = kata(["exec", M2, "nc", "127.0.0.1", "8080"]);
      return r.stdout.includes("hello-over-localhost") ? r.stdout : undefined;
    });
    assert.match(got, /hello-over-localhost/);

    // ps: the table is the guest's ps with only this container's rows; json gives host pids of its
    // stand-ins (the engines' pids), starting with the init's.
    detached("sleeper", ["exec", "--detach", M1, "sleep", "1011"]);
    const table = ok(["ps", M1]);
    assert.match(table, /sleep 1001/);
    assert.match(table, /sleep 1011/);
    assert.doesNotMatch(table, /sleep 100[023]/, table);
    const json = JSON.parse(ok(["ps", "--format", "json", M1])) as number[];
    const initStandin = (JSON.parse(ok(["state", M1])) as { pid: number }).pid;
    assert.ok(json.includes(initStandin), `${json} lacks the init's stand-in ${initStandin}`);
    assert.equal(json.length, 2, `init + one exec still running: ${json}`);
    for (const pid of json)
      assert.match(readFileSync(`/proc/${pid}/cmdline`, "utf8"), new RegExp(`kata-ts-standin\0.*\0${M1}\0`));

    // update reaches member 2's cgroup in the guest only.
    writeFileSync(join(tmp.path, "res.json"), JSON.stringify({ memory: { limit: 64 * MiB } }));
    ok(["update", "--resources", join(tmp.path, "res.json"), M2]);
    assert.equal(exec(M2, "cat /sys/fs/cgroup/memory.max").trim(), String(64 * MiB));
    assert.equal(exec(M1, "cat /sys/fs/cgroup/memory.max").trim(), "max");

    // kill --all reaches member 1's processes only.
    ok(["kill", "--all", M1, "KILL"]);
    await until(`${M1} stopped`, () => (status(M1) === "stopped" ? true : undefined));
    assert.equal(status(P), "running");
    assert.equal(status(M2), "running");
    assert.equal(exec(M2, "echo alive"), "alive\n");

    // Deleting a member leaves the others running.
    ok(["delete", M1]);
    assert.equal(status(M1), "gone");
    assert.equal(exec(P, "echo alive"), "alive\n");
    assert.equal(exec(M2, "echo alive"), "alive\n");

    // Deleting the sandbox container stops its members first (their stand-ins die of SIGKILL), then the VM.
    const m2Standin = (JSON.parse(ok(["state", M2])) as { pid: number }).pid;
    ok(["delete", "--force", P]);
    assertSandboxGone(P);
    assert.equal(
      existsSync(`/proc/${m2Standin}`) && !/\) Z /.test(readFileSync(`/proc/${m2Standin}/stat`, "utf8")),
      false,
    );
    assert.equal(status(M2), "stopped");
    ok(["delete", M2]);
    assert.equal(status(Q), "running", "the other pod is untouched");
    ok(["delete", "--force", Q]);
    assertSandboxGone(Q);
    assert.deepEqual(
      existsSync(root) ? execFileSync("ls", ["-A", root], { encoding: "utf8" }).trim() : "",
      "",
    );
    assert.deepEqual(
      readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .filter((l) => l.includes(root)),
      [],
      "mounts left",
    );
  });
});
