// The one error base of kata-ts: every error the library throws on purpose is a KataError, which carries
// the exit code the CLI leaves with (runc's: 1, or 255 when exec itself fails, 127 when the workload
// cannot be exec'd). The CLI prints the message on one line (oneLine) and exits with that code.

export class KataError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/**
 * The message of any thrown value (or a string) on one line, never empty: what the CLI prints, what the
 * supervisor answers, what crosses the agent wire. `sep` joins what were lines.
 */
export function oneLine(err: unknown, sep = ": "): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/\s*\n\s*/g, sep).trim() || "unknown error";
}

/** The errno code of a Node system error ("ENOENT"), or the error's text when it has none. */
export function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | null)?.code ?? String(err);
}

/** The first line of a text (a tool's stderr, a multi-line message), trimmed. */
export function firstLine(text: string): string {
  return text.trim().split("\n")[0] ?? "";
}
