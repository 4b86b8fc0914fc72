import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { containerKind } from "../../src/oci/annotations";
import { defaultSpec, formatSpec } from "../../src/oci/defaults";
import { features } from "../../src/oci/features";
import { validateContainerId } from "../../src/oci/id";
import { capabilityNumber, rlimitNumber } from "../../src/oci/names";
import { ociState, rfc3339Nano, runcState } from "../../src/oci/state";
import { validateSpec } from "../../src/oci/validate";
import { schemaErrors } from "../fixtures/oci-schema/load";

// biome-ignore lint/suspicious/noExplicitAny: free-form JSON fixtures mutated by the cases
type J = any;

describe("validateContainerId", () => {
  it("accepts runc-style ids", () => {
    for (const id of ["a", "abc-123", "A_b.c+d", "x".repeat(1024), "..a"])
      assert.equal(validateContainerId(id), id);
  });
  const bad: [string, RegExp][] = [
    ["", /invalid container id "": must not be empty$/],
    ["a/b", /invalid container id "a\/b": must not contain '\/'$/],
    [".", /must not be '\.' or '\.\.'/],
    ["..", /must not be '\.' or '\.\.'/],
    ["x".repeat(1025), /longer than 1024 characters/],
    ["a b", /only letters, digits/],
    ["é", /only letters, digits/],
    ["a:b", /only letters, digits/],
  ];
  for (const [id, re] of bad)
    it(`rejects ${JSON.stringify(id.slice(0, 10))}`, () => assert.throws(() => validateContainerId(id), re));
});

describe("containerKind", () => {
  it("no annotation: its own sandbox", () => {
    assert.deepEqual(containerKind(undefined), { type: "sandbox" });
    assert.deepEqual(containerKind({}, "c1"), { type: "sandbox", sandboxId: "c1" });
  });
  it("containerd (CRI)", () => {
    assert.deepEqual(containerKind({ "io.kubernetes.cri.container-type": "sandbox" }, "s1"), {
      type: "sandbox",
      sandboxId: "s1",
    });
    assert.deepEqual(
      containerKind(
        { "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "s1" },
        "c1",
      ),
      { type: "pod_container", sandboxId: "s1" },
    );
  });
  it("CRI-O", () => {
    assert.deepEqual(
      containerKind({
        "io.kubernetes.cri-o.ContainerType": "container",
        "io.kubernetes.cri-o.SandboxID": "p",
      }),
      { type: "pod_container", sandboxId: "p" },
    );
    assert.equal(containerKind({ "io.kubernetes.cri-o.ContainerType": "sandbox" }).type, "sandbox");
  });
  it("dockershim", () => {
    assert.equal(containerKind({ "io.kubernetes.docker.type": "podsandbox" }).type, "sandbox");
    assert.deepEqual(
      containerKind({ "io.kubernetes.docker.type": "container", "io.kubernetes.sandbox.id": "d" }),
      { type: "pod_container", sandboxId: "d" },
    );
  });
  it("throws on an unknown type value or a pod container without sandbox id", () => {
    assert.throws(
      () => containerKind({ "io.kubernetes.cri.container-type": "vm" }),
      /unknown container type "vm"/,
    );
    assert.throws(
      () => containerKind({ "io.kubernetes.docker.type": "sandbox" }),
      /unknown container type "sandbox"/,
    );
    assert.throws(
      () => containerKind({ "io.kubernetes.cri.container-type": "container" }),
      /io\.kubernetes\.cri\.sandbox-id is required/,
    );
  });
});

describe("defaultSpec", () => {
  it("has runc 1.1's content with ociVersion 1.2.0", () => {
    const s = defaultSpec() as J;
    assert.equal(s.ociVersion, "1.2.0");
    assert.deepEqual(s.process.args, ["sh"]);
    assert.equal(s.process.terminal, true);
    assert.deepEqual(s.process.capabilities.bounding, [
      "CAP_AUDIT_WRITE",
      "CAP_KILL",
      "CAP_NET_BIND_SERVICE",
    ]);
    assert.equal(s.process.capabilities.inheritable, undefined);
    assert.deepEqual(s.process.rlimits, [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }]);
    assert.deepEqual(
      s.mounts.map((m: J) => m.destination),
      ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"],
    );
    assert.deepEqual(
      s.linux.namespaces.map((n: J) => n.type),
      ["pid", "network", "ipc", "uts", "mount"],
    );
    assert.equal(s.linux.maskedPaths.length, 10);
    assert.equal(s.linux.readonlyPaths.length, 5);
    assert.ok(formatSpec(s).startsWith('{\n\t"ociVersion": "1.2.0",\n\t"process": {\n\t\t"terminal": true,'));
    assert.ok(!formatSpec(s).endsWith("\n"));
  });
  it("rootless: user namespace mapping the caller, no network namespace, /sys bind, no gid=5", () => {
    const s = defaultSpec({ rootless: true, hostUid: 1000, hostGid: 1001 }) as J;
    assert.deepEqual(s.linux.uidMappings, [{ containerID: 0, hostID: 1000, size: 1 }]);
    assert.deepEqual(s.linux.gidMappings, [{ containerID: 0, hostID: 1001, size: 1 }]);
    assert.deepEqual(
      s.linux.namespaces.map((n: J) => n.type),
      ["pid", "ipc", "uts", "mount", "user"],
    );
    assert.equal(s.linux.resources, undefined);
    assert.deepEqual(s.mounts[5], {
      destination: "/sys",
      type: "none",
      source: "/sys",
      options: ["rbind", "nosuid", "noexec", "nodev", "ro"],
    });
    assert.ok(!s.mounts[2].options.includes("gid=5"));
  });
  it("both variants pass validateSpec and the official config schema", () => {
    for (const s of [defaultSpec(), defaultSpec({ rootless: true, hostUid: 5, hostGid: 5 })]) {
      validateSpec(s);
      assert.equal(schemaErrors("config-schema.json", s), "");
    }
  });
  it("the schema check is live: a broken spec fails it", () => {
    const s = defaultSpec() as J;
    s.process.args = "sh";
    delete s.process.cwd;
    assert.match(schemaErrors("config-schema.json", s), /cwd/);
  });
  it("returns fresh objects", () => {
    const a = defaultSpec() as J;
    a.process.capabilities.bounding.push("CAP_SYS_ADMIN");
    assert.equal((defaultSpec() as J).process.capabilities.bounding.length, 3);
  });
});

describe("state builders", () => {
  const created = new Date("2024-01-02T03:04:05.120Z");
  it("ociState matches the OCI state schema for every status", () => {
    for (const status of ["creating", "created", "running", "stopped"] as const) {
      const s = ociState({ id: "c1", status, pid: 42, bundle: "/b", annotations: { a: "b" } });
      assert.equal(schemaErrors("state-schema.json", s), "", status);
      assert.equal(s.pid, status === "stopped" ? undefined : 42);
    }
    assert.match(
      schemaErrors("state-schema.json", { id: "x", status: "weird", bundle: "/b" }),
      /ociVersion|status/,
    );
  });
  it("runcState has runc's fields and passes the OCI schema's checks on the shared fields", () => {
    const s = runcState({
      id: "c1",
      status: "running",
      pid: 7,
      bundle: "/b",
      rootfs: "/b/rootfs",
      created,
      owner: "",
    });
    assert.deepEqual(Object.keys(s), [
      "ociVersion",
      "id",
      "pid",
      "status",
      "bundle",
      "rootfs",
      "created",
      "owner",
    ]);
    assert.equal(s.created, "2024-01-02T03:04:05.12Z");
    assert.equal(schemaErrors("state-schema.json", s), "");
    assert.equal(
      runcState({ id: "c", status: "stopped", pid: 9, bundle: "/b", rootfs: "/r", created }).pid,
      0,
    );
  });
  it("rfc3339Nano formats like Go's RFC3339Nano", () => {
    assert.equal(rfc3339Nano(new Date("2024-01-02T03:04:05.000Z")), "2024-01-02T03:04:05Z");
    assert.equal(rfc3339Nano(new Date("2024-01-02T03:04:05.001Z"), 2345), "2024-01-02T03:04:05.001002345Z");
  });
});

describe("features", () => {
  it("validates against the features schema and claims what kata-ts supports", () => {
    const f = features({ version: "0.1.0" });
    assert.equal(schemaErrors("features-schema.json", f), "");
    assert.equal(f.ociVersionMax, "1.2.0");
    assert.equal(f.linux.capabilities.length, 41);
    assert.equal(f.linux.capabilities[40], "CAP_CHECKPOINT_RESTORE");
    assert.equal(f.linux.apparmor.enabled, false);
    assert.equal(f.linux.selinux.enabled, false);
    assert.deepEqual(
      [...f.linux.seccomp.actions].sort(),
      ["ALLOW", "ERRNO", "KILL", "KILL_PROCESS", "KILL_THREAD", "LOG", "NOTIFY", "TRACE", "TRAP"].map(
        (a) => `SCMP_ACT_${a}`,
      ),
    );
  });
});

describe("names", () => {
  it("maps names to kernel numbers", () => {
    assert.equal(capabilityNumber("CAP_CHOWN"), 0);
    assert.equal(capabilityNumber("CAP_SYS_ADMIN"), 21);
    assert.equal(capabilityNumber("CAP_CHECKPOINT_RESTORE"), 40);
    assert.equal(capabilityNumber("CAP_FOO"), undefined);
    assert.equal(rlimitNumber("RLIMIT_NOFILE"), 7);
    assert.equal(rlimitNumber("RLIMIT_RTTIME"), 15);
  });
});
