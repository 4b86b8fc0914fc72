// The sandbox share: the guest mounts <sandbox>/shared over 9p or virtio-fs; each container's rootfs
// appears there as a bind mount at shared/<container-id>/rootfs (read-write: the guest engine applies
// root.readonly), its bind mounts at shared/<container-id>/mounts/<n> (as Kata does). Mounting uses
// mount(2) from the addon: these mounts are on the path of every VM start and container create, where a
// spawned mount(8) cost 10-20 ms each.
//
// virtio-fs: virtiofsd runs in a mount namespace of its own, copied when it starts, and container
// mounts arrive later. So shared/ is made a mount of its own with shared propagation before virtiofsd
// starts (its copy is a slave of it: later bind mounts and unmounts below shared/ reach it). A read-only
// bind is made read-only before it is attached below shared/: a read-only remount changes only the
// host's copy, the propagated one would stay writable (measured: the guest could write).
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { GuestMount } from "../agent/api";
import { MS } from "../engine/mountopts";
import { mount, mountFlagsOf, unmountOrDetach } from "../sys/native";
import { GUEST_SHARED_DIR, SHARE_TAG } from "./paths";

export type SharedFsKind = "virtio-9p" | "virtio-fs";

/**
 * The sandbox share as the guest mounts it. 9p with `cache=mmap`, as Kata mounts it: nothing is cached
 * but the pages of mmap'd files (the host's data may change under the guest: no dentry, attribute or
 * read cache), which makes a shared writable mmap possible (cache=none refuses it: sqlite, LMDB) and
 * gives page faults readahead (cache=none reads an executable 4 KiB per fault: busybox's exec of
 * `true` took 74 reads over 92 ms under TCG, 5 reads over 40 ms with cache=mmap). The guest kernel
 * writes a shared mapping's dirty pages to the host when the mapping closes (munmap, the process's
 * exit: v9fs's vm_ops close), so a container's exit has them on the host.
 */
export function guestShareMount(fs: SharedFsKind): GuestMount {
  if (fs === "virtio-fs")
    return { source: SHARE_TAG, fstype: "virtiofs", target: GUEST_SHARED_DIR, options: [] };
  return {
    source: SHARE_TAG,
    fstype: "9p",
    target: GUEST_SHARED_DIR,
    options: ["trans=virtio", "version=9p2000.L", "msize=524288", "cache=mmap"],
  };
}

/** A bind mount of source at target (not recursive: what is mounted below source stays out). */
function bind(source: string, target: string): void {
  try {
    mount(source, target, "", MS.BIND, "");
  } catch (err) {
    throw new Error(`bind ${source} on ${target}: ${(err as Error).message}`);
  }
}

/** Makes the bind mount at target read-only, keeping its other flags (nosuid, nodev, ...), as runc does. */
function remountReadonly(target: string): void {
  try {
    mount("", target, "", MS.REMOUNT | MS.BIND | MS.RDONLY | mountFlagsOf(target), "");
  } catch (err) {
    throw new Error(`remount ${target} read-only: ${(err as Error).message}`);
  }
}

/** Makes `dir` a bind mount of itself with shared propagation (before virtiofsd copies the mounts). */
export function makeSharedMount(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  bind(dir, dir);
  try {
    mount("", dir, "", MS.SHARED, "");
  } catch (err) {
    throw new Error(`make ${dir} shared: ${(err as Error).message}`);
  }
}

/**
 * A cached VM's share (src/sandbox/slot.ts) seen at the sandbox's own shared/: a bind of that shared
 * mount joins its peer group, so container mounts made below shared/ reach the VM's copy too.
 */
export function bindShare(source: string, target: string): void {
  bind(source, target);
}

/**
 * Bind-mounts `source` (a directory, or a file onto an empty file) at `target`. Read-only: bound and
 * made read-only at a staging point next to the share (`stage`, outside it), then bound from there, so
 * every propagated copy is born read-only.
 */
function bindInto(target: string, source: string, readonly: boolean, stage: string, isDir: boolean): void {
  if (!readonly) {
    bind(source, target);
    return;
  }
  if (isDir) mkdirSync(stage, { recursive: true });
  else writeFileSync(stage, "");
  try {
    bind(source, stage);
    remountReadonly(stage);
    bind(stage, target);
  } finally {
    unmountTree(stage);
    rmSync(stage, { recursive: true, force: true });
  }
}

/** The staging point of a read-only bind: beside the share, never inside it. */
function stageFor(shared: string): string {
  return join(dirname(shared), `.ro-stage-${process.pid}`);
}

/** Bind-mounts `source` at <shared>/<name>/rootfs (or a deeper target) and returns the target. */
export function shareDir(shared: string, relTarget: string, source: string, readonly: boolean): string {
  const target = join(shared, relTarget);
  mkdirSync(target, { recursive: true, mode: 0o755 });
  bindInto(target, source, readonly, stageFor(shared), true);
  return target;
}

/** Bind-mounts a host file onto an empty file at <shared>/<relTarget> and returns the target. */
export function shareFile(shared: string, relTarget: string, source: string, readonly: boolean): string {
  const target = join(shared, relTarget);
  mkdirSync(dirname(target), { recursive: true });
  writeFileSync(target, "");
  bindInto(target, source, readonly, stageFor(shared), false);
  return target;
}

/** Mount points at or below dir, deepest first (from /proc/self/mountinfo; octal escapes decoded). */
export function mountsUnder(dir: string, mountinfo = readFileSync("/proc/self/mountinfo", "utf8")): string[] {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const out: string[] = [];
  for (const line of mountinfo.split("\n")) {
    const f = line.split(" ");
    if (f.length < 5) continue;
    const mp = f[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (mp === dir || mp.startsWith(prefix)) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Unmounts everything at or below dir (lazily when busy: QEMU may still hold files open). */
export function unmountTree(dir: string): void {
  for (let round = 0; round < 4; round++) {
    const mps = mountsUnder(dir);
    if (mps.length === 0) return;
    // One still refused even detached: the sandbox's teardown reports what is left.
    for (const mp of mps) unmountOrDetach(mp);
  }
}

/** Unmounts and removes a container's directory in the share. */
export function unshare(shared: string, containerId: string): void {
  const dir = join(shared, containerId);
  unmountTree(dir);
  // Never recurse into a still-mounted rootfs: removing would delete the container's files.
  if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
}
