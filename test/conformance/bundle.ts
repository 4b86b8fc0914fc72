// OCI bundles for the conformance suite: a busybox rootfs built once per test process from Debian's
// busybox-static, and bundles whose config.json is the runc default spec (`runc spec`) with
// `terminal: false` and the caller's overrides deep-merged.
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultSpec } from "../../src/oci/defaults";
import type { Spec } from "../../src/oci/spec";

export const BUSYBOX = "/bin/busybox";
export const REPORT_SCRIPT = join(__dirname, "report.sh");
/** The workload that prints the report; append probe arguments (see report.sh). */
export const REPORT_ARGS = ["/bin/sh", "/report.sh"];

/** The ociVersion `runc spec` (runc 1.1.5) writes. */
export const RUNC_SPEC_VERSION = "1.0.2-dev";

/** Users and groups in the rootfs: root and an unprivileged user 1000. */
const PASSWD = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n";
const GROUP = "root:x:0:\nwheel:x:10:user\nusers:x:100:\nuser:x:1000:\n";

let cachedRootfs: string | undefined;

/**
 * The template rootfs, built on first use and removed when the process exits. Every bundle gets its
 * own copy (the busybox binary is hard-linked, everything else is small).
 */
export function templateRootfs(): string {
  if (cachedRootfs) return cachedRootfs;
  const base = mkdtempSync(join(tmpdir(), "kata-ts-rootfs-"));
  process.on("exit", () => rmSync(base, { recursive: true, force: true }));
  const r = join(base, "rootfs");
  for (const d of [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc",
    "proc",
    "sys",
    "dev",
    "tmp",
    "root",
    "run",
    "var",
  ]) {
    mkdirSync(join(r, d), { recursive: true });
  }
  mkdirSync(join(r, "home/user"), { recursive: true });
  chmodSync(join(r, "tmp"), 0o1777);
  copyFileSync(BUSYBOX, join(r, "bin/busybox"));
  chmodSync(join(r, "bin/busybox"), 0o755);
  execFileSync("chroot", [r, "/bin/busybox", "--install", "-s"], { stdio: "pipe" });
  writeFileSync(join(r, "etc/passwd"), PASSWD);
  writeFileSync(join(r, "etc/group"), GROUP);
  writeFileSync(join(r, "etc/hostname"), "conformance\n");
  copyFileSync(REPORT_SCRIPT, join(r, "report.sh"));
  chmodSync(join(r, "report.sh"), 0o755);
  execFileSync("chown", ["1000:1000", join(r, "home/user")]);
  cachedRootfs = r;
  return r;
}

/** Anything JSON-like; `null` in an override deletes the key. Arrays are replaced, not merged. */
export type Overrides = { [key: string]: unknown };

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Deep merge of `over` into a copy of `base`: objects merge, arrays and scalars replace, null deletes. */
export function deepMerge<T>(base: T, over: Overrides): T {
  const out: Record<string, unknown> = isPlainObject(base) ? { ...base } : {};
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else if (v === undefined) continue;
    else if (isPlainObject(v) && isPlainObject(out[k])) out[k] = deepMerge(out[k], v);
    else out[k] = structuredClone(v);
  }
  return out as T;
}

/** The base config of every bundle: runc's default spec, no terminal, the report as the workload. */
export function baseSpec(): Spec {
  const spec = defaultSpec();
  // `runc spec` writes 1.0.2-dev; crun 1.8 refuses 1.2.x ("unknown version specified"), and engines
  // hand runtimes 1.0.x/1.1.x configs, so the bundles carry runc's version string.
  spec.ociVersion = RUNC_SPEC_VERSION;
  spec.process!.terminal = false;
  spec.process!.args = [...REPORT_ARGS];
  return spec;
}

export interface Bundle {
  /** the bundle directory (holds config.json and rootfs/) */
  dir: string;
  rootfs: string;
  spec: Spec;
  /** removes the bundle directory */
  cleanup(): void;
}

export interface BundleOptions {
  /** parent directory for the bundle (default: os.tmpdir()) */
  parent?: string;
}

/** A fresh bundle: a copy of the template rootfs and config.json = base spec + overrides. */
export function makeBundle(overrides: Overrides = {}, opts: BundleOptions = {}): Bundle {
  const template = templateRootfs();
  const dir = mkdtempSync(join(opts.parent ?? tmpdir(), "kata-ts-bundle-"));
  // mkdtemp makes 0700: a container in a user namespace (root mapped to an unprivileged host id)
  // must be able to reach its rootfs.
  chmodSync(dir, 0o755);
  const rootfs = join(dir, "rootfs");
  // -al keeps modes, owners and symlinks and hard-links regular files (the 2 MB busybox binary);
  // the few files a writable-root container might edit get their own copies.
  execFileSync("cp", ["-al", template, rootfs]);
  for (const f of ["etc/passwd", "etc/group", "etc/hostname"]) {
    rmSync(join(rootfs, f));
    copyFileSync(join(template, f), join(rootfs, f));
  }
  const spec = deepMerge(baseSpec(), overrides);
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec, null, "\t"));
  return { dir, rootfs, spec, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
