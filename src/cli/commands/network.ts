// `kata-ts network add-iface|del-iface|list-ifaces|update-routes|list-routes ID [FILE|-]` (Kata's
// `kata-network`, also accepted under that name): JSON in (a file, or - for stdin), JSON out.
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { runtimeContext } from "../../runtime/lifecycle";
import { containerNetwork, type NetworkVerb } from "../../runtime/network";
import { type App, print } from "../app";

const VERBS: [NetworkVerb, string, boolean][] = [
  ["add-iface", "add an interface to the container's VM (needs NIC hotplug: refused)", true],
  ["del-iface", "remove an interface from the container's VM (needs NIC hotplug: refused)", true],
  ["list-ifaces", "list the network interfaces of the container's VM", false],
  ["update-routes", "replace the routes of the container's VM", true],
  ["list-routes", "list the routes of the container's VM", false],
];

export function register(program: Command, app: App): void {
  const net = program
    .command("network")
    .alias("kata-network")
    .description("manage the network of a container's VM (interfaces, routes)");
  for (const [verb, description, takesInput] of VERBS) {
    const c = net.command(verb).description(description).argument("<container-id>");
    if (takesInput) c.argument("<file>", "JSON file, or - for stdin");
    c.action(async (id: string, file?: string) => {
      app.logger().with({ id });
      const input = () => readFileSync(file === "-" || file === undefined ? 0 : file, "utf8");
      const ctx = runtimeContext(app.globals(), (m) => app.logger().warn(m));
      print(JSON.stringify(await containerNetwork(ctx, id, verb, input)));
    });
  }
}
