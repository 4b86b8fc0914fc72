// The command table. Each command lives in its own file and exports `register(program, app)`.
// A command is listed here only when it works end to end: nothing here is a stub.
import type { Command } from "commander";
import type { App } from "../app";
import * as check from "./check";
import * as create from "./create";
import * as del from "./delete";
import * as env from "./env";
import * as events from "./events";
import * as exec from "./exec";
import * as factory from "./factory";
import * as features from "./features";
import * as guest from "./guest";
import * as kill from "./kill";
import * as list from "./list";
import * as network from "./network";
import * as pause from "./pause";
import * as ps from "./ps";
import * as resume from "./resume";
import * as run from "./run";
import * as spec from "./spec";
import * as start from "./start";
import * as state from "./state";
import * as update from "./update";
import * as version from "./version";

const commands = [
  version,
  check,
  env,
  spec,
  features,
  state,
  list,
  create,
  start,
  run,
  kill,
  del,
  exec,
  ps,
  pause,
  resume,
  update,
  events,
  guest,
  network,
  factory,
];

export function registerCommands(program: Command, app: App): void {
  for (const command of commands) command.register(program, app);
}
