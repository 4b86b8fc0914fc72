// Mount options → mount(2) flags, propagation flags and the data string, with runc's table. Options
// the kernel does not know as flags (mode=755, size=...) go to the data string for the filesystem.

export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  MANDLOCK: 0x40,
  DIRSYNC: 0x80,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  SILENT: 0x8000,
  UNBINDABLE: 0x20000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
  I_VERSION: 0x800000,
  STRICTATIME: 0x1000000,
  LAZYTIME: 0x2000000,
} as const;

// [clear?, flag]: clear = the option removes the flag.
const FLAGS: Record<string, [boolean, number]> = {
  async: [true, MS.SYNCHRONOUS],
  atime: [true, MS.NOATIME],
  bind: [false, MS.BIND],
  defaults: [false, 0],
  dev: [true, MS.NODEV],
  diratime: [true, MS.NODIRATIME],
  dirsync: [false, MS.DIRSYNC],
  exec: [true, MS.NOEXEC],
  iversion: [false, MS.I_VERSION],
  lazytime: [false, MS.LAZYTIME],
  loud: [true, MS.SILENT],
  mand: [false, MS.MANDLOCK],
  noatime: [false, MS.NOATIME],
  nodev: [false, MS.NODEV],
  nodiratime: [false, MS.NODIRATIME],
  noexec: [false, MS.NOEXEC],
  noiversion: [true, MS.I_VERSION],
  nolazytime: [true, MS.LAZYTIME],
  nomand: [true, MS.MANDLOCK],
  norelatime: [true, MS.RELATIME],
  nostrictatime: [true, MS.STRICTATIME],
  nosuid: [false, MS.NOSUID],
  rbind: [false, MS.BIND | MS.REC],
  relatime: [false, MS.RELATIME],
  remount: [false, MS.REMOUNT],
  ro: [false, MS.RDONLY],
  rw: [true, MS.RDONLY],
  silent: [false, MS.SILENT],
  strictatime: [false, MS.STRICTATIME],
  suid: [true, MS.NOSUID],
  sync: [false, MS.SYNCHRONOUS],
};

export const PROPAGATION: Record<string, number> = {
  private: MS.PRIVATE,
  rprivate: MS.PRIVATE | MS.REC,
  shared: MS.SHARED,
  rshared: MS.SHARED | MS.REC,
  slave: MS.SLAVE,
  rslave: MS.SLAVE | MS.REC,
  unbindable: MS.UNBINDABLE,
  runbindable: MS.UNBINDABLE | MS.REC,
};

/** mount_setattr(2) attributes (linux/mount.h) for runc's recursive options ("rro", "rnosuid", ...). */
export const MOUNT_ATTR = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  ATIME_MASK: 0x70,
  NOATIME: 0x10,
  STRICTATIME: 0x20,
  NODIRATIME: 0x80,
  NOSYMFOLLOW: 0x200000,
} as const;

// [clear?, attr, also clear (the atime family is one field)]
const RECURSIVE: Record<string, [boolean, number, number]> = {
  rro: [false, MOUNT_ATTR.RDONLY, 0],
  rrw: [true, MOUNT_ATTR.RDONLY, 0],
  rnosuid: [false, MOUNT_ATTR.NOSUID, 0],
  rsuid: [true, MOUNT_ATTR.NOSUID, 0],
  rnodev: [false, MOUNT_ATTR.NODEV, 0],
  rdev: [true, MOUNT_ATTR.NODEV, 0],
  rnoexec: [false, MOUNT_ATTR.NOEXEC, 0],
  rexec: [true, MOUNT_ATTR.NOEXEC, 0],
  rnodiratime: [false, MOUNT_ATTR.NODIRATIME, 0],
  rdiratime: [true, MOUNT_ATTR.NODIRATIME, 0],
  rrelatime: [false, 0, MOUNT_ATTR.ATIME_MASK],
  rnorelatime: [true, 0, 0],
  rnoatime: [false, MOUNT_ATTR.NOATIME, MOUNT_ATTR.ATIME_MASK],
  ratime: [true, MOUNT_ATTR.NOATIME, 0],
  rstrictatime: [false, MOUNT_ATTR.STRICTATIME, MOUNT_ATTR.ATIME_MASK],
  rnostrictatime: [true, MOUNT_ATTR.STRICTATIME, 0],
  rnosymfollow: [false, MOUNT_ATTR.NOSYMFOLLOW, 0],
  rsymfollow: [true, MOUNT_ATTR.NOSYMFOLLOW, 0],
};

// Options runc accepts that are not kernel flags and must not reach the filesystem either.
const IGNORED = new Set(["tmpcopyup", "idmap", "ridmap", "recursive"]);

export interface ParsedMountOptions {
  flags: number;
  propagation: number;
  data: string;
  /** Recursive attributes to set / clear with mount_setattr(AT_RECURSIVE); 0 when none were asked. */
  attrSet: number;
  attrClr: number;
}

export function parseMountOptions(options: readonly string[] | undefined): ParsedMountOptions {
  let flags = 0;
  let propagation = 0;
  let attrSet = 0;
  let attrClr = 0;
  const data: string[] = [];
  for (const o of options ?? []) {
    const f = FLAGS[o];
    const r = RECURSIVE[o];
    if (r) {
      const [clear, attr, also] = r;
      if (clear) {
        attrClr |= attr;
        attrSet &= ~attr;
      } else {
        attrSet |= attr;
        attrClr = (attrClr | also) & ~attr;
      }
    } else if (f) {
      flags = f[0] ? flags & ~f[1] : flags | f[1];
    } else if (PROPAGATION[o] !== undefined) {
      propagation |= PROPAGATION[o];
    } else if (!IGNORED.has(o)) {
      data.push(o);
    }
  }
  return { flags, propagation, data: data.join(","), attrSet, attrClr };
}
