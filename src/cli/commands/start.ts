// `kata-ts start ID`: lets a created container's init execute the workload, then runs poststart hooks.
import type { Command } from "commander";
import { runtimeContext, startContainer } from "../../runtime/lifecycle";
import type { App } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("start")
    .description("execute the user defined process in a created container")
    .argument("<container-id>")
    .action(async (id: string) => {
      app.logger().with({ id });
      await startContainer(
        runtimeContext(app.globals(), (m) => app.logger().warn(m)),
        id,
      );
    });
}
