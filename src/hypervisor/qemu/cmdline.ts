// The QEMU command line for one sandbox VM, as a pure function of a launch description (no I/O, so
// every flag is unit-tested). docs/hypervisor.md explains each flag; the short reasons are inline.
import { AGENT_PORT_NAME } from "../../agent/api";
import type { QemuConfig } from "../../config/config";

// The port's name is the host-guest contract's (src/agent/api.ts); re-exported for the launch code.
export { AGENT_PORT_NAME };

export type ConsoleKind = "serial" | "virtio";

const GIB = 1024 * 1024 * 1024;

/**
 * A host directory exported to the guest: over virtio-9p (QEMU serves it itself; the guest mounts
 * `mount -t 9p -o trans=virtio <tag> <dir>`) or over virtio-fs (a vhost-user-fs device connected to a
 * virtiofsd that serves it; the guest mounts `mount -t virtiofs <tag> <dir>`).
 */
export interface ShareSpec {
  /** The tag the guest mounts by (9p mount_tag / virtio-fs tag). */
  tag: string;
  /** Host directory (9p: QEMU opens it; virtio-fs: virtiofsd's source, for boot-file checks). */
  path: string;
  /** Default "virtio-9p". */
  fs?: "virtio-9p" | "virtio-fs";
  /** virtio-fs: the virtiofsd vhost-user socket. */
  socket?: string;
  /** 9p only (a virtio-fs share is read-only when virtiofsd serves it so). */
  readonly?: boolean;
  /**
   * 9p only. "none" (default): files are created with the guest's uid/gid, failures to set ownership
   * are ignored (as Kata does: the host side runs as root); "passthrough": ownership errors reach the guest.
   */
  securityModel?: "none" | "passthrough";
}

/** A NIC backed by an existing tap (made by src/network in the netns QEMU runs in). */
export interface NicSpec {
  /** The tap's name in QEMU's network namespace. */
  ifname: string;
  /** The guest NIC's MAC: the pod interface's, so the peer's ARP entries stay right. */
  mac: string;
}

export interface QemuLaunch {
  qemuPath: string;
  /** "microvm" (default), "q35" or "pc"; other names are passed through as pc-like machines. */
  machineType: string;
  accel: "kvm" | "tcg";
  vcpus: number;
  /** MiB. */
  memoryMiB: number;
  /** Uncompressed vmlinux with a PVH note (direct boot, no firmware). */
  kernel: string;
  /** Exactly one of initrd / image. */
  initrd?: string;
  image?: string;
  /**
   * The image mapped into the guest as persistent memory (virtio-pmem-pci) and mounted with DAX
   * (`root=/dev/pmem0 rootflags=dax`): the guest reads the host's page cache of the image directly,
   * shared by every VM, instead of holding its own copy. `bytes` is the image's size (a multiple of
   * 2 MiB, as the image is built). Not on microvm: it has no device-memory region.
   */
  imagePmem?: { bytes: number };
  /** Extra kernel parameters from the configuration, appended last so they can override ours. */
  kernelParams?: string;
  /** Guest console: the 8250 UART (ttyS0, works before any driver loads) or a virtio console (hvc0). */
  console: ConsoleKind;
  /** Host file receiving the guest console. */
  consoleLog: string;
  qmpSocket: string;
  agentSocket: string;
  pidFile: string;
  /** Port name the guest agent finds under /sys/class/virtio-ports/<vportNpM>/name. */
  agentPortName?: string;
  /** Host TSC kHz for `tsc_early_khz` (TCG only: the guest cannot calibrate without PIT/HPET). */
  tscKhz?: number;
  /** TCG only: MiB of translation cache (`-accel tcg,tb-size=N`); 0/undefined = QEMU's default. */
  tcgTbSizeMiB?: number;
  /**
   * A virtio-balloon that only reports free pages (`free-page-reporting=on`): the guest tells QEMU which
   * 2 MiB blocks it has freed and QEMU drops them from its RSS. Never with a template's memory file.
   */
  freePageReporting?: boolean;
  /** Guest RAM in a shared memfd: needed before a vhost-user device (virtio-fs) can be attached. */
  sharedMemory?: boolean;
  /** Keep kernel messages (no `quiet`). */
  debug?: boolean;
  /** VM name shown in ps / QMP query-name. */
  name?: string;
  /**
   * Host entropy source for a virtio-rng device (default /dev/urandom; "" = no device). Without it a
   * fresh guest's CRNG is seeded only by jitter entropy, which takes seconds under TCG, and node's
   * first getrandom() blocks until then.
   */
  rngSource?: string;
  /** 9p and virtio-fs exports, attached at boot (microvm cannot hotplug). */
  shares?: ShareSpec[];
  /** Network interfaces, attached at boot (microvm cannot hotplug). */
  nics?: NicSpec[];
  /** QEMU's seccomp filter (`-sandbox` value, [hypervisor.qemu] seccompsandbox); "" or undefined = none. */
  seccompSandbox?: string;
  /**
   * VM templating (src/factory): guest RAM in a file. "template": mapped shared, so the template VM's
   * RAM ends up in the file; "clone": mapped private (copy-on-write), so the clone starts from the
   * template's RAM and its own writes stay its own.
   */
  memoryFile?: { path: string; mode: "template" | "clone" };
  /** A clone: QEMU waits for its device state (`-incoming defer`; the driver sends migrate-incoming). */
  incoming?: boolean;
}

/**
 * `-cpu` for an accelerator. KVM: the host CPU model (no emulated CPUID trimming). TCG: QEMU's default
 * model, fastest to emulate, plus ARAT (the local APIC timer keeps running in deep idle): without it
 * Linux takes the APIC timer for one that may stop, finds no broadcast timer on microvm and keeps the
 * periodic tick forever, so every idle guest takes HZ timer interrupts a second, each a TCG exit (50
 * idle sandboxes kept this 2-core machine busy). A template's key includes it: a clone's CPU must be
 * the template's.
 */
export function cpuModel(accel: string): string | undefined {
  if (accel === "kvm") return "host";
  if (accel === "tcg") return "qemu64,+arat";
  return undefined;
}

/**
 * Whether a configuration maps the guest image as persistent memory with DAX (`imagePmem`): every
 * machine but microvm, which has no device-memory region, unless `disable_image_nvdimm`.
 */
export function imageOnPmem(cfg: Pick<QemuConfig, "machineType" | "disableImageNvdimm">): boolean {
  return !cfg.disableImageNvdimm && !isMicrovm(cfg.machineType || "microvm");
}

export function isMicrovm(machineType: string): boolean {
  return machineType === "microvm" || machineType.startsWith("microvm,");
}

/** The kernel command line (the `-append` value). */
export function kernelCmdline(l: QemuLaunch): string {
  const p: string[] = [];
  p.push(l.console === "virtio" ? "console=hvc0" : "console=ttyS0");
  if (!l.debug) p.push("quiet");
  // Guest panic → reboot after 1 s → QEMU exits (-no-reboot): a dead guest never lingers.
  p.push("panic=1");
  // Crypto self-tests cost ~100 ms of boot under TCG and test code we did not change.
  p.push("cryptomgr.notests");
  // No legacy PS/2 controller in a VM worth probing (probing it costs port I/O exits).
  p.push("i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd");
  if (l.accel === "tcg" && l.tscKhz && l.tscKhz > 0) {
    p.push(`tsc_early_khz=${Math.round(l.tscKhz)}`);
    // Under TCG the guest's TSC is the host's (constant rate, monotonic), but the clocksource watchdog
    // checks it against jiffies, whose ticks arrive late when the host is busy: it then marks the TSC
    // unstable and the guest falls back to refined-jiffies (10 ms clock resolution with HZ=100).
    p.push("tsc=reliable");
  }
  if (l.image && !l.initrd) {
    // swiotlb=noforce: the device memory sits above 4 GiB, so the kernel would set aside (and zero)
    // 64 MiB of bounce buffers no virtio device here uses (measured: guest RAM touched 133 → 70 MB).
    if (l.imagePmem) p.push("root=/dev/pmem0", "rootflags=dax", "ro", "swiotlb=noforce");
    else p.push("root=/dev/vda", "ro");
  }
  const extra = (l.kernelParams ?? "").trim();
  if (extra) p.push(...extra.split(/\s+/));
  return p.join(" ");
}

/** Quotes a value for QEMU's option syntax (a comma inside a value is written as ",,"). */
export function qemuOptValue(v: string): string {
  return v.replace(/,/g, ",,");
}

/** argv for spawn(): argv[0] is the QEMU binary. */
export function buildQemuArgs(l: QemuLaunch): string[] {
  if (l.initrd && l.image) throw new Error("qemu: both an initrd and an image given: boot from one");
  if (!l.initrd && !l.image) throw new Error("qemu: neither an initrd nor an image given");
  const micro = isMicrovm(l.machineType);
  const q = qemuOptValue;
  const shares = l.shares ?? [];
  // A vhost-user device maps guest RAM into virtiofsd: it needs the shared memory backend.
  const sharedMemory = Boolean(l.sharedMemory) || shares.some((s) => s.fs === "virtio-fs");
  // vhost-user devices cannot be migrated, and a template's memory file is its own backend.
  if (sharedMemory && l.memoryFile)
    throw new Error("qemu: a VM template cannot use virtio-fs (shared memory)");
  // QEMU 7.2 discards a reported range of file-backed RAM by punching a hole in the file, even when
  // the mapping is private: a clone would zero its template's memory under every other clone.
  if (l.freePageReporting && l.memoryFile)
    throw new Error("qemu: free page reporting cannot be used with a VM template's memory file");
  const memBackend = sharedMemory || l.memoryFile !== undefined;
  const a: string[] = [l.qemuPath];
  const add = (...xs: string[]) => a.push(...xs);

  if (l.name) add("-name", q(l.name));
  // No /etc/qemu config, no default devices (NIC, VGA, floppy, CD, parallel, monitor): only what we add.
  add("-no-user-config", "-nodefaults", "-nographic");
  if (micro) {
    // microvm: no PCI, no firmware, virtio-mmio devices. Option ROMs are useless with PVH direct boot.
    // The ISA UART exists only when it is the console; the RTC gives the guest wall-clock time.
    // No i8254 PIT and no i8259 PIC (as in QEMU's microvm documentation; the guest keeps time
    // with the TSC and the local APIC, its devices interrupt through the IOAPIC): the emulated PIT woke
    // QEMU's main loop ~75 times a second in an idle sandbox (4/s without it; docs/hypervisor.md).
    const opts = [
      "microvm",
      "x-option-roms=off",
      "pit=off",
      "pic=off",
      `isa-serial=${l.console === "serial" ? "on" : "off"}`,
      "rtc=on",
    ];
    const extra = l.machineType.slice("microvm".length).replace(/^,/, "");
    if (extra) opts.push(extra);
    if (memBackend) opts.push("memory-backend=mem");
    add("-M", opts.join(","));
  } else {
    const opts = [l.machineType];
    if (memBackend) opts.push("memory-backend=mem");
    add("-M", opts.join(","));
    // The HPET costs timer exits and is not needed by a paravirtual guest (kvm-clock / TSC).
    add("-no-hpet");
  }
  add("-accel", l.accel === "tcg" && l.tcgTbSizeMiB ? `tcg,tb-size=${l.tcgTbSizeMiB}` : l.accel);
  const cpu = cpuModel(l.accel);
  if (cpu) add("-cpu", cpu);
  add("-smp", String(l.vcpus));
  if (l.imagePmem) {
    if (micro) throw new Error("qemu: microvm cannot map the image as persistent memory (no device memory)");
    // Device memory for the pmem region: maxmem above the RAM, rounded up to whole GiB.
    const pmemMiB = Math.ceil(l.imagePmem.bytes / GIB) * 1024;
    add("-m", `${l.memoryMiB}M,slots=1,maxmem=${l.memoryMiB + pmemMiB}M`);
  } else add("-m", `${l.memoryMiB}M`);
  if (sharedMemory) {
    // vhost-user devices (virtiofsd) map guest RAM: it must be a shared file mapping.
    add("-object", `memory-backend-memfd,id=mem,size=${l.memoryMiB}M,share=on`);
    // microvm's virtio-mmio defaults to legacy (virtio 0.9) transport, which vhost-user-fs refuses.
    if (micro) add("-global", "virtio-mmio.force-legacy=false");
  }
  if (l.memoryFile) {
    // share=on: the template's RAM lands in the file. share=off: the clone maps it copy-on-write.
    const share = l.memoryFile.mode === "template" ? "on" : "off";
    add(
      "-object",
      `memory-backend-file,id=mem,size=${l.memoryMiB}M,mem-path=${q(l.memoryFile.path)},share=${share}`,
    );
  }
  add("-kernel", l.kernel);
  if (l.initrd) add("-initrd", l.initrd);
  add("-append", kernelCmdline(l));
  // A guest reboot (panic=1, reboot(2)) ends QEMU instead of restarting the guest.
  add("-no-reboot");

  // Guest console → a log file in the sandbox directory.
  add("-chardev", `file,id=console,path=${q(l.consoleLog)}`);
  const vser = micro ? "virtio-serial-device" : "virtio-serial-pci";
  add("-device", `${vser},id=vser0`);
  if (l.console === "serial") add("-serial", "chardev:console");
  else add("-device", "virtconsole,bus=vser0.0,chardev=console,name=console.0");
  // The agent channel: a virtio-serial port backed by a unix socket QEMU listens on; wait=off so QEMU
  // boots without a client (the host connects when it likes; guest writes block until it has).
  add("-chardev", `socket,id=agent,path=${q(l.agentSocket)},server=on,wait=off`);
  add("-device", `virtserialport,bus=vser0.0,chardev=agent,name=${l.agentPortName ?? AGENT_PORT_NAME}`);

  // Entropy from the host: the guest kernel credits it at once ("crng init done" ~1.3 s into boot
  // instead of ~5.5 s under TCG), so node's first getrandom() no longer waits ~3 s for jitter entropy.
  const rng = l.rngSource ?? "/dev/urandom";
  if (rng) {
    add("-object", `rng-random,id=rng0,filename=${q(rng)}`);
    add("-device", `${micro ? "virtio-rng-device" : "virtio-rng-pci"},rng=rng0`);
  }
  if (l.freePageReporting) {
    // Reporting only: the host never inflates this balloon, so the guest keeps all of its memory.
    add("-device", `${micro ? "virtio-balloon-device" : "virtio-balloon-pci"},free-page-reporting=on`);
  }
  shares.forEach((sh, i) => {
    if (!/^[A-Za-z0-9_.-]{1,31}$/.test(sh.tag))
      throw new Error(`qemu: invalid share tag ${JSON.stringify(sh.tag)}`);
    if (sh.fs === "virtio-fs") {
      if (!sh.socket) throw new Error(`qemu: virtio-fs share ${sh.tag} has no virtiofsd socket`);
      // QEMU connects to the daemon's socket at start (the daemon must already listen). A queue of
      // 1024 descriptors, as Kata uses: the default 128 throttles large reads.
      add("-chardev", `socket,id=vfs${i},path=${q(sh.socket)}`);
      const dev = micro ? "vhost-user-fs-device" : "vhost-user-fs-pci";
      add("-device", `${dev},chardev=vfs${i},tag=${sh.tag},queue-size=1024`);
      return;
    }
    // multidevs=remap: the share holds bind mounts of several host filesystems (container rootfses),
    // whose inode numbers may collide; QEMU remaps them so the guest never sees two files as one.
    const fs = [`local,id=fs${i}`, `path=${q(sh.path)}`, `security_model=${sh.securityModel ?? "none"}`];
    fs.push("multidevs=remap");
    if (sh.readonly) fs.push("readonly=on");
    add("-fsdev", fs.join(","));
    add("-device", `${micro ? "virtio-9p-device" : "virtio-9p-pci"},fsdev=fs${i},mount_tag=${sh.tag}`);
  });

  (l.nics ?? []).forEach((n, i) => {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(n.ifname))
      throw new Error(`qemu: invalid tap name ${JSON.stringify(n.ifname)}`);
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(n.mac))
      throw new Error(`qemu: invalid MAC ${JSON.stringify(n.mac)}`);
    // The tap exists already (persistent, tc-redirected to the pod interface): no scripts. No vhost-net
    // here (/dev/vhost-net is absent on the development machine); vhost=off says so explicitly.
    add("-netdev", `tap,id=net${i},ifname=${n.ifname},script=no,downscript=no,vhost=off`);
    add("-device", `${micro ? "virtio-net-device" : "virtio-net-pci"},netdev=net${i},mac=${n.mac}`);
  });

  if (l.image && l.imagePmem) {
    // share=on: the guest maps the host's page cache of the file (DAX); readonly: it cannot write it.
    // A template's state skips it as it skips the RAM file (x-ignore-shared): a clone maps it again.
    add(
      "-object",
      `memory-backend-file,id=imagemem,mem-path=${q(l.image)},size=${l.imagePmem.bytes},share=on,readonly=on`,
    );
    add("-device", "virtio-pmem-pci,memdev=imagemem,id=image");
  } else if (l.image) {
    const blk = micro ? "virtio-blk-device" : "virtio-blk-pci";
    add("-drive", `if=none,id=image,file=${q(l.image)},format=raw,readonly=on`);
    add("-device", `${blk},drive=image`);
  }
  // QMP: the supervisor's control channel (status, quit, hotplug, events).
  add("-qmp", `unix:${q(l.qmpSocket)},server=on,wait=off`);
  add("-pidfile", l.pidFile);
  // Timestamps on QEMU's own stderr messages (errors while the VM runs end up in the supervisor log).
  add("-msg", "timestamp=on");
  // QEMU's own seccomp filter, installed before any guest code runs (part of the VMM jail).
  if (l.seccompSandbox) add("-sandbox", l.seccompSandbox);
  // A clone: no boot; the device state arrives over QMP (migrate-incoming with an fd passed by getfd).
  if (l.incoming) add("-incoming", "defer");
  return a;
}

/** The parts of a launch that come from configuration.toml ([hypervisor.qemu]). */
export function launchFromConfig(
  cfg: QemuConfig,
  rest: Omit<QemuLaunch, "qemuPath" | "machineType" | "vcpus" | "memoryMiB" | "kernel" | "kernelParams"> &
    Partial<Pick<QemuLaunch, "kernel" | "vcpus" | "memoryMiB" | "initrd" | "image">>,
): QemuLaunch {
  const initrd = rest.initrd ?? (rest.image ? undefined : cfg.initrd || undefined);
  const image = rest.image ?? (initrd ? undefined : cfg.image || undefined);
  return {
    ...rest,
    qemuPath: cfg.path,
    machineType: cfg.machineType || "microvm",
    vcpus: rest.vcpus ?? cfg.defaultVcpus,
    memoryMiB: rest.memoryMiB ?? cfg.defaultMemory,
    kernel: rest.kernel ?? cfg.kernel,
    initrd,
    image,
    kernelParams: cfg.kernelParams,
    tcgTbSizeMiB: cfg.tcgTbSize,
    // A template and its clones (RAM in a memory file) share one device set, without the balloon.
    freePageReporting: cfg.reclaimGuestFreedMemory && !rest.memoryFile,
    seccompSandbox: cfg.seccompsandbox || undefined,
    debug: rest.debug ?? cfg.enableDebug,
  };
}
