// `kata-ts exec [--process F | ID COMMAND ARGS...]`: runs a new process inside a container's namespaces
// and cgroups. Foreground: exits with the process's code; --detach: returns once it is running.
import type { Command } from "commander";
import { parseSubCgroupArgs } from "../../engine/cgroups";
import type { Process } from "../../oci/spec";
import {
  ExecError,
  execInContainer,
  execProcessFromArgs,
  parsePreserveFds,
  readProcessFile,
  runtimeContext,
} from "../../runtime/lifecycle";
import { StateStore } from "../../runtime/store";
import type { App } from "../app";

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function register(program: Command, app: App): void {
  program
    .command("exec")
    .description("execute new process inside the container")
    .argument("<container-id>")
    .argument("[command...]")
    .option(
      "--console-socket <path>",
      "path to an AF_UNIX socket which will receive the console's pty master",
    )
    .option("--cwd <dir>", "current working directory in the container")
    .option("-e, --env <var>", "set environment variables", collect)
    .option("-t, --tty", "allocate a pseudo-TTY")
    .option("-u, --user <uid[:gid]>", "UID (format: <uid>[:<gid>])")
    .option("-g, --additional-gids <gid>", "additional gids", collect)
    .option("-p, --process <file>", "path to the process.json")
    .option("-d, --detach", "detach from the container's process")
    .option("--pid-file <path>", "file to write the process id to")
    .option("--process-label <label>", "set the asm process label for the process (ignored: no SELinux)")
    .option("--apparmor <profile>", "set the apparmor profile for the process (ignored: no AppArmor)")
    .option("--no-new-privs", "set the no new privileges value for the process")
    .option("-c, --cap <cap>", "add a capability to the bounding set for the process", collect)
    .option("--preserve-fds <n>", "pass N additional file descriptors to the process (after stdio)")
    .option(
      "--cgroup <path>",
      "run the process in an (existing) sub-cgroup(s). Format is [<controller>:]<cgroup>.",
      collect,
    )
    .option("--ignore-paused", "allow exec in a paused container")
    .passThroughOptions()
    .action(async (id: string, command: string[], opts: Record<string, unknown>) => {
      // A malformed flag value is a usage error (exit 1, as urfave/cli's); everything after is exec's own
      // failure, which exits 255 as runc's does, so it is never mistaken for the process's own code.
      const preserveFds = parsePreserveFds(opts.preserveFds as string | undefined);
      try {
        process.exitCode = await exec(app, id, command, opts, preserveFds);
      } catch (err) {
        throw err instanceof ExecError
          ? err
          : new ExecError(err instanceof Error ? err.message : String(err));
      }
    });
}

async function exec(
  app: App,
  id: string,
  command: string[],
  opts: Record<string, unknown>,
  preserveFds: number,
): Promise<number> {
  app.logger().with({ id });
  const logger = app.logger();
  const ctx = runtimeContext(
    app.globals(),
    (m) => logger.warn(m),
    (m, f) => logger.debug(m, f),
  );
  const subCgroups = parseSubCgroupArgs(opts.cgroup as string[] | undefined);
  let proc: Process;
  if (opts.process) {
    proc = readProcessFile(opts.process as string);
  } else {
    if (command.length === 0) throw new Error("process args cannot be empty");
    const base = new StateStore(ctx.root).read(id).config.process;
    const gids = ((opts.additionalGids as string[] | undefined) ?? []).map((g) => {
      if (!/^\d+$/.test(g)) throw new Error(`invalid additional gid ${JSON.stringify(g)}`);
      return Number(g);
    });
    proc = execProcessFromArgs(base, {
      args: command,
      env: opts.env as string[] | undefined,
      cwd: opts.cwd as string | undefined,
      user: opts.user as string | undefined,
      additionalGids: gids,
      caps: opts.cap as string[] | undefined,
      noNewPrivs: opts.newPrivs === false,
      tty: opts.tty === true,
    });
  }
  return execInContainer(ctx, {
    id,
    process: proc,
    detach: opts.detach === true,
    pidFile: opts.pidFile as string | undefined,
    consoleSocket: opts.consoleSocket as string | undefined,
    preserveFds,
    subCgroups,
    ignorePaused: opts.ignorePaused === true,
  });
}
