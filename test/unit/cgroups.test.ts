// Cgroup manager logic on fake cgroup trees (plain directories with the control files a kernel would
// create): paths, layouts, file names, values, conversions, write order and errors, for v1 and v2.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  blkioToIoWeight,
  cgroupManagerFor,
  cgroupManagerFromState,
  cleanPath,
  expandSlice,
  innerPath,
  observeCgroupWrites,
  ownCgroupDir,
  parseMountinfo,
  parseProcCgroup,
  resolvePaths,
  runcStatsData,
  sharesToWeight,
  statsEvent,
  stringifyExact,
  swapToV2,
  systemdCgroupPath,
} from "../../src/engine/cgroups";
import { deviceFilterProgram } from "../../src/engine/cgroups/devicefilter";
import { effectiveDeviceRules } from "../../src/engine/cgroups/devices";
import { tempDir } from "../helpers";

const temps: (() => void)[] = [];
after(() => {
  for (const c of temps) c();
});

function tmp(): string {
  const t = tempDir("kata-ts-cgfake-");
  temps.push(t.cleanup);
  return t.path;
}

function files(dir: string, content: Record<string, string>): void {
  mkdirSync(dir, { recursive: true });
  for (const [f, v] of Object.entries(content)) writeFileSync(join(dir, f), v);
}

const read = (p: string) => readFileSync(p, "utf8");

/** Records control-file writes (path relative to root) while fn runs. */
function recordWrites(root: string, fn: () => void): [string, string][] {
  const seen: [string, string][] = [];
  const prev = observeCgroupWrites((p, v) => seen.push([p.slice(root.length + 1), v]));
  try {
    fn();
  } finally {
    observeCgroupWrites(prev);
  }
  return seen;
}

const V1_FILES: Record<string, Record<string, string>> = {
  cpu: {
    "cpu.shares": "1024\n",
    "cpu.cfs_quota_us": "-1\n",
    "cpu.cfs_period_us": "100000\n",
    "cpu.cfs_burst_us": "0\n",
    "cpu.rt_period_us": "1000000\n",
    "cpu.rt_runtime_us": "0\n",
    "cpu.stat": "nr_periods 7\nnr_throttled 2\nthrottled_time 12345\n",
  },
  cpuacct: {
    "cpuacct.usage": "5000000000\n",
    "cpuacct.usage_percpu": "3000000000 2000000000 \n",
    "cpuacct.stat": "user 300\nsystem 200\n",
    "cpuacct.usage_all": "cpu user system\n0 2000 1000\n1 1500 500\n",
  },
  cpuset: { "cpuset.cpus": "", "cpuset.mems": "" },
  memory: {
    "memory.limit_in_bytes": "9223372036854771712\n",
    "memory.memsw.limit_in_bytes": "9223372036854771712\n",
    "memory.soft_limit_in_bytes": "",
    "memory.swappiness": "60\n",
    "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    "memory.usage_in_bytes": "4096\n",
    "memory.max_usage_in_bytes": "8192\n",
    "memory.failcnt": "1\n",
    "memory.kmem.tcp.limit_in_bytes": "",
    "memory.stat": "cache 100\nrss 200\n",
  },
  devices: { "devices.allow": "", "devices.deny": "" },
  freezer: { "freezer.state": "THAWED\n" },
  blkio: {
    "blkio.throttle.read_bps_device": "",
    "blkio.throttle.write_iops_device": "",
    "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 512\nTotal 4608\n",
    "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
  },
  pids: { "pids.max": "max\n", "pids.current": "2\n" },
  systemd: {},
};

/** A v1 tree with the container's directories already made (as the kernel would populate them). */
function fakeV1(inner: string, opts: { parentCpuset?: boolean } = {}): string {
  const root = tmp();
  for (const [h, f] of Object.entries(V1_FILES)) {
    files(join(root, h), h === "cpuset" ? { "cpuset.cpus": "0-3\n", "cpuset.mems": "0\n" } : {});
    files(join(root, h, inner), { "cgroup.procs": "", ...f });
  }
  if (opts.parentCpuset) files(join(root, "cpuset", inner, ".."), { "cpuset.cpus": "", "cpuset.mems": "" });
  return root;
}

function fakeV2(inner: string, extra: Record<string, string> = {}): string {
  const root = tmp();
  files(root, {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids\n",
    "cgroup.subtree_control": "",
    "cgroup.procs": "",
  });
  const leaf = join(root, inner);
  files(leaf, {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids\n",
    "cgroup.procs": "",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.freeze": "0\n",
    "cpu.weight": "100\n",
    "cpu.max": "max 100000\n",
    "cpu.max.burst": "0\n",
    "cpuset.cpus": "",
    "cpuset.mems": "",
    "memory.max": "max\n",
    "memory.low": "0\n",
    "memory.swap.max": "max\n",
    "pids.max": "max\n",
    "io.weight": "default 100\n",
    "io.max": "",
    "hugetlb.2MB.max": "max\n",
    ...extra,
  });
  return root;
}

describe("layout detection", () => {
  const hybrid = [
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd",
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate",
  ].join("\n");

  test("hybrid: v1 controllers (co-mounted share a hierarchy) plus the cgroup2 mount", () => {
    const l = parseMountinfo(hybrid);
    assert.equal(l.mode, "hybrid");
    assert.equal(l.v1.cpu?.mountpoint, "/sys/fs/cgroup/cpu,cpuacct");
    assert.equal(l.v1.cpuacct?.mountpoint, "/sys/fs/cgroup/cpu,cpuacct");
    assert.equal(l.v1["name=systemd"]?.mountpoint, "/sys/fs/cgroup/systemd");
    assert.equal(l.v1.xattr, undefined);
    assert.equal(l.unified?.mountpoint, "/sys/fs/cgroup/unified");
  });

  test("v2 only, v1 only, escaped mount points, and a cgroup-namespace mount root", () => {
    const v2 = parseMountinfo("29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
    assert.equal(v2.mode, "v2");
    assert.deepEqual(v2.v1, {});
    const v1 = parseMountinfo("32 31 0:29 /kids /my\\040cg rw - cgroup cgroup rw,memory\n");
    assert.equal(v1.mode, "v1");
    assert.deepEqual(v1.v1.memory, { mountpoint: "/my cg", root: "/kids" });
    // Only name=systemd and a cgroup2 mount: that is a v2 host for our purposes.
    assert.equal(parseMountinfo(`${hybrid.split("\n")[3]}\n${hybrid.split("\n")[4]}`).mode, "v2");
  });

  test("/proc/self/cgroup", () => {
    const own = parseProcCgroup("4:memory:/a/b\n2:cpu,cpuacct:/c\n1:name=systemd:/s\n0::/u\n");
    assert.deepEqual(own.v1, { memory: "/a/b", cpu: "/c", cpuacct: "/c", "name=systemd": "/s" });
    assert.equal(own.unified, "/u");
  });

  test("a fake root: subdirectories are v1 hierarchies, a cgroup.controllers file makes it v2", () => {
    const v1root = fakeV1("x");
    const m = cgroupManagerFor({ id: "c1", root: v1root });
    assert.equal(m.mode, "v1");
    assert.equal(m.paths.memory, join(v1root, "memory", "c1"));
    assert.equal(m.paths["name=systemd"], join(v1root, "systemd", "c1"));
    const v2root = fakeV2("x");
    const m2 = cgroupManagerFor({ id: "c1", root: v2root });
    assert.equal(m2.mode, "v2");
    assert.deepEqual(m2.paths, { unified: join(v2root, "c1") });
  });
});

describe("cgroupsPath semantics (runc's)", () => {
  test("cleanPath keeps a relative path from climbing out of its base", () => {
    assert.equal(cleanPath("../a/../../b/"), "b");
    assert.equal(cleanPath("/a//b/../c"), "/a/c");
    assert.equal(cleanPath(""), "");
  });

  test("empty path = the id relative to our own cgroup; the own cgroup itself is refused", () => {
    assert.equal(innerPath({ id: "abc" }), "abc");
    assert.equal(innerPath({ id: "abc", cgroupsPath: "/x/y" }), "/x/y");
    assert.throws(() => innerPath({ id: "abc", cgroupsPath: "." }), /own or the root cgroup/);
  });

  test("relative paths resolve under our own cgroup per hierarchy; on v2 under its parent", () => {
    const v1 = parseMountinfo(
      "1 0 0:1 / /cg/memory rw - cgroup cgroup rw,memory\n2 0 0:2 / /cg/pids rw - cgroup cgroup rw,pids\n",
    );
    const own = parseProcCgroup("4:memory:/runtime/me\n3:pids:/\n");
    assert.deepEqual(resolvePaths("ctr", v1, own), {
      memory: "/cg/memory/runtime/me/ctr",
      pids: "/cg/pids/ctr",
    });
    assert.deepEqual(resolvePaths("/abs/ctr", v1, own), {
      memory: "/cg/memory/abs/ctr",
      pids: "/cg/pids/abs/ctr",
    });
    const v2 = parseMountinfo("1 0 0:1 / /cg rw - cgroup2 cgroup2 rw\n");
    assert.deepEqual(resolvePaths("ctr", v2, parseProcCgroup("0::/user.slice/session-1.scope\n")), {
      unified: "/cg/user.slice/ctr",
    });
  });

  test("a cgroup-namespace mount root is stripped from our own path", () => {
    const l = parseMountinfo("1 0 0:1 /outer /cg/memory rw - cgroup cgroup rw,memory\n");
    assert.deepEqual(resolvePaths("ctr", l, parseProcCgroup("4:memory:/outer/me\n")), {
      memory: "/cg/memory/me/ctr",
    });
  });

  test("our own cgroup directory, where the join priming writes: unified on v2, pids (or any) on v1", () => {
    const hybrid = parseMountinfo(
      "1 0 0:1 / /cg/memory rw - cgroup cgroup rw,memory\n2 0 0:2 /outer /cg/pids rw - cgroup cgroup rw,pids\n" +
        "3 0 0:3 / /cg/unified rw - cgroup2 cgroup2 rw\n",
    );
    const own = parseProcCgroup("4:memory:/m\n3:pids:/outer/me\n0::/u\n");
    assert.equal(ownCgroupDir(hybrid, own), "/cg/pids/me", "pids, with the mount's root stripped");
    const noPids = parseMountinfo("1 0 0:1 / /cg/memory rw - cgroup cgroup rw,memory\n");
    assert.equal(ownCgroupDir(noPids, parseProcCgroup("4:memory:/m\n")), "/cg/memory/m");
    const v2 = parseMountinfo("1 0 0:1 / /cg rw - cgroup2 cgroup2 rw\n");
    assert.equal(ownCgroupDir(v2, parseProcCgroup("0::/user.slice/s.scope\n")), "/cg/user.slice/s.scope");
    assert.equal(ownCgroupDir(parseMountinfo(""), parseProcCgroup("")), undefined);
  });

  test("systemd slice:prefix:name maps to <slice path>/<prefix>-<name>.scope", () => {
    assert.equal(expandSlice("system.slice"), "/system.slice");
    assert.equal(expandSlice("user-1000.slice"), "/user.slice/user-1000.slice");
    assert.equal(expandSlice("-.slice"), "/");
    assert.throws(() => expandSlice("a--b.slice"), /invalid slice name/);
    assert.throws(() => expandSlice("nope"), /invalid slice name/);
    assert.equal(systemdCgroupPath("system.slice:docker:abc", "id"), "/system.slice/docker-abc.scope");
    assert.equal(
      systemdCgroupPath("machine-x.slice:libpod:abc", "id"),
      "/machine.slice/machine-x.slice/libpod-abc.scope",
    );
    assert.equal(systemdCgroupPath(":crio:abc", "id"), "/system.slice/crio-abc.scope");
    assert.equal(systemdCgroupPath("", "id"), "/system.slice/kata-ts-id.scope");
    assert.equal(systemdCgroupPath("system.slice:x:my.slice", "id"), "/system.slice/my.slice");
    assert.throws(
      () => systemdCgroupPath("system.slice:abc", "id"),
      /expected cgroupsPath to be of format "slice:prefix:name"/,
    );
    const root = fakeV1("x");
    const m = cgroupManagerFor({ id: "c", cgroupsPath: "system.slice:kata:c", systemd: true, root });
    assert.equal(m.paths.memory, join(root, "memory/system.slice/kata-c.scope"));
  });
});

describe("conversions (runc's formulas)", () => {
  test("cpu shares → cpu.weight", () => {
    assert.equal(sharesToWeight(2), 1);
    assert.equal(sharesToWeight(1024), 39);
    assert.equal(sharesToWeight(262144), 10000);
    assert.equal(sharesToWeight(0), 0);
  });
  test("blkio weight → io.weight", () => {
    assert.equal(blkioToIoWeight(10), 1);
    assert.equal(blkioToIoWeight(500), 4950);
    assert.equal(blkioToIoWeight(1000), 10000);
  });
  test("memory+swap → swap-only", () => {
    assert.equal(swapToV2(0, -1), -1);
    assert.equal(swapToV2(-1, 100), -1);
    assert.equal(swapToV2(0, 100), 0);
    assert.equal(swapToV2(300, 100), 200);
    assert.throws(() => swapToV2(50, 100), /memory\+swap limit should be >= memory limit/);
    assert.throws(() => swapToV2(300, 0), /unable to set swap limit without memory limit/);
  });
});

describe("v1 manager (fake tree)", () => {
  test("create copies cpuset cpus/mems from the nearest configured ancestor, top-down", () => {
    const root = fakeV1("pod/c1", { parentCpuset: true });
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/pod/c1", root });
    m.create();
    assert.equal(read(join(root, "cpuset/pod/cpuset.cpus")), "0-3");
    assert.equal(read(join(root, "cpuset/pod/c1/cpuset.cpus")), "0-3");
    assert.equal(read(join(root, "cpuset/pod/c1/cpuset.mems")), "0");
  });

  test("set writes every v1 file with the right value, in runc's order", () => {
    const root = fakeV1("c1");
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/c1", root });
    const writes = recordWrites(root, () =>
      m.set({
        cpu: {
          shares: 512,
          quota: 50000,
          period: 100000,
          burst: 1000,
          cpus: "1",
          mems: "0",
          realtimePeriod: 1000000,
          realtimeRuntime: 5000,
        },
        memory: {
          limit: 64 << 20,
          swap: 128 << 20,
          reservation: 32 << 20,
          swappiness: 10,
          disableOOMKiller: true,
          kernelTCP: 1 << 20,
        },
        pids: { limit: 100 },
        blockIO: {
          throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1048576 }],
          throttleWriteIOPSDevice: [{ major: 8, minor: 16, rate: 50 }],
        },
        devices: [
          { allow: false, access: "rwm" },
          { allow: true, type: "c", major: 4, minor: -1, access: "rw" },
        ],
      }),
    );
    const files = writes.map(([f]) => f);
    assert.deepEqual(
      writes.filter(([f]) => f.startsWith("memory/")),
      [
        // raising: memsw (currently "unlimited" > new) must be... current limit 2^63 is not < swap → limit first
        ["memory/c1/memory.limit_in_bytes", String(64 << 20)],
        ["memory/c1/memory.memsw.limit_in_bytes", String(128 << 20)],
        ["memory/c1/memory.soft_limit_in_bytes", String(32 << 20)],
        ["memory/c1/memory.kmem.tcp.limit_in_bytes", String(1 << 20)],
        ["memory/c1/memory.oom_control", "1"],
        ["memory/c1/memory.swappiness", "10"],
      ],
    );
    assert.deepEqual(
      writes.filter(([f]) => f.startsWith("cpu/")),
      [
        ["cpu/c1/cpu.shares", "512"],
        ["cpu/c1/cpu.cfs_period_us", "100000"],
        ["cpu/c1/cpu.cfs_quota_us", "50000"],
        ["cpu/c1/cpu.cfs_burst_us", "1000"],
        ["cpu/c1/cpu.rt_period_us", "1000000"],
        ["cpu/c1/cpu.rt_runtime_us", "5000"],
      ],
    );
    assert.equal(read(join(root, "cpuset/c1/cpuset.cpus")), "1");
    assert.equal(read(join(root, "pids/c1/pids.max")), "100");
    assert.equal(read(join(root, "blkio/c1/blkio.throttle.read_bps_device")), "8:0 1048576");
    assert.equal(read(join(root, "blkio/c1/blkio.throttle.write_iops_device")), "8:16 50");
    // Devices: deny all, then the spec's rules, then runc's default allow-list.
    const dev = writes
      .filter(([f]) => f.startsWith("devices/"))
      .map(([f, v]) => `${f.split("/").pop()} ${v}`);
    assert.deepEqual(dev.slice(0, 5), [
      "devices.deny a",
      "devices.deny a *:* rwm",
      "devices.allow c 4:* rw",
      "devices.allow c *:* m",
      "devices.allow b *:* m",
    ]);
    assert.ok(dev.includes("devices.allow c 1:3 rwm"), "/dev/null allowed");
    assert.ok(dev.includes("devices.allow c 136:* rwm"), "/dev/pts allowed");
    // cpuset before devices before memory before cpu (runc's subsystem order).
    const first = (p: string) => files.findIndex((f) => f.startsWith(p));
    assert.ok(
      first("cpuset/") < first("devices/") &&
        first("devices/") < first("memory/") &&
        first("memory/") < first("cpu/c1"),
    );
  });

  test("memory: lowering below the current limit writes the limit first, raising writes memsw first", () => {
    const root = fakeV1("c1");
    writeFileSync(join(root, "memory/c1/memory.limit_in_bytes"), String(64 << 20));
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/c1", root });
    const up = recordWrites(root, () => m.update({ memory: { limit: 256 << 20, swap: 512 << 20 } }));
    assert.deepEqual(
      up.map(([f]) => f.split("/").pop()),
      ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"],
    );
    writeFileSync(join(root, "memory/c1/memory.limit_in_bytes"), String(256 << 20));
    const down = recordWrites(root, () => m.update({ memory: { limit: 32 << 20, swap: 64 << 20 } }));
    assert.deepEqual(
      down.map(([f]) => f.split("/").pop()),
      ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
    );
    // -1 limit without swap also lifts swap (memsw would otherwise stay below "unlimited").
    const unl = recordWrites(root, () => m.update({ memory: { limit: -1 } }));
    assert.deepEqual(unl, [
      ["memory/c1/memory.memsw.limit_in_bytes", "-1"],
      ["memory/c1/memory.limit_in_bytes", "-1"],
    ]);
  });

  test("update() never touches device rules; set() always does", () => {
    const root = fakeV1("c1");
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/c1", root });
    const w = recordWrites(root, () =>
      m.update({ pids: { limit: 5 }, devices: [{ allow: true, access: "rwm" }] }),
    );
    assert.deepEqual(w, [["pids/c1/pids.max", "5"]]);
    const w2 = recordWrites(root, () => m.set({}));
    assert.equal(w2[0]?.[0], "devices/c1/devices.deny");
  });

  test("negative pids limit means unlimited; zero leaves it alone", () => {
    const root = fakeV1("c1");
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/c1", root });
    m.update({ pids: { limit: -1 } });
    assert.equal(read(join(root, "pids/c1/pids.max")), "max");
    assert.deepEqual(
      recordWrites(root, () => m.update({ pids: { limit: 0 } })),
      [],
    );
  });

  test("unavailable features are errors that say why, never a silent skip", () => {
    const root = fakeV1("c1");
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/c1", root });
    assert.throws(
      () => m.update({ blockIO: { weight: 500 } }),
      /blkio weight requested but neither blkio.weight nor blkio.bfq.weight exists/,
    );
    assert.throws(
      () => m.update({ hugepageLimits: [{ pageSize: "2MB", limit: 1 << 21 }] }),
      /hugetlb cgroup controller is not available/,
    );
    assert.throws(() => m.update({ memory: { swappiness: 101 } }), /invalid memory swappiness value: 101/);
    assert.throws(() => m.update({ unified: { "memory.high": "1" } }), /cannot use unified on cgroup v1/);
    assert.throws(() => m.update({ network: { classID: 1 } }), /net_cls cgroup controller is not available/);
    // BFQ's weight file is used when the CFQ one is absent (what this machine's kernel offers).
    writeFileSync(join(root, "blkio/c1/blkio.bfq.weight"), "100\n");
    m.update({ blockIO: { weight: 500 } });
    assert.equal(read(join(root, "blkio/c1/blkio.bfq.weight")), "500");
  });

  test("apply writes the pid to every hierarchy, realtime budget first", () => {
    const root = fakeV1("c1");
    const m = cgroupManagerFor({
      id: "c1",
      cgroupsPath: "/c1",
      root,
      resources: { cpu: { realtimeRuntime: 1000, realtimePeriod: 10000 } },
    });
    const w = recordWrites(root, () => m.apply(4242));
    assert.deepEqual(w.slice(0, 2), [
      ["cpu/c1/cpu.rt_period_us", "10000"],
      ["cpu/c1/cpu.rt_runtime_us", "1000"],
    ]);
    const procs = w.filter(([f]) => f.endsWith("cgroup.procs"));
    assert.equal(procs.length, Object.keys(V1_FILES).length);
    assert.ok(procs.every(([, v]) => v === "4242"));
  });

  test("freezer, pids (recursive), oom count, stats in runc's shape", () => {
    const root = fakeV1("c1");
    files(join(root, "pids/c1"), { "cgroup.procs": "30\n10\n" });
    files(join(root, "pids/c1/sub"), { "cgroup.procs": "20\n" });
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/c1", root });
    m.freeze();
    assert.equal(read(join(root, "freezer/c1/freezer.state")), "FROZEN");
    assert.equal(m.frozen(), true);
    m.thaw();
    assert.equal(m.frozen(), false);
    assert.deepEqual(m.pids(), [10, 20, 30]);
    assert.equal(m.oomKills(), 3);
    // biome-ignore lint/suspicious/noExplicitAny: parsed JSON checked field by field
    const d = runcStatsData(m.stats()) as any;
    assert.equal(d.cpu.usage.total, 5000000000);
    assert.deepEqual(d.cpu.usage.percpu, [3000000000, 2000000000]);
    assert.equal(d.cpu.usage.user, 3000000000); // 300 ticks at USER_HZ 100
    assert.equal(d.cpu.usage.kernel, 2000000000);
    assert.deepEqual(d.cpu.usage.percpu_user, [2000, 1500]);
    assert.deepEqual(d.cpu.throttling, { periods: 7, throttledPeriods: 2, throttledTime: 12345 });
    assert.equal(d.memory.cache, 100);
    assert.deepEqual(d.memory.usage, { limit: 9223372036854771712n, usage: 4096, max: 8192, failcnt: 1 });
    assert.deepEqual(d.pids, { current: 2, limit: undefined });
    assert.deepEqual(d.blkio.ioServiceBytesRecursive, [
      { major: 8, minor: undefined, op: "Read", value: 4096 },
      { major: 8, minor: undefined, op: "Write", value: 512 },
    ]);
    const json = statsEvent("c1", m.stats());
    assert.match(json, /^\{"type":"stats","id":"c1","data":\{"cpu":/);
    assert.match(json, /"usage":\{"limit":9223372036854771712,"usage":4096,"max":8192,"failcnt":1\}/);
    assert.match(json, /"pids":\{"current":2\}/);
  });

  test("save/fromState round trip; destroy removes the leaves and only the parents it made", () => {
    const root = fakeV1("keep");
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/keep/pod/c1", root });
    m.create();
    const saved = JSON.parse(JSON.stringify(m.save()));
    assert.equal(saved.mode, "v1");
    assert.ok(saved.created.includes(join(root, "memory/keep/pod")));
    assert.ok(!saved.created.includes(join(root, "memory/keep")), "pre-existing parent not recorded");
    const again = cgroupManagerFromState(saved);
    assert.deepEqual(again.paths, m.paths);
    again.destroy();
    assert.equal(existsSync(join(root, "memory/keep/pod")), false);
    assert.equal(existsSync(join(root, "memory/keep")), true);
    assert.throws(() => cgroupManagerFromState(undefined), /no usable cgroup state/);
  });
});

describe("v2 manager (fake tree)", () => {
  test("create makes the leaf and enables the root's controllers in every parent", () => {
    const root = fakeV2("other");
    files(join(root, "pod"), { "cgroup.controllers": "", "cgroup.subtree_control": "" });
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/pod/c1", root });
    const w = recordWrites(root, () => m.create());
    assert.deepEqual(w, [
      ["cgroup.subtree_control", "+cpuset +cpu +io +memory +hugetlb +pids"],
      ["pod/cgroup.subtree_control", "+cpuset +cpu +io +memory +hugetlb +pids"],
    ]);
    assert.ok(existsSync(join(root, "pod/c1")));
  });

  test("set writes v2 files with converted values", () => {
    const root = fakeV2("c1", { "memory.high": "max\n" });
    const warnings: string[] = [];
    const filters: [string, Buffer][] = [];
    const m = cgroupManagerFor({
      id: "c1",
      cgroupsPath: "/c1",
      root,
      warn: (w) => warnings.push(w),
      deviceFilter: (dir, program) => filters.push([dir, program]),
    });
    const w = recordWrites(root, () =>
      m.set({
        cpu: { shares: 1024, quota: 50000, period: 100000, burst: 10, cpus: "0-1", mems: "0" },
        memory: { limit: 100 << 20, swap: 300 << 20, reservation: 50 << 20, swappiness: 5 },
        pids: { limit: 64 },
        blockIO: {
          weight: 500,
          throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1000 }],
          throttleWriteIOPSDevice: [{ major: 8, minor: 0, rate: 7 }],
        },
        hugepageLimits: [{ pageSize: "2MB", limit: 4 << 20 }],
        unified: { "memory.high": "90000000" },
      }),
    );
    const m2 = new Map(w.map(([f, v]) => [f, v]));
    assert.equal(m2.get("c1/cpu.weight"), "39");
    assert.equal(m2.get("c1/cpu.max"), "50000 100000");
    assert.equal(m2.get("c1/cpu.max.burst"), "10");
    assert.equal(m2.get("c1/cpuset.cpus"), "0-1");
    assert.equal(m2.get("c1/memory.swap.max"), String(200 << 20));
    assert.equal(m2.get("c1/memory.max"), String(100 << 20));
    assert.equal(m2.get("c1/memory.low"), String(50 << 20));
    assert.equal(m2.get("c1/pids.max"), "64");
    assert.equal(m2.get("c1/io.weight"), "4950");
    assert.deepEqual(
      w.filter(([f]) => f === "c1/io.max").map(([, v]) => v),
      ["8:0 rbps=1000", "8:0 wiops=7"],
    );
    assert.equal(m2.get("c1/hugetlb.2MB.max"), String(4 << 20));
    assert.equal(read(join(root, "c1/memory.high")), "90000000"); // unified: verbatim
    // swap before memory (runc's fs2 order); unified last.
    const order = w.map(([f]) => f);
    assert.ok(order.indexOf("c1/memory.swap.max") < order.indexOf("c1/memory.max"));
    assert.equal(order.at(-1), "c1/memory.high");
    assert.ok(warnings.some((x) => /swappiness/.test(x)));
    // Device rules (runc's defaults here) become one eBPF program for the container's directory.
    assert.deepEqual(filters, [[join(root, "c1"), deviceFilterProgram(effectiveDeviceRules(undefined))]]);
    assert.ok(!warnings.some((x) => /device/.test(x)), warnings.join("; "));
  });

  test("v2 device rules: set() replaces the filter, update() leaves it, a refusal is one named error", () => {
    const root = fakeV2("c1");
    const filters: Buffer[] = [];
    let refuse = false;
    const m = cgroupManagerFor({
      id: "c1",
      cgroupsPath: "/c1",
      root,
      deviceFilter: (_dir, program) => {
        if (refuse) throw new Error("unable to load the cgroup v2 device filter (eBPF) into /x: EPERM");
        filters.push(program);
      },
    });
    const loopctlR = { allow: true, type: "c", major: 10, minor: 237, access: "r" };
    m.set({ devices: [{ allow: false, access: "rwm" }, loopctlR] });
    m.update({ pids: { limit: 5 }, devices: [{ allow: true, access: "rwm" }] });
    m.set({ devices: [{ allow: true, access: "rwm" }] });
    assert.deepEqual(filters, [
      deviceFilterProgram(effectiveDeviceRules([{ allow: false, access: "rwm" }, loopctlR])),
      deviceFilterProgram(effectiveDeviceRules([{ allow: true, access: "rwm" }])),
    ]);
    assert.throws(
      () =>
        m.set({
          devices: [
            { allow: true, type: "c", major: 1 },
            { allow: false, type: "c", major: 1, minor: 3 },
          ],
        }),
      /cannot punch a hole/,
    );
    refuse = true;
    assert.throws(
      () => m.set({}),
      /^Error: unable to load the cgroup v2 device filter \(eBPF\) into \/x: EPERM$/,
    );
  });

  test("v2 errors: realtime, unknown unified keys, unavailable controllers, swap below memory", () => {
    const root = fakeV2("c1", { "memory.high": "max\n" });
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/c1", root });
    assert.throws(
      () => m.update({ cpu: { realtimeRuntime: 1 } }),
      /realtime cpu budgets .* not supported on cgroup v2/,
    );
    assert.throws(
      () => m.update({ unified: { "rdma.max": "x" } }),
      /unified resource "rdma.max" can't be set: controller "rdma" not available/,
    );
    assert.throws(
      () => m.update({ unified: { "memory.nope": "1" } }),
      /unified resource "memory.nope" can't be found/,
    );
    assert.throws(() => m.update({ unified: { "../x": "1" } }), /must be a file name/);
    assert.throws(
      () => m.update({ memory: { limit: 100, swap: 50 } }),
      /memory\+swap limit should be >= memory limit/,
    );
    assert.throws(
      () => m.update({ hugepageLimits: [{ pageSize: "1GB", limit: 1 }] }),
      /hugetlb.1GB.max requested but the hugetlb controller is not enabled/,
    );
    // memory == memory+swap: swap off.
    m.update({ memory: { limit: 100, swap: 100 } });
    assert.equal(read(join(root, "c1/memory.swap.max")), "0");
  });

  test("v2 stats: cpu.stat µs → ns, swap reported as memory+swap, io.stat as Read/Write entries", () => {
    const root = fakeV2("c1", {
      "cpu.stat":
        "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 3\n",
      "memory.current": "1000\n",
      "memory.peak": "5000\n",
      "memory.swap.current": "24\n",
      "memory.swap.max": "76\n",
      "memory.max": "2000\n",
      "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
      "memory.stat": "anon 10\nfile 20\n",
      "pids.current": "3\n",
      "pids.max": "10\n",
      "io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n",
    });
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/c1", root });
    const s = m.stats();
    assert.equal(s.cpu.usage.total, 2000000);
    assert.equal(s.cpu.usage.user, 1500000);
    assert.equal(s.cpu.throttling.throttledTime, 3000);
    assert.deepEqual(s.memory.usage, { usage: 1000, max: 5000, limit: 2000, failcnt: 2 });
    assert.equal(s.memory.swap.usage, 1024);
    assert.equal(s.memory.swap.limit, 2076);
    assert.equal(s.memory.cache, 20);
    assert.deepEqual(s.pids, { current: 3, limit: 10 });
    assert.deepEqual(s.blkio.ioServiceBytesRecursive, [
      { major: 8, minor: 0, op: "Read", value: 100 },
      { major: 8, minor: 0, op: "Write", value: 200 },
    ]);
    assert.equal(m.oomKills(), 1);
  });

  test("v2 freeze polls cgroup.events", () => {
    const root = fakeV2("c1", { "cgroup.events": "populated 1\nfrozen 1\n" });
    const m = cgroupManagerFor({ id: "c1", cgroupsPath: "/c1", root });
    m.freeze();
    assert.equal(read(join(root, "c1/cgroup.freeze")), "1");
    assert.equal(m.frozen(), true);
  });
});

test("stringifyExact prints bigints as exact JSON numbers", () => {
  assert.equal(
    stringifyExact({ a: 18446744073709551615n, b: [1n, 2] }),
    '{"a":18446744073709551615,"b":[1,2]}',
  );
});
