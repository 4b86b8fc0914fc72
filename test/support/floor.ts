// The "floor" guest: the least a VM can do to prove it booted and that the agent channel works. An
// initramfs with busybox-static and a shell /init that mounts /proc, /sys, /dev, finds the virtio-serial
// port by name, writes "READY <guest uptime>" on it and answers "PING x" with "PONG x". Spawn-to-READY
// of this guest is the floor the real agent's boot time is compared against (bench/qemu-boot.sh), and
// the integration tests boot it to exercise the QEMU driver without any container machinery.
//
// The archive is uncompressed newc cpio: decompressing an initramfs is pure CPU work that TCG makes slow.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AGENT_PORT_NAME } from "../../src/agent/api";
import { cachePath, contentKey, ensureCached } from "../../src/image/cache";

export interface CpioEntry {
  name: string;
  /** Full st_mode: type bits | permissions. */
  mode: number;
  data?: Buffer;
  /** For symlinks: the target. */
  target?: string;
  rdevMajor?: number;
  rdevMinor?: number;
}

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

const pad4 = (n: number) => (4 - (n % 4)) % 4;

/** A newc ("070701") cpio archive, the format the kernel unpacks into its initramfs. */
export function newcArchive(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (e: CpioEntry) => {
    const body = e.target !== undefined ? Buffer.from(e.target) : (e.data ?? Buffer.alloc(0));
    const name = Buffer.from(`${e.name}\0`);
    const fields = [
      ino++,
      e.mode,
      0, // uid
      0, // gid
      (e.mode & 0o170000) === S_IFDIR ? 2 : 1,
      0, // mtime: fixed, so equal inputs give byte-identical archives
      body.length,
      0,
      0,
      e.rdevMajor ?? 0,
      e.rdevMinor ?? 0,
      name.length,
      0,
    ];
    const header = `070701${fields.map((f) => f.toString(16).padStart(8, "0")).join("")}`;
    parts.push(Buffer.from(header, "latin1"), name, Buffer.alloc(pad4(110 + name.length)));
    parts.push(body, Buffer.alloc(pad4(body.length)));
  };
  for (const e of entries) push(e);
  push({ name: "TRAILER!!!", mode: 0 });
  return Buffer.concat(parts);
}

/** The floor's /init (busybox sh). */
export function floorInitScript(portName = AGENT_PORT_NAME): string {
  return `#!/bin/sh
# kata-ts floor guest (test/support/floor.ts): READY on the agent port, then answer pings.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
if [ -f /lib/modules/load ]; then
  while read -r m; do insmod "/lib/modules/$m" || echo "floor: insmod $m failed" >/dev/console; done </lib/modules/load
fi
port=
while [ -z "$port" ]; do
  for n in /sys/class/virtio-ports/*/name; do
    [ -r "$n" ] || continue
    read -r name <"$n"
    if [ "$name" = "${portName}" ]; then d=\${n%/name}; port=/dev/\${d##*/}; fi
  done
  [ -n "$port" ] || sleep 0.01
done
read -r up idle </proc/uptime
# Keep one fd open on the port for the guest's whole life; a write blocks until the host connects.
exec 3<>"$port"
echo "READY $up" >&3
while :; do
  if read -r cmd arg <&3; then
    case "$cmd" in
      PING) echo "PONG $arg" >&3 ;;
      UPTIME) read -r up idle </proc/uptime; echo "UPTIME $up" >&3 ;;
      EXIT) echo "BYE" >&3; reboot -f ;;
      *) echo "ERR $cmd" >&3 ;;
    esac
  else
    # No host connected: the port reads EOF until one is.
    sleep 0.05
  fi
done
`;
}

const APPLETS = ["sh", "mount", "insmod", "sleep", "cat", "echo", "ls", "reboot", "poweroff"];

/** Module files (in load order) for `names` and their dependencies, from modules.dep. */
export function moduleLoadOrder(modulesDir: string, names: string[]): string[] {
  const dep = new Map<string, string[]>();
  for (const line of readFileSync(join(modulesDir, "modules.dep"), "utf8").split("\n")) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    dep.set(
      line.slice(0, i),
      line
        .slice(i + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    );
  }
  const byName = new Map<string, string>();
  for (const path of dep.keys()) {
    const base = path.slice(path.lastIndexOf("/") + 1).replace(/\.ko(\.\w+)?$/, "");
    byName.set(base.replace(/-/g, "_"), path);
  }
  const order: string[] = [];
  const visit = (path: string) => {
    if (order.includes(path)) return;
    // modules.dep lists every (transitive) dependency, the deepest last: load them in reverse.
    for (const d of [...(dep.get(path) ?? [])].reverse()) visit(d);
    order.push(path);
  };
  for (const n of names) {
    const path = byName.get(n.replace(/-/g, "_"));
    if (!path) throw new Error(`module ${n} is not in ${modulesDir}/modules.dep`);
    visit(path);
  }
  for (const p of order) {
    if (!p.endsWith(".ko"))
      throw new Error(`${p}: compressed modules are not supported by busybox insmod here`);
  }
  return order.map((p) => join(modulesDir, p));
}

export interface FloorOptions {
  busybox?: string;
  /** Module files to insmod at boot, in order (the stock kernel needs virtio_mmio + virtio_console). */
  modules?: string[];
  portName?: string;
}

/** The floor initramfs as bytes. */
export function buildFloorInitramfs(opts: FloorOptions = {}): Buffer {
  const busybox = opts.busybox ?? "/bin/busybox";
  if (!existsSync(busybox)) throw new Error(`${busybox} not found (apt-get install busybox-static)`);
  const dir = (name: string): CpioEntry => ({ name, mode: S_IFDIR | 0o755 });
  const entries: CpioEntry[] = [
    dir("bin"),
    dir("dev"),
    dir("proc"),
    dir("sys"),
    dir("tmp"),
    dir("lib"),
    dir("lib/modules"),
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    { name: "dev/console", mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 },
    { name: "bin/busybox", mode: S_IFREG | 0o755, data: readFileSync(busybox) },
    ...APPLETS.map((a) => ({ name: `bin/${a}`, mode: S_IFLNK | 0o777, target: "busybox" })),
    { name: "init", mode: S_IFREG | 0o755, data: Buffer.from(floorInitScript(opts.portName)) },
  ];
  const mods = opts.modules ?? [];
  const names = mods.map((m, i) => `${String(i).padStart(2, "0")}-${m.slice(m.lastIndexOf("/") + 1)}`);
  mods.forEach((m, i) => {
    entries.push({ name: `lib/modules/${names[i]}`, mode: S_IFREG | 0o644, data: readFileSync(m) });
  });
  if (mods.length) {
    entries.push({
      name: "lib/modules/load",
      mode: S_IFREG | 0o644,
      data: Buffer.from(`${names.join("\n")}\n`),
    });
  }
  return newcArchive(entries);
}

/** The floor initramfs in the cache (<cache>/floor/<key>/initramfs.cpio), built when missing. */
export async function ensureFloorInitramfs(opts: FloorOptions & { cacheDir?: string } = {}): Promise<string> {
  const archive = buildFloorInitramfs(opts);
  const path = cachePath("floor", contentKey(archive), "initramfs.cpio", opts.cacheDir);
  return ensureCached(path, () => archive);
}

/** The modules the stock Debian kernel needs for the floor (agent port on microvm or PCI machines). */
export function stockFloorModules(release: string, machineType = "microvm"): string[] {
  const names = machineType.startsWith("microvm")
    ? ["virtio_mmio", "virtio_console"]
    : ["virtio_pci", "virtio_console"];
  return moduleLoadOrder(`/lib/modules/${release}`, names);
}
