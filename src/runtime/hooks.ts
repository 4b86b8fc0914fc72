// Host-side OCI hooks (prestart, createRuntime, poststart, poststop): each hook runs as its own process
// with exactly the argv and environment the spec gives (args[0] is argv[0]; nothing is inherited), gets
// the container's state JSON on stdin, and must exit 0 within its timeout. Hooks run one after another in
// the order given; the first failure stops the sequence (except poststop, which only warns).
import { spawn } from "node:child_process";
import type { Hook } from "../oci/spec";
import type { OciState } from "../oci/state";

export interface HookOptions {
  /** Working directory for the hook (runc: the bundle). */
  cwd?: string;
}

/** "K=V" entries → env object; entries without "=" cannot be passed through execve by Node: dropped. */
export function hookEnv(env: readonly string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of env ?? []) {
    const i = e.indexOf("=");
    if (i > 0) out[e.slice(0, i)] = e.slice(i + 1);
  }
  return out;
}

function lastLine(text: string): string {
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.at(-1) ?? "";
}

/** Runs one hook; resolves on exit 0, rejects with a one-line error naming the hook otherwise. */
export function runHook(
  kind: string,
  index: number,
  hook: Hook,
  state: string,
  opts: HookOptions = {},
): Promise<void> {
  const label = `hook ${kind}[${index}] ${hook.path}`;
  if (hook.timeout !== undefined && !(Number.isInteger(hook.timeout) && hook.timeout > 0))
    return Promise.reject(new Error(`${label}: timeout must be a positive integer, got ${hook.timeout}`));
  return new Promise((resolvePromise, reject) => {
    const args = hook.args ?? [];
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(hook.path, args.slice(1), {
        argv0: args[0] ?? hook.path,
        env: hookEnv(hook.env),
        cwd: opts.cwd,
        stdio: ["pipe", "pipe", "pipe"],
        // Own process group: a timeout kills the hook and whatever it started.
        detached: true,
      });
    } catch (err) {
      reject(new Error(`${label}: ${(err as Error).message}`));
      return;
    }
    let stderr = "";
    let stdout = "";
    let timedOut = false;
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      if (err) reject(err);
      else resolvePromise();
    };
    child.stdout?.on("data", (d: Buffer) => {
      stdout = (stdout + d.toString()).slice(-4096);
    });
    child.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4096);
    });
    // A hook that does not read its stdin closes the pipe early: not an error.
    child.stdin?.on("error", () => {});
    child.stdin?.end(state);
    const timer = hook.timeout
      ? setTimeout(() => {
          timedOut = true;
          try {
            process.kill(-child.pid!, "SIGKILL");
          } catch {
            child.kill("SIGKILL");
          }
        }, hook.timeout * 1000)
      : undefined;
    child.on("error", (err) => finish(new Error(`${label}: ${err.message}`)));
    child.on("exit", (code, signal) => {
      // Let the pipes drain (a grandchild holding them must not hold us up for long).
      let done = false;
      const report = () => {
        if (done) return;
        done = true;
        if (timedOut) return finish(new Error(`${label}: timed out after ${hook.timeout}s`));
        if (code === 0) return finish();
        const status = signal ? `killed by ${signal}` : `exit status ${code}`;
        const detail = lastLine(stderr) || lastLine(stdout);
        finish(new Error(`${label}: ${status}${detail ? `: ${detail}` : ""}`));
      };
      child.on("close", report);
      setTimeout(report, 200).unref();
    });
  });
}

function stateText(state: OciState | string): string {
  return typeof state === "string" ? state : JSON.stringify(state);
}

/** Runs hooks in order; the first failure rejects (and later hooks do not run). */
export async function runHooks(
  kind: string,
  hooks: readonly Hook[] | undefined,
  state: OciState | string,
  opts: HookOptions = {},
): Promise<void> {
  const text = stateText(state);
  for (const [i, hook] of (hooks ?? []).entries()) await runHook(kind, i, hook, text, opts);
}

/** poststop: every hook runs even if an earlier one failed; failures come back as warnings. */
export async function runPoststopHooks(
  hooks: readonly Hook[] | undefined,
  state: OciState | string,
  opts: HookOptions = {},
): Promise<string[]> {
  const text = stateText(state);
  const warnings: string[] = [];
  for (const [i, hook] of (hooks ?? []).entries()) {
    try {
      await runHook("poststop", i, hook, text, opts);
    } catch (err) {
      warnings.push((err as Error).message);
    }
  }
  return warnings;
}
