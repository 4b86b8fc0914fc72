// `kata-ts kill [--all] ID [SIGNAL]`: SIGNAL as a name (with or without SIG) or a number; default TERM.
import type { Command } from "commander";
import { killContainer, runtimeContext } from "../../runtime/lifecycle";
import type { App } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("kill")
    .description("kill sends the specified signal (default: SIGTERM) to the container's init process")
    .argument("<container-id>")
    .argument("[signal]", "signal name or number", "SIGTERM")
    .option("-a, --all", "send the signal to every process in the container")
    .action(async (id: string, signal: string, opts: { all?: boolean }) => {
      app.logger().with({ id });
      await killContainer(
        runtimeContext(app.globals(), (m) => app.logger().warn(m)),
        id,
        signal,
        opts.all === true,
      );
    });
}
