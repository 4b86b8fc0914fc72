// The lifecycle verbs — create, start, run, kill, delete, exec — written once, as runc does them, over
// a backend that runs the container on the host (host.ts, hypervisor = "none") or in a VM sandbox
// (vm.ts). Every mutating verb holds the container's lock; state transitions and their runc wording
// live in one table (transitions.ts). Whatever a failed create made is unwound.
import { readFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { processConfig } from "../config/config";
import { EXEC_FIFO } from "../engine/container";
import { signalNumber } from "../engine/launcher";
import { parseSignal, relaySignals } from "../engine/signals";
import { KataError } from "../errors";
import { annotateSpan } from "../log/tracing";
import { validateContainerId } from "../oci/id";
import type { Process } from "../oci/spec";
import { parseConfigJson, validateProcess } from "../oci/validate";
import type { Backend, Started } from "./backend";
import { hostHooks, newContainerRecord, stateJson, writePidFile } from "./container";
import { runPoststopHooks } from "./hooks";
import { hostBackend } from "./host";
import type { CreateOptions, ExecOptions, RunOptions, RuntimeContext } from "./options";
import { containerStatus } from "./status";
import { ContainerNotFound, type ContainerRecord, type HypervisorKind, StateStore } from "./store";
import { checkTransition } from "./transitions";
import { vmBackend } from "./vm";

export type { CreateOptions, ExecOptions, RunOptions, RuntimeContext } from "./options";

const BACKENDS: Record<HypervisorKind, Backend> = { none: hostBackend, qemu: vmBackend };

/** A new container goes where the configuration says ([runtime] hypervisor), unless the caller says. */
function backendForNew(ctx: RuntimeContext): Backend {
  return BACKENDS[ctx.hypervisor ?? processConfig(ctx.configPath).config.runtime.hypervisor];
}

/** An existing container stays where it was created, whatever the configuration says now. */
export function backendOf(record: ContainerRecord): Backend {
  return BACKENDS[record.hypervisor] ?? hostBackend;
}

/** create: everything up to the init waiting for `start`. `wait` keeps our child as its waiter (run). */
export async function createContainer(
  ctx: RuntimeContext,
  o: CreateOptions,
  wait = false,
): Promise<{ record: ContainerRecord; init: Started }> {
  validateContainerId(o.id);
  const backend = backendForNew(ctx);
  const record = newContainerRecord(o.id, o.bundle, backend.kind);
  annotateSpan({ sandbox: record.sandboxId });
  const creation = backend.prepare(ctx, record, o);
  const store = new StateStore(ctx.root);
  store.create(record);
  try {
    return await store.withLock(o.id, async () => {
      const init = await creation.make(store, wait, async (pid, kinds = ["prestart", "createRuntime"]) => {
        // runc 1.1.5 gives these hooks status "creating" (measured), as the spec says of create.
        for (const kind of kinds) await hostHooks(kind, record, "creating", pid);
      });
      store.write(record);
      writePidFile(o.pidFile, record.pid);
      return { record, init };
    });
  } catch (err) {
    await creation.unwind();
    store.remove(o.id);
    throw err;
  }
}

export async function startContainer(ctx: RuntimeContext, id: string): Promise<void> {
  const store = new StateStore(ctx.root);
  await store.withLock(id, async () => {
    const record = store.read(id);
    checkTransition("start", containerStatus(store, record), id);
    const backend = backendOf(record);
    await backend.start(ctx, store, record);
    ctx.debug?.("container started", { id, pid: record.pid });
    try {
      unlinkSync(join(store.dir(id), EXEC_FIFO));
    } catch {
      // the init removed it already (host), or it was never there: either way it is gone
    }
    try {
      await hostHooks("poststart", record, "running");
    } catch (err) {
      // runc: a failed poststart hook stops the container.
      await backend.kill(ctx, record, 9, true, "running").catch(() => {});
      throw err;
    }
  });
}

/** Waits in the foreground for a process we started, relaying our signals to it. */
async function waitFor(p: Started): Promise<number> {
  p.hold();
  const stop = relaySignals(p.signalPid);
  const code = await p.exited;
  stop();
  await p.console?.finish();
  return code;
}

/** run = create + start; in the foreground, waits and returns the workload's exit code, then deletes. */
export async function runContainer(ctx: RuntimeContext, o: RunOptions): Promise<number> {
  const { init } = await createContainer(ctx, o, !o.detach);
  // Attached before start, so not a byte of the workload's first output is missed.
  init.console?.syncSize();
  try {
    await startContainer(ctx, o.id);
  } catch (err) {
    await init.console?.finish();
    await deleteContainer(ctx, o.id, true).catch(() => {});
    throw err;
  }
  if (o.detach) return 0;
  const code = await waitFor(init);
  ctx.debug?.("container process exited", { id: o.id, status: code });
  if (!o.keep) await deleteContainer(ctx, o.id, true);
  return code;
}

export async function killContainer(
  ctx: RuntimeContext,
  id: string,
  signal: string,
  all = false,
): Promise<void> {
  const sig = parseSignal(signal);
  const store = new StateStore(ctx.root);
  await store.withLock(id, async () => {
    const record = store.read(id);
    const status = containerStatus(store, record);
    checkTransition("kill", status, id);
    await backendOf(record).kill(ctx, record, sig, all, status);
  });
}

/** delete: kills what is left, removes it all; poststop hooks last. */
export async function deleteContainer(ctx: RuntimeContext, id: string, force = false): Promise<void> {
  const store = new StateStore(ctx.root);
  if (!store.exists(id)) {
    if (force) {
      store.remove(id); // a half-made directory from an interrupted create
      return;
    }
    throw new ContainerNotFound(id);
  }
  let record: ContainerRecord | undefined;
  await store.withLock(id, async () => {
    let r: ContainerRecord;
    try {
      r = store.read(id);
    } catch (err) {
      // A create that failed meanwhile removed it: with --force that is success, as for runc.
      if (force && err instanceof ContainerNotFound) return;
      throw err;
    }
    if (!force) checkTransition("delete", containerStatus(store, r), id);
    await backendOf(r).destroy(ctx, r);
    store.remove(id);
    record = r;
  });
  if (record?.config.hooks?.poststop?.length) {
    const warnings = await runPoststopHooks(record.config.hooks.poststop, stateJson(record, "stopped"), {
      cwd: record.bundle,
    });
    for (const w of warnings) ctx.warn?.(w);
  }
}

/** Builds the exec process from argv and flags, on top of the container's own process (runc's rules). */
export function execProcessFromArgs(
  base: Process | undefined,
  a: {
    args: string[];
    env?: string[];
    cwd?: string;
    user?: string;
    additionalGids?: number[];
    caps?: string[];
    noNewPrivs?: boolean;
    tty?: boolean;
  },
): Process {
  if (a.args.length === 0) throw new Error("exec: process args cannot be empty");
  const p: Process = {
    terminal: Boolean(a.tty),
    user: { ...(base?.user ?? { uid: 0, gid: 0 }) },
    args: a.args,
    env: [...(base?.env ?? []), ...(a.env ?? [])],
    cwd: a.cwd ?? base?.cwd ?? "/",
    noNewPrivileges: a.noNewPrivs || base?.noNewPrivileges,
    rlimits: base?.rlimits,
  };
  if (base?.capabilities) {
    const c = base.capabilities;
    p.capabilities = {
      bounding: [...(c.bounding ?? [])],
      effective: [...(c.effective ?? [])],
      permitted: [...(c.permitted ?? [])],
      inheritable: [...(c.inheritable ?? [])],
      ambient: [...(c.ambient ?? [])],
    };
  }
  for (const cap of a.caps ?? []) {
    const name = cap.toUpperCase().startsWith("CAP_") ? cap.toUpperCase() : `CAP_${cap.toUpperCase()}`;
    const caps = p.capabilities ?? {};
    p.capabilities = caps;
    // runc 1.1 adds --cap to every set but the inheritable one (so, for a non-root user, ambient raising
    // fails quietly and the cap is gone after execve, exactly as under runc).
    for (const set of ["bounding", "effective", "permitted", "ambient"] as const)
      caps[set] = [...(caps[set] ?? []), name];
  }
  if (a.user) {
    const m = /^(\d+)(?::(\d+))?$/.exec(a.user);
    if (!m) throw new Error(`exec: --user must be uid[:gid], got ${JSON.stringify(a.user)}`);
    p.user = { uid: Number(m[1]), gid: m[2] !== undefined ? Number(m[2]) : 0 };
  }
  if (a.additionalGids?.length) p.user.additionalGids = a.additionalGids;
  return p;
}

export function readProcessFile(path: string): Process {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`read process file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return validateProcess(parseConfigJson(text, path));
}

/** runc exits 255 when exec itself fails (the workload's own codes pass through unchanged). */
export class ExecError extends KataError {
  constructor(message: string) {
    super(message, 255);
  }
}

/** Starts a new process in a running container; the caller waits for it (`exited`) or releases it. */
export async function startExec(ctx: RuntimeContext, o: ExecOptions): Promise<Started> {
  try {
    const store = new StateStore(ctx.root);
    const record = store.read(o.id);
    checkTransition("exec", containerStatus(store, record), o.id, o.ignorePaused);
    const p = await backendOf(record).exec(ctx, record, o);
    ctx.debug?.("exec process started", { id: o.id, ...p.fields });
    writePidFile(o.pidFile, p.pid);
    return p;
  } catch (err) {
    throw new ExecError(err instanceof Error ? err.message : String(err));
  }
}

/** exec: a new process in a running container. Foreground: returns its exit code; detached: 0. */
export async function execInContainer(ctx: RuntimeContext, o: ExecOptions): Promise<number> {
  const p = await startExec(ctx, o);
  if (o.detach) {
    p.release();
    return 0;
  }
  const code = await waitFor(p);
  ctx.debug?.("exec process exited", { id: o.id, ...p.fields, status: code });
  return code;
}

export { signalNumber };

/** The runtime context from the CLI's global flags (kept here so every lifecycle command builds it alike). */
export function runtimeContext(
  g: { root: string; config?: string; systemdCgroup?: boolean },
  warn?: (m: string) => void,
  debug?: RuntimeContext["debug"],
): RuntimeContext {
  return { root: g.root, configPath: g.config, systemdCgroup: g.systemdCgroup, warn, debug };
}

/** Parses --preserve-fds. */
export function parsePreserveFds(v: string | undefined): number {
  if (v === undefined) return 0;
  if (!/^\d+$/.test(v)) throw new Error(`invalid --preserve-fds value ${JSON.stringify(v)}`);
  return Number(v);
}
