// Namespaces a config.json joins by path (linux.namespaces[].path). The runtime spec requires an error
// when a path is not a namespace of the declared type; joining it anyway is how a `mount` entry naming a
// network namespace once left the container's mount setup and pivot_root in kata-ts's own mount
// namespace (the caller's root was swapped). So every path is checked here, before anything is created,
// by the type the kernel reports for the file (ioctl NS_GET_NSTYPE: it works for bind-mounted nsfs files
// such as /run/netns/NAME, where readlink does not). The helper joins with setns(fd, CLONE_NEW<type>) too,
// and the container init refuses to mount in kata-ts's mount namespace (docs/engine.md).
import { statSync } from "node:fs";
import type { NamespaceType, Spec } from "../oci/spec";
import { nsType } from "../sys/native";
import { CLONE_FLAGS, PlanError } from "./plan";

/** The namespace type of a CLONE_NEW* value, for messages. */
function typeName(flag: number): string {
  const t = (Object.keys(CLONE_FLAGS) as NamespaceType[]).find((k) => CLONE_FLAGS[k] === flag);
  return t ?? `unknown (0x${flag.toString(16)})`;
}

/** "dev:ino" of a namespace file (what tells two namespaces apart), undefined if it cannot be stat'ed. */
export function nsIdentity(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

export interface NamespaceCheckOptions {
  /** The mount namespace kata-ts runs in, which a container must never be set up in. */
  ownMountNs?: string;
  /**
   * VM mode: the host never joins these paths (the guest maps them to its own namespaces, and the
   * network scan treats an unexaminable netns as "no NIC"), so a path that exists but may not be
   * opened (EACCES/EPERM: another user namespace's process, e.g. /proc/1/ns/net on some hosts) is let
   * through. A path that is missing, not a namespace or of another type is refused in both modes.
   */
  allowUnexaminable?: boolean;
}

/**
 * Throws a one-line PlanError unless every linux.namespaces path is a namespace of its declared type, and
 * a mount namespace path is not the one kata-ts runs in (`ownMountNs`).
 */
export function checkNamespacePaths(spec: Spec, opts: NamespaceCheckOptions = {}): void {
  const ownMountNs = opts.ownMountNs ?? "/proc/self/ns/mnt";
  for (const ns of spec.linux?.namespaces ?? []) {
    if (!ns.path) continue;
    const declared = ns.type;
    let actual: number;
    try {
      actual = nsType(ns.path);
    } catch (err) {
      const why = (err as Error).message.replace(/^[^:]*: /, "").toLowerCase();
      if (opts.allowUnexaminable && /permission denied|operation not permitted/.test(why)) continue;
      throw new PlanError(`linux.namespaces: ${declared} namespace path ${ns.path}: ${why}`);
    }
    if (actual === 0)
      throw new PlanError(`linux.namespaces: ${ns.path} is not a namespace (declared type ${declared})`);
    if (actual !== CLONE_FLAGS[declared])
      throw new PlanError(
        `linux.namespaces: ${ns.path} is of type ${typeName(actual)}, not the declared type ${declared}`,
      );
    if (declared === "mount" && nsIdentity(ns.path) === nsIdentity(ownMountNs))
      throw new PlanError(
        `linux.namespaces: ${ns.path} is kata-ts's own mount namespace; the container's mounts must not be made in it`,
      );
  }
}
