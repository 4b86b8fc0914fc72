// The VM template (Kata's factory "template"): a VM booted once until its agent answered, with nothing
// container-specific inside, then paused and saved as two files: its RAM (memory-backend-file, shared)
// and its device state (a QEMU migration stream without RAM pages, x-ignore-shared). A sandbox then
// starts as a clone: QEMU maps the RAM file copy-on-write and loads the device state instead of booting.
//
// On disk: <template_path>/<key>/{memory,state,template.json}. The key hashes everything the saved
// state depends on (QEMU, kernel, image, machine, vCPUs, memory, kernel parameters), so a changed
// configuration finds no template under its key and a fresh `factory init` makes a new one beside.
// A template is written in <key>.tmp-<pid> and renamed into place: a reader sees a whole one or none.
//
// microvm cannot hot-plug, so a clone has exactly its template's devices: there is a template without a
// NIC and one with one NIC (a pod's eth0: podman's bridge, docker's, a CNI pod), each under its own key.
// The one-NIC template boots with a tap in a network namespace of its own (removed after the save); a
// clone's NIC is backed by the pod's tap and keeps the template's MAC until the agent sets the pod's.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentMethod, AgentRequest, AgentResponse, CloneIdentity, SpareState } from "../agent/api";
import { AgentClient } from "../agent/client";
import { AgentError, Code } from "../agent/wire";
import type { RuntimeConfig } from "../config/config";
import { KataError } from "../errors";
import type { Vm } from "../hypervisor/driver";
import { type AccelChoice, chooseAccel, cpuModel, saveTemplate, startVm } from "../hypervisor/qemu";
import { tapAddBatch } from "../network/tcfilter";
import { defaultSpec } from "../oci/defaults";
import { randomBytes, sha256Hex } from "../sys/crypto";

/**
 * The format of template.json and of the VM it describes; a template of another format is stale.
 * 3: microvm without PIT and PIC (a clone must have exactly the template's devices).
 */
export const TEMPLATE_FORMAT = 3;
/** The NIC counts templates are made for; a pod with more NICs boots cold. */
export const TEMPLATE_NIC_COUNTS = [0, 1] as const;
/** The MAC of a template's NICs (locally administered): a clone's agent replaces it by the pod's. */
export const TEMPLATE_MAC = "02:6b:74:00:00:01";
/** `ip netns` names of the namespaces one-NIC templates boot in: kata-ts-template-<key>-<pid>. */
const TEMPLATE_NETNS = /^kata-ts-template-[0-9a-f]{16}-(\d+)$/;
/** Boot + agent ready under TCG on a loaded host can take tens of seconds. */
const TEMPLATE_BOOT_MS = 180_000;

export interface TemplateFiles {
  dir: string;
  key: string;
  memory: string;
  state: string;
  meta: string;
}

/** template.json: what the template was made from, and how. */
export interface TemplateMeta {
  format: number;
  key: string;
  created: string;
  accel: "kvm" | "tcg";
  memoryMiB: number;
  vcpus: number;
  /** The NICs' MACs (TEMPLATE_MAC each): a clone's NIC i has macs[i] until the agent changes it. */
  macs: string[];
  /** The 9p share's tag: clones have the same device, backed by their own directory. */
  shareTag: string;
  stateBytes: number;
  /** How long the boot to a ready agent took, the warm-up container, and the save (ms). */
  bootMs: number;
  warmUpMs: number;
  saveMs: number;
}

function fileIdentity(path: string): string {
  if (!path) return "";
  const st = statSync(path, { throwIfNoEntry: false });
  return st ? `${path}:${st.size}:${Math.round(st.mtimeMs)}:${st.ino}` : `${path}:missing`;
}

/** The template key: a hash of everything a saved VM depends on. */
export function templateKey(config: RuntimeConfig, accel: "kvm" | "tcg", nics = 0): string {
  const q = config.hypervisor;
  const inputs = {
    format: TEMPLATE_FORMAT,
    accel,
    cpu: cpuModel(accel),
    nics,
    qemu: fileIdentity(q.path),
    kernel: fileIdentity(q.kernel),
    image: fileIdentity(q.image),
    initrd: fileIdentity(q.initrd),
    machineType: q.machineType,
    imageNvdimm: !q.disableImageNvdimm,
    vcpus: q.defaultVcpus,
    memoryMiB: q.defaultMemory,
    kernelParams: q.kernelParams,
    debug: q.enableDebug,
    tcgTbSize: q.tcgTbSize,
  };
  return sha256Hex(JSON.stringify(inputs)).slice(0, 16);
}

export function templateFiles(config: RuntimeConfig, key: string): TemplateFiles {
  const dir = join(config.factory.templatePath, key);
  return {
    dir,
    key,
    memory: join(dir, "memory"),
    state: join(dir, "state"),
    meta: join(dir, "template.json"),
  };
}

/** The accelerator a template (and its clones) is made for: the one a cold boot would use. */
export async function templateAccel(config: RuntimeConfig): Promise<AccelChoice> {
  return chooseAccel(config.hypervisor.accel);
}

/** Why a sandbox cannot start from the template (undefined: it can). */
export function templateRefusal(opts: { nics: number; virtioFs: boolean }): string | undefined {
  if (opts.virtioFs) return "shared_fs = virtio-fs: vhost-user devices cannot be restored from a template";
  // microvm cannot hot-plug: a clone has exactly the template's devices.
  const most = Math.max(...TEMPLATE_NIC_COUNTS);
  if (opts.nics > most)
    return `the pod has ${opts.nics} network interfaces and templates have at most ${most}`;
  return undefined;
}

export type TemplateLookup =
  | { ok: true; files: TemplateFiles; meta: TemplateMeta }
  | { ok: false; why: string };

/** The template for this configuration and NIC count, checked whole (files, sizes), or why not. */
export function findTemplate(config: RuntimeConfig, accel: "kvm" | "tcg", nics = 0): TemplateLookup {
  const key = templateKey(config, accel, nics);
  const files = templateFiles(config, key);
  let meta: TemplateMeta;
  try {
    meta = JSON.parse(readFileSync(files.meta, "utf8")) as TemplateMeta;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      const others = listTemplates(config).filter((k) => k !== key);
      return {
        ok: false,
        why: others.length
          ? `the template is stale (the kernel, image or VM configuration changed): run \`kata-ts factory init\``
          : `no template at ${config.factory.templatePath}: run \`kata-ts factory init\``,
      };
    }
    return { ok: false, why: `template ${files.meta} is unreadable: ${(err as Error).message}` };
  }
  if (meta.format !== TEMPLATE_FORMAT || meta.key !== key || meta.macs?.length !== nics)
    return { ok: false, why: `template ${files.dir} is stale` };
  const mem = statSync(files.memory, { throwIfNoEntry: false });
  if (!mem || mem.size !== meta.memoryMiB * 1024 * 1024)
    return {
      ok: false,
      why: `template ${files.dir} is corrupt: its memory file is missing or of the wrong size`,
    };
  const st = statSync(files.state, { throwIfNoEntry: false });
  if (!st || st.size !== meta.stateBytes)
    return {
      ok: false,
      why: `template ${files.dir} is corrupt: its state file is missing or of the wrong size`,
    };
  return { ok: true, files, meta };
}

/** The keys of the templates under template_path (finished ones only). */
export function listTemplates(config: RuntimeConfig): string[] {
  try {
    return readdirSync(config.factory.templatePath).filter((n) => /^[0-9a-f]{16}$/.test(n));
  } catch {
    return [];
  }
}

export interface MakeTemplateOptions {
  /** The 9p share's tag (the sandbox share's): the device must exist in the template for clones. */
  shareTag: string;
  /** The jail's uid/gid when [hypervisor.qemu] rootless. */
  jailUser?: { uid: number; gid: number };
  /** How many NICs (TEMPLATE_NIC_COUNTS); default 0. */
  nics?: number;
  log?: (m: string) => void;
}

/** makeTemplate for every NIC count of TEMPLATE_NIC_COUNTS, one after the other. */
export async function makeTemplates(
  config: RuntimeConfig,
  o: MakeTemplateOptions,
): Promise<Awaited<ReturnType<typeof makeTemplate>>[]> {
  const out = [];
  for (const nics of TEMPLATE_NIC_COUNTS) out.push(await makeTemplate(config, { ...o, nics }));
  return out;
}

/**
 * The network namespace a one-NIC template boots in, with `n` taps (tap<i>_kata, owned by the jail's
 * user when rootless): `ip netns` makes it, and removes it, with the taps, after the save.
 */
function templateNetns(key: string, n: number, owner?: { uid: number; gid: number }) {
  const name = `kata-ts-template-${key}-${process.pid}`;
  const ip = (args: string[], input?: string) =>
    execFileSync("ip", args, { input, stdio: ["pipe", "ignore", "pipe"], timeout: 10_000 });
  ip(["netns", "add", name]);
  const remove = () => {
    try {
      ip(["netns", "del", name]);
    } catch {
      // gone already: nothing to remove
    }
  };
  try {
    const nics = [];
    for (let i = 0; i < n; i++) {
      const tap = `tap${i}_kata`;
      ip(["-n", name, "-batch", "-"], tapAddBatch(tap, owner));
      nics.push({ ifname: tap, mac: TEMPLATE_MAC });
    }
    return { path: `/run/netns/${name}`, nics, remove };
  } catch (err) {
    remove();
    const stderr = String((err as { stderr?: Buffer }).stderr ?? "").trim();
    throw new Error(`the template's network namespace: ${stderr || (err as Error).message}`);
  }
}

/** Removes the namespaces of one-NIC template boots whose `factory init` died (its pid is gone). */
export function removeTemplateNetnsLeftovers(): number {
  let n = 0;
  let names: string[] = [];
  try {
    names = readdirSync("/run/netns");
  } catch {
    return 0;
  }
  for (const name of names) {
    const m = TEMPLATE_NETNS.exec(name);
    if (!m) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue; // its init still runs
    } catch {
      // its init is gone: the namespace is a leftover
    }
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore", timeout: 10_000 });
      n++;
    } catch {
      // removed meanwhile
    }
  }
  return n;
}

/**
 * Boots and saves the template of this configuration (nothing when a whole one exists). The VM
 * directory (sockets, logs) is a temporary one beside the template, removed at the end.
 */
export async function makeTemplate(
  config: RuntimeConfig,
  o: MakeTemplateOptions,
): Promise<{ files: TemplateFiles; meta: TemplateMeta; made: boolean }> {
  const accel = await templateAccel(config);
  const nics = o.nics ?? 0;
  const found = findTemplate(config, accel.accel, nics);
  if (found.ok) return { files: found.files, meta: found.meta, made: false };
  const files = templateFiles(config, templateKey(config, accel.accel, nics));
  const tmp = `${files.dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, "share"), { recursive: true, mode: 0o700 });
  const vmDir = join(tmp, "vm");
  // Made empty here (QEMU grows it to the RAM size): the jail binds files that exist.
  writeFileSync(join(tmp, "memory"), "", { mode: 0o600 });
  let vm: Vm | undefined;
  let netns: ReturnType<typeof templateNetns> | undefined;
  try {
    const t0 = Date.now();
    if (nics > 0) netns = templateNetns(files.key, nics, o.jailUser);
    vm = await startVm({
      id: `template-${files.key}`,
      dir: vmDir,
      config: config.hypervisor,
      accel,
      netns: netns?.path,
      nics: netns?.nics,
      shares: [{ tag: o.shareTag, path: join(tmp, "share"), fs: "virtio-9p" }],
      template: { mode: "template", memoryFile: join(tmp, "memory") },
      jailUser: o.jailUser,
      onWarning: o.log,
    });
    // The agent answers: the guest is booted and idle. The host hangs up before the save, so the
    // template holds no connection (each clone's host connects afresh; the agent takes it as a new one).
    const agent = await AgentClient.connect(vm.agentSocket, { timeoutMs: TEMPLATE_BOOT_MS });
    let warmUpMs = 0;
    try {
      await agent.call("ping", {}, { timeoutMs: TEMPLATE_BOOT_MS });
      const tw = Date.now();
      await warmUpContainer(agent);
      warmUpMs = Date.now() - tw;
    } finally {
      agent.close();
    }
    // The guest agent sees the hang-up (a read of 0 bytes) and goes back to polling the port.
    await new Promise((r) => setTimeout(r, 200));
    const bootMs = Date.now() - t0 - warmUpMs;
    const t1 = Date.now();
    const stateBytes = await saveTemplate(vm, join(tmp, "state"));
    const saveMs = Date.now() - t1;
    await vm.stop(5000);
    vm = undefined;
    netns?.remove();
    const meta: TemplateMeta = {
      format: TEMPLATE_FORMAT,
      key: files.key,
      created: new Date().toISOString(),
      accel: accel.accel,
      memoryMiB: config.hypervisor.defaultMemory,
      vcpus: config.hypervisor.defaultVcpus,
      macs: (netns?.nics ?? []).map((n) => n.mac),
      shareTag: o.shareTag,
      stateBytes,
      bootMs,
      warmUpMs,
      saveMs,
    };
    writeFileSync(join(tmp, "template.json"), `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o600 });
    rmSync(vmDir, { recursive: true, force: true });
    rmSync(join(tmp, "share"), { recursive: true, force: true });
    // A concurrent init may have finished first: its template is as good as ours.
    rmSync(files.dir, { recursive: true, force: true });
    renameSync(tmp, files.dir);
    o.log?.(
      `template ${files.key} (${nics} NIC${nics === 1 ? "" : "s"}): booted in ${bootMs} ms, warm-up container ${warmUpMs} ms, saved in ${saveMs} ms (${stateBytes} bytes of state)`,
    );
    return { files, meta, made: true };
  } catch (err) {
    if (vm) {
      vm.kill();
      await vm.waitExit();
    }
    netns?.remove();
    rmSync(tmp, { recursive: true, force: true });
    throw new KataError((err as Error).message);
  }
}

/** The one agent call the warm-up needs (an AgentClient, or the supervisor's SandboxAgent). */
export interface AgentCaller {
  call<M extends AgentMethod>(method: M, req: AgentRequest<M>): Promise<AgentResponse<M>>;
}

const WARMUP_ID = "kata-ts-template-warmup";
const WARMUP_ROOT = "/run/kata-ts-template-warmup/rootfs";
/** After the warm-up, how long (50 ms × 100) to wait for the agent's next spare helper. */
const SPARE_POLL_MS = 50;
const SPARE_POLLS = 100;

/**
 * One throw-away container run to its end and removed inside the template, before it is saved (and in
 * each cached VM while it waits, src/sandbox/slot.ts, since TCG translates anew in every QEMU): the
 * agent's and the engine's first-container code is then compiled (V8) and the helper and busybox are
 * in the guest's page cache in every clone, instead of being done again in each one (the first
 * create in a fresh guest costs about 1.5 s under TCG). Its root is the guest's own read-only root;
 * removeContainer takes its mount, cgroup and state away again, so nothing of it is in the template.
 */
export async function warmUpContainer(agent: AgentCaller): Promise<void> {
  const spec = defaultSpec();
  spec.process = {
    ...(spec.process as NonNullable<typeof spec.process>),
    terminal: false,
    args: ["/bin/true"],
  };
  spec.root = { path: WARMUP_ROOT, readonly: true };
  spec.hostname = "warmup";
  const ref = { containerId: WARMUP_ID };
  await agent.call("createContainer", {
    containerId: WARMUP_ID,
    spec,
    mounts: [{ source: "/", fstype: "bind", target: WARMUP_ROOT, options: [] }],
    stdio: { terminal: false, stdin: 0, stdout: 0, stderr: 0 },
  });
  try {
    await agent.call("startContainer", ref);
    const r = await agent.call("waitProcess", { ...ref, execId: "" });
    if (r.exitStatus !== 0) throw new Error(`the warm-up container exited with ${r.exitStatus}`);
  } finally {
    await agent.call("removeContainer", ref);
  }
  // The container took the agent's spare helper: the VM is saved or offered with the next one waiting,
  // so that a clone's first create does not spawn one (docs/guest.md). Bounded: a guest that cannot
  // start one is still a working VM.
  for (let i = 0; i < SPARE_POLLS; i++) {
    if ((await spareState(agent)) !== "starting") return;
    await new Promise((r) => setTimeout(r, SPARE_POLL_MS));
  }
}

/** The agent's spare helper; "off" from an agent that has none (a guest image of an older kata-ts). */
async function spareState(agent: AgentCaller): Promise<SpareState> {
  try {
    return (await agent.call("spareHelper", {})).spare;
  } catch (err) {
    if (err instanceof AgentError && err.code === Code.unimplemented) return "off";
    throw err;
  }
}

/** Removes every template (and unfinished one) under template_path; returns how many. */
export function destroyTemplates(config: RuntimeConfig): number {
  let n = 0;
  let names: string[] = [];
  try {
    names = readdirSync(config.factory.templatePath);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!/^[0-9a-f]{16}(\.tmp-\d+)?$/.test(name)) continue; // not ours: left alone
    rmSync(join(config.factory.templatePath, name), { recursive: true, force: true });
    n++;
  }
  return n;
}

/**
 * What makes a clone its own before any container runs in it (the agent's adoptClone): fresh host
 * entropy, the host's clock, a hostname from the sandbox id.
 */
export function cloneIdentity(sandboxId: string): CloneIdentity {
  return {
    entropy: randomBytes(512).toString("base64"),
    timeMs: Date.now(),
    hostname: sandboxId
      .replace(/[^A-Za-z0-9.-]/g, "-")
      .replace(/^[^A-Za-z0-9]/, "k")
      .slice(0, 63),
  };
}
