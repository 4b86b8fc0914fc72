// The template's bookkeeping without a VM: the key follows every input a saved VM depends on, and a
// lookup tells a missing, a stale and a corrupt template apart (each is a cold boot with this reason).
import assert from "node:assert/strict";
import { mkdirSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { defaultConfig } from "../../src/config/config";
import {
  destroyTemplates,
  findTemplate,
  listTemplates,
  TEMPLATE_FORMAT,
  TEMPLATE_MAC,
  templateFiles,
  templateKey,
  templateRefusal,
} from "../../src/factory/template";
import { tempDir } from "../helpers";

const tmp = tempDir("kata-factory-unit-");
after(() => tmp.cleanup());

function config() {
  const c = defaultConfig();
  c.factory.templatePath = join(tmp.path, "templates");
  c.hypervisor.kernel = join(tmp.path, "vmlinux");
  c.hypervisor.image = join(tmp.path, "image");
  c.hypervisor.defaultMemory = 4;
  writeFileSync(c.hypervisor.kernel, "kernel");
  writeFileSync(c.hypervisor.image, "image");
  return c;
}

/** A template on disk as `factory init` leaves it (files of the right sizes). */
function fakeTemplate(c: ReturnType<typeof config>, nics = 0) {
  const f = templateFiles(c, templateKey(c, "tcg", nics));
  mkdirSync(f.dir, { recursive: true });
  writeFileSync(f.memory, Buffer.alloc(4 * 1024 * 1024));
  writeFileSync(f.state, Buffer.alloc(1000, 1));
  const macs = Array.from({ length: nics }, () => TEMPLATE_MAC);
  const meta = {
    format: TEMPLATE_FORMAT,
    key: f.key,
    memoryMiB: 4,
    vcpus: 1,
    macs,
    stateBytes: 1000,
    accel: "tcg",
  };
  writeFileSync(f.meta, JSON.stringify(meta));
  return f;
}

describe("VM template bookkeeping", () => {
  test("the key changes with the kernel command line, memory, vCPUs, kernel file, accelerator and NICs", () => {
    const c = config();
    const k = templateKey(c, "tcg");
    assert.match(k, /^[0-9a-f]{16}$/);
    assert.equal(templateKey(c, "tcg"), k, "stable");
    assert.notEqual(templateKey(c, "kvm"), k);
    assert.notEqual(templateKey(c, "tcg", 1), k);
    for (const change of [
      (x: typeof c) => {
        x.hypervisor.kernelParams = "loglevel=4";
      },
      (x: typeof c) => {
        x.hypervisor.defaultMemory = 8;
      },
      (x: typeof c) => {
        x.hypervisor.defaultVcpus = 2;
      },
      (x: typeof c) => {
        writeFileSync(x.hypervisor.kernel, "another kernel");
      },
    ]) {
      const x = config();
      change(x);
      assert.notEqual(templateKey(x, "tcg"), k);
    }
  });

  test("missing, stale and corrupt templates are told apart; a whole one is found", () => {
    const c = config();
    destroyTemplates(c);
    const none = findTemplate(c, "tcg");
    assert.equal(none.ok, false);
    assert.match(!none.ok ? none.why : "", /no template at .*factory init/);
    const f = fakeTemplate(c);
    assert.equal(findTemplate(c, "tcg").ok, true);
    c.hypervisor.kernelParams = "quiet2";
    const stale = findTemplate(c, "tcg");
    assert.match(!stale.ok ? stale.why : "", /stale/);
    c.hypervisor.kernelParams = "";
    truncateSync(f.state, 10);
    const corrupt = findTemplate(c, "tcg");
    assert.match(!corrupt.ok ? corrupt.why : "", /corrupt: its state file/);
    writeFileSync(f.meta, "{not json");
    assert.match((findTemplate(c, "tcg") as { why: string }).why, /unreadable/);
    mkdirSync(join(c.factory.templatePath, "not-ours"));
    assert.deepEqual(listTemplates(c), [f.key]);
    assert.equal(destroyTemplates(c), 1, "only kata-ts's own directories are removed");
    assert.deepEqual(listTemplates(c), []);
  });

  test("a pod's NIC count picks its template: one NIC finds the one-NIC template, not the other", () => {
    const c = config();
    destroyTemplates(c);
    fakeTemplate(c, 0);
    assert.equal(findTemplate(c, "tcg", 0).ok, true);
    assert.equal(findTemplate(c, "tcg", 1).ok, false);
    const one = fakeTemplate(c, 1);
    const found = findTemplate(c, "tcg", 1);
    assert.ok(found.ok);
    assert.deepEqual(found.meta.macs, [TEMPLATE_MAC]);
    // A template.json whose MACs do not match its NIC count is not trusted.
    writeFileSync(one.meta, JSON.stringify({ ...found.meta, macs: [] }));
    assert.match((findTemplate(c, "tcg", 1) as { why: string }).why, /stale/);
    assert.equal(destroyTemplates(c), 2);
  });

  test("virtio-fs and pods with more NICs than a template cannot use one (no hotplug, no vhost-user restore)", () => {
    assert.equal(templateRefusal({ nics: 0, virtioFs: false }), undefined);
    assert.equal(templateRefusal({ nics: 1, virtioFs: false }), undefined);
    assert.match(
      templateRefusal({ nics: 2, virtioFs: false }) ?? "",
      /2 network interfaces and templates have at most 1/,
    );
    assert.match(templateRefusal({ nics: 0, virtioFs: true }) ?? "", /virtio-fs/);
  });
});
