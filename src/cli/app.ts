// What every command gets from the CLI layer: the global flags (as runc spells them) and the logger
// built from them. Commands stay parse → call → print; the work lives in the library folders.
import type { Command } from "commander";
import { type LogFormat, Logger } from "../log/logger";

export const DEFAULT_ROOT = "/run/kata-ts";

export interface GlobalOptions {
  /** State directory; one sub-directory per container. */
  root: string;
  /** Log file; undefined = stderr. */
  log?: string;
  logFormat: LogFormat;
  debug: boolean;
  systemdCgroup: boolean;
  /** runc's --rootless: "true", "false" or "auto". */
  rootless: string;
  /** Explicit configuration.toml (--config / --kata-config). */
  config?: string;
}

export class App {
  private cachedLogger?: Logger;

  constructor(readonly program: Command) {}

  globals(): GlobalOptions {
    const o = this.program.opts();
    return {
      root: o.root ?? DEFAULT_ROOT,
      log: o.log || undefined,
      logFormat: o.logFormat === "json" ? "json" : "text",
      debug: Boolean(o.debug),
      systemdCgroup: Boolean(o.systemdCgroup),
      rootless: o.rootless ?? "auto",
      config: o.kataConfig ?? o.config,
    };
  }

  logger(): Logger {
    if (!this.cachedLogger) {
      const g = this.globals();
      this.cachedLogger = new Logger({ file: g.log, format: g.logFormat, debug: g.debug });
    }
    return this.cachedLogger;
  }
}

/** Writes a line to stdout synchronously (the process may exit right after). */
export function print(text: string): void {
  process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
}
