// What a container's spec becomes inside the guest: the rootfs and bind sources moved to the share, hooks
// removed (the host runs them), host namespace paths mapped to the guest's (Kata's agent rules). The one
// place the host's OCI spec is converted to the guest's.
import { isAbsolute } from "node:path";
import type { Mount, Namespace, Spec } from "../oci/spec";
import { GUEST_SHARED_DIR, guestRootfs } from "./paths";

/** Namespaces a pod container shares with its sandbox container when the engine names them by path. */
const POD_SHARED_NAMESPACES = new Set(["ipc", "uts", "pid"]);

/**
 * The guest's view of the spec's namespaces, as Kata's agent maps them. A path names a namespace of the
 * host kernel, which the guest cannot enter; what the engine meant by it is "the pod's":
 * - network, by path or new: no entry at all. The container's network is the VM's, the guest's root
 *   netns: the NICs of the namespace the host gave the VM (a path, or one kata-ts made for prestart
 *   hooks), else only lo, up, as in a new namespace of runc's. Kata's runtime drops it from every spec
 *   too. A namespace made in the guest would cost a template clone's first create tens of ms of
 *   first-time kernel code under TCG (docs/guest.md). Except a new one beside a user namespace: it is
 *   made in the guest, so that the container's user namespace owns it (mounting sysfs, lo, net sysctls
 *   need that, as on the host);
 * - ipc/uts/pid by path in a pod container: the sandbox container's, `/proc/<its guest pid>/ns/<type>`;
 * - every other path (and all of them in a container that is its own sandbox): a fresh namespace.
 * Any other namespace without a path stays a fresh one.
 */
export function guestNamespaces(namespaces: readonly Namespace[], sandboxGuestPid?: number): Namespace[] {
  const out: Namespace[] = [];
  const userns = namespaces.some((n) => n.type === "user");
  for (const n of namespaces) {
    if (n.type === "network" && (n.path || !userns)) continue;
    if (!n.path) out.push({ type: n.type });
    else if (sandboxGuestPid && POD_SHARED_NAMESPACES.has(n.type))
      out.push({ type: n.type, path: `/proc/${sandboxGuestPid}/ns/${n.type}` });
    else out.push({ type: n.type });
  }
  return out;
}

/**
 * What a container spec becomes inside the guest, and which host paths must be shared for it.
 * `sandboxGuestPid`: the guest pid of the sandbox container's init, for a pod container.
 */
export function guestSpec(
  spec: Spec,
  containerId: string,
  sharedDir = GUEST_SHARED_DIR,
  sandboxGuestPid?: number,
): { spec: Spec; binds: { index: number; source: string; rel: string }[] } {
  const g = structuredClone(spec);
  g.root = {
    path: sharedDir === GUEST_SHARED_DIR ? guestRootfs(containerId) : `${sharedDir}/${containerId}/rootfs`,
    readonly: spec.root?.readonly,
  };
  // Hooks run on the host (the CLI runs them); host namespace paths mean nothing in the guest.
  delete g.hooks;
  if (g.linux?.namespaces) g.linux.namespaces = guestNamespaces(g.linux.namespaces, sandboxGuestPid);
  const binds: { index: number; source: string; rel: string }[] = [];
  g.mounts = (spec.mounts ?? []).map((m: Mount, index) => {
    const bind = m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
    // Device nodes and kernel filesystems are the guest's own; only host files and directories travel.
    if (!bind || !m.source || !isAbsolute(m.source) || /^\/(dev|proc|sys)(\/|$)/.test(m.source))
      return { ...m };
    const rel = `${containerId}/mounts/${index}`;
    binds.push({ index, source: m.source, rel });
    return { ...m, source: `${sharedDir}/${rel}` };
  });
  return { spec: g, binds };
}
