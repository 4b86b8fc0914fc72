// `kata-ts version`: what kata-runtime prints for `version`, in the same words as `--version`.
import type { Command } from "commander";
import { VERSION } from "../../version";
import { type App, print } from "../app";

export function register(program: Command, _app: App): void {
  program
    .command("version")
    .description("print the version of kata-ts and of the OCI spec it implements")
    .action(() => print(VERSION.text));
}
