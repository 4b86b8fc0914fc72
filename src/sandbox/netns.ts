// A sandbox container's prestart hooks in VM mode run before its VM exists, in the sandbox's network
// namespace (docs/sandbox.md "Prestart hooks before the VM"). microvm cannot hot-plug a NIC, so an
// interface a hook puts there must exist when QEMU starts; docker's libnetwork-setkey hook moves the
// container's veth into the netns of the state's pid (/proc/<pid>/ns/net) and configures it there.
// Kata v1 did the same (katautils.CreateSandbox: a new netns when the spec names none, prestart hooks
// with state.pid = the runtime's thread inside that netns, then the VM); kata-ts names the namespace by
// a holder process standing in it, and runs the hook processes themselves where runc does (the
// caller's namespaces).
import type { Spec } from "../oci/spec";
import { createNetnsFile, netnsHolder, netnsId } from "../sys/netns";
import type { SandboxRef } from "./launch";
import { sandboxPaths } from "./paths";

/** Whether prestartBeforeVm makes a network namespace for this spec: a new one asked for, prestart hooks. */
export function makesNetns(spec: Spec): boolean {
  const ns = spec.linux?.namespaces?.find((n) => n.type === "network");
  return Boolean(ns && !ns.path && spec.hooks?.prestart?.length);
}

/**
 * Runs `prestart` (the spec's prestart hooks) with a pid whose `/proc/<pid>/ns/net` is the sandbox's
 * network namespace: the spec's by path, or a new one kata-ts makes at <sandbox>/netns when the spec
 * asks for a new one (removed with the sandbox's directory, after a failure too). Returns that new
 * namespace's path, which the VM's NICs then come from and the container joins. No prestart hooks:
 * nothing is made (nothing could add an interface before QEMU). No network namespace in the spec: the
 * host's is the container's, and the pid is this process's. The sandbox directory must exist.
 */
export async function prestartBeforeVm(
  s: SandboxRef,
  spec: Spec,
  prestart: (pid: number) => Promise<void>,
): Promise<string | undefined> {
  if (!spec.hooks?.prestart?.length) return undefined;
  let made: string | undefined;
  let path = spec.linux?.namespaces?.find((n) => n.type === "network")?.path;
  if (makesNetns(spec)) {
    path = made = sandboxPaths(s.root, s.id).netns;
    createNetnsFile(path);
  }
  // The host's, or a namespace this process may not look into (EACCES; the VM gets no NIC from it).
  if (!path || netnsId(path) === undefined) {
    await prestart(process.pid);
    return made;
  }
  const holder = await netnsHolder(path);
  try {
    await prestart(holder.pid);
  } finally {
    await holder.stop();
  }
  return made;
}

/** The spec the guest gets for a container whose new netns kata-ts made: joined by path, the VM's own. */
export function joinMadeNetns(spec: Spec, made: string | undefined): Spec {
  if (!made || !spec.linux?.namespaces) return spec;
  return {
    ...spec,
    linux: {
      ...spec.linux,
      namespaces: spec.linux.namespaces.map((n) => (n.type === "network" ? { ...n, path: made } : n)),
    },
  };
}
