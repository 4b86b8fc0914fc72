// The config.json `kata-ts spec` writes: the same content as runc 1.1's `runc spec` (checked against
// Debian's runc 1.1.5), except that ociVersion names the spec version kata-ts implements.
import type { Mount, Spec } from "./spec";
import { OCI_VERSION } from "./spec";

export interface DefaultSpecOptions {
  /** runc spec --rootless: user namespace mapping the caller, no network namespace, /sys bind. */
  rootless?: boolean;
  /** Host uid/gid mapped to root in the rootless spec (runc uses the caller's euid/egid). */
  hostUid?: number;
  hostGid?: number;
}

const DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

function mounts(rootless: boolean): Mount[] {
  const devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"];
  // A rootless container has no gid 5 (tty) mapped; sysfs cannot be mounted fresh without a netns.
  if (!rootless) devpts.push("gid=5");
  const sys: Mount = rootless
    ? {
        destination: "/sys",
        type: "none",
        source: "/sys",
        options: ["rbind", "nosuid", "noexec", "nodev", "ro"],
      }
    : { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] };
  return [
    { destination: "/proc", type: "proc", source: "proc" },
    {
      destination: "/dev",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    { destination: "/dev/pts", type: "devpts", source: "devpts", options: devpts },
    {
      destination: "/dev/shm",
      type: "tmpfs",
      source: "shm",
      options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    sys,
    {
      destination: "/sys/fs/cgroup",
      type: "cgroup",
      source: "cgroup",
      options: ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
  ];
}

const MASKED_PATHS = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/sys/firmware",
  "/proc/scsi",
];

const READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/** A fresh default spec (a new object every call; callers may mutate it). Key order matches runc's. */
export function defaultSpec(opts: DefaultSpecOptions = {}): Spec {
  const rootless = opts.rootless === true;
  const spec: Spec = {
    ociVersion: OCI_VERSION,
    process: {
      terminal: true,
      user: { uid: 0, gid: 0 },
      args: ["sh"],
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
      cwd: "/",
      capabilities: {
        bounding: [...DEFAULT_CAPS],
        effective: [...DEFAULT_CAPS],
        permitted: [...DEFAULT_CAPS],
        ambient: [...DEFAULT_CAPS],
      },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: true },
    hostname: "runc",
    mounts: mounts(rootless),
    linux: rootless
      ? {
          uidMappings: [{ containerID: 0, hostID: opts.hostUid ?? 0, size: 1 }],
          gidMappings: [{ containerID: 0, hostID: opts.hostGid ?? 0, size: 1 }],
          namespaces: [
            { type: "pid" },
            { type: "ipc" },
            { type: "uts" },
            { type: "mount" },
            { type: "user" },
          ],
          maskedPaths: [...MASKED_PATHS],
          readonlyPaths: [...READONLY_PATHS],
        }
      : {
          resources: { devices: [{ allow: false, access: "rwm" }] },
          namespaces: [
            { type: "pid" },
            { type: "network" },
            { type: "ipc" },
            { type: "uts" },
            { type: "mount" },
          ],
          maskedPaths: [...MASKED_PATHS],
          readonlyPaths: [...READONLY_PATHS],
        },
  };
  return spec;
}

/** The bytes runc writes for a spec: tab-indented JSON without a trailing newline. */
export function formatSpec(spec: Spec): string {
  return JSON.stringify(spec, null, "\t");
}
