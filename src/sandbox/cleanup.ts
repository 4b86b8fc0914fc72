// What a sandbox leaves on the host and how it goes: the supervisor removes it on shutdown, and a later
// CLI call (src/sandbox/launch.ts destroySandbox) when the supervisor died without doing so.
import { existsSync, readdirSync, rmdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { slotDirOf } from "../factory/cache";
import { teardownSandboxNetwork } from "../network";
import type { SandboxPaths } from "./paths";
import { mountsUnder, unmountTree } from "./share";

/**
 * Removes what a sandbox left on the host: mounts under its directory, sockets, the short socket
 * directory. With `all` the sandbox directory goes too; otherwise the logs stay for whoever deletes it.
 */
export function cleanupSandboxDir(p: SandboxPaths, all: boolean): void {
  // Taps and tc qdiscs in the pod's netns (recorded in the sandbox dir; QEMU is gone by now).
  teardownSandboxNetwork(p.dir);
  // A VM from the cache ran in its slot's directory (src/sandbox/slot.ts): it goes with the sandbox.
  const slot = slotDirOf(p.dir);
  unmountTree(p.dir);
  if (slot) {
    unmountTree(slot);
    if (mountsUnder(slot).length === 0) rmSync(slot, { recursive: true, force: true });
  }
  if (p.sockDir !== p.dir) rmSync(p.sockDir, { recursive: true, force: true });
  // Never recurse into a directory that still has a mount below it: that would delete a rootfs.
  if (mountsUnder(p.dir).length > 0) return;
  if (all) {
    rmSync(p.dir, { recursive: true, force: true });
    // <root>/sandboxes too once it is empty, so that a runtime root holds nothing after the last delete
    // (as runc's does); a concurrent create's recursive mkdir makes it again.
    try {
      rmdirSync(dirname(p.dir));
    } catch {
      // another sandbox still lives there (or a create made it again): it stays
    }
    return;
  }
  rmSync(p.socket, { force: true });
  rmSync(p.shared, { recursive: true, force: true });
  if (existsSync(p.dir))
    for (const f of readdirSync(p.dir)) if (f.endsWith(".sock")) rmSync(join(p.dir, f), { force: true });
}
