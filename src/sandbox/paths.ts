// Where a sandbox lives on the host: <root>/sandboxes/<sandbox-id>/ holds the supervisor's socket, pid
// and log, the VM's sockets and logs (via the hypervisor driver) and the shared directory the guest
// mounts. Unix socket paths are limited to 107 bytes; engines use long roots and 64-hex ids
// (containerd: /run/containerd/runc/<ns>/...), so when the sandbox directory is too long for a socket
// path the sockets go to a short per-sandbox directory under /run/kata-ts/s/ named by a hash.
import { join } from "node:path";
import { sha256Hex } from "../sys/crypto";

/** sun_path is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;
/** Short socket directories for sandboxes whose own directory is too long. */
export const SHORT_SOCKET_ROOT = "/run/kata-ts/s";

export interface SandboxPaths {
  /** <root>/sandboxes/<sid> */
  dir: string;
  /** Where the unix sockets go (dir itself when short enough). */
  sockDir: string;
  /** The control socket the CLI and the stand-ins connect to. */
  socket: string;
  /** The 9p/virtio-fs share: shared/<container-id>/rootfs are bind mounts of container rootfses. */
  shared: string;
  /** The supervisor's own pid ("<pid> <starttime>"), written first thing at start. */
  pidFile: string;
  /** The supervisor's stdout/stderr. */
  log: string;
  /** Sandbox facts for cleanup by a later CLI (sandbox.json: pids with start times, socket dir). */
  info: string;
  /** The hypervisor's runtime directory (qmp.sock, agent.sock, console.log, qemu.pid). */
  vmDir: string;
  /** virtio-fs: the virtiofsd vhost-user socket (in vmDir: short enough), its pid and its log. */
  virtiofsdSocket: string;
  virtiofsdPid: string;
  virtiofsdLog: string;
  /** The sandbox's cgroup as created ([runtime] sandbox_cgroup_only): what delete removes. */
  cgroup: string;
  /**
   * A network namespace kata-ts made for the sandbox (a bind mount of it; VM mode, a spec asking for a
   * new netns that has prestart hooks): unmounted with the rest of the directory's mounts.
   */
  netns: string;
}

/**
 * A short, stable name for a socket (or its directory) derived from a long key: the first `hexDigits` of
 * its SHA-256. Ids from engines are 64 hex digits and sun_path holds 107 bytes.
 */
export function shortSocketName(key: string, hexDigits = 16): string {
  return sha256Hex(key).slice(0, hexDigits);
}

export function sandboxPaths(root: string, sandboxId: string): SandboxPaths {
  const dir = join(root, "sandboxes", sandboxId);
  // The VM dir's socket names ("agent.sock", "qmp.sock", "virtiofsd.sock") are no longer than
  // "supervisor.sock".
  const short =
    Buffer.byteLength(join(dir, "supervisor.sock")) <= MAX_SOCKET_PATH
      ? dir
      : join(SHORT_SOCKET_ROOT, shortSocketName(dir));
  const vmDir = short === dir ? dir : join(short, "vm");
  return {
    dir,
    sockDir: short,
    socket: join(short, "supervisor.sock"),
    shared: join(dir, "shared"),
    pidFile: join(dir, "supervisor.pid"),
    log: join(dir, "supervisor.log"),
    info: join(dir, "sandbox.json"),
    vmDir,
    virtiofsdSocket: join(vmDir, "virtiofsd.sock"),
    virtiofsdPid: join(dir, "virtiofsd.pid"),
    virtiofsdLog: join(dir, "virtiofsd.log"),
    cgroup: join(dir, "cgroup.json"),
    netns: join(dir, "netns"),
  };
}

/** The guest directory the share is mounted on, and a container's rootfs in it (as Kata names them). */
export const GUEST_SHARED_DIR = "/run/kata-containers/shared/containers";
export const SHARE_TAG = "kataShared";

export function guestRootfs(containerId: string): string {
  return `${GUEST_SHARED_DIR}/${containerId}/rootfs`;
}
