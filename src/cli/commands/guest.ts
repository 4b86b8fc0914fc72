// `kata-ts guest build|inspect`: the guest image (src/image/image.ts). `build` makes only the image;
// with --kernel it first runs guest/kernel/build.sh (a ~10 min build, itself cached) when the kata-ts
// kernel is missing, because the image needs that kernel's built-in virtio-blk and ext4 to be the root.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { GUEST_ASSET_DIR, processConfig } from "../../config/config";
import {
  buildImage,
  defaultSources,
  type ImageManifest,
  type InspectResult,
  inspectImage,
} from "../../image/image";
import { kernelRecipeDir } from "../../image/kernel";
import { progressReporter } from "../../image/progress";
import { type App, print } from "../app";
import { CliError } from "../errors";

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

interface BuildFlags {
  force?: boolean;
  kernel?: boolean;
  cacheDir: string;
  agentBundle?: string;
  json?: boolean;
}

function ensureKernel(cacheDir: string): void {
  if (existsSync(join(cacheDir, "vmlinux"))) return;
  const recipe = kernelRecipeDir();
  if (!recipe) throw new CliError("guest build --kernel: guest/kernel/build.sh not found");
  const r = spawnSync("bash", [join(recipe, "build.sh"), "--cache-dir", cacheDir], { stdio: "inherit" });
  if (r.status !== 0) throw new CliError(`guest/kernel/build.sh failed (exit ${r.status ?? r.signal})`);
}

export function register(program: Command, app: App): void {
  const guest = program.command("guest").description("build and inspect the guest VM image");

  guest
    .command("build")
    .description("build the guest image (busybox, node, agent, helper) into the cache if its inputs changed")
    .option("--force", "rebuild even when the cache has an image for the current inputs")
    .option("--kernel", "also build the guest kernel (guest/kernel/build.sh) when it is missing")
    .option("--cache-dir <dir>", "guest asset cache", GUEST_ASSET_DIR)
    .option("--agent-bundle <file>", "agent bundle to put in the image (default: dist/kata-agent.cjs)")
    .option("--json", "print the result as JSON")
    .action(async (opts: BuildFlags) => {
      if (opts.kernel) ensureKernel(opts.cacheDir);
      const sources = defaultSources();
      if (opts.agentBundle) sources.agentBundle = opts.agentBundle;
      const progress = progressReporter(process.stderr);
      let result: Awaited<ReturnType<typeof buildImage>>;
      try {
        result = await buildImage({
          sources,
          cacheDir: opts.cacheDir,
          force: opts.force,
          onProgress: progress.onProgress,
        });
      } catch (err) {
        progress.finish();
        throw new CliError((err as Error).message);
      }
      progress.finish();
      const m = result.manifest;
      if (opts.json) {
        print(
          JSON.stringify({ status: result.status, key: result.key, image: result.paths.image, ...sizes(m) }),
        );
      } else if (result.status === "up-to-date") {
        print(`up to date: ${result.paths.image} (key ${result.key})`);
      } else {
        print(
          `built: ${result.paths.image} (key ${result.key}, ${mib(m.imageBytes)}, ${result.seconds.toFixed(1)} s)`,
        );
      }
      if (!opts.json) print(`current: ${result.paths.current} -> ${result.paths.image}`);
      if (!existsSync(join(opts.cacheDir, "vmlinux"))) {
        app
          .logger()
          .warn(
            `no kata-ts guest kernel at ${join(opts.cacheDir, "vmlinux")}: the image boots only with it ` +
              "(run `kata-ts guest build --kernel` or guest/kernel/build.sh)",
          );
      }
    });

  guest
    .command("inspect")
    .description("show what the configured guest image holds: components, versions, hashes, sizes")
    .option("--image <path>", "image to inspect (default: hypervisor.image from the configuration)")
    .option("--cache-dir <dir>", "guest asset cache", GUEST_ASSET_DIR)
    .option("--json", "print the result as JSON")
    .action(async (opts: { image?: string; cacheDir: string; json?: boolean }) => {
      const loaded = processConfig(app.globals().config);
      const path = opts.image ?? (loaded.config.hypervisor.image || join(opts.cacheDir, "kata-ts-guest.img"));
      const res = await inspectImage({ path, cacheDir: opts.cacheDir });
      if (opts.json) {
        print(JSON.stringify(res, null, 2));
      } else {
        for (const line of formatInspect(res)) print(line);
      }
      if (!res.manifest)
        throw new CliError(`no kata-ts guest image at ${path} (run \`kata-ts guest build\`)`);
    });
}

function sizes(m: ImageManifest) {
  return { imageBytes: m.imageBytes, contentBytes: m.contentBytes, buildSeconds: m.buildSeconds };
}

/** The human-readable `guest inspect` report. */
export function formatInspect(r: InspectResult): string[] {
  const out: string[] = [];
  out.push(`path        ${r.path}${r.resolved && r.resolved !== r.path ? ` -> ${r.resolved}` : ""}`);
  const m = r.manifest;
  if (!m) {
    out.push(`image       missing${r.resolved ? " (dangling link)" : ""}`);
    if (r.currentKey) out.push(`inputs key  ${r.currentKey}`);
    return out;
  }
  let freshness: string;
  if (r.inputsError) freshness = `cannot check the inputs: ${r.inputsError}`;
  else if (r.currentKey === m.key) freshness = "matches the current inputs";
  else freshness = `current inputs differ (key ${r.currentKey}): run \`kata-ts guest build\``;
  out.push(`key         ${m.key} (${freshness})`);
  out.push(`format      ${m.format}, read-only root file system (root=/dev/vda ro)`);
  out.push(
    `size        ${mib(m.imageBytes)} image, ${mib(m.contentBytes)} in ${m.components.length} files, ` +
      `${Object.keys(m.symlinks).length} links`,
  );
  out.push(`built       ${m.built} in ${m.buildSeconds} s (builder v${m.builderVersion})`);
  out.push("components");
  const rows = m.components.map((c) => [
    c.role,
    c.dest,
    mib(c.size),
    c.sha256.slice(0, 12),
    m.versions[c.dest] ?? "",
    c.source === c.dest ? "" : `from ${c.source}`,
  ]);
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i].length)));
  for (const row of rows) {
    const [role, dest, size, sha, version, from] = row;
    const cells = [role.padEnd(widths[0]), dest.padEnd(widths[1]), size.padStart(widths[2]), sha];
    out.push(`  ${cells.join("  ")}${version ? `  ${version}` : ""}${from ? `  ${from}` : ""}`);
  }
  // Sizes and hashes are the host files' (the key's inputs); the image holds node without symbol tables.
  if (m.nodeStripped) out.push("  (node is stored stripped of its symbol tables)");
  return out;
}
