// virtiofsd's command line (both daemons), its lock file, the default daemon path, the guest mount of
// the share, the shared_fs fallback and the virtio-fs configuration keys.
import assert from "node:assert/strict";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { defaultConfig, defaultVirtiofsd, parseConfig } from "../../src/config/config";
import {
  sharedFsFor,
  type VirtiofsdLaunch,
  virtiofsdArgs,
  virtiofsdFlavour,
  virtiofsdLockFile,
} from "../../src/hypervisor/virtiofsd";
import { guestShareMount } from "../../src/sandbox/share";
import { tempDir } from "../helpers";

const launch: VirtiofsdLaunch = {
  daemon: "/usr/lib/qemu/virtiofsd",
  flavour: "c",
  socket: "/run/s/virtiofsd.sock",
  source: "/r/sandboxes/x/shared",
  cache: "auto",
};

describe("virtiofsd command line", () => {
  test("C daemon: -o source/cache, submounts announced, RLIMIT_NOFILE left alone, extra args last", () => {
    assert.deepEqual(virtiofsdArgs({ ...launch, extraArgs: ["-o", "xattr"] }), [
      "/usr/lib/qemu/virtiofsd",
      "--socket-path=/run/s/virtiofsd.sock",
      "-o",
      "source=/r/sandboxes/x/shared",
      "-o",
      "cache=auto",
      "-o",
      "announce_submounts",
      "--rlimit-nofile=0",
      "-o",
      "xattr",
    ]);
    // Kata's "never" is the C daemon's "none".
    assert.ok(virtiofsdArgs({ ...launch, cache: "never" }).includes("cache=none"));
    assert.ok(virtiofsdArgs({ ...launch, cache: "always" }).includes("cache=always"));
  });
  test("Rust daemon: --shared-dir, --cache (none → never), --announce-submounts", () => {
    assert.deepEqual(
      virtiofsdArgs({ ...launch, daemon: "/usr/libexec/virtiofsd", flavour: "rust", cache: "none" }),
      [
        "/usr/libexec/virtiofsd",
        "--socket-path=/run/s/virtiofsd.sock",
        "--shared-dir=/r/sandboxes/x/shared",
        "--cache=never",
        "--announce-submounts",
        "--rlimit-nofile=0",
      ],
    );
  });
  test("flavour from --version: the C daemon names its FUSE interface, anything else is the Rust one", () => {
    const dir = tempDir("kata-vfsd-");
    try {
      const c = join(dir.path, "c");
      writeFileSync(
        c,
        "#!/bin/sh\necho 'virtiofsd version 7.2.22'\necho 'using FUSE kernel interface version 7.36'\n",
      );
      const rust = join(dir.path, "rust");
      writeFileSync(rust, "#!/bin/sh\necho 'virtiofsd 1.10.1'\n");
      chmodSync(c, 0o755);
      chmodSync(rust, 0o755);
      assert.equal(virtiofsdFlavour(c), "c");
      assert.equal(virtiofsdFlavour(rust), "rust");
    } finally {
      dir.cleanup();
    }
  });
  test("the C daemon's lock file is named after the socket path", () => {
    assert.equal(virtiofsdLockFile("/run/s/virtiofsd.sock"), "/run/virtiofsd/.run.s.virtiofsd.sock.pid");
  });
});

describe("virtio-fs configuration", () => {
  test("default daemon: the first of /usr/libexec/virtiofsd, /usr/lib/qemu/virtiofsd that exists", () => {
    assert.equal(
      defaultVirtiofsd((p) => p === "/usr/lib/qemu/virtiofsd"),
      "/usr/lib/qemu/virtiofsd",
    );
    assert.equal(
      defaultVirtiofsd(() => true),
      "/usr/libexec/virtiofsd",
    );
    assert.equal(
      defaultVirtiofsd(() => false),
      "/usr/lib/qemu/virtiofsd",
    );
  });
  test("shared_fs, virtio_fs_daemon, virtio_fs_cache and virtio_fs_extra_args are read and checked", () => {
    const { config } = parseConfig(
      '[hypervisor.qemu]\nshared_fs = "virtio-fs"\nvirtio_fs_daemon = "/opt/vfsd"\nvirtio_fs_cache = "always"\n' +
        'virtio_fs_extra_args = ["-o", "xattr"]\n',
      "t.toml",
    );
    assert.equal(config.hypervisor.sharedFs, "virtio-fs");
    assert.equal(config.hypervisor.virtioFsDaemon, "/opt/vfsd");
    assert.equal(config.hypervisor.virtioFsCache, "always");
    assert.deepEqual(config.hypervisor.virtioFsExtraArgs, ["-o", "xattr"]);
    assert.deepEqual(defaultConfig().hypervisor.virtioFsExtraArgs, []);
    assert.throws(
      () => parseConfig('[hypervisor.qemu]\nvirtio_fs_extra_args = "-o xattr"\n', "t.toml"),
      /virtio_fs_extra_args must be an array of strings/,
    );
    assert.throws(
      () => parseConfig('[hypervisor.qemu]\nvirtio_fs_cache = "sometimes"\n', "t.toml"),
      /virtio_fs_cache/,
    );
  });
});

describe("shared_fs choice", () => {
  test("virtio-fs with an executable daemon; without one 9p, with a warning naming the daemon", () => {
    const dir = tempDir("kata-vfsd-");
    try {
      const q = defaultConfig().hypervisor;
      q.sharedFs = "virtio-fs";
      q.virtioFsDaemon = join(dir.path, "virtiofsd");
      const warnings: string[] = [];
      assert.equal(
        sharedFsFor(q, (m) => warnings.push(m)),
        "virtio-9p",
      );
      assert.deepEqual(warnings, [
        `warning: shared_fs = "virtio-fs" but virtio_fs_daemon ${q.virtioFsDaemon} is not executable: using virtio-9p`,
      ]);
      writeFileSync(q.virtioFsDaemon, "#!/bin/sh\n");
      chmodSync(q.virtioFsDaemon, 0o755);
      assert.equal(
        sharedFsFor(q, (m) => warnings.push(m)),
        "virtio-fs",
      );
      q.sharedFs = "virtio-9p";
      assert.equal(
        sharedFsFor(q, (m) => warnings.push(m)),
        "virtio-9p",
      );
      assert.equal(warnings.length, 1);
    } finally {
      dir.cleanup();
    }
  });
});

describe("guest mount of the share", () => {
  test("virtio-fs is mounted by tag with no options; 9p uncached over virtio", () => {
    assert.deepEqual(guestShareMount("virtio-fs"), {
      source: "kataShared",
      fstype: "virtiofs",
      target: "/run/kata-containers/shared/containers",
      options: [],
    });
    const p9 = guestShareMount("virtio-9p");
    assert.equal(p9.fstype, "9p");
    // Kata's 9p options: mmap'd pages cached (a shared writable mmap works), nothing else.
    assert.ok(p9.options.includes("cache=mmap") && p9.options.includes("trans=virtio"));
  });
});
