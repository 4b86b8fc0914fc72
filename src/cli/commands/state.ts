// `kata-ts state ID`: the container's state as runc prints it (JSON, 2-space indent).
import type { Command } from "commander";
import { validateContainerId } from "../../oci/id";
import { containerState } from "../../runtime/query";
import { StateStore } from "../../runtime/store";
import { type App, print } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("state")
    .description("output the state of a container")
    .argument("<container-id>")
    .action((id: string) => {
      validateContainerId(id);
      const store = new StateStore(app.globals().root);
      print(JSON.stringify(containerState(store, id), null, 2));
    });
}
