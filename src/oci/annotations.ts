// Which VM a container belongs to, from the annotations the engines set (as Kata does): a "sandbox"
// gets its own VM; a "pod_container" joins the VM of its sandbox. No annotation: its own sandbox.

export type ContainerType = "sandbox" | "pod_container";

export interface ContainerKind {
  type: ContainerType;
  /** The sandbox's container id (pod containers; for a sandbox, when the engine says). */
  sandboxId?: string;
}

interface EngineKeys {
  typeKey: string;
  sandboxIdKey: string;
  sandbox: string;
  container: string;
}

// containerd (CRI), CRI-O and dockershim name the same idea differently.
const ENGINES: readonly EngineKeys[] = [
  {
    typeKey: "io.kubernetes.cri.container-type",
    sandboxIdKey: "io.kubernetes.cri.sandbox-id",
    sandbox: "sandbox",
    container: "container",
  },
  {
    typeKey: "io.kubernetes.cri-o.ContainerType",
    sandboxIdKey: "io.kubernetes.cri-o.SandboxID",
    sandbox: "sandbox",
    container: "container",
  },
  {
    typeKey: "io.kubernetes.docker.type",
    sandboxIdKey: "io.kubernetes.sandbox.id",
    sandbox: "podsandbox",
    container: "container",
  },
];

export const SANDBOX_ANNOTATION_KEYS = ENGINES.map((e) => e.typeKey);

/**
 * Reads the container type; throws on an unknown type value or a pod container without sandbox id.
 * `containerId` names the sandbox when the container is its own (no annotation, or a sandbox).
 */
export function containerKind(
  annotations: Record<string, string> | undefined,
  containerId?: string,
): ContainerKind {
  const self = containerId ? { sandboxId: containerId } : {};
  const a = annotations ?? {};
  for (const e of ENGINES) {
    const value = a[e.typeKey];
    if (value === undefined) continue;
    const sandboxId = a[e.sandboxIdKey] || undefined;
    if (value === e.sandbox) return sandboxId ? { type: "sandbox", sandboxId } : { type: "sandbox", ...self };
    if (value === e.container) {
      if (!sandboxId)
        throw new Error(`annotation ${e.sandboxIdKey} is required when ${e.typeKey} is "${value}"`);
      return { type: "pod_container", sandboxId };
    }
    throw new Error(`annotation ${e.typeKey}: unknown container type ${JSON.stringify(value)}`);
  }
  return { type: "sandbox", ...self };
}
