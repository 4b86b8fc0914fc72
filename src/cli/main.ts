// kata-ts CLI entry: builds the commander program, runs one verb, and turns every failure into one
// line on stderr (plus a logrus-style line in --log) and a non-zero exit, as runc does.
import { Command, CommanderError, Option } from "commander";
import { processConfig } from "../config/config";
import { oneLine } from "../errors";
import { annotateSpan, enableTracing, flushTracing, renameSpan, span } from "../log/tracing";
import { VERSION } from "../version";
import { App, DEFAULT_ROOT } from "./app";
import { registerCommands } from "./commands";
import { CliError, exitCodeOf } from "./errors";

function buildProgram(): { program: Command; app: App } {
  const program = new Command("kata-ts");
  const app = new App(program);
  program
    .description("kata-ts: an OCI runtime that runs containers inside lightweight virtual machines")
    .usage("[global options] command [command options] [arguments...]")
    .option("--root <dir>", "root directory for storage of container state", DEFAULT_ROOT)
    .option("--log <file>", "set the log file to write kata-ts logs to (default is stderr)")
    .addOption(
      new Option("--log-format <format>", "set the log format").choices(["text", "json"]).default("text"),
    )
    .option("--debug", "enable debug logging")
    .option("--systemd-cgroup", "enable systemd cgroup support (cgroupsPath is slice:prefix:name)")
    .option("--rootless <value>", "ignore cgroup permission errors ('true', 'false', or 'auto')", "auto")
    .option("--config <file>", "path to configuration.toml")
    .option("--kata-config <file>", "path to configuration.toml (Kata's spelling)")
    .option("--kata-show-default-config-paths", "show the configuration file search paths and exit")
    .version(VERSION.text, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showSuggestionAfterError(false)
    // Global options come before the verb, as with runc (urfave/cli): `spec --rootless` is then the
    // verb's own flag, not the global `--rootless <value>`.
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({
      writeOut: (s) => process.stdout.write(s),
      // commander's own errors (unknown command/flag, missing argument) go through our reporter below.
      writeErr: () => {},
    });
  registerCommands(program, app);
  // Without this, commander reports an unknown verb as "too many arguments".
  program.allowExcessArguments(true);
  program.action(async () => {
    if (program.args.length > 0) throw new CliError(`unknown command '${program.args[0]}'`);
    if (program.opts().kataShowDefaultConfigPaths) {
      const { defaultConfigPaths } = await import("../config/config");
      for (const p of defaultConfigPaths()) process.stdout.write(`${p}\n`);
      return;
    }
    program.outputHelp();
  });
  return { program, app };
}

export async function main(argv: string[]): Promise<number> {
  const { program, app } = buildProgram();
  const tracing = configureTracing(argv);
  try {
    // The root span of every verb: renamed to the verb and tagged with the container id once commander
    // has parsed them (preAction hook below); child spans come from the library's steps.
    program.hook("preAction", (_program, action) => {
      renameSpan(action.name());
      if (action.args[0] && action.registeredArguments[0]?.name().includes("id"))
        annotateSpan({ container: action.args[0] });
    });
    await span("kata-ts", {}, () => program.parseAsync(argv, { from: "user" }));
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0 || err.code === "commander.helpDisplayed" || err.code === "commander.version")
        return 0;
      return report(app, err.message.replace(/^error: /, ""), 1);
    }
    if (app.globals().debug && err instanceof Error && err.stack) app.logger().debug(err.stack);
    return report(app, oneLine(err), exitCodeOf(err));
  } finally {
    if (tracing) await flushTracing();
  }
}

/**
 * Tracing is configured in configuration.toml ([runtime] enable_tracing, otlp_endpoint), so it must be
 * known before the verb runs. A configuration that cannot be read leaves tracing off: the verb itself
 * reports the configuration error if it needs the configuration.
 */
function configureTracing(argv: string[]): boolean {
  let explicitPath: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("-")) break; // global options come before the verb
    const m = /^--(?:kata-)?config(?:=(.*))?$/.exec(a);
    if (m) explicitPath = m[1] ?? argv[++i];
    else if (/^--(root|log|log-format|rootless)$/.test(a)) i++;
  }
  try {
    // Read once for the whole call: the verb's own processConfig() gets this same object.
    const { config } = processConfig(explicitPath);
    if (!config.runtime.enableTracing) return false;
    enableTracing({ endpoint: config.runtime.otlpEndpoint || undefined });
    return true;
  } catch {
    return false;
  }
}

/** runc writes the error to --log (in its format) and, always, the bare message to stderr. */
function report(app: App, message: string, code: number): number {
  const logger = app.logger();
  if (logger.toFile) logger.error(message);
  process.stderr.write(`${message}\n`);
  return code;
}
