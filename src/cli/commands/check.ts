// `kata-ts check` (alias `kata-check`): can this host run the configured kata-ts? One line per check
// on stdout; exit status 1 only when a required component is missing.
import type { Command } from "commander";
import { processConfig } from "../../config/config";
import { formatCheckLine, runHostChecks } from "../../runtime/check";
import { type App, print } from "../app";
import { CliError } from "../errors";

export function register(program: Command, app: App): void {
  program
    .command("check")
    .alias("kata-check")
    .description("check that this host can run kata-ts with the current configuration")
    .option("--json", "print the results as JSON")
    .action(async (opts: { json?: boolean }) => {
      const loaded = processConfig(app.globals().config);
      for (const w of loaded.warnings) app.logger().warn(w);
      const report = await runHostChecks(loaded.config);
      if (opts.json) print(JSON.stringify({ config: loaded.path ?? null, ...report }, null, 2));
      else {
        print(`INFO  config: ${loaded.path ?? "built-in defaults"}`);
        for (const r of report.results) print(formatCheckLine(r));
      }
      if (!report.capable) {
        const missing = report.results.filter((r) => r.level === "error").length;
        throw new CliError(`System is not capable of running kata-ts (${missing} required check(s) failed)`);
      }
      if (!opts.json) print("System is capable of running kata-ts");
    });
}
