// `kata-ts features`: prints the runtime-spec features document (what this runtime supports).
import type { Command } from "commander";
import { features, formatFeatures } from "../../oci/features";
import { VERSION } from "../../version";
import { type App, print } from "../app";

export function register(program: Command, _app: App): void {
  program
    .command("features")
    .description("show the enabled features (runtime-spec features.md)")
    .action(() => print(formatFeatures(features({ version: VERSION.version }))));
}
