// `kata-ts env` (alias `kata-env`): the environment kata-ts would run containers in — versions,
// effective configuration, hypervisor, guest assets and host facts — as TOML (Kata's format) or JSON.
import type { Command } from "commander";
import { processConfig } from "../../config/config";
import { buildEnv, envToToml } from "../../runtime/env";
import { type App, print } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("env")
    .alias("kata-env")
    .description("show the settings and host facts kata-ts works with")
    .option("--json", "print JSON instead of TOML")
    .action(async (opts: { json?: boolean }) => {
      const loaded = processConfig(app.globals().config);
      for (const w of loaded.warnings) app.logger().warn(w);
      const env = await buildEnv(loaded, { runtimePath: process.argv[1] ?? process.execPath });
      print(opts.json ? JSON.stringify(env, null, 2) : envToToml(env));
    });
}
