// `kata-ts update [--resources FILE|-] [flags] ID`: changes a live container's cgroup limits. The JSON is
// an OCI LinuxResources object where zero means "leave unchanged" (docker and podman send it); the flags
// are runc's. The merged result is stored in the container's config.
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import type { LinuxResources } from "../../oci/spec";
import {
  mergeResources,
  parseResourcesJson,
  resourcesFromFlags,
  type UpdateFlags,
  updateContainer,
} from "../../runtime/operations";
import type { App } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("update")
    .description("update container resource constraints")
    .argument("<container-id>")
    .option("-r, --resources <file>", "path to a file with the resources to update, or - for stdin")
    .option("--memory <bytes>", "memory limit (in bytes, or with a k/m/g suffix)")
    .option("--memory-reservation <bytes>", "memory reservation or soft_limit")
    .option("--memory-swap <bytes>", "total memory usage (memory + swap); -1 for unlimited swap")
    .option("--kernel-memory <bytes>", "kernel memory limit (deprecated, ignored)")
    .option("--kernel-memory-tcp <bytes>", "kernel memory limit for TCP buffers")
    .option("--cpu-share <n>", "CPU shares (relative weight vs. other containers)")
    .option("--cpu-shares <n>", "same as --cpu-share")
    .option("--cpu-quota <us>", "CPU CFS hardcap limit (in usecs) per period")
    .option("--cpu-period <us>", "CPU CFS period to be used for hardcapping (in usecs)")
    .option("--cpu-rt-period <us>", "CPU realtime period (in usecs)")
    .option("--cpu-rt-runtime <us>", "CPU realtime hardcap limit (in usecs)")
    .option("--cpuset-cpus <list>", "CPU(s) to use")
    .option("--cpuset-mems <list>", "memory node(s) to use")
    .option("--pids-limit <n>", "maximum number of pids allowed in the container")
    .option("--blkio-weight <n>", "block IO weight (relative weight, 10-1000)")
    .action(async (id: string, opts: UpdateFlags & { resources?: string; cpuShare?: string }) => {
      app.logger().with({ id });
      let delta: LinuxResources = {};
      if (opts.resources !== undefined) {
        const text = opts.resources === "-" ? readFileSync(0, "utf8") : readFileSync(opts.resources, "utf8");
        delta = parseResourcesJson(text);
      }
      // Flags win over the file, as in runc.
      delta = mergeResources(
        delta,
        resourcesFromFlags({ ...opts, cpuShares: opts.cpuShare ?? opts.cpuShares }),
      );
      await updateContainer({ root: app.globals().root, warn: (m) => app.logger().warn(m) }, id, delta);
    });
}
