// Errors the CLI turns into one line on stderr and an exit code. Anything else that escapes a command is
// a bug, but it still gets one line (never a stack trace) unless --debug is on.
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
  }
}

/** The message of any thrown value, on one line. */
export function oneLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/\s*\n\s*/g, ": ").trim() || "unknown error";
}

/** The exit code a thrown value asks for (errors may carry `exitCode`), 1 otherwise. */
export function exitCodeOf(err: unknown): number {
  const code = (err as { exitCode?: unknown } | null)?.exitCode;
  return typeof code === "number" && Number.isInteger(code) && code > 0 && code < 256 ? code : 1;
}
