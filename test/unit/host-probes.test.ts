// The host feature probes the integration tests branch on (test/probes.ts), on fake sysfs/cgroup trees:
// each probe gives both answers, so a machine with BFQ and one without (or with and without /dev/kvm,
// hugetlb, cgroup2) are both covered here whichever machine runs the suite.
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { tempDir } from "../helpers";
import {
  blkioWeight,
  capSysResource,
  cgroupLayout,
  executable,
  hardNofile,
  hugepages2M,
  hugetlbHybrid,
  hugetlbV2,
  hybridCgroups,
  ioSchedulers,
  kvmDevice,
  skipUnless,
} from "../probes";

const tmp = tempDir("kata-ts-probes-");
after(() => tmp.cleanup());
let n = 0;

function tree(files: Record<string, string>): string {
  const root = join(tmp.path, `t${++n}`);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  mkdirSync(root, { recursive: true });
  return root;
}

const V1 = ["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio"];
/** A hybrid cgroup root: every v1 controller plus cgroup2 at unified/ with `unified` controllers. */
function hybrid(extra: Record<string, string> = {}, unified = "hugetlb"): string {
  const files: Record<string, string> = { "unified/cgroup.controllers": `${unified}\n`, ...extra };
  for (const c of V1) files[`${c}/cgroup.procs`] = "";
  return tree(files);
}

describe("blkioWeight: CFQ/BFQ weight file in the v1 blkio hierarchy", () => {
  const queues = (sched: string) =>
    tree({ "sda/queue/scheduler": `${sched}\n`, "vda/queue/scheduler": "[none] mq-deadline kyber\n" });

  test("without BFQ (queues offer none mq-deadline kyber): missing, reason names the schedulers", () => {
    const f = blkioWeight(hybrid(), queues("[none] mq-deadline kyber"));
    assert.equal(f.ok, false);
    assert.match(
      skipUnless(f) as string,
      /^no CFQ\/BFQ: block queues offer kyber mq-deadline none; .*\/blkio has no/,
    );
  });

  test("with BFQ (a queue offers bfq; the root cgroup has no bfq file, children do): blkio.bfq.weight", () => {
    const bfq = { ok: true, detail: "blkio.bfq.weight" };
    assert.deepEqual(blkioWeight(hybrid(), queues("mq-deadline kyber [bfq] none")), bfq);
    // Found from a child cgroup too (queues hidden, e.g. no /sys/block in a container).
    const cg = hybrid({ "blkio/kubepods/blkio.bfq.weight": "100\n" });
    assert.deepEqual(blkioWeight(cg, join(tmp.path, "no-sys-block")), bfq);
  });

  test("with CFQ: blkio.weight first", () => {
    const cg = hybrid({ "blkio/blkio.weight": "500\n", "blkio/blkio.bfq.weight": "100\n" });
    assert.deepEqual(blkioWeight(cg, queues("[cfq]")), { ok: true, detail: "blkio.weight" });
  });

  test("no blkio hierarchy at all (v2-only host)", () => {
    const f = blkioWeight(tree({ "cgroup.controllers": "io memory\n" }), queues("[bfq]"));
    assert.equal(f.ok, false);
    assert.match(skipUnless(f) as string, /^no cgroup v1 blkio hierarchy at /);
  });

  test("ioSchedulers: union of every queue's choices, the active one unbracketed", () => {
    assert.deepEqual(ioSchedulers(queues("mq-deadline [bfq]")), ["bfq", "kyber", "mq-deadline", "none"]);
    assert.deepEqual(ioSchedulers(join(tmp.path, "nonexistent")), []);
  });
});

describe("cgroup layout and hugetlb", () => {
  test("layout: v2 (cgroup.controllers at the root), hybrid (at unified/), v1", () => {
    assert.equal(cgroupLayout(tree({ "cgroup.controllers": "" })), "v2");
    assert.equal(cgroupLayout(hybrid()), "hybrid");
    assert.equal(cgroupLayout(tree({ "memory/cgroup.procs": "" })), "v1");
    assert.deepEqual(hybridCgroups(hybrid()).ok, true);
    assert.match(skipUnless(hybridCgroups(tree({ "cgroup.controllers": "" }))) as string, /layout is v2/);
    assert.match(
      skipUnless(hybridCgroups(tree({ "unified/cgroup.controllers": "", "cpu/cgroup.procs": "" }))) as string,
      /no cgroup v1 cpuacct hierarchy/,
    );
  });

  test("hugetlb: v1 hierarchy, else the hybrid layout's cgroup2 tree, else missing", () => {
    assert.deepEqual(hugetlbHybrid(hybrid({ "hugetlb/cgroup.procs": "" }, "")), {
      ok: true,
      detail: "hugetlb v1",
    });
    assert.equal(hugetlbHybrid(hybrid({}, "hugetlb")).ok, true);
    assert.match(
      skipUnless(hugetlbHybrid(hybrid({}, "misc"))) as string,
      /no hugetlb v1 hierarchy and no hugetlb in/,
    );
  });

  test("hugetlbV2 needs the controller and 2 MiB pages", () => {
    const mm = tree({ "hugepages/hugepages-2048kB/nr_hugepages": "0\n" });
    const noPages = tree({ "hugepages/hugepages-1048576kB/nr_hugepages": "0\n" });
    const uni = tree({ "cgroup.controllers": "hugetlb\n" });
    assert.equal(hugetlbV2(uni, mm).ok, true);
    assert.match(skipUnless(hugetlbV2(uni, noPages)) as string, /no 2 MiB huge pages/);
    assert.match(skipUnless(hugetlbV2(tree({ "cgroup.controllers": "pids\n" }), mm)) as string, /not among/);
    assert.match(skipUnless(hugetlbV2(join(tmp.path, "none"), mm)) as string, /no cgroup2 hierarchy/);
    assert.equal(hugepages2M(noPages).ok, false);
  });
});

describe("kvmDevice and executables", () => {
  test("/dev/kvm present and emulated (kvm_pvm), present and real, absent", () => {
    const dev = tree({ kvm: "" });
    const pvm = tree({ "kvm_pvm/refcnt": "1\n", "kvm/refcnt": "1\n" });
    const real = tree({ "kvm_intel/refcnt": "1\n" });
    assert.deepEqual(
      [kvmDevice(join(dev, "kvm"), pvm).present, kvmDevice(join(dev, "kvm"), pvm).emulated],
      [true, true],
    );
    assert.equal(kvmDevice(join(dev, "kvm"), real).emulated, false);
    // A host whose kernel has kvm_pvm but no device node: absent, not emulated.
    const absent = kvmDevice(join(dev, "nokvm"), pvm);
    assert.deepEqual([absent.present, absent.emulated], [false, false]);
    assert.match(skipUnless(absent.finding) as string, /nokvm does not exist$/);
  });

  test("CAP_SYS_RESOURCE from CapBnd, hard nofile from limits", () => {
    const d = tree({
      without: "Name:\tx\nCapBnd:\t000001fffeffffff\n",
      with: "CapBnd:\t000001ffffffffff\n",
      limits:
        "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 20000                files\n",
      unlimited: "Max open files            1024                 unlimited            files\n",
    });
    assert.match(skipUnless(capSysResource(join(d, "without"))) as string, /lacks CAP_SYS_RESOURCE/);
    assert.equal(capSysResource(join(d, "with")).ok, true);
    assert.equal(hardNofile(join(d, "limits")), 20000);
    assert.equal(hardNofile(join(d, "unlimited")), Number.POSITIVE_INFINITY);
  });

  test("executable: the file must exist and be executable", () => {
    const d = tree({ plain: "" });
    writeFileSync(join(d, "tool"), "#!/bin/sh\n", { mode: 0o755 });
    assert.equal(executable(join(d, "tool")).ok, true);
    assert.match(skipUnless(executable(join(d, "plain"), "plain")) as string, /^plain is not installed/);
    assert.equal(skipUnless(executable(join(d, "tool"))), false);
  });
});
