// What both backends (host.ts, vm.ts) share about one container: reading its bundle,
// its OCI state (what hooks get on stdin), running its host-side hooks, and the --pid-file engines wait on.
import { readFileSync, statSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { containerState } from "../engine/container";
import { checkNamespacePaths } from "../engine/nsjoin";
import { span } from "../log/tracing";
import { containerKind } from "../oci/annotations";
import type { HookName, Spec } from "../oci/spec";
import { rfc3339Nano } from "../oci/state";
import { parseConfigJson, validateSpec } from "../oci/validate";
import { writeFileAtomic } from "../sys/files";
import { runHooks } from "./hooks";
import type { ContainerStatus } from "./status";
import type { ContainerRecord, HypervisorKind } from "./store";

/** The bundle's config.json, validated; runc's wording when it is missing. */
function loadBundle(bundle: string): Spec {
  const file = join(bundle, "config.json");
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(
      code === "ENOENT"
        ? `JSON specification file ${file} not found`
        : `read ${file}: ${code ?? String(err)}`,
    );
  }
  return validateSpec(parseConfigJson(text, file));
}

/**
 * The record of a container about to be created from a bundle (default: the working directory): its
 * validated spec, resolved rootfs (which must be a directory) and container type from the annotations.
 */
export function newContainerRecord(
  id: string,
  bundleArg: string | undefined,
  hypervisor: HypervisorKind,
): ContainerRecord {
  const bundle = resolve(bundleArg ?? process.cwd());
  const spec = loadBundle(bundle);
  const rootPath = spec.root?.path ?? "rootfs";
  const rootfs = isAbsolute(rootPath) ? rootPath : join(bundle, rootPath);
  try {
    if (!statSync(rootfs).isDirectory()) throw new Error("not a directory");
  } catch {
    throw new Error(`root.path: rootfs ${rootfs} does not exist or is not a directory`);
  }
  // Before anything is created, in both modes (VM mode refuses before it boots a VM).
  checkNamespacePaths(spec, { allowUnexaminable: hypervisor !== "none" });
  const kind = containerKind(spec.annotations, id);
  return {
    id,
    bundle,
    rootfs,
    created: rfc3339Nano(new Date()),
    owner: "",
    annotations: spec.annotations ?? {},
    pid: 0,
    pidStartTime: 0,
    paused: false,
    hypervisor,
    sandboxId: kind.sandboxId ?? id,
    containerType: kind.type,
    config: spec,
    engine: {},
  };
}

/** The OCI state JSON of a container, as hooks receive it on stdin (the driver's, from the record). */
export function stateJson(record: ContainerRecord, status: ContainerStatus, pid?: number): string {
  const facts = {
    id: record.id,
    bundle: record.bundle,
    spec: record.config,
    annotations: record.annotations,
  };
  return containerState(facts, status, pid ?? record.pid);
}

/** Runs the container's host-side hooks of one kind (in a tracing span), from the bundle directory. */
export async function hostHooks(
  kind: HookName,
  record: ContainerRecord,
  status: ContainerStatus,
  pid?: number,
): Promise<void> {
  const hooks = record.config.hooks?.[kind];
  if (!hooks?.length) return;
  await span(`hooks.${kind}`, { container: record.id, sandbox: record.sandboxId, count: hooks.length }, () =>
    runHooks(kind, hooks, JSON.parse(stateJson(record, status, pid)), { cwd: record.bundle }),
  );
}

/** --pid-file: written last and atomically, as engines read it as soon as it appears. */
export function writePidFile(path: string | undefined, pid: number): void {
  if (path) writeFileAtomic(resolve(path), String(pid), 0o644);
}
