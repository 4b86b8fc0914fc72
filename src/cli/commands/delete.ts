// `kata-ts delete [--force] ID`: removes a stopped (or created) container; --force kills a running one
// first and succeeds for an id that does not exist (engines call it twice).
import type { Command } from "commander";
import { deleteContainer, runtimeContext } from "../../runtime/lifecycle";
import type { App } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("delete")
    .description("delete any resources held by the container")
    .argument("<container-id>")
    .option("-f, --force", "forcibly delete the container if it is still running (uses SIGKILL)")
    .action(async (id: string, opts: { force?: boolean }) => {
      app.logger().with({ id });
      await deleteContainer(
        runtimeContext(app.globals(), (m) => app.logger().warn(m)),
        id,
        opts.force === true,
      );
    });
}
