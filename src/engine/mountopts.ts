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

// Options runc accepts that are not kernel flags and must not reach the filesystem either.
const IGNORED = new Set(["tmpcopyup", "idmap", "ridmap", "recursive"]);

export interface ParsedMountOptions {
  flags: number;
  propagation: number;
  data: string;
}

export function parseMountOptions(options: readonly string[] | undefined): ParsedMountOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const o of options ?? []) {
    const f = FLAGS[o];
    if (f) {
      flags = f[0] ? flags & ~f[1] : flags | f[1];
    } else if (PROPAGATION[o] !== undefined) {
      propagation |= PROPAGATION[o];
    } else if (!IGNORED.has(o)) {
      data.push(o);
    }
  }
  return { flags, propagation, data: data.join(",") };
}
