// `kata-ts env`: the shape of `kata-runtime env` (Meta, Runtime, Hypervisor, Image, Initrd, Kernel,
// Agent, Host), adapted to kata-ts, plus the effective configuration under Config. Printed as TOML by
// default (as Kata does) or JSON.
import { stringify } from "smol-toml";
import { configToToml, type LoadedConfig } from "../config/config";
import { jailReport } from "../hypervisor/jail";
import { imageOnPmem } from "../hypervisor/qemu";
import { VERSION } from "../version";
import { chooseAccelerator, hostFacts, type KvmStatus, measureKvm, qemuVersion } from "./check";

/** Bumped when the env output's shape changes (Kata's Meta.Version plays the same role). */
export const ENV_FORMAT_VERSION = "1.0.0";

export interface EnvOptions {
  /** Path of the running kata-ts executable. */
  runtimePath: string;
  /** Replaces the real KVM probe (tests). */
  probe?: (opts: { timeoutMs: number }) => Promise<KvmStatus>;
}

export async function buildEnv(loaded: LoadedConfig, opts: EnvOptions): Promise<Record<string, unknown>> {
  const { config } = loaded;
  const q = config.hypervisor;
  const vm = config.runtime.hypervisor === "qemu";
  const host = hostFacts();
  const kvm = await measureKvm({ probe: opts.probe });
  const [major, minor, patch] = VERSION.version.split(/[.-]/).map((x) => Number(x));
  return {
    Meta: { Version: ENV_FORMAT_VERSION },
    Runtime: {
      Debug: config.runtime.enableDebug,
      Trace: config.runtime.enableTracing,
      DisableGuestSeccomp: config.runtime.disableGuestSeccomp,
      SandboxCgroupOnly: config.runtime.sandboxCgroupOnly,
      Hypervisor: config.runtime.hypervisor,
      Experimental: config.runtime.experimental,
      Path: opts.runtimePath,
      Version: {
        OCI: VERSION.spec,
        Version: {
          Semver: VERSION.version,
          Commit: VERSION.commit,
          Major: Number.isFinite(major) ? major : 0,
          Minor: Number.isFinite(minor) ? minor : 0,
          Patch: Number.isFinite(patch) ? patch : 0,
        },
      },
      Config: { Path: loaded.path ?? "" },
      Warnings: loaded.warnings,
    },
    Hypervisor: {
      MachineType: q.machineType,
      Version: (vm || q.path ? qemuVersion(q.path) : undefined) ?? "",
      Path: q.path,
      BlockDeviceDriver: q.blockDeviceDriver,
      SharedFS: q.sharedFs,
      VirtioFSDaemon: q.virtioFsDaemon,
      MemorySlots: q.memorySlots,
      Memory: q.defaultMemory,
      VCPUs: q.defaultVcpus,
      Debug: q.enableDebug,
      Accelerator: {
        Configured: q.accel,
        Effective: vm ? chooseAccelerator(q.accel, kvm) : "none",
      },
      Jail: envJail(q, config.runtime.sandboxCgroupOnly),
    },
    // Dax: the image is mapped as persistent memory (virtio-pmem, q35/pc) rather than read over virtio-blk.
    Image: {
      Path: q.image,
      Dax: !!q.image && imageOnPmem(q),
    },
    Initrd: { Path: q.initrd },
    Kernel: { Path: q.kernel, Parameters: q.kernelParams },
    Agent: { Debug: config.agent.enableDebug, Trace: config.agent.enableTracing },
    Host: {
      Kernel: host.kernel,
      Architecture: host.architecture,
      // kata-ts can always run VMs under TCG; "capable" here means hardware-speed KVM was measured.
      VMContainerCapable: kvm.usable,
      Distro: { Name: host.distro.name, Version: host.distro.version },
      CPU: { Vendor: host.cpu.vendor, Model: host.cpu.model, CPUs: host.cpu.cpus },
      Memory: { Total: host.memory.total, Free: host.memory.free, Available: host.memory.available },
      KVM: { Usable: kvm.usable, Reason: kvm.reason, ...(kvm.mips !== undefined ? { MIPS: kvm.mips } : {}) },
      Cgroups: {
        Layout: host.cgroup.layout,
        V1Controllers: host.cgroup.v1Controllers,
        V2Controllers: host.cgroup.v2Controllers,
        UnifiedMount: host.cgroup.unifiedMount ?? "",
      },
      Namespaces: host.namespaces,
    },
    Config: configToToml(config),
  };
}

/** The VMM jail (docs/hypervisor.md): what QEMU runs under. TOML has no null: unknown ids are -1. */
function envJail(q: LoadedConfig["config"]["hypervisor"], sandboxCgroupOnly: boolean) {
  const j = jailReport(q, sandboxCgroupOnly);
  return {
    SeccompSandbox: j.seccompSandbox,
    Rootless: j.rootless,
    User: j.user,
    Uid: j.uid ?? -1,
    Gid: j.gid ?? -1,
    Capabilities: j.capabilities,
    MountNamespace: j.mountNamespace,
    SandboxCgroupOnly: j.sandboxCgroupOnly,
    Jailer: j.jailer,
  };
}

/** Kata prints env as TOML. smol-toml writes nested tables as [A.B] headers, which reads the same. */
export function envToToml(env: Record<string, unknown>): string {
  return stringify(env);
}
