// configuration.toml: where it is looked for, what it may contain, and the built-in defaults used when
// no file exists. Keys follow Kata Containers' configuration-qemu.toml so a Kata user recognises them;
// our additions are `[runtime] hypervisor` ("qemu" | "none") and `[hypervisor.qemu] accel`.
// The shipped config/configuration.toml must parse to exactly DEFAULT_CONFIG (a unit test checks it).

import { existsSync, readFileSync } from "node:fs";
import { isAbsolute } from "node:path";
import { parse, TomlError } from "smol-toml";
import { firstLine, KataError } from "../errors";

export const SHARED_FS = ["virtio-fs", "virtio-9p", "none"] as const;
export const HYPERVISORS = ["qemu", "none"] as const;
export const ACCELS = ["auto", "kvm", "tcg"] as const;
export const INTERNETWORKING_MODELS = ["tcfilter", "macvtap", "none"] as const;
export const BLOCK_DEVICE_DRIVERS = ["virtio-blk", "virtio-scsi", "nvdimm"] as const;
export const VIRTIO_FS_CACHE = ["auto", "always", "never", "none"] as const;

export type SharedFs = (typeof SHARED_FS)[number];
export type HypervisorKind = (typeof HYPERVISORS)[number];
export type Accel = (typeof ACCELS)[number];

export interface QemuConfig {
  path: string;
  kernel: string;
  /** Guest image (block device / DAX). Empty = use `initrd`. */
  image: string;
  /** Guest initramfs. Empty = use `image`. */
  initrd: string;
  machineType: string;
  kernelParams: string;
  firmware: string;
  defaultVcpus: number;
  /** 0 = number of host CPUs (as in Kata). */
  defaultMaxvcpus: number;
  /** MiB. */
  defaultMemory: number;
  memorySlots: number;
  defaultBridges: number;
  disableBlockDeviceUse: boolean;
  /**
   * Kata's key: true attaches the guest image over virtio-blk even where it could be mapped with DAX
   * (virtio-pmem on q35/pc). microvm always uses virtio-blk: it has no device-memory region.
   */
  disableImageNvdimm: boolean;
  sharedFs: SharedFs;
  virtioFsDaemon: string;
  /** MiB of DAX window; 0 = no DAX. */
  virtioFsCacheSize: number;
  virtioFsCache: (typeof VIRTIO_FS_CACHE)[number];
  /** Extra virtiofsd arguments, appended after ours (as Kata's virtio_fs_extra_args). */
  virtioFsExtraArgs: string[];
  blockDeviceDriver: (typeof BLOCK_DEVICE_DRIVERS)[number];
  enableIothreads: boolean;
  validHypervisorPaths: string[];
  /**
   * Which io.katacontainers.config.hypervisor.* annotations a sandbox may set (regular expressions over the
   * name after the prefix, matched whole; Kata's key). kata-ts obeys default_memory and default_vcpus.
   */
  enableAnnotations: string[];
  /** "auto" = KVM when a probe guest really runs fast, TCG otherwise. */
  accel: Accel;
  /** MiB of TCG translation cache (QEMU's tb-size); 0 = QEMU's default (1 GiB). TCG only. */
  tcgTbSize: number;
  /**
   * Kata's key: a virtio-balloon with free page reporting, so pages the guest frees go back to the host.
   * Cold-booted VMs only: QEMU 7.2 would punch the freed range out of a template's memory file.
   */
  reclaimGuestFreedMemory: boolean;
  /** QEMU's `-sandbox` value (Kata's key); "" = no seccomp filter. */
  seccompsandbox: string;
  /** QEMU runs as `rootlessUser` (Kata's `rootless`; Kata makes a user per sandbox, we use one). */
  rootless: boolean;
  /** The unprivileged user QEMU runs as when `rootless`, created (system user) if missing. */
  rootlessUser: string;
  /** QEMU in a mount namespace of its own that shows only what the VM needs. */
  jailMountNamespace: boolean;
  enableDebug: boolean;
}

export interface AgentConfig {
  enableDebug: boolean;
  /** Seconds to wait for the agent to answer after boot. */
  dialTimeout: number;
  kernelModules: string[];
  enableTracing: boolean;
}

export interface RuntimeSection {
  hypervisor: HypervisorKind;
  enableDebug: boolean;
  enableTracing: boolean;
  internetworkingModel: (typeof INTERNETWORKING_MODELS)[number];
  disableGuestSeccomp: boolean;
  sandboxCgroupOnly: boolean;
  jaegerEndpoint: string;
  jaegerUser: string;
  jaegerPassword: string;
  otlpEndpoint: string;
  experimental: string[];
}

export interface FactoryConfig {
  enableTemplate: boolean;
  templatePath: string;
  vmCacheNumber: number;
  vmCacheEndpoint: string;
}

export interface RuntimeConfig {
  hypervisor: QemuConfig;
  agent: AgentConfig;
  runtime: RuntimeSection;
  factory: FactoryConfig;
}

export interface LoadedConfig {
  /** The file read; undefined = built-in defaults (no file found). */
  path: string | undefined;
  config: RuntimeConfig;
  /** Unknown sections/keys: Kata ignores them, so do we, but say so. */
  warnings: string[];
}

/** A bad configuration file: the message is `config: <file>:<line>: <what>`. */
export class ConfigError extends KataError {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly what: string,
  ) {
    super(`config: ${file}${line ? `:${line}` : ""}: ${what}`);
    this.name = "ConfigError";
  }
}

/** virtiofsd locations, in order: the Rust daemon (Debian's virtiofsd package), QEMU 7's C daemon. */
export const VIRTIOFSD_CANDIDATES = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];

/** The default virtio_fs_daemon: the first candidate that exists (the last one when none does). */
export function defaultVirtiofsd(exists: (p: string) => boolean = existsSync): string {
  return VIRTIOFSD_CANDIDATES.find((p) => exists(p)) ?? VIRTIOFSD_CANDIDATES[VIRTIOFSD_CANDIDATES.length - 1];
}

/** Where guest assets built by kata-ts live (the guest builder writes them here). */
export const GUEST_ASSET_DIR = "/var/cache/kata-ts";

export const DEFAULT_CONFIG: RuntimeConfig = {
  hypervisor: {
    path: "/usr/bin/qemu-system-x86_64",
    kernel: `${GUEST_ASSET_DIR}/vmlinux`,
    image: `${GUEST_ASSET_DIR}/kata-ts-guest.img`,
    initrd: "",
    machineType: "microvm",
    kernelParams: "",
    firmware: "",
    defaultVcpus: 1,
    defaultMaxvcpus: 0,
    defaultMemory: 2048,
    memorySlots: 10,
    defaultBridges: 1,
    disableBlockDeviceUse: false,
    disableImageNvdimm: false,
    sharedFs: "virtio-9p",
    virtioFsDaemon: defaultVirtiofsd(),
    virtioFsCacheSize: 0,
    virtioFsCache: "auto",
    virtioFsExtraArgs: [],
    blockDeviceDriver: "virtio-blk",
    enableIothreads: false,
    validHypervisorPaths: ["/usr/bin/qemu-system-x86_64"],
    enableAnnotations: ["default_memory", "default_vcpus"],
    accel: "auto",
    tcgTbSize: 64,
    reclaimGuestFreedMemory: true,
    seccompsandbox: "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    rootless: true,
    rootlessUser: "kata-ts-vmm",
    jailMountNamespace: true,
    enableDebug: false,
  },
  agent: {
    enableDebug: false,
    dialTimeout: 45,
    kernelModules: [],
    enableTracing: false,
  },
  runtime: {
    hypervisor: "qemu",
    enableDebug: false,
    enableTracing: false,
    internetworkingModel: "tcfilter",
    disableGuestSeccomp: true,
    sandboxCgroupOnly: true,
    jaegerEndpoint: "",
    jaegerUser: "",
    jaegerPassword: "",
    otlpEndpoint: "",
    experimental: [],
  },
  factory: {
    enableTemplate: false,
    templatePath: "/run/kata-ts/template",
    vmCacheNumber: 0,
    vmCacheEndpoint: "/run/kata-ts/cache.sock",
  },
};

/** A fresh deep copy of the built-in defaults (callers may mutate it). */
export function defaultConfig(): RuntimeConfig {
  return structuredClone(DEFAULT_CONFIG);
}

export function defaultConfigPaths(): string[] {
  return ["/etc/kata-ts/configuration.toml", "/usr/share/defaults/kata-ts/configuration.toml"];
}

// ---- schema: TOML key ↔ RuntimeConfig field, with the checks each value must pass ----

type Kind =
  | { t: "string" }
  | { t: "path" } // empty or absolute
  | { t: "bool" }
  | { t: "uint"; min?: number }
  | { t: "strings" }
  | { t: "enum"; values: readonly string[] };

interface Field {
  key: string;
  prop: string;
  kind: Kind;
}

interface Section {
  /** TOML table name, e.g. "hypervisor.qemu". */
  table: string;
  prop: keyof RuntimeConfig;
  fields: Field[];
}

const f = (key: string, kind: Kind): Field => ({
  key,
  prop: key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()),
  kind,
});
const S: Kind = { t: "string" };
const P: Kind = { t: "path" };
const B: Kind = { t: "bool" };
const U: Kind = { t: "uint" };
const L: Kind = { t: "strings" };
const E = (values: readonly string[]): Kind => ({ t: "enum", values });

export const SCHEMA: Section[] = [
  {
    table: "hypervisor.qemu",
    prop: "hypervisor",
    fields: [
      f("path", P),
      f("kernel", P),
      f("image", P),
      f("initrd", P),
      f("machine_type", S),
      f("kernel_params", S),
      f("firmware", P),
      f("default_vcpus", { t: "uint", min: 1 }),
      f("default_maxvcpus", U),
      f("default_memory", { t: "uint", min: 64 }),
      f("memory_slots", U),
      f("default_bridges", U),
      f("disable_block_device_use", B),
      f("disable_image_nvdimm", B),
      f("shared_fs", E(SHARED_FS)),
      f("virtio_fs_daemon", P),
      f("virtio_fs_cache_size", U),
      f("virtio_fs_cache", E(VIRTIO_FS_CACHE)),
      f("virtio_fs_extra_args", L),
      f("block_device_driver", E(BLOCK_DEVICE_DRIVERS)),
      f("enable_iothreads", B),
      f("valid_hypervisor_paths", L),
      f("enable_annotations", L),
      f("accel", E(ACCELS)),
      f("tcg_tb_size", U),
      f("reclaim_guest_freed_memory", B),
      f("seccompsandbox", S),
      f("rootless", B),
      f("rootless_user", S),
      f("jail_mount_namespace", B),
      f("enable_debug", B),
    ],
  },
  {
    table: "agent.kata",
    prop: "agent",
    fields: [f("enable_debug", B), f("dial_timeout", U), f("kernel_modules", L), f("enable_tracing", B)],
  },
  {
    table: "runtime",
    prop: "runtime",
    fields: [
      f("hypervisor", E(HYPERVISORS)),
      f("enable_debug", B),
      f("enable_tracing", B),
      f("internetworking_model", E(INTERNETWORKING_MODELS)),
      f("disable_guest_seccomp", B),
      f("sandbox_cgroup_only", B),
      f("jaeger_endpoint", S),
      f("jaeger_user", S),
      f("jaeger_password", S),
      f("otlp_endpoint", S),
      f("experimental", L),
    ],
  },
  {
    table: "factory",
    prop: "factory",
    fields: [
      f("enable_template", B),
      f("template_path", P),
      f("vm_cache_number", U),
      f("vm_cache_endpoint", P),
    ],
  },
];

/** Why `value` does not fit `kind`, or undefined when it does. */
function invalid(kind: Kind, value: unknown): string | undefined {
  switch (kind.t) {
    case "string":
      return typeof value === "string" ? undefined : `must be a string, got ${describe(value)}`;
    case "path":
      if (typeof value !== "string") return `must be a path string, got ${describe(value)}`;
      return value === "" || isAbsolute(value) ? undefined : `must be an absolute path, got "${value}"`;
    case "bool":
      return typeof value === "boolean" ? undefined : `must be true or false, got ${describe(value)}`;
    case "uint": {
      if (typeof value !== "number" || !Number.isInteger(value) || value < 0)
        return `must be a non-negative integer, got ${describe(value)}`;
      if (kind.min !== undefined && value < kind.min) return `must be at least ${kind.min}, got ${value}`;
      return undefined;
    }
    case "strings":
      return Array.isArray(value) && value.every((v) => typeof v === "string")
        ? undefined
        : `must be an array of strings, got ${describe(value)}`;
    case "enum":
      return typeof value === "string" && kind.values.includes(value)
        ? undefined
        : `must be one of ${kind.values.map((v) => `"${v}"`).join(", ")}, got ${describe(value)}`;
  }
}

function describe(value: unknown): string {
  if (typeof value === "string") return `"${value}"`;
  if (typeof value === "bigint") return `${value}`;
  if (Array.isArray(value)) return "an array";
  if (value !== null && typeof value === "object") return "a table";
  return String(value);
}

function isTable(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Date);
}

/**
 * The line (1-based) where `key` is set inside `[table]`, found by scanning the text: smol-toml gives
 * line numbers only for syntax errors. Handles `[table]` headers, dotted keys (`qemu.path = ...` under
 * `[hypervisor]`, or fully dotted at the top) and quoted keys; falls back to the table header's line.
 */
export function findKeyLine(text: string, table: string, key?: string): number | undefined {
  const lines = text.split(/\r?\n/);
  const norm = (s: string) =>
    s
      .split(".")
      .map((p) => p.trim().replace(/^["']|["']$/g, ""))
      .join(".");
  const target = table && key !== undefined ? `${table}.${key}` : (key ?? table);
  let current = "";
  let headerLine: number | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    const header = /^\[\[?\s*([^\]]+?)\s*\]\]?/.exec(line);
    if (header) {
      current = norm(header[1]);
      if (current === target || current.startsWith(`${target}.`)) return i + 1;
      if (current === table && headerLine === undefined) headerLine = i + 1;
      continue;
    }
    const assign = /^((?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-.\s])+?)\s*=/.exec(line);
    if (!assign) continue;
    const full = norm([current, norm(assign[1])].filter(Boolean).join("."));
    if (full === target || full.startsWith(`${target}.`)) return i + 1;
  }
  return headerLine;
}

/**
 * Parses and validates a configuration text. Missing keys keep their defaults; unknown keys and
 * sections become warnings. Throws ConfigError naming `file` and the offending line.
 */
export function parseConfig(text: string, file: string): { config: RuntimeConfig; warnings: string[] } {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      const what = firstLine(err.message).replace(/^Invalid TOML document:\s*/, "");
      throw new ConfigError(file, err.line, `invalid TOML: ${what}`);
    }
    throw new ConfigError(file, undefined, `invalid TOML: ${(err as Error).message}`);
  }
  const config = defaultConfig();
  const warnings: string[] = [];
  const warn = (table: string, key: string | undefined, what: string) => {
    const line = findKeyLine(text, table, key);
    warnings.push(`config: ${file}${line ? `:${line}` : ""}: ${what}`);
  };
  const known = new Set(SCHEMA.map((s) => s.table));
  const seen = new Set<string>();

  // Walk the document: each known section is validated; everything else is reported as unknown.
  const walk = (node: Record<string, unknown>, prefix: string) => {
    for (const [name, value] of Object.entries(node)) {
      const path = prefix ? `${prefix}.${name}` : name;
      if (known.has(path)) {
        if (!isTable(value)) {
          throw new ConfigError(file, findKeyLine(text, path), `[${path}] must be a table`);
        }
        applySection(SCHEMA.find((s) => s.table === path)!, value);
      } else if (isTable(value) && [...known].some((t) => t.startsWith(`${path}.`))) {
        walk(value, path);
      } else {
        const table = prefix;
        warn(table, name, `unknown ${isTable(value) ? "section" : "key"} "${path}" ignored`);
      }
    }
  };
  const applySection = (section: Section, values: Record<string, unknown>) => {
    const target = config[section.prop] as unknown as Record<string, unknown>;
    for (const [key, value] of Object.entries(values)) {
      const field = section.fields.find((x) => x.key === key);
      if (!field) {
        warn(section.table, key, `unknown key "${key}" in [${section.table}] ignored`);
        continue;
      }
      const why = invalid(field.kind, value);
      if (why) throw new ConfigError(file, findKeyLine(text, section.table, key), `${key} ${why}`);
      target[field.prop] = Array.isArray(value) ? [...value] : value;
      seen.add(`${section.table}.${key}`);
    }
  };
  walk(doc, "");
  // As in Kata, a VM boots from an image or from an initrd, never both. The default names an image,
  // so a file that sets only `initrd` selects the initrd.
  const q = config.hypervisor;
  if (q.image && q.initrd) {
    if (!seen.has("hypervisor.qemu.image")) q.image = "";
    else
      throw new ConfigError(
        file,
        findKeyLine(text, "hypervisor.qemu", "initrd"),
        "image and initrd are both set: set only one",
      );
  }
  return { config, warnings };
}

/**
 * Finds and loads the configuration: `explicitPath` (--config / --kata-config), else $KATA_CONF_FILE,
 * else the first of defaultConfigPaths() that exists, else the built-in defaults. An explicit file
 * that cannot be read is an error; a default path that does not exist is skipped.
 */
export function loadConfig(opts: { explicitPath?: string; env?: NodeJS.ProcessEnv } = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const explicit = opts.explicitPath || env.KATA_CONF_FILE || undefined;
  const candidates = explicit ? [explicit] : defaultConfigPaths();
  for (const file of candidates) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!explicit && (code === "ENOENT" || code === "ENOTDIR")) continue;
      const why = code === "ENOENT" ? "no such file" : code === "EISDIR" ? "is a directory" : code;
      throw new ConfigError(file, undefined, `cannot read: ${why ?? (err as Error).message}`);
    }
    return { path: file, ...parseConfig(text, file) };
  }
  return { path: undefined, config: defaultConfig(), warnings: [] };
}

const loaded = new Map<string, LoadedConfig>();

/**
 * The configuration of this process: loaded once per explicit path and then shared, so one CLI call
 * reads and parses configuration.toml once however many layers ask (tracing set-up, the verb, the VM
 * checks). loadConfig stays the uncached reader (tests, `kata-ts env` after a change).
 */
export function processConfig(explicitPath?: string): LoadedConfig {
  const key = explicitPath ?? "";
  let c = loaded.get(key);
  if (!c) {
    c = loadConfig({ explicitPath });
    loaded.set(key, c);
  }
  return c;
}

/** The effective configuration in configuration.toml's own shape (snake_case keys, nested tables). */
export function configToToml(config: RuntimeConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const section of SCHEMA) {
    const src = config[section.prop] as unknown as Record<string, unknown>;
    const table: Record<string, unknown> = {};
    for (const field of section.fields) {
      const v = src[field.prop];
      table[field.key] = Array.isArray(v) ? [...v] : v;
    }
    const parts = section.table.split(".");
    let node = out;
    for (const p of parts.slice(0, -1)) {
      if (!isTable(node[p])) node[p] = {};
      node = node[p] as Record<string, unknown>;
    }
    node[parts[parts.length - 1]] = table;
  }
  return out;
}
