// The first invariant of every fuzz case, per CLI call: exit 0, or a one-line error with a non-zero
// exit; never a stack trace, never an internal JavaScript error text, never killed by a signal.

export interface StepResult {
  verb: string;
  args: string[];
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** A V8 stack frame line, or node's internal module paths. */
const STACK = /^\s+at .+(\(.*:\d+:\d+\)|:\d+:\d+)$|node:internal\//m;
/** Messages that only JavaScript's own errors produce: a bug, even on one line. */
const INTERNAL =
  /Cannot read propert(y|ies) of|is not a function|is not iterable|Cannot convert undefined or null|Maximum call stack|\[object Object\]|Cannot destructure|is not defined$|Invalid array length/m;

/** A logrus line (text or JSON): what --debug without --log writes to stderr besides the error. */
const LOG_LINE = /^time="[^"]*" level=\w+ msg=|^\{"level":"\w+"/;

/**
 * `debugLog`: --debug without --log makes stderr the log, and the log holds a debug line with the error's
 * stack (escaped, on one line: the project's rule is "stack traces only with --debug, only into the
 * log"); those lines are not counted, the error line still must be one.
 */
export function checkOutput(s: StepResult, opts: { timeoutMs: number; debugLog?: boolean }): string[] {
  const v: string[] = [];
  const what = `${s.verb}`;
  if (s.signal) {
    v.push(
      s.ms >= opts.timeoutMs - 100
        ? `${what}: hung (killed after ${opts.timeoutMs} ms)`
        : `${what}: killed by ${s.signal}`,
    );
    return v;
  }
  const own = (t: string) =>
    opts.debugLog
      ? t
          .split("\n")
          .filter((l) => !LOG_LINE.test(l))
          .join("\n")
      : t;
  const text = `${s.stdout}\n${own(s.stderr)}`;
  if (STACK.test(text)) v.push(`${what}: stack trace in output: ${firstLines(s.stderr || s.stdout)}`);
  if (INTERNAL.test(own(s.stderr))) v.push(`${what}: internal error text: ${firstLines(s.stderr)}`);
  if (s.code !== 0) {
    const lines = s.stderr.split("\n").filter((l) => l.trim() !== "" && !(opts.debugLog && LOG_LINE.test(l)));
    // exec passes the process's own exit code through: no message then is right.
    const quietOk = s.verb === "exec" && lines.length === 0;
    if (!quietOk && lines.length !== 1)
      v.push(`${what}: exit ${s.code} with ${lines.length} stderr lines (want 1): ${firstLines(s.stderr)}`);
  }
  return v;
}

function firstLines(t: string): string {
  return JSON.stringify(t.split("\n").slice(0, 4).join("\n").slice(0, 400));
}
