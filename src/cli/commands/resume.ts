// `kata-ts resume ID`: thaws a paused container.
import type { Command } from "commander";
import { resumeContainer } from "../../runtime/operations";
import type { App } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("resume")
    .description("resumes all processes that have been previously paused")
    .argument("<container-id>")
    .action(async (id: string) => {
      app.logger().with({ id });
      await resumeContainer({ root: app.globals().root, warn: (m) => app.logger().warn(m) }, id);
    });
}
