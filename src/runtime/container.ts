// What the host engine (lifecycle.ts) and VM mode (vm.ts) share about one container: reading its bundle,
// its OCI state (what hooks get on stdin), running its host-side hooks, and the --pid-file engines wait on.
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { span } from "../log/tracing";
import type { HookName, Spec } from "../oci/spec";
import { ociState } from "../oci/state";
import { parseConfigJson, validateSpec } from "../oci/validate";
import { runHooks } from "./hooks";
import type { ContainerStatus } from "./status";
import { type ContainerRecord, writeFileAtomic } from "./store";

/** The bundle's config.json, validated; runc's wording when it is missing. */
export function loadBundle(bundle: string): Spec {
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

/** The OCI state JSON of a container, as hooks receive it on stdin. */
export function stateJson(record: ContainerRecord, status: ContainerStatus, pid?: number): string {
  return JSON.stringify(
    ociState({
      id: record.id,
      status,
      pid: pid ?? record.pid,
      bundle: record.bundle,
      annotations: record.annotations,
      ociVersion: record.config.ociVersion,
    }),
  );
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
