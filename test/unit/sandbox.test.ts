// Pure logic of the sandbox supervisor: where a sandbox's files go (socket path limit), what a container
// spec becomes in the guest, mountinfo parsing for cleanup, and the control protocol client.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { Namespace, Spec } from "../../src/oci/spec";
import { readSandboxInfo, SUPERVISOR_BUNDLE } from "../../src/sandbox/launch";
import {
  GUEST_SHARED_DIR,
  guestRootfs,
  MAX_SOCKET_PATH,
  SHORT_SOCKET_ROOT,
  sandboxPaths,
} from "../../src/sandbox/paths";
import { SupervisorClient } from "../../src/sandbox/protocol";
import { mountsUnder } from "../../src/sandbox/share";
import { guestNamespaces, guestSpec } from "../../src/sandbox/supervisor";
import { tempDir } from "../helpers";

describe("sandbox paths", () => {
  test("a short root keeps every file in <root>/sandboxes/<id>", () => {
    const p = sandboxPaths("/run/kata-ts", "abc");
    assert.equal(p.dir, "/run/kata-ts/sandboxes/abc");
    assert.equal(p.sockDir, p.dir);
    assert.equal(p.socket, "/run/kata-ts/sandboxes/abc/supervisor.sock");
    assert.equal(p.shared, "/run/kata-ts/sandboxes/abc/shared");
    assert.equal(p.vmDir, p.dir);
  });

  test("a root + 64-hex id too long for sun_path moves only the sockets, stably", () => {
    const id = "f".repeat(64);
    const p = sandboxPaths("/run/containerd/runc/k8s.io", id);
    assert.equal(p.dir, `/run/containerd/runc/k8s.io/sandboxes/${id}`);
    assert.ok(p.sockDir.startsWith(`${SHORT_SOCKET_ROOT}/`));
    assert.ok(Buffer.byteLength(p.socket) <= MAX_SOCKET_PATH);
    assert.ok(Buffer.byteLength(join(p.vmDir, "agent.sock")) <= MAX_SOCKET_PATH);
    assert.equal(p.shared, join(p.dir, "shared"), "the share stays with the sandbox");
    assert.deepEqual(sandboxPaths("/run/containerd/runc/k8s.io", id), p);
    assert.notEqual(sandboxPaths("/run/containerd/runc/other", id).sockDir, p.sockDir);
  });
});

describe("guest spec", () => {
  const spec: Spec = {
    ociVersion: "1.0.2",
    process: { terminal: false, user: { uid: 0, gid: 0 }, args: ["sh"], cwd: "/" },
    root: { path: "/var/lib/x/rootfs", readonly: true },
    hooks: { prestart: [{ path: "/usr/bin/hook" }] },
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/data", type: "bind", source: "/srv/data", options: ["rbind", "ro"] },
      { destination: "/etc/hosts", source: "/var/lib/x/hosts", options: ["bind"] },
      { destination: "/dev/null2", type: "bind", source: "/dev/null", options: ["bind"] },
      { destination: "/tmp", type: "tmpfs", source: "tmpfs" },
    ],
    linux: { namespaces: [{ type: "pid" }, { type: "network", path: "/proc/123/ns/net" }] },
  };

  test("root.path points into the share; hooks stay on the host; a netns path is the guest's root netns", () => {
    const { spec: g } = guestSpec(spec, "c1");
    assert.deepEqual(g.root, { path: `${GUEST_SHARED_DIR}/c1/rootfs`, readonly: true });
    assert.equal(guestRootfs("c1"), g.root?.path);
    assert.equal(g.hooks, undefined);
    assert.deepEqual(g.linux?.namespaces, [{ type: "pid" }]);
    assert.equal(spec.hooks?.prestart?.length, 1, "the host spec is not modified");
  });

  test("namespaces: pod members join the sandbox container's ipc/uts/pid; the network is the VM's; other paths become fresh", () => {
    const host: Namespace[] = [
      { type: "pid", path: "/proc/9/ns/pid" },
      { type: "network", path: "/proc/9/ns/net" },
      { type: "ipc", path: "/proc/9/ns/ipc" },
      { type: "uts", path: "/proc/9/ns/uts" },
      { type: "mount" },
      { type: "cgroup", path: "/proc/9/ns/cgroup" },
    ];
    // A pod member (the sandbox container's init is guest pid 42).
    assert.deepEqual(guestNamespaces(host, 42), [
      { type: "pid", path: "/proc/42/ns/pid" },
      { type: "ipc", path: "/proc/42/ns/ipc" },
      { type: "uts", path: "/proc/42/ns/uts" },
      { type: "mount" },
      { type: "cgroup" },
    ]);
    // Its own sandbox: every path is a fresh namespace, the network the guest's.
    assert.deepEqual(guestNamespaces(host), [
      { type: "pid" },
      { type: "ipc" },
      { type: "uts" },
      { type: "mount" },
      { type: "cgroup" },
    ]);
    // A new network namespace is the VM's as well (Kata's runtime drops it from every spec); other new
    // ones stay new, in a pod member too.
    assert.deepEqual(guestNamespaces([{ type: "network" }, { type: "uts" }], 42), [{ type: "uts" }]);
    assert.deepEqual(guestNamespaces([{ type: "network" }, { type: "uts" }]), [{ type: "uts" }]);
    // Beside a user namespace a new one is made in the guest, owned by it (sysfs, lo, net sysctls).
    assert.deepEqual(guestNamespaces([{ type: "user" }, { type: "network" }]), [
      { type: "user" },
      { type: "network" },
    ]);
    assert.deepEqual(guestNamespaces([{ type: "user" }, { type: "network", path: "/run/netns/p" }]), [
      { type: "user" },
    ]);
  });

  test("host bind sources travel through the share; kernel filesystems and /dev stay the guest's", () => {
    const { spec: g, binds } = guestSpec(spec, "c1");
    assert.deepEqual(binds, [
      { index: 1, source: "/srv/data", rel: "c1/mounts/1" },
      { index: 2, source: "/var/lib/x/hosts", rel: "c1/mounts/2" },
    ]);
    assert.equal(g.mounts?.[1].source, `${GUEST_SHARED_DIR}/c1/mounts/1`);
    assert.deepEqual(g.mounts?.[1].options, ["rbind", "ro"]);
    assert.equal(g.mounts?.[2].source, `${GUEST_SHARED_DIR}/c1/mounts/2`);
    assert.equal(g.mounts?.[0].source, "proc");
    assert.equal(g.mounts?.[3].source, "/dev/null");
    assert.equal(g.mounts?.[4].source, "tmpfs");
  });
});

describe("mountsUnder", () => {
  const info = [
    "22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw",
    "40 22 8:1 /b /run/k/sandboxes/s1/shared/c1/rootfs rw - ext4 /dev/sda1 rw",
    "41 22 8:1 /c /run/k/sandboxes/s1/shared/c1/mounts/1 rw - ext4 /dev/sda1 rw",
    "42 22 8:1 /d /run/k/sandboxes/s1/shared/with\\040space rw - ext4 /dev/sda1 rw",
    "43 22 8:1 /e /run/k/sandboxes/s10/shared/c2/rootfs rw - ext4 /dev/sda1 rw",
  ].join("\n");

  test("lists mounts at or below a directory, deepest first, octal escapes decoded", () => {
    assert.deepEqual(mountsUnder("/run/k/sandboxes/s1", info), [
      "/run/k/sandboxes/s1/shared/c1/mounts/1",
      "/run/k/sandboxes/s1/shared/with space",
      "/run/k/sandboxes/s1/shared/c1/rootfs",
    ]);
  });

  test("a sibling with a common prefix is not below", () => {
    assert.deepEqual(mountsUnder("/run/k/sandboxes/s10", info), ["/run/k/sandboxes/s10/shared/c2/rootfs"]);
    assert.deepEqual(mountsUnder("/run/k/sandboxes/s1/shared/c1/rootfs", info), [
      "/run/k/sandboxes/s1/shared/c1/rootfs",
    ]);
  });
});

describe("control protocol client", () => {
  test("pipelined calls are matched by id; errors reject with the supervisor's message", async () => {
    const tmp = tempDir("kata-sandbox-unit-");
    const sock = join(tmp.path, "s.sock");
    const seen: unknown[] = [];
    const server = createServer((c) => {
      let buf = "";
      c.setEncoding("utf8");
      c.on("data", (d: string) => {
        buf += d;
        const lines = buf.split("\n");
        buf = lines.pop() ?? "";
        const reqs = lines.map((l) => JSON.parse(l) as { id: number; op: string; containerId?: string });
        seen.push(...reqs);
        // Answer in reverse order: the client must not rely on ordering.
        for (const r of reqs.reverse()) {
          const res =
            r.op === "ps"
              ? { id: r.id, ok: true, result: { pids: [1, 7] } }
              : { id: r.id, ok: false, error: `container ${r.containerId} is not in sandbox s1` };
          c.write(`${JSON.stringify(res)}\n`);
        }
      });
    });
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const client = await SupervisorClient.connect(sock);
      const [ps, kill] = await Promise.allSettled([
        client.call("ps", { containerId: "a" }),
        client.call("kill", { containerId: "b", signal: 9 }),
      ]);
      assert.deepEqual(ps, { status: "fulfilled", value: { pids: [1, 7] } });
      assert.equal(kill.status, "rejected");
      assert.equal((kill as PromiseRejectedResult).reason.message, "container b is not in sandbox s1");
      assert.deepEqual(
        (seen as { op: string }[]).map((r) => r.op),
        ["ps", "kill"],
      );
      client.close();
    } finally {
      server.close();
      tmp.cleanup();
    }
  });

  test("a supervisor that is not there is a one-line error naming the socket", async () => {
    await assert.rejects(SupervisorClient.connect("/nonexistent/supervisor.sock"), {
      message: "sandbox supervisor at /nonexistent/supervisor.sock: ENOENT",
    });
  });
});

describe("finding a sandbox's supervisor", () => {
  // CI once left a supervisor behind after `delete --force` of a create killed mid-way: a pid file read
  // while half-written (empty) counted as a record, so the search by argv never ran.
  test("an empty or torn pid file does not hide a live supervisor: it is found by its argv", async () => {
    const tmp = tempDir("kata-sup-find-");
    try {
      const root = join(tmp.path, "root");
      const p = sandboxPaths(root, "sb1");
      mkdirSync(p.dir, { recursive: true });
      const bundle = join(tmp.path, SUPERVISOR_BUNDLE);
      writeFileSync(bundle, "setTimeout(() => {}, 60_000);\n");
      const child = spawn(process.execPath, [bundle, "--root", root, "--sandbox", "sb1"], {
        stdio: "ignore",
      });
      try {
        await new Promise((r) => child.once("spawn", r));
        for (const content of ["", "0", `${child.pid}`, "garbage\n"]) {
          writeFileSync(p.pidFile, content);
          assert.equal(
            readSandboxInfo({ root, id: "sb1" }).supervisor?.pid,
            child.pid,
            `pid file "${content}"`,
          );
        }
        // Another sandbox's id or root is not this one's supervisor.
        assert.equal(readSandboxInfo({ root, id: "sb2" }).supervisor, undefined);
        assert.equal(readSandboxInfo({ root: `${root}x`, id: "sb1" }).supervisor, undefined);
      } finally {
        child.kill("SIGKILL");
      }
    } finally {
      tmp.cleanup();
    }
  });
});
