// `kata-ts run [--detach] [create's flags] [--keep] ID`: create + start. In the foreground it exits with
// the workload's code (128+signal when killed) and deletes the container afterwards, as runc does.
import type { Command } from "commander";
import { parsePreserveFds, runContainer, runtimeContext } from "../../runtime/lifecycle";
import type { App } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("run")
    .description("create and run a container")
    .argument("<container-id>")
    .option("-b, --bundle <dir>", "path to the root of the bundle directory (default: the current directory)")
    .option(
      "--console-socket <path>",
      "path to an AF_UNIX socket which will receive the console's pty master",
    )
    .option("-d, --detach", "detach from the container's process")
    .option("--keep", "do not delete the container after it exits")
    .option("--pid-file <path>", "file to write the container init's process id to")
    .option("--no-pivot", "do not use pivot_root to jail the process inside the rootfs")
    .option("--no-new-keyring", "do not create a new session keyring for the container")
    .option("--preserve-fds <n>", "pass N additional file descriptors to the container (after stdio)")
    .action(async (id: string, opts: Record<string, string | boolean | undefined>) => {
      app.logger().with({ id });
      const code = await runContainer(
        runtimeContext(
          app.globals(),
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
          detach: opts.detach === true,
          keep: opts.keep === true,
        },
      );
      process.exitCode = code;
    });
}
