// The hypervisor driver interface: what the sandbox supervisor needs from a VM, independent of how it
// is launched. Today the only driver is QEMU (./qemu); `hypervisor = "none"` means no driver at all.
import type { QemuConfig } from "../config/config";
import type { JailSpec } from "./jail";
import type { AccelChoice } from "./qemu/accel";
import type { ConsoleKind, NicSpec, ShareSpec } from "./qemu/cmdline";
import type { QmpClient } from "./qemu/qmp";

export interface VmExit {
  /** Exit code, or null when the process died of a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartVmOptions {
  /** Sandbox id (the VM's name). */
  id: string;
  /**
   * Directory for this VM's runtime files: qmp.sock, agent.sock, console.log, qemu.log, qemu.pid.
   * Unix socket paths must stay under 108 bytes, so keep it short (e.g. /run/kata-ts/<id>).
   */
  dir: string;
  /** [hypervisor.qemu] from configuration.toml; the fields below override it for this VM. */
  config: QemuConfig;
  kernel?: string;
  initrd?: string;
  image?: string;
  vcpus?: number;
  memoryMiB?: number;
  /** Default "serial" (ttyS0): it works before any driver loads, so early panics reach the log. */
  console?: ConsoleKind;
  /** Host directories exported over virtio-9p from boot (tag, path, readonly?). */
  shares?: ShareSpec[];
  /** Network namespace (path) QEMU runs in: the taps of `nics` are there. */
  netns?: string;
  /** virtio-net devices on existing taps (src/network made them in `netns`). */
  nics?: NicSpec[];
  /** Guest RAM as a shared memfd (needed before virtio-fs can be attached). */
  sharedMemory?: boolean;
  debug?: boolean;
  /** A decided accelerator; default: chooseAccel(config.accel) (probes KVM when "auto"). */
  accel?: AccelChoice;
  /** Deadline for QEMU to start and answer on QMP (not for the guest to boot). Default 10 s. */
  readyTimeoutMs?: number;
  /** The jail's uid/gid when [hypervisor.qemu] rootless (default: rootless_user's, created if missing). */
  jailUser?: { uid: number; gid: number };
  /**
   * VM templating (src/factory). "template": guest RAM in `memoryFile`, shared (the template VM boots
   * normally and is saved later). "clone": `memoryFile` mapped copy-on-write and the device state read
   * from `stateFile` (QEMU does not boot a kernel); startVm returns once the clone runs.
   */
  template?: { mode: "template" | "clone"; memoryFile: string; stateFile?: string };
  /** Warnings (TCG fallback, missing TSC frequency) go here; default: dropped. */
  onWarning?: (message: string) => void;
}

export interface Vm {
  readonly id: string;
  /** The QEMU process (a child of the caller: the supervisor keeps it, QEMU does not daemonize). */
  readonly pid: number;
  /** Connected and negotiated QMP client. */
  readonly qmp: QmpClient;
  readonly accel: AccelChoice;
  /** The exact argv QEMU was started with (for logs and `kata-ts env`-style reports). */
  readonly argv: readonly string[];
  readonly consoleLog: string;
  /** QEMU's own stderr. */
  readonly qemuLog: string;
  readonly agentSocket: string;
  readonly qmpSocket: string;
  /** How QEMU was jailed (undefined: not at all). */
  readonly jail?: JailSpec;
  /** True once QEMU has exited. */
  readonly exited: boolean;
  /** Shuts the VM down: QMP `quit`, then SIGKILL if QEMU is still there after `timeoutMs` (default 5 s). */
  stop(timeoutMs?: number): Promise<VmExit>;
  /** SIGKILL, without waiting. */
  kill(): void;
  /** Resolves when QEMU has exited and its socket and pid files are removed. */
  waitExit(): Promise<VmExit>;
}

export interface HypervisorDriver {
  readonly name: string;
  startVm(opts: StartVmOptions): Promise<Vm>;
}
