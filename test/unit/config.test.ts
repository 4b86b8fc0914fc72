// configuration.toml loading: search order, defaults, validation errors with line numbers, warnings.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "smol-toml";
import {
  ConfigError,
  configToToml,
  DEFAULT_CONFIG,
  defaultConfig,
  defaultConfigPaths,
  findKeyLine,
  loadConfig,
  parseConfig,
} from "../../src/config/config";
import { REPO, tempDir } from "../helpers";

const SHIPPED = join(REPO, "config", "configuration.toml");

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err;
  }
  assert.fail("expected an error");
}

test("the shipped configuration.toml parses to exactly the built-in defaults", () => {
  const text = readFileSync(SHIPPED, "utf8");
  const { config, warnings } = parseConfig(text, SHIPPED);
  assert.deepEqual(config, DEFAULT_CONFIG);
  assert.deepEqual(warnings, []);
  // Every key of the schema is written out in the shipped file (nothing left implicit), except
  // virtio_fs_daemon: its default is whichever virtiofsd the host has (a comment names both).
  const expected = configToToml(DEFAULT_CONFIG) as { hypervisor: { qemu: Record<string, unknown> } };
  delete expected.hypervisor.qemu.virtio_fs_daemon;
  assert.match(text, /^# virtio_fs_daemon = "\/usr\/lib\/qemu\/virtiofsd"$/m);
  assert.deepEqual(JSON.parse(JSON.stringify(parse(text))), expected);
});

test("defaultConfig() is a deep copy", () => {
  const c = defaultConfig();
  c.hypervisor.validHypervisorPaths.push("/x");
  c.hypervisor.defaultMemory = 1;
  assert.equal(DEFAULT_CONFIG.hypervisor.defaultMemory, 2048);
  assert.deepEqual(DEFAULT_CONFIG.hypervisor.validHypervisorPaths, ["/usr/bin/qemu-system-x86_64"]);
});

test("defaultConfigPaths lists /etc first, then /usr/share/defaults", () => {
  assert.deepEqual(defaultConfigPaths(), [
    "/etc/kata-ts/configuration.toml",
    "/usr/share/defaults/kata-ts/configuration.toml",
  ]);
});

test("a partial file overrides only the keys it sets", () => {
  const { config } = parseConfig(
    '[hypervisor.qemu]\ndefault_memory = 777\nshared_fs = "virtio-9p"\n[runtime]\nhypervisor = "none"\n' +
      '[agent.kata]\nkernel_modules = ["a b=1"]\n',
    "/f.toml",
  );
  assert.equal(config.hypervisor.defaultMemory, 777);
  assert.equal(config.hypervisor.sharedFs, "virtio-9p");
  assert.equal(config.runtime.hypervisor, "none");
  assert.deepEqual(config.agent.kernelModules, ["a b=1"]);
  assert.equal(config.hypervisor.path, DEFAULT_CONFIG.hypervisor.path);
  assert.equal(config.factory.vmCacheNumber, 0);
});

test("image and initrd: setting only initrd selects it; setting both is an error", () => {
  const { config } = parseConfig('[hypervisor.qemu]\ninitrd = "/boot/initrd.img"\n', "/f");
  assert.equal(config.hypervisor.initrd, "/boot/initrd.img");
  assert.equal(config.hypervisor.image, "");
  const e = errorOf(() =>
    parseConfig('[hypervisor.qemu]\nimage = "/a.img"\n# x\ninitrd = "/b.initrd"\n', "/f"),
  );
  assert.equal(e.message, "config: /f:4: image and initrd are both set: set only one");
  const cleared = parseConfig('[hypervisor.qemu]\nimage = ""\ninitrd = "/b"\n', "/f").config.hypervisor;
  assert.deepEqual([cleared.image, cleared.initrd], ["", "/b"]);
});

test("dotted keys and an inline [hypervisor] table are understood", () => {
  const top = parseConfig("hypervisor.qemu.default_vcpus = 2\n", "/f").config;
  assert.equal(top.hypervisor.defaultVcpus, 2);
  const nested = parseConfig('[hypervisor]\nqemu.accel = "tcg"\n', "/f").config;
  assert.equal(nested.hypervisor.accel, "tcg");
  const inline = parseConfig('[hypervisor]\nqemu = { machine_type = "q35" }\n', "/f").config;
  assert.equal(inline.hypervisor.machineType, "q35");
});

test("TOML syntax errors report smol-toml's line", () => {
  const e = errorOf(() => parseConfig('[runtime]\nenable_debug = true\n\nhypervisor = "qemu\n', "/x/c.toml"));
  assert.equal(e.line, 4);
  assert.match(e.message, /^config: \/x\/c\.toml:4: invalid TOML: /);
  assert.ok(!e.message.includes("\n"), "one line");
});

test("wrong types and values name the key's line", () => {
  const cases: Array<[string, number, RegExp]> = [
    [
      '# c\n[hypervisor.qemu]\npath = "/q"\ndefault_vcpus = "x"\n',
      4,
      /default_vcpus must be a non-negative integer, got "x"/,
    ],
    [
      '[hypervisor.qemu]\n\n[runtime]\n  enable_debug = false\n  hypervisor = "xen"\n',
      5,
      /hypervisor must be one of "qemu", "none", got "xen"/,
    ],
    [
      '[hypervisor.qemu]\nshared_fs = "nfs"\n',
      2,
      /shared_fs must be one of "virtio-fs", "virtio-9p", "none"/,
    ],
    ['[hypervisor.qemu]\nkernel = "relative/vmlinux"\n', 2, /kernel must be an absolute path/],
    ["[hypervisor.qemu]\ndefault_vcpus = 0\n", 2, /default_vcpus must be at least 1/],
    ['[factory]\nenable_template = "yes"\n', 2, /enable_template must be true or false/],
    ["[agent.kata]\nkernel_modules = [1]\n", 2, /kernel_modules must be an array of strings/],
    [
      "[hypervisor.qemu]\ndefault_memory = 1.5\n",
      2,
      /default_memory must be a non-negative integer, got 1.5/,
    ],
    ["[hypervisor]\nqemu.default_bridges = -1\n", 2, /default_bridges must be a non-negative integer/],
  ];
  for (const [text, line, re] of cases) {
    const e = errorOf(() => parseConfig(text, "/c.toml"));
    assert.equal(e.line, line, `${text} → ${e.message}`);
    assert.ok(e.message.startsWith(`config: /c.toml:${line}: `), e.message);
    assert.match(e.message, re);
  }
});

test("unknown keys and sections are warnings with their lines, not errors", () => {
  const text = '[hypervisor.qemu]\nfoo = 1\n\n[hypervisor.clh]\npath = "/x"\n\n[netmon]\nenable = true\n';
  const { config, warnings } = parseConfig(text, "/w.toml");
  assert.deepEqual(config, DEFAULT_CONFIG);
  assert.deepEqual(warnings, [
    'config: /w.toml:2: unknown key "foo" in [hypervisor.qemu] ignored',
    'config: /w.toml:4: unknown section "hypervisor.clh" ignored',
    'config: /w.toml:7: unknown section "netmon" ignored',
  ]);
});

test("findKeyLine handles quoted keys and comments", () => {
  const text = '# [runtime]\n[ "runtime" ]\n# hypervisor = 1\n"hypervisor" = "x"\n';
  assert.equal(findKeyLine(text, "runtime", "hypervisor"), 4);
  assert.equal(findKeyLine(text, "runtime", "absent"), 2);
  assert.equal(findKeyLine(text, "runtime"), 2);
});

test("loadConfig: explicit path, KATA_CONF_FILE, missing explicit file", () => {
  const dir = tempDir();
  try {
    const a = join(dir.path, "a.toml");
    const b = join(dir.path, "b.toml");
    writeFileSync(a, "[hypervisor.qemu]\ndefault_memory = 111\n");
    writeFileSync(b, "[hypervisor.qemu]\ndefault_memory = 222\n");
    const fromFlag = loadConfig({ explicitPath: a, env: { KATA_CONF_FILE: b } });
    assert.equal(fromFlag.path, a);
    assert.equal(fromFlag.config.hypervisor.defaultMemory, 111);
    const fromEnv = loadConfig({ env: { KATA_CONF_FILE: b } });
    assert.equal(fromEnv.path, b);
    assert.equal(fromEnv.config.hypervisor.defaultMemory, 222);
    const missing = join(dir.path, "nope.toml");
    const e = errorOf(() => loadConfig({ explicitPath: missing }));
    assert.equal(e.message, `config: ${missing}: cannot read: no such file`);
    mkdirSync(join(dir.path, "d"));
    assert.match(errorOf(() => loadConfig({ explicitPath: join(dir.path, "d") })).message, /is a directory/);
  } finally {
    dir.cleanup();
  }
});

test("loadConfig without a file anywhere gives the built-in defaults", (t) => {
  const present = defaultConfigPaths().filter((p) => {
    try {
      readFileSync(p);
      return true;
    } catch {
      return false;
    }
  });
  if (present.length) return t.skip(`a system config exists: ${present[0]}`);
  const r = loadConfig({ env: {} });
  assert.equal(r.path, undefined);
  assert.deepEqual(r.config, DEFAULT_CONFIG);
});
