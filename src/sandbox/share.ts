// The sandbox share: the guest mounts <sandbox>/shared over 9p (or virtio-fs); each container's rootfs
// appears there as a bind mount at shared/<container-id>/rootfs (read-write: the guest engine applies root.readonly)
// (as Kata does). Mounting uses mount(8): a handful of calls per container, not a hot path.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

function run(args: string[]): void {
  try {
    execFileSync(args[0], args.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
  } catch (err) {
    const msg = ((err as { stderr?: Buffer }).stderr?.toString() ?? "").trim().split("\n").pop();
    throw new Error(`${args.join(" ")}: ${msg || (err as Error).message}`);
  }
}

/** Bind-mounts `source` at <shared>/<name>/rootfs (or a deeper target) and returns the target. */
export function shareDir(shared: string, relTarget: string, source: string, readonly: boolean): string {
  const target = join(shared, relTarget);
  mkdirSync(target, { recursive: true, mode: 0o755 });
  run(["mount", "--bind", source, target]);
  if (readonly) {
    try {
      run(["mount", "-o", "remount,bind,ro", target]);
    } catch (err) {
      unmountTree(target);
      throw err;
    }
  }
  return target;
}

/** Bind-mounts a host file onto an existing (empty) file in the share. */
export function shareFile(target: string, source: string, readonly: boolean): void {
  run(["mount", "--bind", source, target]);
  if (readonly) run(["mount", "-o", "remount,bind,ro", target]);
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
    for (const mp of mps) {
      try {
        run(["umount", mp]);
      } catch {
        try {
          run(["umount", "-l", mp]);
        } catch {}
      }
    }
  }
}

/** Unmounts and removes a container's directory in the share. */
export function unshare(shared: string, containerId: string): void {
  const dir = join(shared, containerId);
  unmountTree(dir);
  // Never recurse into a still-mounted rootfs: removing would delete the container's files.
  if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
}
