// `kata-ts create [--bundle DIR] [--pid-file F] [--console-socket S] [--no-pivot] [--preserve-fds N] ID`:
// sets the container up and leaves its init blocked on the exec fifo until `start` (runc's create).
import type { Command } from "commander";
import { createContainer, parsePreserveFds, runtimeContext } from "../../runtime/lifecycle";
import type { App } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("create")
    .description("create a container")
    .argument("<container-id>")
    .option("-b, --bundle <dir>", "path to the root of the bundle directory (default: the current directory)")
    .option(
      "--console-socket <path>",
      "path to an AF_UNIX socket which will receive the console's pty master",
    )
    .option("--pid-file <path>", "file to write the container init's process id to")
    .option("--no-pivot", "do not use pivot_root to jail the process inside the rootfs")
    .option("--no-new-keyring", "do not create a new session keyring for the container")
    .option("--preserve-fds <n>", "pass N additional file descriptors to the container (after stdio)")
    .action(async (id: string, opts: Record<string, string | boolean | undefined>) => {
      const g = app.globals();
      app.logger().with({ id });
      await createContainer(
        runtimeContext(
          g,
          (m) => app.logger().warn(m),
          (m, f) => app.logger().debug(m, f),
        ),
        {
          id,
          bundle: opts.bundle as string | undefined,
          pidFile: opts.pidFile as string | undefined,
          consoleSocket: opts.consoleSocket as string | undefined,
          noPivot: opts.pivot === false,
          noNewKeyring: opts.newKeyring === false,
          preserveFds: parsePreserveFds(opts.preserveFds as string | undefined),
        },
      );
    });
}
