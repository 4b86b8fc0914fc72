// `kata-ts spec [--bundle DIR] [--rootless]`: writes a starter config.json exactly as `runc spec` does
// (same content, tab-indented, mode 0666 minus the umask) and refuses to overwrite an existing one.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { defaultSpec, formatSpec } from "../../oci/defaults";
import type { App } from "../app";
import { CliError } from "../errors";

export function register(program: Command, _app: App): void {
  program
    .command("spec")
    .description("create a new specification file (config.json) in the bundle directory")
    .option("-b, --bundle <dir>", "path to the root of the bundle directory", "")
    .option("--rootless", "generate a configuration for a rootless container")
    .action((opts: { bundle: string; rootless?: boolean }) => {
      const spec = defaultSpec({
        rootless: opts.rootless === true,
        hostUid: process.geteuid?.() ?? 0,
        hostGid: process.getegid?.() ?? 0,
      });
      const path = join(opts.bundle || ".", "config.json");
      try {
        // "wx": create exclusively, so an existing file is never touched (not even truncated).
        writeFileSync(path, formatSpec(spec), { mode: 0o666, flag: "wx" });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === "EEXIST") throw new CliError("File config.json exists. Remove it first");
        if (e.code === "ENOENT" || e.code === "ENOTDIR")
          throw new CliError(
            `chdir ${opts.bundle}: ${e.code === "ENOENT" ? "no such file or directory" : "not a directory"}`,
          );
        throw new CliError(`write ${path}: ${e.message}`);
      }
    });
}
