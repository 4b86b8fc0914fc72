// Host-fact parsers, the check verdicts and the env serializers, with a fake KVM probe (no root).
import assert from "node:assert/strict";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "smol-toml";
import { defaultConfig } from "../../src/config/config";
import {
  chooseAccelerator,
  detectCgroupLayout,
  formatCheckLine,
  parseCpuinfo,
  parseMeminfo,
  runHostChecks,
} from "../../src/runtime/check";
import { buildEnv, envToToml } from "../../src/runtime/env";
import { tempDir } from "../helpers";

const slowKvm = async () => ({
  usable: false,
  reason: "KVM unusable: /dev/kvm runs a test loop at 0.7 M iterations/s (real KVM: ~1000 M/s); TCG fallback",
  mips: 0.7,
});
const fastKvm = async () => ({ usable: true, reason: "KVM usable: 1200 M iterations/s", mips: 1200 });

const V1 = [
  "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
  "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct",
  "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
  "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd",
];
const UNIFIED = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate";
const V2 = "30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate";

test("cgroup layout: v1, hybrid, v2, none", () => {
  const ctl = (m: string) => (m === "/sys/fs/cgroup" ? ["cpu", "memory", "pids"] : ["hugetlb"]);
  const v1 = detectCgroupLayout(V1.join("\n"), ctl);
  assert.equal(v1.layout, "v1");
  assert.deepEqual(v1.v1Controllers, ["cpu", "cpuacct", "memory", "name=systemd"]);
  assert.equal(v1.unifiedMount, undefined);
  const hybrid = detectCgroupLayout([...V1, UNIFIED].join("\n"), ctl);
  assert.equal(hybrid.layout, "hybrid");
  assert.equal(hybrid.unifiedMount, "/sys/fs/cgroup/unified");
  assert.deepEqual(hybrid.v2Controllers, ["hugetlb"]);
  const v2 = detectCgroupLayout(V2, ctl);
  assert.equal(v2.layout, "v2");
  assert.deepEqual(v2.v2Controllers, ["cpu", "memory", "pids"]);
  assert.deepEqual(v2.v1Controllers, []);
  assert.equal(detectCgroupLayout("22 1 0:21 / /proc rw - proc proc rw", ctl).layout, "none");
});

test("cpuinfo and meminfo parsing", () => {
  const cpu = parseCpuinfo(
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: fpu vmx sse\n\nprocessor\t: 1\n",
  );
  assert.deepEqual(cpu, { vendor: "GenuineIntel", model: "Xeon", virtFlags: ["vmx"] });
  assert.deepEqual(parseCpuinfo("vendor_id : AuthenticAMD\nflags : fpu sse\n").virtFlags, []);
  assert.deepEqual(parseMeminfo("MemTotal:  100 kB\nMemFree:   40 kB\nMemAvailable:  60 kB\n"), {
    total: 100,
    free: 40,
    available: 60,
  });
});

test("accelerator choice follows the measured probe, not /dev/kvm's presence", () => {
  assert.equal(chooseAccelerator("auto", { usable: false, reason: "" }), "tcg");
  assert.equal(chooseAccelerator("auto", { usable: true, reason: "" }), "kvm");
  assert.equal(chooseAccelerator("tcg", { usable: true, reason: "" }), "tcg");
  assert.equal(chooseAccelerator("kvm", { usable: false, reason: "" }), "kvm");
});

test("checks: missing VM components are errors naming the path; hypervisor none skips them", async () => {
  const dir = tempDir();
  try {
    const cfg = defaultConfig();
    cfg.hypervisor.path = join(dir.path, "no-qemu");
    cfg.hypervisor.kernel = join(dir.path, "vmlinux");
    cfg.hypervisor.image = join(dir.path, "guest.img");
    cfg.hypervisor.sharedFs = "virtio-fs";
    cfg.hypervisor.virtioFsDaemon = join(dir.path, "virtiofsd");
    const bad = await runHostChecks(cfg, { probe: slowKvm });
    assert.equal(bad.capable, false);
    assert.equal(bad.accelerator, "tcg");
    const errors = bad.results.filter((r) => r.level === "error").map(formatCheckLine);
    assert.deepEqual(errors, [
      `ERROR qemu: hypervisor binary: missing: ${cfg.hypervisor.path}`,
      `ERROR guest-kernel: guest kernel: missing: ${cfg.hypervisor.kernel}`,
      `ERROR guest-image: guest image: missing: ${cfg.hypervisor.image}`,
    ]);
    // create falls back to 9p without the daemon: a warning, not an error.
    assert.equal(
      formatCheckLine(bad.results.find((r) => r.name === "virtiofsd")!),
      `WARN  virtiofsd: virtio-fs daemon: missing or not executable: ${cfg.hypervisor.virtioFsDaemon}; sandboxes fall back to virtio-9p`,
    );
    assert.equal(bad.results.find((r) => r.name === "kvm")?.level, "warn");

    // Present files turn the errors into info lines; a non-executable "qemu" is still an error.
    for (const f of [cfg.hypervisor.kernel, cfg.hypervisor.image]) writeFileSync(f, "x");
    writeFileSync(cfg.hypervisor.path, "#!/bin/sh\necho 'QEMU emulator version 9.9.9'\n");
    writeFileSync(cfg.hypervisor.virtioFsDaemon, "");
    const noExec = await runHostChecks(cfg, { probe: slowKvm });
    assert.match(
      noExec.results.find((r) => r.name === "qemu")?.message ?? "",
      /not an executable file: .*no-qemu$/,
    );
    chmodSync(cfg.hypervisor.path, 0o755);
    chmodSync(cfg.hypervisor.virtioFsDaemon, 0o755);
    const good = await runHostChecks(cfg, { probe: slowKvm });
    assert.deepEqual(
      good.results.filter((r) => r.level === "error"),
      [],
    );
    assert.equal(good.capable, true);
    assert.equal(good.results.find((r) => r.name === "qemu-version")?.message, "QEMU emulator version 9.9.9");

    // accel = "kvm" on a host where KVM is unusable is a hard error.
    cfg.hypervisor.accel = "kvm";
    const forced = await runHostChecks(cfg, { probe: slowKvm });
    assert.equal(forced.capable, false);
    assert.match(
      forced.results.find((r) => r.name === "kvm")?.message ?? "",
      /^accel = "kvm" configured, but/,
    );
    assert.equal((await runHostChecks(cfg, { probe: fastKvm })).accelerator, "kvm");

    const none = defaultConfig();
    none.runtime.hypervisor = "none";
    none.hypervisor.sharedFs = "virtio-fs";
    none.hypervisor.path = "/nonexistent/qemu";
    const host = await runHostChecks(none, { probe: slowKvm });
    assert.equal(host.capable, true);
    assert.equal(host.accelerator, "none");
    for (const name of ["qemu", "guest-kernel", "guest-image", "virtiofsd"])
      assert.equal(host.results.find((r) => r.name === name)?.level, "skip", name);
    assert.match(host.results.find((r) => r.name === "kvm")?.message ?? "", /0\.7 M iterations\/s/);
  } finally {
    dir.cleanup();
  }
});

test("env: effective config and measured KVM, as TOML that parses back and as JSON", async () => {
  const cfg = defaultConfig();
  cfg.hypervisor.defaultMemory = 777;
  cfg.hypervisor.path = "/nonexistent/qemu";
  const env = await buildEnv(
    { path: "/tmp/c.toml", config: cfg, warnings: ["w"] },
    { runtimePath: "/usr/bin/kata-ts", probe: slowKvm },
  );
  const back = JSON.parse(JSON.stringify(parse(envToToml(env))));
  assert.deepEqual(back, JSON.parse(JSON.stringify(env)));
  const e = back as {
    Runtime: { Config: { Path: string }; Warnings: string[] };
    Hypervisor: { Version: string; Memory: number; Accelerator: { Effective: string } };
    Host: { KVM: { Usable: boolean; MIPS: number }; Cgroups: { Layout: string } };
    Config: { hypervisor: { qemu: { default_memory: number } } };
  };
  assert.equal(e.Runtime.Config.Path, "/tmp/c.toml");
  assert.deepEqual(e.Runtime.Warnings, ["w"]);
  assert.equal(e.Hypervisor.Version, "", "no version, and no error, when the binary is missing");
  assert.equal(e.Hypervisor.Memory, 777);
  assert.equal(e.Hypervisor.Accelerator.Effective, "tcg");
  assert.equal(e.Host.KVM.Usable, false);
  assert.equal(e.Host.KVM.MIPS, 0.7);
  assert.ok(["v1", "hybrid", "v2", "none"].includes(e.Host.Cgroups.Layout));
  assert.equal(e.Config.hypervisor.qemu.default_memory, 777);
});
