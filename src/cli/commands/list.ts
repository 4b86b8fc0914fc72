// `kata-ts list`: every container under --root, as runc's table, JSON array, or ids only.
import { type Command, Option } from "commander";
import { listContainers, listTable } from "../../runtime/query";
import { StateStore } from "../../runtime/store";
import { type App, print } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("list")
    .alias("ls")
    .description("lists containers started by kata-ts with the given root")
    .addOption(
      new Option("-f, --format <format>", "select one of: table or json")
        .choices(["table", "json"])
        .default("table"),
    )
    .option("-q, --quiet", "display only container IDs")
    .action((opts: { format: string; quiet?: boolean }) => {
      const states = listContainers(new StateStore(app.globals().root));
      if (opts.quiet) {
        for (const s of states) print(s.id);
      } else if (opts.format === "json") {
        print(JSON.stringify(states));
      } else {
        process.stdout.write(listTable(states));
      }
    });
}
