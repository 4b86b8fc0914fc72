// A logrus-compatible logger. containerd and podman read the runtime's `--log` file as JSON lines with
// string `level`, `msg` and RFC 3339 `time`, and show the last `level: "error"` msg to the user; the text
// format is logrus's `time="..." level=... msg="..."`. Nothing here is asynchronous: the CLI is
// short-lived and a log line must be on disk before the process exits.
import { appendFileSync, writeSync } from "node:fs";

export type LogLevel = "debug" | "info" | "warning" | "error" | "fatal";
export type LogFormat = "text" | "json";
export type LogFields = Record<string, string | number | boolean | undefined>;

const severity: Record<LogLevel, number> = { debug: 0, info: 1, warning: 2, error: 3, fatal: 4 };

export interface LoggerOptions {
  /** A file path; undefined or "" means standard error. */
  file?: string;
  format: LogFormat;
  debug: boolean;
}

export class Logger {
  private fields: LogFields = {};

  constructor(private readonly options: LoggerOptions) {}

  /** True when lines go to a file rather than to stderr (errors must then also reach stderr). */
  get toFile(): boolean {
    return Boolean(this.options.file);
  }

  /** Adds fields (container id, command, ...) to every later line. */
  with(fields: LogFields): void {
    this.fields = { ...this.fields, ...fields };
  }

  debug(msg: string, fields?: LogFields): void {
    this.write("debug", msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.write("info", msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.write("warning", msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.write("error", msg, fields);
  }

  write(level: LogLevel, msg: string, extra?: LogFields): void {
    const threshold = this.options.debug ? "debug" : "info";
    if (severity[level] < severity[threshold]) return;
    const line = formatLine(this.options.format, level, msg, { ...this.fields, ...extra }, new Date());
    try {
      if (this.options.file) appendFileSync(this.options.file, line);
      else writeSync(2, line);
    } catch {
      // A log that cannot be written must never turn into a second failure.
    }
  }
}

export function formatLine(
  format: LogFormat,
  level: LogLevel,
  msg: string,
  fields: LogFields,
  now: Date,
): string {
  const time = rfc3339(now);
  const defined = Object.entries(fields).filter(([, v]) => v !== undefined);
  if (format === "json") {
    return `${JSON.stringify({ level, msg, time, ...Object.fromEntries(defined) })}\n`;
  }
  const parts = [`time=${JSON.stringify(time)}`, `level=${level}`, `msg=${JSON.stringify(msg)}`];
  for (const [k, v] of defined) parts.push(`${k}=${typeof v === "string" ? JSON.stringify(v) : String(v)}`);
  return `${parts.join(" ")}\n`;
}

/** RFC 3339 with nanosecond-free fraction and a numeric offset, as logrus writes it. */
export function rfc3339(d: Date): string {
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const tz = off === 0 ? "Z" : `${sign}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}${tz}`
  );
}
