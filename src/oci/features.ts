// `kata-ts features`: the runtime-spec "features" document (features.md, spec 1.1+), shaped like
// `runc features`. It claims only what kata-ts implements or is committed to implement: no AppArmor,
// SELinux, Intel RDT, idmapped mounts or systemd cgroup driver yet.
import { CAPABILITIES, SECCOMP_ACTIONS, SECCOMP_ARCHS, SECCOMP_FLAGS, SECCOMP_OPERATORS } from "./names";
import { HOOK_NAMES, OCI_VERSION } from "./spec";

export interface Features {
  ociVersionMin: string;
  ociVersionMax: string;
  hooks: string[];
  mountOptions: string[];
  linux: {
    namespaces: string[];
    capabilities: string[];
    cgroup: { v1: boolean; v2: boolean; systemd: boolean; systemdUser: boolean; rdma: boolean };
    seccomp: {
      enabled: boolean;
      actions: string[];
      operators: string[];
      archs: string[];
      knownFlags: string[];
      supportedFlags: string[];
    };
    apparmor: { enabled: boolean };
    selinux: { enabled: boolean };
    intelRdt: { enabled: boolean };
    mountExtensions: { idmap: { enabled: boolean } };
  };
  annotations: Record<string, string>;
}

/** Mount options the engine maps to mount flags or propagation (runc's table, without tmpcopyup). */
export const MOUNT_OPTIONS: readonly string[] = [
  "acl",
  "async",
  "atime",
  "bind",
  "defaults",
  "dev",
  "diratime",
  "dirsync",
  "exec",
  "iversion",
  "lazytime",
  "loud",
  "mand",
  "noacl",
  "noatime",
  "nodev",
  "nodiratime",
  "noexec",
  "noiversion",
  "nolazytime",
  "nomand",
  "norelatime",
  "nostrictatime",
  "nosuid",
  "nosymfollow",
  "private",
  "ratime",
  "rbind",
  "rdev",
  "rdiratime",
  "relatime",
  "remount",
  "rexec",
  "rnoatime",
  "rnodev",
  "rnodiratime",
  "rnoexec",
  "rnorelatime",
  "rnostrictatime",
  "rnosuid",
  "rnosymfollow",
  "ro",
  "rprivate",
  "rrelatime",
  "rro",
  "rrw",
  "rshared",
  "rslave",
  "rstrictatime",
  "rsuid",
  "rsymfollow",
  "runbindable",
  "rw",
  "shared",
  "silent",
  "slave",
  "strictatime",
  "suid",
  "symfollow",
  "sync",
  "unbindable",
];

// The architectures runc 1.1 with libseccomp 2.5 reports (a subset of SECCOMP_ARCHS, which validation
// accepts so that foreign profiles still load).
const FEATURE_ARCHS = SECCOMP_ARCHS.filter((a) => !a.includes("PARISC") && !a.includes("RISCV")).sort();

export interface FeaturesOptions {
  /** kata-ts version, reported as an annotation. */
  version: string;
  /** libseccomp version when known (runc reports it too). */
  libseccompVersion?: string;
}

export function features(opts: FeaturesOptions): Features {
  const annotations: Record<string, string> = {};
  if (opts.libseccompVersion) annotations["io.github.seccomp.libseccomp.version"] = opts.libseccompVersion;
  annotations["io.github.kata-ts.version"] = opts.version;
  return {
    ociVersionMin: "1.0.0",
    ociVersionMax: OCI_VERSION,
    hooks: [...HOOK_NAMES],
    mountOptions: [...MOUNT_OPTIONS],
    linux: {
      namespaces: ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
      capabilities: [...CAPABILITIES],
      cgroup: { v1: true, v2: true, systemd: false, systemdUser: false, rdma: false },
      seccomp: {
        enabled: true,
        actions: [...SECCOMP_ACTIONS].sort(),
        operators: [...SECCOMP_OPERATORS].sort(),
        archs: [...FEATURE_ARCHS],
        knownFlags: [...SECCOMP_FLAGS],
        supportedFlags: [
          "SECCOMP_FILTER_FLAG_TSYNC",
          "SECCOMP_FILTER_FLAG_LOG",
          "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        ],
      },
      apparmor: { enabled: false },
      selinux: { enabled: false },
      intelRdt: { enabled: false },
      mountExtensions: { idmap: { enabled: false } },
    },
    annotations,
  };
}

/** runc prints features with 4-space indentation. */
export function formatFeatures(f: Features): string {
  return JSON.stringify(f, null, 4);
}
