// The VM backend (hypervisor = "qemu"): the same verbs (lifecycle.ts), with the workload in the
// sandbox's VM. The CLI stays stateless: it starts the sandbox supervisor (one per sandbox, detached),
// spawns a stand-in per container process (its pid is what --pid-file names and what engines wait on),
// and asks the supervisor over its control socket for the rest (src/sandbox/launch.ts). Status is
// derived as on the host: the stand-in's liveness replaces the init's (it exits with the workload, and
// with 255 when the supervisor dies); an empty regular file named exec.fifo marks "created" until
// `start`. Every failure mid-create unwinds what was made.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { processConfig, type RuntimeConfig } from "../config/config";
import { sandboxVmSize, type VmSize } from "../config/sizing";
import type { CgroupStats } from "../engine/cgroups";
import { EXEC_FIFO } from "../engine/container";
import { KataError } from "../errors";
import { checkBootFiles } from "../hypervisor/qemu";
import { span } from "../log/tracing";
import { sandboxNetns } from "../network";
import {
  destroySandbox,
  killRef,
  prepareSandboxDir,
  readSandboxInfo,
  type SandboxRef,
  STANDIN_BINARY,
  type StandinChild,
  sandboxCall,
  spawnStandin,
  standinExit,
  standinPids,
  startSupervisor,
  waitGone,
} from "../sandbox/launch";
import { joinMadeNetns, makesNetns, prestartBeforeVm } from "../sandbox/netns";
import { sandboxPaths } from "../sandbox/paths";
import { supervisorCallSync } from "../sandbox/protocol";
import { randomBytes } from "../sys/crypto";
import { closeFd } from "../sys/native";
import type { Backend, Creation, Started } from "./backend";
import { attachConsole } from "./console";
import { filterPsOutput } from "./host";
import type { RuntimeContext } from "./options";
import type { ContainerRecord } from "./store";

function sandboxOf(ctx: RuntimeContext, record: ContainerRecord): SandboxRef {
  return { root: ctx.root, id: record.sandboxId };
}

function started(s: StandinChild, fields: Record<string, string | number>): Started {
  const exited = standinExit(s.child);
  return {
    pid: s.ref.pid,
    signalPid: s.ref.pid,
    exited,
    hold: () => s.child.ref(),
    release: () => s.child.unref(),
    // The caller's terminal on the stand-in's pty, attached before the process starts (no output lost).
    console: s.master !== undefined ? attachConsole(s.master) : undefined,
    fields,
  };
}

/** The sandbox's control socket, for the synchronous one-shot client (ps and `events --stats` print from sync code). */
function socketOf(ctx: RuntimeContext, record: ContainerRecord): string {
  return sandboxPaths(ctx.root, record.sandboxId).socket;
}

export const vmBackend: Backend = {
  kind: "qemu",

  prepare(ctx, record, o): Creation {
    const { rootfs, config: spec, sandboxId, id } = record;
    const sandbox = sandboxOf(ctx, record);
    const ownSandbox = record.containerType === "sandbox";
    // A missing kernel or image, or a shared fs this build cannot serve (none), fails here in one line,
    // before a supervisor is spawned for nothing.
    let model: Parameters<typeof sandboxNetns>[1] = "none";
    let cgroup: { cgroupsPath?: string; systemd?: boolean; warn?: (m: string) => void } | undefined;
    let size: VmSize | undefined;
    // [factory] vm_cache_number: the configuration whose cached VMs this sandbox may take.
    let cacheFrom: RuntimeConfig | undefined;
    if (ownSandbox) {
      const { config } = processConfig(ctx.configPath);
      const hv = config.hypervisor;
      model = config.runtime.internetworkingModel;
      // Refused here, before anything is made (a netns kata-ts would make for prestart hooks counts).
      sandboxNetns(spec, model, makesNetns(spec) ? sandboxPaths(ctx.root, sandboxId).netns : undefined);
      // The pod's own VM size (Kata's annotations), refused here in one line when not allowed.
      size = sandboxVmSize(spec.annotations, hv);
      if (config.runtime.sandboxCgroupOnly)
        cgroup = { cgroupsPath: spec.linux?.cgroupsPath, systemd: ctx.systemdCgroup, warn: ctx.warn };
      if (hv.sharedFs === "none")
        throw new KataError(
          'shared_fs = "none" is not supported in VM mode: set shared_fs = "virtio-fs" or "virtio-9p" in [hypervisor.qemu]',
        );
      checkBootFiles(hv);
      // A cached VM has the configuration's default size, 9p and no NIC (the slot refuses a pod with one).
      const defaultSize = size.memoryMiB === hv.defaultMemory && size.vcpus === hv.defaultVcpus;
      if (config.factory.vmCacheNumber > 0 && defaultSize && hv.sharedFs !== "virtio-fs") cacheFrom = config;
    }
    let standin: StandinChild | undefined;
    let inGuest = false;
    let supervisorStarted = false;
    // The network namespace kata-ts made for the sandbox (a new one asked for, prestart hooks).
    let madeNetns: string | undefined;
    return {
      make: (store, foreground, createHooks) =>
        span("vm.create", { container: id }, async () => {
          if (ownSandbox) {
            await prepareSandboxDir(sandbox, ctx.warn);
            // Prestart hooks before QEMU, with the sandbox's netns named by the state's pid: docker's
            // libnetwork-setkey moves the container's veth there, and microvm cannot hot-plug the NIC
            // later (as Kata v1 did; docs/sandbox.md "Prestart hooks before the VM").
            madeNetns = await prestartBeforeVm(sandbox, spec, (pid) => createHooks(pid, ["prestart"]));
            const netns = sandboxNetns(spec, model, madeNetns);
            let cache: { endpoint: string; key: string } | undefined;
            if (cacheFrom) {
              const { templateAccel, templateKey } = await import("../factory/template");
              const accel = (await templateAccel(cacheFrom)).accel;
              cache = { endpoint: cacheFrom.factory.vmCacheEndpoint, key: templateKey(cacheFrom, accel) };
            }
            const sup = await startSupervisor(sandbox, {
              configPath: ctx.configPath,
              netns,
              cgroup,
              size,
              cache,
              warn: ctx.warn,
            });
            ctx.debug?.("sandbox supervisor ready", { sandbox: sandboxId, pid: sup.pid });
            supervisorStarted = true;
            record.engine.supervisor = sup;
            store.write(record);
          } else {
            await sandboxCall(sandbox, "ping", {}).catch((err: Error) => {
              throw new KataError(
                `sandbox ${sandboxId} of pod container ${id} is not running: ${err.message}`,
              );
            });
          }
          const terminal = Boolean(spec.process?.terminal);
          const s = await spawnStandin(sandbox, id, "", terminal, o.consoleSocket, foreground, o.stdio);
          standin = s;
          record.pid = s.ref.pid;
          record.pidStartTime = s.ref.start;
          // The record names the pid before anything else can fail or a hook can call `state`.
          writeFileSync(join(store.dir(id), EXEC_FIFO), "");
          store.write(record);
          const early = new Promise<never>((_, rej) =>
            s.child.once("exit", (code, sig) =>
              rej(
                new KataError(
                  `${STANDIN_BINARY} exited early (${sig ?? code}): see ${sandboxPaths(ctx.root, sandboxId).log}`,
                ),
              ),
            ),
          );
          early.catch(() => {});
          await Promise.race([
            sandboxCall(
              sandbox,
              "createContainer",
              // A netns kata-ts made is the VM's network: the container joins it (guest: root netns).
              { containerId: id, spec: joinMadeNetns(spec, madeNetns), rootfs },
              120_000,
            ),
            early,
          ]);
          inGuest = true;
          ctx.debug?.("container created in the guest", { id, standin: record.pid });
          // A sandbox's prestart hooks ran before its VM (above).
          await createHooks(undefined, ownSandbox ? ["createRuntime"] : undefined);
          s.child.removeAllListeners("exit");
          const init = started(s, { standin: s.ref.pid });
          // The stand-in outlives this CLI (the engine's subreaper adopts it); `run` holds it to wait.
          init.release();
          return init;
        }),
      async unwind() {
        if (standin?.master !== undefined) closeFd(standin.master);
        if (inGuest && !ownSandbox) await sandboxCall(sandbox, "delete", { containerId: id }).catch(() => {});
        killRef(standin?.ref);
        if (supervisorStarted || ownSandbox) {
          await sandboxCall(sandbox, "shutdown", {}).catch(() => {});
          await destroySandbox(sandbox, 10_000, {}, ctx.warn);
        }
        await waitGone(standin?.ref, 2000);
      },
    };
  },

  async start(ctx, _store, record) {
    await sandboxCall(sandboxOf(ctx, record), "startContainer", { containerId: record.id });
  },

  async kill(ctx, record, sig, all) {
    await sandboxCall(sandboxOf(ctx, record), "kill", { containerId: record.id, signal: sig, all });
  },

  /** The container leaves the guest and the share; the sandbox's last container stops the VM. */
  async destroy(ctx, r) {
    const sandbox = sandboxOf(ctx, r);
    let empty = r.sandboxId === r.id;
    let grace = 10_000;
    const known = readSandboxInfo(sandbox);
    try {
      empty = (await sandboxCall(sandbox, "delete", { containerId: r.id }, 60_000)).sandboxEmpty || empty;
    } catch {
      // The supervisor is gone, still booting or wedged: what is left is cleaned up directly below.
      empty = empty || r.containerType === "sandbox";
      grace = 0;
    }
    const standin = { pid: r.pid, start: r.pidStartTime };
    if (!(await waitGone(standin, 2000))) killRef(standin);
    await waitGone(standin, 2000);
    if (empty) await destroySandbox(sandbox, grace, known, ctx.warn);
  },

  /** A new process in the container, with its own stand-in (whose pid goes in --pid-file). */
  async exec(ctx, record, o) {
    // The guest's cgroups are not the host's and no host tool can make a sub-cgroup there (docs/differences.md).
    if (o.subCgroups) throw new KataError("exec --cgroup is not supported in VM mode");
    const sandbox = sandboxOf(ctx, record);
    const execId = `exec-${randomBytes(8).toString("hex")}`;
    const s = await spawnStandin(
      sandbox,
      o.id,
      execId,
      Boolean(o.process.terminal),
      o.consoleSocket,
      !o.detach,
      o.stdio,
    );
    const p = started(s, { exec: execId, standin: s.ref.pid });
    try {
      await sandboxCall(sandbox, "exec", { containerId: o.id, execId, process: o.process }, 60_000);
    } catch (err) {
      killRef(s.ref);
      await p.console?.finish();
      throw err;
    }
    p.console?.syncSize();
    return p;
  },

  /**
   * Host pids for `ps --format json`: the container's stand-ins (init and every exec still running).
   * Engines take these pids for the container's processes (containerd matches them with the pids it got
   * from --pid-file; docker top runs the host's ps on them): guest pids would name unrelated host
   * processes, or none.
   */
  pids: (ctx, record) => standinPids(sandboxOf(ctx, record), record.id),
  /** The guest's ps rows of the container's processes (guest pids). */
  psTable(ctx, record, psArgs) {
    const r = supervisorCallSync(socketOf(ctx, record), "ps", {
      containerId: record.id,
      psArgs: [...psArgs],
    });
    return filterPsOutput(r.table ?? "", r.pids);
  },
  async freeze(ctx, record, pause) {
    await sandboxCall(sandboxOf(ctx, record), pause ? "pause" : "resume", { containerId: record.id });
  },
  /** The agent applies the resources in the guest. */
  async update(ctx, record, resources) {
    await sandboxCall(sandboxOf(ctx, record), "update", { containerId: record.id, resources });
  },
  /** runc's stats object as the agent reads it from the guest's cgroups. */
  stats: async (ctx, record) =>
    (await sandboxCall(sandboxOf(ctx, record), "stats", { containerId: record.id }))
      .data as unknown as CgroupStats,
  statsSync: (ctx, record) =>
    supervisorCallSync(socketOf(ctx, record), "stats", { containerId: record.id })
      .data as unknown as CgroupStats,
  /** The guest cgroup's OOM kills (undefined from an agent that does not count them). */
  oomKills: async (ctx, record) =>
    (await sandboxCall(sandboxOf(ctx, record), "stats", { containerId: record.id })).oomKills,
};
