// Errors the CLI turns into one line on stderr and an exit code. Anything else that escapes a command is
// a bug, but it still gets one line (never a stack trace) unless --debug is on.
// Library errors are KataErrors (src/errors.ts) carrying their exit code; CliError is the CLI's own.
import { KataError } from "../errors";

export class CliError extends KataError {}

/** The exit code a thrown value asks for (KataErrors carry `exitCode`), 1 otherwise. */
export function exitCodeOf(err: unknown): number {
  const code = (err as { exitCode?: unknown } | null)?.exitCode;
  return typeof code === "number" && Number.isInteger(code) && code > 0 && code < 256 ? code : 1;
}
