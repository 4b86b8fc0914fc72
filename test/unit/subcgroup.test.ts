// exec --cgroup argument rules (runc 1.1's getSubCgroupPaths and SubCgroupPaths checks), on paths only.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkUnifiedSupported, parseSubCgroupArgs, subCgroupDirs } from "../../src/engine/cgroups";

const v1 = {
  cpu: "/cg/cpu,cpuacct/c",
  cpuacct: "/cg/cpu,cpuacct/c",
  pids: "/cg/pids/c",
  "name=systemd": "/cg/systemd/c",
  unified: "/cg/unified/c",
};

describe("exec --cgroup", () => {
  test("parsing: one bare path, or controller-prefixed ones (comma lists), as runc", () => {
    assert.equal(parseSubCgroupArgs([]), undefined);
    assert.deepEqual(parseSubCgroupArgs(["sub"]), { "": "sub" });
    assert.deepEqual(parseSubCgroupArgs(["cpu,pids:a", "name=systemd:b"]), {
      cpu: "a",
      pids: "a",
      "name=systemd": "b",
    });
    assert.throws(() => parseSubCgroupArgs(["a:b:c"]), /^Error: invalid --cgroup argument: a:b:c$/);
    assert.throws(() => parseSubCgroupArgs(["a", "pids:b"]), /\(missing <controller>: prefix\)/);
  });

  test("v1/hybrid: a bare path moves every hierarchy, a prefixed one only its controllers", () => {
    assert.deepEqual(subCgroupDirs("hybrid", v1, { "": "s" }).sort(), [
      "/cg/cpu,cpuacct/c/s",
      "/cg/pids/c/s",
      "/cg/systemd/c/s",
      "/cg/unified/c/s",
    ]);
    // Co-mounted cpu,cpuacct: one directory, and the sub-cgroup wins over the plain one.
    assert.deepEqual(subCgroupDirs("v1", v1, { cpuacct: "s" }).sort(), [
      "/cg/cpu,cpuacct/c/s",
      "/cg/pids/c",
      "/cg/systemd/c",
      "/cg/unified/c",
    ]);
    assert.throws(
      () => subCgroupDirs("hybrid", v1, { unified: "s" }),
      /unknown controller unified in SubCgroupPaths/,
    );
  });

  test("v2: only a bare path; controllers are unknown there", () => {
    const v2 = { unified: "/cg/c" };
    assert.deepEqual(subCgroupDirs("v2", v2, { "": "a/b" }), ["/cg/c/a/b"]);
    assert.throws(
      () => subCgroupDirs("v2", v2, { memory: "a" }),
      /unknown controller memory in SubCgroupPaths/,
    );
  });

  test("paths that leave the container's cgroup are refused (also the prefix trick runc lets through)", () => {
    for (const bad of ["..", "../x", "a/../../x", "../cx"])
      assert.throws(
        () => subCgroupDirs("v2", { unified: "/cg/c" }, { "": bad }),
        /is not a sub cgroup path/,
        bad,
      );
    assert.deepEqual(subCgroupDirs("v2", { unified: "/cg/c" }, { "": "a/.." }), ["/cg/c"]);
    assert.deepEqual(subCgroupDirs("v2", { unified: "/cg/c" }, { "": "/a" }), ["/cg/c/a"]);
  });
});

describe("unified resources", () => {
  test("refused on v1 and hybrid with runc's words; fine on v2 and when empty", () => {
    const r = { unified: { "pids.max": "10" } };
    assert.throws(
      () => checkUnifiedSupported("v1", r),
      /^Error: invalid configuration: cannot use unified on cgroup v1$/,
    );
    assert.throws(() => checkUnifiedSupported("hybrid", r), /cannot use unified on cgroup v1/);
    checkUnifiedSupported("v2", r);
    checkUnifiedSupported("hybrid", { unified: {} });
    checkUnifiedSupported("v1", undefined);
  });
});
