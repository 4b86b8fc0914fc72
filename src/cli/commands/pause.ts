// `kata-ts pause ID`: freezes every process in the container (cgroup freezer).
import type { Command } from "commander";
import { pauseContainer } from "../../runtime/operations";
import type { App } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("pause")
    .description("pause suspends all processes inside the container")
    .argument("<container-id>")
    .action(async (id: string) => {
      app.logger().with({ id });
      await pauseContainer({ root: app.globals().root, warn: (m) => app.logger().warn(m) }, id);
    });
}
