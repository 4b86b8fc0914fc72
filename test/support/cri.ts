// The Kubernetes CRI path for tests and benchmarks: a private containerd 1.6 with its CRI plugin, a CNI
// bridge network and two runtime handlers (`runc`, and `kata-ts` for containerd-shim-kata-ts-v2), driven
// over gRPC the way the kubelet drives it. crictl/critest are not packaged in Debian 12, so the client
// is our own: grpc-js over the CRI v1 messages in cri/api.proto (a subset, upstream field numbers).
//
// Everything lives under one base directory: containerd's root, state, sockets, config, log and pid, the
// CNI config and IPAM store, the runc state root, the images. What containerd or CNI put elsewhere at
// fixed paths (the shim sockets in /run/containerd/s, libcni's result cache in /var/lib/cni) is recorded
// when absent before the start and removed by stop() when nothing is left in it. See docs/kubernetes.md.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { delimiter, join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import WebSocket from "ws";
import { mountsUnder, processesUnder } from "../engines/harness";
import { alive, busyboxRootfs, cgroupHierarchies, REPO, removeCgroupTree, sleep } from "../helpers";
import { all, executable, type Finding } from "../probes";

// ---- CRI v1 messages (proto-loader's view: camelCase names, enums as strings, int64 as decimal strings) --

export type NamespaceMode = "POD" | "CONTAINER" | "NODE" | "TARGET";
export type PodSandboxState = "SANDBOX_READY" | "SANDBOX_NOTREADY";
export type ContainerState =
  | "CONTAINER_CREATED"
  | "CONTAINER_RUNNING"
  | "CONTAINER_EXITED"
  | "CONTAINER_UNKNOWN";
type Labels = Record<string, string>;

export interface NamespaceOption {
  network?: NamespaceMode;
  pid?: NamespaceMode;
  ipc?: NamespaceMode;
  targetId?: string;
}

export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}

export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  logDirectory?: string;
  labels?: Labels;
  /** Passed on to the runtime only when the handler's pod_annotations lets them (io.katacontainers.*). */
  annotations?: Labels;
  linux?: { cgroupParent?: string; securityContext?: { namespaceOptions?: NamespaceOption } };
}

export interface ContainerMetadata {
  name: string;
  attempt?: number;
}

export interface ContainerConfig {
  metadata: ContainerMetadata;
  image: { image: string; annotations?: Labels };
  command?: string[];
  logPath?: string;
  linux?: { securityContext?: { namespaceOptions?: NamespaceOption } };
}

export interface VersionResponse {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
  runtimeApiVersion: string;
}

export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata | null;
  state: PodSandboxState;
  createdAt: string;
  network: { ip: string; additionalIps: { ip: string }[] } | null;
  linux: { namespaces: { options: NamespaceOption | null } | null } | null;
  labels: Labels;
  annotations: Labels;
  runtimeHandler: string;
}

export interface PodSandbox {
  id: string;
  metadata: PodSandboxMetadata | null;
  state: PodSandboxState;
  createdAt: string;
  labels: Labels;
  annotations: Labels;
  runtimeHandler: string;
}

export interface PodSandboxFilter {
  id?: string;
  state?: { state: PodSandboxState };
}

export interface Container {
  id: string;
  podSandboxId: string;
  metadata: ContainerMetadata | null;
  image: { image: string } | null;
  imageRef: string;
  state: ContainerState;
  createdAt: string;
  labels: Labels;
  annotations: Labels;
}

export interface ContainerFilter {
  id?: string;
  state?: { state: ContainerState };
  podSandboxId?: string;
}

export interface ContainerStatus {
  id: string;
  metadata: ContainerMetadata | null;
  state: ContainerState;
  createdAt: string;
  startedAt: string;
  finishedAt: string;
  exitCode: number;
  image: { image: string } | null;
  imageRef: string;
  reason: string;
  message: string;
  labels: Labels;
  annotations: Labels;
  logPath: string;
}

/** What a streamed exec gave: its output streams and its exit code (from the error channel's status). */
export interface StreamedExec {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface ExecSyncResponse {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}

type UInt64Value = { value: string } | null;

export interface ContainerStats {
  attributes: { id: string; metadata: ContainerMetadata | null; labels: Labels; annotations: Labels } | null;
  cpu: { timestamp: string; usageCoreNanoSeconds: UInt64Value; usageNanoCores: UInt64Value } | null;
  memory: {
    timestamp: string;
    workingSetBytes: UInt64Value;
    availableBytes: UInt64Value;
    usageBytes: UInt64Value;
    rssBytes: UInt64Value;
    pageFaults: UInt64Value;
    majorPageFaults: UInt64Value;
  } | null;
  writableLayer: {
    timestamp: string;
    fsId: { mountpoint: string } | null;
    usedBytes: UInt64Value;
    inodesUsed: UInt64Value;
  } | null;
}

export interface Image {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  size: string;
  uid: { value: string } | null;
  username: string;
}

// ---- the client -----------------------------------------------------------------------------------------

const PROTO = join(REPO, "test", "support", "cri", "api.proto");
let services: { runtime: grpc.ServiceClientConstructor; image: grpc.ServiceClientConstructor } | undefined;

function loadServices(): NonNullable<typeof services> {
  if (!services) {
    const def = protoLoader.loadSync(PROTO, { longs: String, enums: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      runtime: {
        v1: { RuntimeService: grpc.ServiceClientConstructor; ImageService: grpc.ServiceClientConstructor };
      };
    };
    services = { runtime: pkg.runtime.v1.RuntimeService, image: pkg.runtime.v1.ImageService };
  }
  return services;
}

/** A failed CRI call: the method, gRPC's status name and containerd's message. */
export class CriError extends Error {
  constructor(
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`CRI ${method}: ${grpc.status[code] ?? code}: ${details}`);
  }
}

type Unary = (
  req: unknown,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: unknown) => void,
) => void;

/** Per-call options: the deadline in milliseconds from now (default: the client's). */
export interface CallOpts {
  timeoutMs?: number;
}

/** The CRI RuntimeService and ImageService over a unix socket; every method is one unary call. */
export class CriClient {
  private readonly runtime: grpc.Client;
  private readonly image: grpc.Client;

  constructor(
    readonly socket: string,
    readonly defaultTimeoutMs = 60_000,
  ) {
    const { runtime, image } = loadServices();
    const creds = grpc.credentials.createInsecure();
    this.runtime = new runtime(`unix://${socket}`, creds);
    this.image = new image(`unix://${socket}`, creds);
  }

  private call<T>(client: grpc.Client, method: string, req: object, opts: CallOpts = {}): Promise<T> {
    const fn = (client as unknown as Record<string, Unary>)[method];
    const deadline = Date.now() + (opts.timeoutMs ?? this.defaultTimeoutMs);
    return new Promise((resolve, reject) =>
      fn.call(client, req, new grpc.Metadata(), { deadline }, (err, res) =>
        err ? reject(new CriError(method, err.code, err.details)) : resolve(res as T),
      ),
    );
  }

  version(opts?: CallOpts): Promise<VersionResponse> {
    return this.call(this.runtime, "Version", { version: "v1" }, opts);
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler: string, opts?: CallOpts): Promise<string> {
    const r = await this.call<{ podSandboxId: string }>(
      this.runtime,
      "RunPodSandbox",
      { config, runtimeHandler },
      opts,
    );
    return r.podSandboxId;
  }

  async stopPodSandbox(podSandboxId: string, opts?: CallOpts): Promise<void> {
    await this.call(this.runtime, "StopPodSandbox", { podSandboxId }, opts);
  }

  async removePodSandbox(podSandboxId: string, opts?: CallOpts): Promise<void> {
    await this.call(this.runtime, "RemovePodSandbox", { podSandboxId }, opts);
  }

  /** The status, and with `verbose` containerd's `info` map (key "info": JSON with the runtime spec, pid, CNI result). */
  podSandboxStatus(
    podSandboxId: string,
    verbose = false,
    opts?: CallOpts,
  ): Promise<{ status: PodSandboxStatus; info: Labels }> {
    return this.call(this.runtime, "PodSandboxStatus", { podSandboxId, verbose }, opts);
  }

  async listPodSandbox(filter?: PodSandboxFilter, opts?: CallOpts): Promise<PodSandbox[]> {
    const r = await this.call<{ items: PodSandbox[] }>(this.runtime, "ListPodSandbox", { filter }, opts);
    return r.items;
  }

  async createContainer(
    podSandboxId: string,
    config: ContainerConfig,
    sandboxConfig: PodSandboxConfig,
    opts?: CallOpts,
  ): Promise<string> {
    const r = await this.call<{ containerId: string }>(
      this.runtime,
      "CreateContainer",
      { podSandboxId, config, sandboxConfig },
      opts,
    );
    return r.containerId;
  }

  async startContainer(containerId: string, opts?: CallOpts): Promise<void> {
    await this.call(this.runtime, "StartContainer", { containerId }, opts);
  }

  /** Stops with a grace period of `timeoutSec` seconds (0: SIGKILL at once). */
  async stopContainer(containerId: string, timeoutSec: number, opts?: CallOpts): Promise<void> {
    await this.call(this.runtime, "StopContainer", { containerId, timeout: timeoutSec }, opts);
  }

  async removeContainer(containerId: string, opts?: CallOpts): Promise<void> {
    await this.call(this.runtime, "RemoveContainer", { containerId }, opts);
  }

  async listContainers(filter?: ContainerFilter, opts?: CallOpts): Promise<Container[]> {
    const r = await this.call<{ containers: Container[] }>(this.runtime, "ListContainers", { filter }, opts);
    return r.containers;
  }

  /** The status, and with `verbose` containerd's `info` map (key "info": JSON with pid, runtime spec...). */
  containerStatus(
    containerId: string,
    verbose = false,
    opts?: CallOpts,
  ): Promise<{ status: ContainerStatus; info: Labels }> {
    return this.call(this.runtime, "ContainerStatus", { containerId, verbose }, opts);
  }

  /** Runs `cmd` in the container; `timeoutSec` is the CRI's own timeout (0: none), the call's deadline is apart. */
  execSync(containerId: string, cmd: string[], timeoutSec = 0, opts?: CallOpts): Promise<ExecSyncResponse> {
    return this.call(this.runtime, "ExecSync", { containerId, cmd, timeout: timeoutSec }, opts);
  }

  /** Exec: the URL on containerd's streaming server where the process's streams are served (streamExec). */
  async exec(
    containerId: string,
    cmd: string[],
    streams: { stdin?: boolean; tty?: boolean } = {},
    opts?: CallOpts,
  ): Promise<string> {
    const req = {
      containerId,
      cmd,
      tty: !!streams.tty,
      stdin: !!streams.stdin,
      stdout: true,
      stderr: !streams.tty,
    };
    const r = await this.call<{ url: string }>(this.runtime, "Exec", req, opts);
    return r.url;
  }

  /** UpdateContainerResources with Linux resources (int64 fields as decimal strings, as proto-loader has them). */
  async updateContainerResources(
    containerId: string,
    linux: { memoryLimitInBytes?: string; cpuPeriod?: string; cpuQuota?: string; cpuShares?: string },
    opts?: CallOpts,
  ): Promise<void> {
    await this.call(this.runtime, "UpdateContainerResources", { containerId, linux }, opts);
  }

  async containerStats(containerId: string, opts?: CallOpts): Promise<ContainerStats> {
    const r = await this.call<{ stats: ContainerStats }>(
      this.runtime,
      "ContainerStats",
      { containerId },
      opts,
    );
    return r.stats;
  }

  async listImages(opts?: CallOpts): Promise<Image[]> {
    const r = await this.call<{ images: Image[] }>(this.image, "ListImages", {}, opts);
    return r.images;
  }

  /** The image, or null when containerd does not have it (the CRI answers "not found" with an empty reply). */
  async imageStatus(image: string, opts?: CallOpts): Promise<Image | null> {
    const r = await this.call<{ image: Image | null }>(this.image, "ImageStatus", { image: { image } }, opts);
    return r.image;
  }

  close(): void {
    this.runtime.close();
    this.image.close();
  }
}

// ---- a private containerd with the CRI plugin -----------------------------------------------------------

export const CONTAINERD = "/usr/bin/containerd";
export const CNI_BIN_DIR = "/usr/lib/cni";
/** The containerd namespace the CRI plugin keeps its images, containers and tasks in. */
export const CRI_NAMESPACE = "k8s.io";
/** The sandbox ("pause") image: busybox-static whose entrypoint sleeps until it is killed. */
export const PAUSE_IMAGE = "localhost/kata-ts-pause:latest";
/** The workload image: busybox-static, CMD /bin/sh. */
export const BUSYBOX_IMAGE = "localhost/busybox:latest";
/** The runtime handlers the config declares (RunPodSandbox's runtime_handler). */
export const HANDLERS = ["runc", "kata-ts"] as const;
export type Handler = (typeof HANDLERS)[number];
export const KATA_SHIM = "containerd-shim-kata-ts-v2";
/** Where containerd looks for containerd-shim-kata-ts-v2 unless told otherwise (after its own PATH). */
export const DEFAULT_SHIM_DIR = join(REPO, "bin");

export interface CriOptions {
  /** Put first on containerd's PATH, which is where it finds containerd-shim-kata-ts-v2 (default: bin/). */
  shimDir?: string;
  /** Extra environment for containerd; shims inherit containerd's environment. */
  env?: Record<string, string>;
  /** The kata-ts handler's `options.ConfigPath` (handed to the shim as its runtime options). */
  kataConfigPath?: string;
  /** containerd's log level (default "info"). */
  logLevel?: "debug" | "info" | "warn";
  /** How long containerd may take to serve the CRI (default 60 s). */
  startTimeoutMs?: number;
}

export interface CriContainerd {
  readonly base: string;
  /** containerd's gRPC socket (the CRI is served there). */
  readonly socket: string;
  readonly pid: number;
  readonly configPath: string;
  readonly logPath: string;
  /** The pod network: its CIDR, the bridge's address in it (pods reach the host there) and the bridge. */
  readonly subnet: string;
  readonly gateway: string;
  readonly bridge: string;
  /** cgroupfs parent of every pod made with podConfig(): "/<name>" in every hierarchy. */
  readonly cgroupParent: string;
  readonly client: CriClient;
  /** A pod config with a run-unique name and uid, its log dir under base, the kubelet's namespace modes. */
  podConfig(name: string): PodSandboxConfig;
  /** A busybox container config running `args`, own PID namespace (as the kubelet asks). */
  containerConfig(name: string, args: string[]): ContainerConfig;
  /** Removes every pod, stops containerd, removes the bridge, the cgroups and base; throws naming leftovers. */
  stop(): Promise<void>;
}

/** Why this machine cannot run the CRI harness, or what it found. */
export function criPrerequisites(): Finding {
  const root: Finding =
    process.getuid?.() === 0 ? { ok: true, detail: "root" } : { ok: false, reason: "needs root" };
  return all(
    root,
    executable(CONTAINERD, "containerd"),
    executable("/usr/bin/ctr", "ctr"),
    executable("/usr/bin/containerd-shim-runc-v2", "containerd-shim-runc-v2"),
    executable("/usr/sbin/runc", "runc"),
    ...["bridge", "host-local", "loopback"].map((p) =>
      executable(join(CNI_BIN_DIR, p), `the CNI ${p} plugin (containernetworking-plugins)`),
    ),
    executable("/bin/busybox", "busybox-static"),
    executable("/usr/bin/tar", "tar"),
  );
}

/** Where containerd (PATH = shimDir + this process's PATH) would find containerd-shim-kata-ts-v2. */
export function findKataShim(shimDir = DEFAULT_SHIM_DIR): Finding {
  const r = spawnSync("which", [KATA_SHIM], {
    encoding: "utf8",
    env: { ...process.env, PATH: shimPath(shimDir) },
  });
  return r.status === 0
    ? { ok: true, detail: r.stdout.trim() }
    : { ok: false, reason: `${KATA_SHIM} not installed` };
}

function shimPath(shimDir: string): string {
  return [shimDir, process.env.PATH || "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"].join(
    delimiter,
  );
}

// Fixed host paths containerd 1.6 or libcni create whatever the config says; stop() removes the ones
// that were absent before the start, when they hold nothing but empty directories.
const FIXED_HOST_PATHS = ["/run/containerd", "/var/lib/cni"];

function run(cmd: string, args: string[], what: string): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 120_000 });
  if (r.error) throw new Error(`${what}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${what} exited ${r.status}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

const toml = (s: string) => JSON.stringify(s);

/** A 10.88.N.0/24 that no host route uses yet, N random. */
function freeSubnet(): number {
  const routes = run("ip", ["-4", "route", "show"], "ip route");
  const free: number[] = [];
  for (let n = 2; n < 255; n++) if (!routes.includes(`10.88.${n}.`)) free.push(n);
  if (free.length === 0) throw new Error("no free 10.88.N.0/24 subnet for the CRI pod network");
  return free[Math.floor(Math.random() * free.length)]!;
}

/** The containerd config (version 2) the harness writes; exported for the docs and the report. */
export function containerdConfig(p: {
  base: string;
  cniConfDir: string;
  kataConfigPath?: string;
  logLevel: string;
}): string {
  const cri = '[plugins."io.containerd.grpc.v1.cri"';
  const kataOptions = p.kataConfigPath
    ? `\n${cri}.containerd.runtimes.kata-ts.options]\n  ConfigPath = ${toml(p.kataConfigPath)}\n`
    : "";
  return `version = 2
root = ${toml(join(p.base, "root"))}
state = ${toml(join(p.base, "state"))}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = ${toml(join(p.base, "containerd.sock"))}
[ttrpc]
  address = ${toml(join(p.base, "containerd.sock.ttrpc"))}
[debug]
  level = ${toml(p.logLevel)}

${cri}]
  sandbox_image = ${toml(PAUSE_IMAGE)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  systemd_cgroup = false
  enable_selinux = false
  disable_apparmor = true

${cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  disable_snapshot_annotations = true

${cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
${cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = ${toml(join(p.base, "runc"))}

${cri}.containerd.runtimes.kata-ts]
  runtime_type = "io.containerd.kata-ts.v2"
  privileged_without_host_devices = true
  pod_annotations = ["io.katacontainers.*"]
${kataOptions}
${cri}.cni]
  bin_dir = ${toml(CNI_BIN_DIR)}
  conf_dir = ${toml(p.cniConfDir)}
  max_conf_num = 1
`;
}

/** The CNI network list: a bridge (pre-created by the harness, with the gateway address) and host-local. */
export function cniConfList(p: {
  name: string;
  bridge: string;
  subnet: string;
  gateway: string;
  ipamDir: string;
}) {
  return {
    cniVersion: "1.0.0",
    name: p.name,
    plugins: [
      {
        type: "bridge",
        bridge: p.bridge,
        // isGateway would also switch on the host's net.ipv4.ip_forward: the harness puts the gateway
        // address on the bridge itself instead, and no pod traffic is routed or masqueraded.
        isGateway: false,
        ipMasq: false,
        ipam: {
          type: "host-local",
          ranges: [[{ subnet: p.subnet, gateway: p.gateway }]],
          dataDir: p.ipamDir,
        },
      },
    ],
  };
}

function sha256(data: Buffer | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/**
 * An OCI image-layout archive at `out` holding PAUSE_IMAGE and BUSYBOX_IMAGE: one layer (busybox-static
 * and its applet links), two configs. `ctr image import` reads the names from the index's
 * io.containerd.image.name annotations. No registry, no podman.
 */
function buildImageArchive(dir: string, out: string): void {
  const rootfs = join(dir, "rootfs");
  busyboxRootfs(rootfs);
  const blobs = join(dir, "layout", "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  const layerTar = join(dir, "layer.tar");
  run("tar", ["-C", rootfs, "--numeric-owner", "--owner=0", "--group=0", "-cf", layerTar, "."], "tar layer");
  const layer = readFileSync(layerTar);
  const layerDigest = sha256(layer);
  writeFileSync(join(blobs, layerDigest.slice(7)), layer);
  rmSync(layerTar);
  const blob = (obj: object) => {
    const text = JSON.stringify(obj);
    const digest = sha256(text);
    writeFileSync(join(blobs, digest.slice(7)), text);
    return { digest, size: Buffer.byteLength(text) };
  };
  const platform = { architecture: "amd64", os: "linux" };
  const manifest = (config: object) => {
    const c = blob({ ...platform, config, rootfs: { type: "layers", diff_ids: [layerDigest] } });
    return blob({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...c },
      layers: [
        { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layerDigest, size: layer.length },
      ],
    });
  };
  const env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"];
  const images = [
    { name: PAUSE_IMAGE, m: manifest({ Env: env, Entrypoint: ["/bin/sleep", "infinity"] }) },
    { name: BUSYBOX_IMAGE, m: manifest({ Env: env, Cmd: ["/bin/sh"] }) },
  ];
  const layout = join(dir, "layout");
  writeFileSync(join(layout, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(
    join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: images.map(({ name, m }) => ({
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        ...m,
        platform,
        annotations: { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest" },
      })),
    }),
  );
  run("tar", ["-C", layout, "-cf", out, "."], "tar image layout");
  rmSync(dir, { recursive: true, force: true });
}

function tail(path: string, lines = 30): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

export { cgroupHierarchies } from "../helpers";

/** Removes `dir` if it holds nothing but empty directories. */
function removeIfOnlyEmptyDirs(dir: string): boolean {
  if (!existsSync(dir)) return true;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || !removeIfOnlyEmptyDirs(join(dir, e.name))) return false;
  }
  try {
    rmdirSync(dir);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts a private containerd 1.6 with the CRI plugin under `base` (created; must not exist or be empty)
 * and imports the images. On failure everything it made is removed again before the error is thrown.
 */
export async function startCriContainerd(base: string, opts: CriOptions = {}): Promise<CriContainerd> {
  const tag = `ktcri${process.pid}`; // bridge and network name: at most 15 characters
  const n = freeSubnet();
  const subnet = `10.88.${n}.0/24`;
  const gateway = `10.88.${n}.1`;
  const socket = join(base, "containerd.sock");
  const configPath = join(base, "containerd.toml");
  const logPath = join(base, "containerd.log");
  const cniConfDir = join(base, "cni", "net.d");
  const cgroupParent = `/${tag}`;
  const createdHostPaths = FIXED_HOST_PATHS.filter((p) => !existsSync(p));
  let child: ChildProcess | undefined;
  let client: CriClient | undefined;
  let stopped = false;
  let podCount = 0;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const problems: string[] = [];
    if (client && child?.pid && alive(child.pid)) {
      try {
        for (const pod of await client.listPodSandbox(undefined, { timeoutMs: 10_000 })) {
          try {
            await client.stopPodSandbox(pod.id, { timeoutMs: 120_000 });
            await client.removePodSandbox(pod.id, { timeoutMs: 120_000 });
          } catch (e) {
            problems.push(`pod ${pod.metadata?.name ?? pod.id}: ${(e as Error).message}`);
          }
        }
      } catch (e) {
        problems.push(`ListPodSandbox: ${(e as Error).message}`);
      }
    }
    client?.close();
    if (child?.pid) {
      const pid = child.pid;
      if (alive(pid)) process.kill(pid, "SIGTERM");
      for (let i = 0; i < 200 && alive(pid); i++) await sleep(50);
      if (alive(pid)) process.kill(pid, "SIGKILL");
      for (let i = 0; i < 100 && alive(pid); i++) await sleep(50);
    }
    // Shims and container processes that outlived the pods (a failed removal): by base in their argv/root.
    for (const p of processesUnder(base)) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {}
    }
    for (let i = 0; i < 40 && processesUnder(base).length; i++) await sleep(50);
    for (let round = 0; round < 3 && mountsUnder(base).length; round++) {
      for (const m of mountsUnder(base).reverse()) {
        if (spawnSync("umount", [m]).status !== 0) spawnSync("umount", ["-l", m]);
      }
    }
    if (existsSync(`/sys/class/net/${tag}`)) spawnSync("ip", ["link", "del", tag]);
    for (const h of cgroupHierarchies()) removeCgroupTree(join(h, cgroupParent));

    const mounts = mountsUnder(base);
    if (mounts.length === 0) rmSync(base, { recursive: true, force: true });
    for (const p of createdHostPaths) {
      if (!removeIfOnlyEmptyDirs(p)) problems.push(`${p} (created during the run) is not empty`);
    }

    if (mounts.length) problems.push(`mounts under ${base}: ${mounts.join(" ")}`);
    const procs = processesUnder(base);
    if (procs.length) problems.push(`processes: ${procs.map((p) => `${p.pid} ${p.cmdline}`).join("; ")}`);
    if (existsSync(`/sys/class/net/${tag}`)) problems.push(`bridge ${tag}`);
    for (const h of cgroupHierarchies())
      if (existsSync(join(h, cgroupParent))) problems.push(`cgroup ${join(h, cgroupParent)}`);
    if (existsSync(base)) problems.push(`${base} could not be removed`);
    if (problems.length)
      throw new Error(`CRI containerd teardown left something behind:\n  ${problems.join("\n  ")}`);
  };

  try {
    if (existsSync(base) && readdirSync(base).length) throw new Error(`${base} exists and is not empty`);
    for (const d of [cniConfDir, join(base, "cni", "ipam"), join(base, "pods"), join(base, "images")])
      mkdirSync(d, { recursive: true });
    writeFileSync(
      join(cniConfDir, `10-${tag}.conflist`),
      `${JSON.stringify(cniConfList({ name: tag, bridge: tag, subnet, gateway, ipamDir: join(base, "cni", "ipam") }), null, 2)}\n`,
    );
    writeFileSync(
      configPath,
      containerdConfig({
        base,
        cniConfDir,
        kataConfigPath: opts.kataConfigPath,
        logLevel: opts.logLevel ?? "info",
      }),
    );
    // The bridge exists before the first pod, with the gateway address: pods reach the host at `gateway`
    // and the CNI bridge plugin (isGateway false) only attaches veths to it.
    run("ip", ["link", "add", "name", tag, "type", "bridge"], "ip link add");
    run("ip", ["addr", "add", `${gateway}/24`, "dev", tag], "ip addr add");
    run("ip", ["link", "set", tag, "up"], "ip link set up");

    const log = openSync(logPath, "a");
    child = spawn(CONTAINERD, ["--config", configPath], {
      detached: true, // its own session, as a daemon: not killed with the test's process group
      stdio: ["ignore", log, log],
      env: { ...process.env, ...opts.env, PATH: shimPath(opts.shimDir ?? DEFAULT_SHIM_DIR) },
    });
    closeSync(log);
    child.unref();
    const pid = child.pid;
    if (!pid) throw new Error(`could not start ${CONTAINERD}`);
    writeFileSync(join(base, "containerd.pid"), `${pid}\n`);

    client = new CriClient(socket);
    const end = Date.now() + (opts.startTimeoutMs ?? 60_000);
    for (;;) {
      if (!alive(pid)) throw new Error(`containerd exited during start-up:\n${tail(logPath)}`);
      try {
        if (existsSync(socket)) {
          await client.version({ timeoutMs: 2_000 });
          break;
        }
      } catch (e) {
        if (Date.now() > end)
          throw new Error(`containerd's CRI did not answer: ${(e as Error).message}\n${tail(logPath)}`);
      }
      if (Date.now() > end) throw new Error(`containerd did not create ${socket}\n${tail(logPath)}`);
      await sleep(50);
    }

    const archive = join(base, "images", "images.tar");
    buildImageArchive(join(base, "images", "build"), archive);
    run("ctr", ["--address", socket, "-n", CRI_NAMESPACE, "image", "import", archive], "ctr image import");
    for (const image of [PAUSE_IMAGE, BUSYBOX_IMAGE]) {
      // The CRI plugin learns of imported images from containerd's events: wait until it serves them.
      for (let i = 0; !(await client.imageStatus(image)); i++) {
        if (i > 100) throw new Error(`the CRI does not see the imported ${image}`);
        await sleep(50);
      }
    }

    const c = client;
    return {
      base,
      socket,
      pid,
      configPath,
      logPath,
      subnet,
      gateway,
      bridge: tag,
      cgroupParent,
      client: c,
      podConfig(name) {
        const uid = randomUUID();
        const unique = `${name}-${process.pid}-${++podCount}`;
        return {
          metadata: { name: unique, uid, namespace: "kata-ts-test", attempt: 0 },
          hostname: unique.slice(0, 63),
          logDirectory: join(base, "pods", uid),
          labels: { "kata-ts.test": "cri" },
          linux: {
            cgroupParent: `${cgroupParent}/pod${uid}`,
            securityContext: { namespaceOptions: { network: "POD", pid: "CONTAINER", ipc: "POD" } },
          },
        };
      },
      containerConfig(name, args) {
        return {
          metadata: { name, attempt: 0 },
          image: { image: BUSYBOX_IMAGE },
          command: args,
          logPath: `${name}.log`,
          linux: { securityContext: { namespaceOptions: { network: "POD", pid: "CONTAINER", ipc: "POD" } } },
        };
      },
      stop,
    };
  } catch (e) {
    await stop().catch((s: Error) => console.error(s.message));
    throw e;
  }
}

// ---- streamed exec: the kubelet's remotecommand protocol over WebSocket ------------------------------------

/** The WebSocket subprotocol of Kubernetes' remotecommand v4: one channel byte, then the data. */
const EXEC_PROTOCOL = "v4.channel.k8s.io";
enum Channel {
  Stdin = 0,
  Stdout = 1,
  Stderr = 2,
  /** v4: a JSON metav1.Status when the process ends ("Success", or "Failure" with cause ExitCode). */
  Status = 3,
}

/**
 * Attaches to an Exec URL as `kubectl exec` does (WebSocket, remotecommand v4, the protocol the streaming
 * server of containerd 1.6 speaks besides SPDY), writes `stdin` if given (the process must not wait for
 * EOF: v4 cannot close stdin alone) and collects the output until the server closes.
 */
export function streamExec(url: string, stdin?: string, timeoutMs = 60_000): Promise<StreamedExec> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, "ws"), [EXEC_PROTOCOL]);
    const out = { stdout: "", stderr: "" };
    let status:
      | { status?: string; message?: string; details?: { causes?: { reason?: string; message?: string }[] } }
      | undefined;
    const timer = setTimeout(() => {
      ws.terminate();
      reject(
        new Error(
          `streamed exec at ${url}: no end within ${timeoutMs} ms; output so far ${JSON.stringify(out)}`,
        ),
      );
    }, timeoutMs);
    ws.on("open", () => {
      if (ws.protocol !== EXEC_PROTOCOL) reject(new Error(`the server chose protocol "${ws.protocol}"`));
      if (stdin !== undefined) ws.send(Buffer.concat([Buffer.from([Channel.Stdin]), Buffer.from(stdin)]));
    });
    ws.on("message", (data: Buffer) => {
      if (data.length === 0) return;
      const body = data.subarray(1).toString("utf8");
      if (data[0] === Channel.Stdout) out.stdout += body;
      else if (data[0] === Channel.Stderr) out.stderr += body;
      else if (data[0] === Channel.Status && body) status = JSON.parse(body);
    });
    ws.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`streamed exec at ${url}: ${e.message}`));
    });
    ws.on("close", () => {
      clearTimeout(timer);
      if (!status) return reject(new Error(`streamed exec at ${url}: closed without a status`));
      if (status.status === "Success") return resolve({ ...out, exitCode: 0 });
      const code = status.details?.causes?.find((c) => c.reason === "ExitCode")?.message;
      if (code === undefined)
        return reject(new Error(`streamed exec at ${url}: ${status.message ?? JSON.stringify(status)}`));
      resolve({ ...out, exitCode: Number(code) });
    });
  });
}
