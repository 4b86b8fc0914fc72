import assert from "node:assert/strict";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { defaultSpec, formatSpec } from "../../src/oci/defaults";
import { validateSpec } from "../../src/oci/validate";
import { schemaErrors } from "../fixtures/oci-schema/load";
import { kata, tempDir } from "../helpers";

describe("kata-ts spec / features", () => {
  const dirs: (() => void)[] = [];
  after(() => {
    for (const c of dirs) c();
  });
  const fresh = () => {
    const d = tempDir();
    dirs.push(d.cleanup);
    return d.path;
  };

  it("writes a config.json that passes validateSpec and the OCI schema", () => {
    const dir = fresh();
    const r = kata(["spec"], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "");
    const text = readFileSync(join(dir, "config.json"), "utf8");
    assert.equal(text, formatSpec(defaultSpec()));
    const spec = JSON.parse(text);
    validateSpec(spec);
    assert.equal(schemaErrors("config-schema.json", spec), "");
    // 0666 minus the umask the child inherited (022 by default for these tests).
    const umask = process.umask();
    assert.equal(statSync(join(dir, "config.json")).mode & 0o777, 0o666 & ~umask);
  });

  it("refuses to overwrite and leaves the file unchanged", () => {
    const dir = fresh();
    writeFileSync(join(dir, "config.json"), "mine");
    const r = kata(["spec"], { cwd: dir });
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), "File config.json exists. Remove it first");
    assert.equal(readFileSync(join(dir, "config.json"), "utf8"), "mine");
  });

  it("second spec in the same dir exits 1 and keeps the first file", () => {
    const dir = fresh();
    assert.equal(kata(["spec"], { cwd: dir }).code, 0);
    const first = readFileSync(join(dir, "config.json"), "utf8");
    const r = kata(["spec"], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /File config\.json exists\. Remove it first/);
    assert.equal(readFileSync(join(dir, "config.json"), "utf8"), first);
  });

  it("--bundle and --rootless", () => {
    const dir = fresh();
    const r = kata(["spec", "--rootless", "--bundle", dir]);
    assert.equal(r.code, 0, r.stderr);
    const spec = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    validateSpec(spec);
    assert.equal(schemaErrors("config-schema.json", spec), "");
    assert.deepEqual(
      spec.linux.namespaces.map((n: { type: string }) => n.type),
      ["pid", "ipc", "uts", "mount", "user"],
    );
    assert.equal(spec.linux.uidMappings[0].hostID, process.geteuid?.());
  });

  it("missing bundle directory fails with one line", () => {
    const r = kata(["spec", "-b", "/nonexistent-kata-ts-dir"]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), "chdir /nonexistent-kata-ts-dir: no such file or directory");
  });

  it("features prints JSON valid against the features schema", () => {
    const r = kata(["features"]);
    assert.equal(r.code, 0, r.stderr);
    const f = JSON.parse(r.stdout);
    assert.equal(schemaErrors("features-schema.json", f), "");
    assert.equal(f.ociVersionMin, "1.0.0");
    assert.equal(f.ociVersionMax, "1.2.0");
    assert.ok(f.linux.namespaces.includes("user"));
  });
});
