// The host ⇄ guest agent contract: the methods the guest agent serves over its one virtio-serial port,
// with their request/response shapes. This file is the single source of truth both sides import; the
// wire encoding (ttrpc framing, message encoding, stream multiplexing) lives in the other agent/ files
// and never leaks past src/agent/.
//
// Identity: a container is `containerId`; every process in it is `execId` ("" = the container's init).
// Stdio: each process has up to three byte streams (stdin, stdout, stderr) or one (terminal: in/out),
// opened by the host with `openStdio` and carried on the same channel with flow control.
import type { LinuxResources, Process, Spec } from "../oci/spec";

export type Empty = Record<string, never>;

/** A directory the guest sees: a 9p or virtio-fs share mounted by tag, or a block device. */
export interface GuestMount {
  /** The share tag (9p mount_tag / virtio-fs tag) or a guest device path. */
  source: string;
  fstype: "9p" | "virtiofs" | "ext4" | "squashfs" | "bind" | "tmpfs";
  /** Absolute path inside the guest. */
  target: string;
  options: string[];
}

export interface CreateContainerRequest {
  containerId: string;
  /** The OCI spec as the guest must run it: root.path and bind sources rewritten to guest paths. */
  spec: Spec;
  /** Shares/mounts the guest must make before the container (rootfs share, volumes). */
  mounts: GuestMount[];
  /** Streams the host opened for the init's stdio (see StdioStreams). */
  stdio: StdioStreams;
}

export interface StdioStreams {
  terminal: boolean;
  /** Stream ids on the channel (0 = not connected). With a terminal, stdout carries the pty output. */
  stdin: number;
  stdout: number;
  stderr: number;
}

export interface ContainerRef {
  containerId: string;
}

export interface ProcessRef {
  containerId: string;
  /** "" = the container's init process. */
  execId: string;
}

export interface ExecProcessRequest extends ProcessRef {
  process: Process;
  stdio: StdioStreams;
}

export interface SignalProcessRequest extends ProcessRef {
  signal: number;
  /** Signal every process of the container (runc's kill --all). */
  all: boolean;
}

export interface WaitProcessResponse {
  /** Exit code, or 128 + signal number when the process was killed. */
  exitStatus: number;
}

export interface ProcessStarted {
  /** The process's pid inside the guest (informational: the host cannot see it). */
  guestPid: number;
}

export interface UpdateContainerRequest extends ContainerRef {
  resources: LinuxResources;
}

export interface ListProcessesRequest extends ContainerRef {
  /** With these, the guest's `ps` output too (Kata's `ps` table): arguments for `ps`, e.g. ["-ef"]. */
  psArgs?: string[];
}

export interface ListProcessesResponse {
  /** Guest pids of the container's processes. */
  pids: number[];
  /** The guest's `ps` output (every guest process; the host keeps the header and `pids`' rows). */
  table?: string;
}

export interface StatsContainerResponse {
  /** runc's `events --stats` data object (cpu, memory, pids, blkio), as read from the guest's cgroups. */
  data: Record<string, unknown>;
  /** OOM kills in the container's guest cgroup so far (the shim's /tasks/oom events). */
  oomKills?: number;
}

export interface ResizeRequest extends ProcessRef {
  rows: number;
  cols: number;
}

export interface GuestDetails {
  kernelRelease: string;
  bootId: string;
  agentVersion: string;
  /** Seconds since guest boot when the agent became ready. */
  readyAt: number;
  /** The agent bundle's V8 code cache: accepted, rejected (stale) or none (started without the loader). */
  codeCache?: "accepted" | "rejected" | "none";
  /** The node flags the agent runs with (process.execArgv: the image's agent-node-flags and any added). */
  nodeFlags?: string[];
}

/** One IP address of a guest interface. */
export interface IpAddress {
  family: 4 | 6;
  address: string;
  prefixLen: number;
}

/**
 * A guest NIC as the host's network namespace describes it (Kata's Interface). The guest finds the NIC
 * by `mac` (QEMU gave the device the host interface's MAC) and gives it `name`, `mtu` and `addresses`.
 */
export interface NetInterface {
  name: string;
  /** Lower-case colon form, e.g. "02:42:0a:00:00:02". */
  mac: string;
  mtu: number;
  addresses: IpAddress[];
}

/**
 * updateInterface's request. In a template clone the NIC still has the template's MAC (QEMU restored
 * it with the device): `fromMac` names it, and the guest gives the NIC `mac`, the pod interface's.
 */
export interface InterfaceUpdate extends NetInterface {
  fromMac?: string;
}

/** One route of the guest's main table (Kata's Route). */
export interface NetRoute {
  family: 4 | 6;
  /** "default" or a CIDR ("10.88.0.0/16"). */
  dest: string;
  gateway?: string;
  device: string;
  /** Preferred source address. */
  source?: string;
  scope?: "global" | "link" | "host";
  metric?: number;
}

export interface RoutesMessage {
  routes: NetRoute[];
}

/** updateNetwork's request: a sandbox's NICs and routes at its start. */
export interface NetworkUpdate {
  interfaces: InterfaceUpdate[];
  routes: NetRoute[];
}

/** updateNetwork's answer: the NICs it configured (in request order) and the routes now. */
export interface NetworkState {
  interfaces: NetInterface[];
  routes: NetRoute[];
}

/**
 * What makes a VM cloned from a template its own (Kata's factory does the same after a clone): the
 * template's CRNG state and clock are every clone's until these are applied.
 */
export interface CloneIdentity {
  /** Host random bytes (base64, 64-4096 bytes): credited to the guest's pool, then the CRNG reseeds. */
  entropy: string;
  /** The host's clock (ms since the epoch) when the request was made. */
  timeMs: number;
  /** The guest kernel's hostname (the sandbox's). */
  hostname: string;
}

/** The agent's spare helper: started and waiting for a plan, being started, or not kept. */
export type SpareState = "waiting" | "starting" | "off";

/** Every RPC the agent serves: name → [request, response]. */
export interface AgentApi {
  /** Liveness; also what the host waits for after boot. */
  ping: [Empty, GuestDetails];
  /**
   * Starts the spare container helper now if there is none (the template builder and a cache slot call
   * it after their warm-up, before the VM is saved or offered): "waiting", "starting", or "off".
   */
  spareHelper: [Empty, { spare: SpareState }];
  /** A clone's first call: fresh entropy, the host's clock, its own hostname → the guest's clock (ms). */
  adoptClone: [CloneIdentity, { timeMs: number }];
  /** Mount a share in the guest outside any container (e.g. the sandbox share after a template clone). */
  addMount: [GuestMount, Empty];
  /** Runs the engine in the guest up to the init blocking before exec (OCI "created"). */
  createContainer: [CreateContainerRequest, ProcessStarted];
  startContainer: [ContainerRef, Empty];
  execProcess: [ExecProcessRequest, ProcessStarted];
  signalProcess: [SignalProcessRequest, Empty];
  /** Resolves when the process exits (may be long). */
  waitProcess: [ProcessRef, WaitProcessResponse];
  closeStdin: [ProcessRef, Empty];
  resizeTerminal: [ResizeRequest, Empty];
  pauseContainer: [ContainerRef, Empty];
  resumeContainer: [ContainerRef, Empty];
  updateContainer: [UpdateContainerRequest, Empty];
  statsContainer: [ContainerRef, StatsContainerResponse];
  listProcesses: [ListProcessesRequest, ListProcessesResponse];
  /** Kills what is left of the container and removes it (mounts, cgroups, state) from the guest. */
  removeContainer: [ContainerRef, Empty];
  /** Configures the guest NIC with this MAC or fromMac (MAC, name, MTU, addresses, up) → the NIC now. */
  updateInterface: [InterfaceUpdate, NetInterface];
  /** Replaces the IPv4 routes of the guest's NICs by these (IPv6 ones are added) → the routes now. */
  updateRoutes: [RoutesMessage, RoutesMessage];
  /** updateInterface for each NIC, then updateRoutes (when routes are given), in one step. */
  updateNetwork: [NetworkUpdate, NetworkState];
  /** The guest's NICs (not lo). */
  listInterfaces: [Empty, { interfaces: NetInterface[] }];
  /** The guest's main-table routes on its NICs (not lo). */
  listRoutes: [Empty, RoutesMessage];
  /** Syncs and powers the guest off. */
  shutdown: [Empty, Empty];
}

export type AgentMethod = keyof AgentApi;
export type AgentRequest<M extends AgentMethod> = AgentApi[M][0];
export type AgentResponse<M extends AgentMethod> = AgentApi[M][1];

/** The name of the virtio-serial port the agent serves on (found under /sys/class/virtio-ports). */
export const AGENT_PORT_NAME = "agent.channel.0";
