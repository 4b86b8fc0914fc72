// `kata-ts ps [--format table|json] ID [ps-args...]`: the processes in the container's cgroup. json is a
// JSON array of host pids (what containerd's shim parses; in VM mode the stand-ins'); table filters `ps`
// output (default -ef; in VM mode the guest's ps, with guest pids).
import type { Command } from "commander";
import { containerPids, containerPsTable } from "../../runtime/operations";
import { type App, print } from "../app";
import { CliError } from "../errors";

export function register(program: Command, app: App): void {
  program
    .command("ps")
    .description("ps displays the processes running inside a container")
    .argument("<container-id>")
    .argument("[ps-args...]", "arguments for ps (default -ef)")
    .option("-f, --format <format>", "select one of: table or json", "table")
    .passThroughOptions()
    .action((id: string, psArgs: string[], opts: { format: string }) => {
      app.logger().with({ id });
      if (opts.format !== "table" && opts.format !== "json") throw new CliError("invalid format option");
      const ctx = { root: app.globals().root, warn: (m: string) => app.logger().warn(m) };
      if (opts.format === "json") return print(JSON.stringify(containerPids(ctx, id)));
      process.stdout.write(containerPsTable(ctx, id, psArgs));
    });
}
