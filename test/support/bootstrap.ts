// The bootstrap initramfs for Debian's stock kernel. kata-ts's own kernel has virtio-blk, virtio-pmem
// and ext4 built in and mounts the guest image as its root directly (no initramfs at all). The stock
// kernel has them as modules, so it needs a tiny initramfs (busybox + those modules + this init) that
// loads them, mounts the image read-only and switch_roots into it; the image's /init then runs as
// PID 1 exactly as with the kata-ts kernel. Booting this way needs BOTH an initrd and an image: see
// docs/guest.md for the configuration this implies.
import { existsSync, readFileSync } from "node:fs";
import { type CpioEntry, moduleLoadOrder, newcArchive, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG } from "./floor";

/** Modules the stock kernel needs to reach the image and the agent port (modules.dep adds the rest). */
export function bootstrapModuleNames(machineType = "microvm"): string[] {
  const bus = machineType.startsWith("microvm") ? "virtio_mmio" : "virtio_pci";
  // crc32c_generic: ext4 asks the crypto API for crc32c at mount time (a softdep modules.dep omits).
  return [bus, "virtio_blk", "virtio_console", "crc32c_generic", "ext4"];
}

/** The bootstrap /init (busybox sh): load modules, mount the image, hand over to its /sbin/init. */
export function bootstrapInitScript(rootDevice = "/dev/vda"): string {
  return `#!/bin/sh
# kata-ts bootstrap initramfs (test/support/bootstrap.ts), for kernels without built-in virtio-blk/ext4.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" || echo "bootstrap: insmod $m failed" >/dev/console; done </lib/modules/load
root=${rootDevice}
for arg in $(cat /proc/cmdline); do case "$arg" in kata_ts.root=*) root=\${arg#*=} ;; esac; done
n=0
while [ ! -b "$root" ]; do
  n=$((n + 1))
  [ $n -lt 500 ] || { echo "bootstrap: $root did not appear" >/dev/console; poweroff -f; }
  sleep 0.01
done
mkdir -p /newroot
mount -t ext4 -o ro "$root" /newroot || { echo "bootstrap: cannot mount $root" >/dev/console; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
`;
}

const APPLETS = ["sh", "mount", "umount", "insmod", "sleep", "mkdir", "cat", "switch_root", "poweroff"];

export interface BootstrapOptions {
  busybox?: string;
  /** Module files in load order (default: bootstrapModuleNames for the running release, from /lib/modules). */
  modules: string[];
  rootDevice?: string;
}

export function buildBootstrapInitramfs(opts: BootstrapOptions): Buffer {
  const busybox = opts.busybox ?? "/bin/busybox";
  if (!existsSync(busybox)) throw new Error(`${busybox} not found (apt-get install busybox-static)`);
  const dir = (name: string): CpioEntry => ({ name, mode: S_IFDIR | 0o755 });
  const names = opts.modules.map(
    (m, i) => `${String(i).padStart(2, "0")}-${m.slice(m.lastIndexOf("/") + 1)}`,
  );
  return newcArchive([
    ...["bin", "dev", "proc", "sys", "lib", "lib/modules", "newroot"].map(dir),
    { name: "dev/console", mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 },
    { name: "bin/busybox", mode: S_IFREG | 0o755, data: readFileSync(busybox) },
    ...APPLETS.map((a) => ({ name: `bin/${a}`, mode: S_IFLNK | 0o777, target: "busybox" })),
    { name: "init", mode: S_IFREG | 0o755, data: Buffer.from(bootstrapInitScript(opts.rootDevice)) },
    ...opts.modules.map((m, i) => ({
      name: `lib/modules/${names[i]}`,
      mode: S_IFREG | 0o644,
      data: readFileSync(m),
    })),
    { name: "lib/modules/load", mode: S_IFREG | 0o644, data: Buffer.from(`${names.join("\n")}\n`) },
  ]);
}

/** Module files for a stock kernel release, in load order. */
export function stockBootstrapModules(release: string, machineType = "microvm"): string[] {
  return moduleLoadOrder(`/lib/modules/${release}`, bootstrapModuleNames(machineType));
}
