// The QEMU argv is a pure function of the launch description: every flag that matters is asserted here.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { describe, test } from "node:test";
import { defaultConfig } from "../../src/config/config";
import { missingBootFiles, startVm } from "../../src/hypervisor/qemu";
import { chooseAccel, hostTscKhz } from "../../src/hypervisor/qemu/accel";
import {
  buildQemuArgs,
  kernelCmdline,
  launchFromConfig,
  type QemuLaunch,
  qemuOptValue,
} from "../../src/hypervisor/qemu/cmdline";

const base: QemuLaunch = {
  qemuPath: "/usr/bin/qemu-system-x86_64",
  machineType: "microvm",
  accel: "tcg",
  vcpus: 1,
  memoryMiB: 2048,
  kernel: "/k/vmlinux",
  initrd: "/k/initrd",
  console: "serial",
  consoleLog: "/run/x/console.log",
  qmpSocket: "/run/x/qmp.sock",
  agentSocket: "/run/x/agent.sock",
  pidFile: "/run/x/qemu.pid",
  tscKhz: 2445404,
};

/** The value following each occurrence of `flag`. */
const values = (argv: string[], flag: string) => argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
const value = (argv: string[], flag: string) => {
  const v = values(argv, flag);
  assert.equal(v.length, 1, `${flag} appears once`);
  return v[0];
};

describe("buildQemuArgs", () => {
  test("a template maps its RAM file shared; a clone maps it copy-on-write and waits for its state", () => {
    const t = buildQemuArgs({ ...base, memoryFile: { path: "/t/memory", mode: "template" } });
    assert.equal(
      value(t, "-M"),
      "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on,memory-backend=mem",
    );
    assert.ok(
      values(t, "-object").includes("memory-backend-file,id=mem,size=2048M,mem-path=/t/memory,share=on"),
    );
    assert.equal(values(t, "-incoming").length, 0, "a template boots");
    const c = buildQemuArgs({ ...base, memoryFile: { path: "/t/memory", mode: "clone" }, incoming: true });
    assert.ok(
      values(c, "-object").includes("memory-backend-file,id=mem,size=2048M,mem-path=/t/memory,share=off"),
    );
    assert.equal(value(c, "-incoming"), "defer");
    // The clone has exactly the template's devices: only the files behind them differ.
    const devices = (a: string[]) => values(a, "-device");
    assert.deepEqual(devices(c), devices(t));
    assert.throws(
      () =>
        buildQemuArgs({
          ...base,
          memoryFile: { path: "/t/memory", mode: "clone" },
          shares: [{ tag: "s", path: "/s", fs: "virtio-fs", socket: "/s.sock" }],
        }),
      /cannot use virtio-fs/,
    );
  });

  test("microvm under TCG: machine options, accel, memory, kernel, initrd, no reboot, no defaults", () => {
    const a = buildQemuArgs(base);
    assert.equal(a[0], "/usr/bin/qemu-system-x86_64");
    assert.equal(value(a, "-M"), "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on");
    assert.equal(value(a, "-accel"), "tcg");
    assert.equal(
      value(a, "-cpu"),
      "qemu64,+arat",
      "TCG: the default model with an always-running APIC timer",
    );
    assert.equal(value(a, "-smp"), "1");
    assert.equal(value(a, "-m"), "2048M");
    assert.equal(value(a, "-kernel"), "/k/vmlinux");
    assert.equal(value(a, "-initrd"), "/k/initrd");
    for (const f of ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
      assert.ok(a.includes(f), f);
    assert.ok(!a.includes("-daemonize"), "QEMU stays a child of the supervisor");
    assert.ok(!a.includes("-no-hpet"), "microvm has no HPET option");
    assert.equal(value(a, "-pidfile"), "/run/x/qemu.pid");
    assert.equal(value(a, "-qmp"), "unix:/run/x/qmp.sock,server=on,wait=off");
  });

  test("agent channel: virtio-serial (mmio on microvm) + unix socket chardev + named port", () => {
    const a = buildQemuArgs(base);
    const devices = values(a, "-device");
    const chardevs = values(a, "-chardev");
    assert.ok(devices.includes("virtio-serial-device,id=vser0"));
    assert.ok(chardevs.includes("socket,id=agent,path=/run/x/agent.sock,server=on,wait=off"));
    assert.ok(devices.includes("virtserialport,bus=vser0.0,chardev=agent,name=agent.channel.0"));
  });

  test("serial console: ISA UART on, -serial to the log chardev, console=ttyS0", () => {
    const a = buildQemuArgs(base);
    assert.ok(values(a, "-chardev").includes("file,id=console,path=/run/x/console.log"));
    assert.equal(value(a, "-serial"), "chardev:console");
    assert.match(value(a, "-append"), /^console=ttyS0 /);
  });

  test("virtio console: ISA UART off, virtconsole on the log chardev, console=hvc0", () => {
    const a = buildQemuArgs({ ...base, console: "virtio" });
    assert.match(value(a, "-M"), /isa-serial=off/);
    assert.equal(values(a, "-serial").length, 0);
    assert.ok(values(a, "-device").includes("virtconsole,bus=vser0.0,chardev=console,name=console.0"));
    assert.match(value(a, "-append"), /^console=hvc0 /);
  });

  test("q35 and pc: PCI virtio devices, -no-hpet, machine name passed through", () => {
    for (const m of ["q35", "pc"]) {
      const a = buildQemuArgs({ ...base, machineType: m });
      assert.equal(value(a, "-M"), m);
      assert.ok(a.includes("-no-hpet"));
      assert.ok(values(a, "-device").includes("virtio-serial-pci,id=vser0"));
    }
  });

  test("KVM: -accel kvm, -cpu host, no tsc_early_khz", () => {
    const a = buildQemuArgs({ ...base, accel: "kvm" });
    assert.equal(value(a, "-accel"), "kvm");
    assert.equal(value(a, "-cpu"), "host");
    assert.doesNotMatch(value(a, "-append"), /tsc_early_khz|tsc=reliable/);
  });

  test("TCG translation cache: tb-size from the config under TCG only; 0 keeps QEMU's default", () => {
    assert.equal(value(buildQemuArgs({ ...base, tcgTbSizeMiB: 64 }), "-accel"), "tcg,tb-size=64");
    assert.equal(value(buildQemuArgs({ ...base, tcgTbSizeMiB: 0 }), "-accel"), "tcg");
    assert.equal(value(buildQemuArgs({ ...base, accel: "kvm", tcgTbSizeMiB: 64 }), "-accel"), "kvm");
    const cfg = { ...defaultConfig().hypervisor, tcgTbSize: 32 };
    const l = launchFromConfig(cfg, {
      accel: "tcg",
      console: "serial",
      consoleLog: "c",
      qmpSocket: "q",
      agentSocket: "a",
      pidFile: "p",
    });
    assert.equal(value(buildQemuArgs(l), "-accel"), "tcg,tb-size=32");
    assert.equal(defaultConfig().hypervisor.tcgTbSize, 64);
  });

  test("free page reporting: a reporting-only balloon on the VM's bus; refused with a template's memory file", () => {
    const devices = (a: string[]) => values(a, "-device");
    assert.ok(
      devices(buildQemuArgs({ ...base, freePageReporting: true })).includes(
        "virtio-balloon-device,free-page-reporting=on",
      ),
    );
    assert.ok(
      devices(buildQemuArgs({ ...base, machineType: "q35", freePageReporting: true })).includes(
        "virtio-balloon-pci,free-page-reporting=on",
      ),
    );
    assert.ok(!devices(buildQemuArgs(base)).some((d) => d.includes("balloon")));
    for (const mode of ["template", "clone"] as const) {
      assert.throws(
        () => buildQemuArgs({ ...base, freePageReporting: true, memoryFile: { path: "/t/memory", mode } }),
        /free page reporting cannot be used with a VM template/,
      );
    }
    assert.equal(defaultConfig().hypervisor.reclaimGuestFreedMemory, true);
  });

  test("image boot: read-only raw virtio-blk and root=/dev/vda ro; initrd and image are exclusive", () => {
    const a = buildQemuArgs({ ...base, initrd: undefined, image: "/k/guest.img" });
    assert.equal(values(a, "-initrd").length, 0);
    assert.equal(value(a, "-drive"), "if=none,id=image,file=/k/guest.img,format=raw,readonly=on");
    assert.ok(values(a, "-device").includes("virtio-blk-device,drive=image"));
    assert.match(value(a, "-append"), / root=\/dev\/vda ro/);
    assert.throws(() => buildQemuArgs({ ...base, image: "/k/guest.img" }), /both an initrd and an image/);
    assert.throws(() => buildQemuArgs({ ...base, initrd: undefined }), /neither an initrd nor an image/);
  });

  test("image as persistent memory (q35): a shared read-only file backend, virtio-pmem-pci, DAX root", () => {
    const img = { ...base, machineType: "q35", initrd: undefined, image: "/k/guest.img" };
    const a = buildQemuArgs({ ...img, memoryMiB: 512, imagePmem: { bytes: 104 * 1024 * 1024 } });
    assert.equal(value(a, "-m"), "512M,slots=1,maxmem=1536M", "device memory above RAM, whole GiB");
    assert.ok(
      values(a, "-object").includes(
        "memory-backend-file,id=imagemem,mem-path=/k/guest.img,size=109051904,share=on,readonly=on",
      ),
    );
    assert.ok(values(a, "-device").includes("virtio-pmem-pci,memdev=imagemem,id=image"));
    assert.equal(values(a, "-drive").length, 0, "no virtio-blk copy of the image");
    assert.match(value(a, "-append"), / root=\/dev\/pmem0 rootflags=dax ro swiotlb=noforce/);
    // Without it the same machine reads the image over virtio-blk.
    const blk = buildQemuArgs(img);
    assert.equal(value(blk, "-m"), "2048M");
    assert.ok(values(blk, "-device").includes("virtio-blk-pci,drive=image"));
    assert.match(value(blk, "-append"), / root=\/dev\/vda ro/);
    // microvm has no device memory: refused, never a guest that cannot mount its root.
    assert.throws(
      () => buildQemuArgs({ ...img, machineType: "microvm", imagePmem: { bytes: 2 * 1024 * 1024 } }),
      /microvm cannot map the image/,
    );
  });

  test("shared memory: memfd backend shared, wired as the machine's RAM, virtio-mmio modern on microvm", () => {
    const a = buildQemuArgs({ ...base, sharedMemory: true });
    assert.equal(values(a, "-object")[0], "memory-backend-memfd,id=mem,size=2048M,share=on");
    assert.match(value(a, "-M"), /,memory-backend=mem$/);
    assert.equal(value(a, "-global"), "virtio-mmio.force-legacy=false");
    const q = buildQemuArgs({ ...base, machineType: "q35", sharedMemory: true });
    assert.equal(value(q, "-M"), "q35,memory-backend=mem");
    assert.equal(values(q, "-global").length, 0, "PCI virtio is modern already");
  });

  test("microvm with extra machine options keeps ours and appends the user's", () => {
    const a = buildQemuArgs({ ...base, machineType: "microvm,ioapic2=off" });
    assert.equal(
      value(a, "-M"),
      "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on,ioapic2=off",
    );
  });

  test("commas in paths are doubled (QEMU option syntax)", () => {
    assert.equal(qemuOptValue("/a,b/c"), "/a,,b/c");
    const a = buildQemuArgs({ ...base, agentSocket: "/run/a,b/agent.sock" });
    assert.ok(values(a, "-chardev").includes("socket,id=agent,path=/run/a,,b/agent.sock,server=on,wait=off"));
  });
});

describe("kernelCmdline", () => {
  test("TCG: quiet, panic=1, no crypto self-tests, the host TSC rate; configured params last", () => {
    const c = kernelCmdline({ ...base, kernelParams: "  agent.log=debug   quiet=0 " });
    const parts = c.split(" ");
    for (const p of ["quiet", "panic=1", "cryptomgr.notests", "tsc_early_khz=2445404", "tsc=reliable"])
      assert.ok(parts.includes(p), p);
    assert.deepEqual(parts.slice(-2), ["agent.log=debug", "quiet=0"]);
  });
  test("debug keeps kernel messages; no TSC rate known → none passed", () => {
    const c = kernelCmdline({ ...base, debug: true, tscKhz: undefined });
    assert.ok(!c.split(" ").includes("quiet"));
    assert.doesNotMatch(c, /tsc_early_khz|tsc=reliable/);
  });
});

describe("launchFromConfig", () => {
  test("takes path, machine, vcpus, memory, kernel, params and the initrd/image choice from the config", () => {
    const cfg = { ...defaultConfig().hypervisor, machineType: "", kernelParams: "x=1", enableDebug: true };
    const rest = {
      accel: "tcg" as const,
      console: "serial" as const,
      consoleLog: "/c",
      qmpSocket: "/q",
      agentSocket: "/a",
      pidFile: "/p",
    };
    const l = launchFromConfig(cfg, rest);
    assert.equal(l.machineType, "microvm", "empty machine_type means microvm");
    assert.equal(l.qemuPath, cfg.path);
    assert.equal(l.kernel, cfg.kernel);
    assert.equal(l.image, cfg.image);
    assert.equal(l.initrd, undefined);
    assert.equal(l.vcpus, 1);
    assert.equal(l.memoryMiB, 2048);
    assert.equal(l.kernelParams, "x=1");
    assert.equal(l.debug, true);
    const o = launchFromConfig(cfg, { ...rest, initrd: "/i", vcpus: 2, memoryMiB: 256 });
    assert.equal(o.initrd, "/i");
    assert.equal(o.image, undefined, "an initrd given per VM replaces the configured image");
    assert.equal(o.vcpus, 2);
    assert.equal(o.memoryMiB, 256);
  });
});

describe("accelerator choice", () => {
  const fast = async () => ({ usable: true, reason: "KVM usable: 1000 M/s", mips: 1000 });
  const slow = async () => ({ usable: false, reason: "KVM unusable: 0.8 M/s; TCG fallback", mips: 0.8 });
  test("auto follows the probe; TCG comes with a warning that carries the probe's reason", async () => {
    assert.deepEqual(await chooseAccel("auto", fast), { accel: "kvm", reason: "KVM usable: 1000 M/s" });
    const t = await chooseAccel("auto", slow);
    assert.equal(t.accel, "tcg");
    assert.match(t.warning ?? "", /TCG emulation.*0\.8 M\/s/);
  });
  test("explicit kvm / tcg never probe", async () => {
    const boom = async () => {
      throw new Error("probed");
    };
    assert.equal((await chooseAccel("kvm", boom)).accel, "kvm");
    const t = await chooseAccel("tcg", boom);
    assert.equal(t.accel, "tcg");
    assert.ok(t.warning);
  });
  test("host TSC kHz from /proc/cpuinfo's first CPU; none without the tsc flag", () => {
    const cpu =
      "processor\t: 0\ncpu MHz\t\t: 2445.404\nflags\t\t: fpu tsc msr\n\nprocessor\t: 1\ncpu MHz\t\t: 1.0\n";
    assert.equal(hostTscKhz(cpu), 2445404);
    assert.equal(hostTscKhz(cpu.replace(" tsc", "")), undefined);
    assert.equal(hostTscKhz("flags : tsc\n"), undefined);
  });
});

describe("startVm preconditions", () => {
  test("a VM directory too long for unix socket paths is refused before anything is created", async () => {
    const dir = `/nonexistent/${"d".repeat(100)}`;
    await assert.rejects(
      startVm({ id: "x", dir, config: defaultConfig().hypervisor, accel: { accel: "tcg", reason: "test" } }),
      /qemu: socket path \/nonexistent\/d+\/qmp\.sock is longer than 107 bytes/,
    );
  });
});

describe("entropy", () => {
  test("a virtio-rng device fed from the host's /dev/urandom by default; none with an empty source", () => {
    const a = buildQemuArgs(base);
    assert.deepEqual(values(a, "-object"), ["rng-random,id=rng0,filename=/dev/urandom"]);
    assert.ok(values(a, "-device").includes("virtio-rng-device,rng=rng0"));
    const q = buildQemuArgs({ ...base, machineType: "q35", rngSource: "/dev/random" });
    assert.deepEqual(values(q, "-object"), ["rng-random,id=rng0,filename=/dev/random"]);
    assert.ok(values(q, "-device").includes("virtio-rng-pci,rng=rng0"));
    const none = buildQemuArgs({ ...base, rngSource: "" });
    assert.equal(values(none, "-object").length, 0);
    assert.ok(!values(none, "-device").some((d) => d.startsWith("virtio-rng")));
  });
});

describe("9p shares", () => {
  const opt = (argv: string[], flag: string) => argv.flatMap((a, i) => (argv[i - 1] === flag ? [a] : []));
  test("each share is one -fsdev local (remapped devices) and one virtio-9p device with its tag", () => {
    const argv = buildQemuArgs({
      ...base,
      shares: [
        { tag: "kataShared", path: "/run/s,x/shared" },
        { tag: "ro", path: "/srv/ro", readonly: true, securityModel: "passthrough" },
      ],
    });
    assert.deepEqual(opt(argv, "-fsdev"), [
      "local,id=fs0,path=/run/s,,x/shared,security_model=none,multidevs=remap",
      "local,id=fs1,path=/srv/ro,security_model=passthrough,multidevs=remap,readonly=on",
    ]);
    const devs = opt(argv, "-device").filter((d) => d.startsWith("virtio-9p"));
    assert.deepEqual(devs, [
      "virtio-9p-device,fsdev=fs0,mount_tag=kataShared",
      "virtio-9p-device,fsdev=fs1,mount_tag=ro",
    ]);
    const pci = buildQemuArgs({ ...base, machineType: "q35", shares: [{ tag: "t", path: "/p" }] });
    assert.deepEqual(
      opt(pci, "-device").filter((d) => d.startsWith("virtio-9p")),
      ["virtio-9p-pci,fsdev=fs0,mount_tag=t"],
    );
    assert.equal(opt(buildQemuArgs(base), "-fsdev").length, 0, "no share, no 9p device");
  });
  test("a tag the guest cannot name is refused", () => {
    assert.throws(
      () => buildQemuArgs({ ...base, shares: [{ tag: "a,b", path: "/p" }] }),
      /invalid share tag/,
    );
    assert.throws(() => buildQemuArgs({ ...base, shares: [{ tag: "x".repeat(32), path: "/p" }] }), /invalid/);
  });
});

describe("virtio-fs shares", () => {
  const vfs = { tag: "kataShared", path: "/s/shared", fs: "virtio-fs" as const, socket: "/s/virtiofsd.sock" };
  test("a vhost-user-fs device on a socket chardev, guest RAM in a shared memfd, modern virtio-mmio", () => {
    const argv = buildQemuArgs({ ...base, shares: [vfs] });
    assert.deepEqual(
      values(argv, "-chardev").filter((c) => c.startsWith("socket,id=vfs")),
      ["socket,id=vfs0,path=/s/virtiofsd.sock"],
    );
    assert.ok(
      values(argv, "-device").includes("vhost-user-fs-device,chardev=vfs0,tag=kataShared,queue-size=1024"),
    );
    // No sharedMemory asked for: a virtio-fs share implies it (vhost-user maps guest RAM).
    assert.ok(values(argv, "-object").includes("memory-backend-memfd,id=mem,size=2048M,share=on"));
    assert.match(value(argv, "-M"), /,memory-backend=mem$/);
    assert.equal(value(argv, "-global"), "virtio-mmio.force-legacy=false");
    assert.equal(values(argv, "-fsdev").length, 0, "not served by QEMU's 9p");
  });
  test("q35: vhost-user-fs-pci, no virtio-mmio global; 9p and virtio-fs shares side by side", () => {
    const argv = buildQemuArgs({ ...base, machineType: "q35", shares: [vfs, { tag: "p9", path: "/p" }] });
    assert.ok(
      values(argv, "-device").includes("vhost-user-fs-pci,chardev=vfs0,tag=kataShared,queue-size=1024"),
    );
    assert.ok(values(argv, "-device").includes("virtio-9p-pci,fsdev=fs1,mount_tag=p9"));
    assert.equal(values(argv, "-global").length, 0);
    assert.equal(value(argv, "-M"), "q35,memory-backend=mem");
  });
  test("a 9p-only VM keeps private RAM; a virtio-fs share without a socket is refused", () => {
    const argv = buildQemuArgs({ ...base, shares: [{ tag: "t", path: "/p" }] });
    assert.equal(argv.join(" ").includes("memory-backend"), false);
    assert.throws(
      () => buildQemuArgs({ ...base, shares: [{ ...vfs, socket: undefined }] }),
      /virtio-fs share kataShared has no virtiofsd socket/,
    );
  });
});

describe("boot files", () => {
  test("each missing file is one line naming it and how to make it", () => {
    assert.deepEqual(missingBootFiles({ kernel: "/proc/self/stat", image: "/proc/self/status" }), []);
    const m = missingBootFiles({
      kernel: "/nonexistent/vmlinux",
      image: "/nonexistent/img",
      shares: [{ path: "/nonexistent/s" }],
    });
    assert.equal(m.length, 3);
    assert.match(m[0], /^guest kernel \/nonexistent\/vmlinux does not exist .*kata-ts guest build --kernel/);
    assert.match(m[1], /^guest image \/nonexistent\/img does not exist .*kata-ts guest build`$/);
    assert.match(m[2], /^shared directory \/nonexistent\/s does not exist$/);
    for (const line of m) assert.ok(!line.includes("\n"));
  });
  test("startVm with a missing kernel fails before its directory is created or KVM probed", async () => {
    const dir = `/tmp/kata-ts-unit-missing-${process.pid}`;
    let probed = false;
    await assert.rejects(
      startVm({
        id: "x",
        dir,
        config: { ...defaultConfig().hypervisor, kernel: "/nonexistent/vmlinux", image: "/proc/self/stat" },
        get accel() {
          probed = true;
          return { accel: "tcg" as const, reason: "test" };
        },
      }),
      /^Error: guest kernel \/nonexistent\/vmlinux does not exist/,
    );
    assert.equal(probed, false);
    assert.equal(existsSync(dir), false);
  });
});
