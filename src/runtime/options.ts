// The options of the lifecycle verbs (lifecycle.ts), which both backends (host.ts, vm.ts) receive.
import type { Process } from "../oci/spec";

export interface RuntimeContext {
  root: string;
  configPath?: string;
  systemdCgroup?: boolean;
  warn?: (msg: string) => void;
  /** Where new containers run, overriding [runtime] hypervisor (test entries). */
  hypervisor?: "none" | "qemu";
  /** Debug-level lines (--debug); fields are logrus fields. */
  debug?: (msg: string, fields?: Record<string, string | number>) => void;
}

export interface CreateOptions {
  id: string;
  bundle?: string;
  pidFile?: string;
  consoleSocket?: string;
  noPivot?: boolean;
  preserveFds?: number;
  /** --no-new-keyring: keep the caller's session keyring. */
  noNewKeyring?: boolean;
  /** The process's stdin, stdout, stderr in place of the caller's fds 0-2 (the shim's fifos and pipes). */
  stdio?: ProcessStdio;
}

export type ProcessStdio = [number, number, number];

export interface RunOptions extends CreateOptions {
  detach?: boolean;
  keep?: boolean;
}

export interface ExecOptions {
  id: string;
  process: Process;
  detach?: boolean;
  pidFile?: string;
  consoleSocket?: string;
  preserveFds?: number;
  /** exec --cgroup: controller → sub-cgroup path ("" = every hierarchy), see engine/cgroups/subcgroup.ts. */
  subCgroups?: Record<string, string>;
  /** exec --ignore-paused: exec into a paused container (the process starts frozen, as with runc). */
  ignorePaused?: boolean;
  stdio?: ProcessStdio;
}
