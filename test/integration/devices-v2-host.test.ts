// The conformance suite's `devices` case through the real CLI (hypervisor = "none") on a cgroup v2-only
// view of this host: every kata-ts call runs in a private mount namespace where the v1 hierarchies are
// unmounted and cgroup2 is mounted at /sys/fs/cgroup, so the engine picks its v2 driver. The caller's v1
// devices cgroup allows everything, so the EPERM the case asserts for a write open of an `r`-only device
// can only come from the eBPF device filter the v2 driver attached before the workload ran. The harness
// also scans for leaks after delete (processes, mounts, cgroup directories, state).
import assert from "node:assert/strict";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { templateRootfs } from "../conformance/bundle";
import { CASES } from "../conformance/cases";
import { runCase } from "../conformance/harness";
import { KATA_TS_BIN, Runtime } from "../conformance/runtime";
import { tempDir } from "../helpers";

const tmp = tempDir("kata-ts-devv2-");
// A basename starting with "kata" makes the harness pass --config (hypervisor = "none").
const wrapper = join(tmp.path, "kata-ts-v2only");
writeFileSync(
  wrapper,
  `#!/bin/sh
exec unshare -m --propagation private sh -c 'umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec "$0" "$@"' ${KATA_TS_BIN} "$@"
`,
);
chmodSync(wrapper, 0o755);

describe("devices on a cgroup v2-only host (none mode, eBPF device filter)", () => {
  let rt: Runtime;
  before(() => {
    rt = new Runtime(wrapper);
    templateRootfs();
  });
  after(() => {
    rt?.cleanup();
    tmp.cleanup();
  });

  const devices = CASES.find((c) => c.name.startsWith("devices:"));
  test(devices?.name ?? "devices case", async () => {
    assert.ok(devices, "the conformance suite has a devices case");
    const out = await runCase(rt, devices, { check: true });
    // The engine took the v2 path: the container's /sys/fs/cgroup is a cgroup2 mount, not v1 hierarchies.
    const cg = out.report.mount("/sys/fs/cgroup");
    assert.equal(cg?.type, "cgroup2", out.report.all("mount").join("\n"));
    assert.deepEqual(rt.list(), []);
  });
});
