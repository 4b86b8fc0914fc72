// `check`, `env` and configuration loading through the real CLI binary (build first).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, cpSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { kata, REPO, tempDir } from "../helpers";

let dir: ReturnType<typeof tempDir>;
const file = (name: string, text: string) => {
  const p = join(dir.path, name);
  writeFileSync(p, text);
  return p;
};
// KATA_CONF_FILE from the caller's environment must not leak into these runs.
const env = { ...process.env, KATA_CONF_FILE: "" };

before(() => {
  dir = tempDir();
});
after(() => dir.cleanup());

test("check: a qemu path that does not exist fails and names the path", () => {
  const cfg = file("noqemu.toml", '[hypervisor.qemu]\npath = "/nonexistent/qemu-system-x86_64"\n');
  const r = kata(["--config", cfg, "check"], { env });
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /^ERROR qemu: hypervisor binary: missing: \/nonexistent\/qemu-system-x86_64$/m);
  assert.match(r.stdout, new RegExp(`^INFO  config: ${cfg}$`, "m"));
  assert.match(r.stderr, /^System is not capable of running kata-ts/m);
  assert.doesNotMatch(r.stdout, /System is capable/);
});

test("check: hypervisor = none passes without VM components and reports the measured KVM verdict", () => {
  const cfg = file(
    "none.toml",
    '[runtime]\nhypervisor = "none"\n[hypervisor.qemu]\npath = "/nonexistent/qemu"\nkernel = "/nonexistent/vmlinux"\n',
  );
  // Found through $KATA_CONF_FILE this time, run through the kata-check alias.
  const r = kata(["kata-check"], { env: { ...env, KATA_CONF_FILE: cfg } });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^SKIP {2}qemu: /m);
  assert.match(r.stdout, /^SKIP {2}guest-kernel: /m);
  // The verdict comes from a measurement: it carries a rate or the reason the probe could not run.
  assert.match(
    r.stdout,
    /^(INFO|WARN) {2}kvm: KVM (usable|unusable): .*(M iterations\/s|does not exist|not built)/m,
  );
  assert.match(r.stdout, /^INFO {2}cgroups: cgroups (v1|v2|hybrid)/m);
  assert.match(r.stdout, /^System is capable of running kata-ts$/m);
});

test("check --json reports the same verdicts as data", () => {
  const cfg = file("none2.toml", '[runtime]\nhypervisor = "none"\n');
  const r = kata(["--config", cfg, "check", "--json"], { env });
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.config, cfg);
  assert.equal(j.capable, true);
  assert.equal(j.accelerator, "none");
  assert.equal(typeof j.kvm.reason, "string");
  assert.ok(j.results.some((x: { name: string }) => x.name === "namespaces"));
});

test("env --json shows the effective configuration from the file", () => {
  const cfg = file("mem.toml", '[hypervisor.qemu]\ndefault_memory = 777\nmachine_type = "q35"\nfoo = 1\n');
  const r = kata(["--kata-config", cfg, "env", "--json"], { env });
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.Runtime.Config.Path, cfg);
  assert.equal(j.Config.hypervisor.qemu.default_memory, 777);
  assert.equal(j.Hypervisor.Memory, 777);
  assert.equal(j.Hypervisor.MachineType, "q35");
  assert.equal(j.Image.Dax, true, "q35 maps the image with DAX");
  assert.deepEqual(j.Runtime.Warnings, [`config: ${cfg}:4: unknown key "foo" in [hypervisor.qemu] ignored`]);
  assert.equal(typeof j.Host.KVM.Reason, "string");
  // The unknown key is also a warning in the log (stderr here), not an error.
  assert.match(r.stderr, /unknown key/);
});

test("env prints TOML by default (kata-env alias)", () => {
  const cfg = file("mem2.toml", "[hypervisor.qemu]\ndefault_memory = 778\n");
  const r = kata(["--config", cfg, "kata-env"], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\[Meta\]$/m);
  assert.match(r.stdout, /^\[Config\.hypervisor\.qemu\]$/m);
  assert.match(r.stdout, /^default_memory = 778$/m);
  // microvm (the default) cannot map the image with DAX.
  assert.match(r.stdout, /^\[Image\]\nPath = .*\nDax = false$/m);
});

test("a broken configuration file: exit 1 and one line naming file and line", () => {
  const syntax = file("bad.toml", "[runtime]\nenable_debug = true\nhypervisor = \n");
  let r = kata(["--config", syntax, "env"], { env });
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, new RegExp(`^config: ${syntax}:3: invalid TOML: [^\\n]+\\n$`));
  const value = file("bad2.toml", '[runtime]\n\nhypervisor = "xen"\n');
  r = kata(["--config", value, "check"], { env });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `config: ${value}:3: hypervisor must be one of "qemu", "none", got "xen"\n`);
});

test("--kata-show-default-config-paths lists the search paths", () => {
  const r = kata(["--kata-show-default-config-paths"], { env });
  assert.equal(r.code, 0);
  assert.equal(r.stdout, "/etc/kata-ts/configuration.toml\n/usr/share/defaults/kata-ts/configuration.toml\n");
});

test("check and env report the VMM jail as configured (default: jailed; a file can turn it off)", () => {
  const on = file("jail-on.toml", '[runtime]\nhypervisor = "qemu"\n');
  let r = kata(["--config", on, "check"], { env });
  assert.match(
    r.stdout,
    /^INFO {2}jail: VMM jail: seccomp -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny; user kata-ts-vmm with cap_chown,cap_dac_override,cap_fowner,cap_fsetid; own mount namespace; sandbox cgroup$/m,
  );
  assert.match(r.stdout, /^INFO {2}jail: VMM user kata-ts-vmm: (uid \d+, gid \d+|does not exist yet .*)$/m);
  assert.doesNotMatch(r.stdout, /^ERROR jail:/m, "the jailer is built");
  const e = JSON.parse(kata(["--config", on, "env", "--json"], { env }).stdout);
  assert.equal(e.Hypervisor.Jail.Rootless, true);
  assert.equal(e.Hypervisor.Jail.MountNamespace, true);
  assert.equal(e.Hypervisor.Jail.SandboxCgroupOnly, true);
  assert.match(e.Hypervisor.Jail.Jailer, /kata-ts-jailer$/);

  const off = file(
    "jail-off.toml",
    '[hypervisor.qemu]\nseccompsandbox = ""\nrootless = false\njail_mount_namespace = false\n[runtime]\nhypervisor = "qemu"\nsandbox_cgroup_only = false\n',
  );
  r = kata(["--config", off, "check"], { env });
  assert.match(
    r.stdout,
    /^WARN {2}jail: VMM jail: no seccomp filter; root; host mount namespace; caller's cgroup$/m,
  );
  const e2 = JSON.parse(kata(["--config", off, "env", "--json"], { env }).stdout);
  assert.deepEqual(
    [e2.Hypervisor.Jail.SeccompSandbox, e2.Hypervisor.Jail.User, e2.Hypervisor.Jail.Uid],
    ["", "root", 0],
  );
});

test("check: with enable_template, a missing kata-ts-memro.so is a warning (clones cannot start)", () => {
  const cfg = file(
    "tmpl.toml",
    `[factory]\nenable_template = true\ntemplate_path = "${dir.path}/templates"\n`,
  );
  // The CLI bundle copied where no native/build sits beside it, with every native piece but the library.
  const copy = join(dir.path, "copy");
  mkdirSync(join(copy, "dist"), { recursive: true });
  mkdirSync(join(copy, "native"), { recursive: true });
  copyFileSync(join(REPO, "dist", "kata-ts.cjs"), join(copy, "dist", "kata-ts.cjs"));
  cpSync(join(REPO, "native", "build"), join(copy, "native", "lib"), {
    recursive: true,
    filter: (src) => !src.endsWith("kata-ts-memro.so"),
  });
  const without = spawnSync(process.execPath, [join(copy, "dist", "kata-ts.cjs"), "--config", cfg, "check"], {
    encoding: "utf8",
    env: { ...env, KATA_TS_NATIVE_DIR: join(copy, "native", "lib") },
  });
  assert.match(
    without.stdout,
    /^WARN {2}factory: kata-ts-memro\.so not built: create boots cold: run `make -C native`$/m,
    without.stdout + without.stderr,
  );
  const built = kata(["--config", cfg, "check"], { env });
  assert.match(built.stdout, /^WARN {2}factory: VM template: /m, "the template line is there");
  assert.doesNotMatch(built.stdout, /memro/);
});
