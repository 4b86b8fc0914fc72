// Running iproute2 inside a network namespace given by path: `nsenter --net=PATH -- CMD ...`. Usually
// the engine (podman/netavark, CNI) made the namespace and kata-ts only enters it; in VM mode kata-ts
// makes one itself for a sandbox whose spec asks for a new one and has prestart hooks (docker), at a
// path of its own (createNetnsFile), and names it to the hooks by the pid of a process inside it
// (netnsHolder). Synchronous where it can be: a handful of short calls while a sandbox starts or is
// cleaned up, not a hot path.

import { execFileSync, spawn } from "node:child_process";
import { rmSync, statSync, writeFileSync } from "node:fs";
import { firstLine } from "../errors";

/** Runs argv in the namespace and returns stdout; `input` is fed on stdin (ip/tc -batch -). */
export type NetnsRunner = (netns: string, argv: string[], input?: string) => string;

export const NSENTER = "/usr/bin/nsenter";
export const UNSHARE = "/usr/bin/unshare";

export function nsenterArgv(netns: string, argv: string[]): string[] {
  return [NSENTER, `--net=${netns}`, "--", ...argv];
}

export const runInNetns: NetnsRunner = (netns, argv, input) => {
  const [cmd, ...args] = nsenterArgv(netns, argv);
  try {
    return execFileSync(cmd, args, {
      encoding: "utf8",
      input,
      stdio: ["pipe", "pipe", "pipe"],
      timeout: 10_000,
    });
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? "").trim();
    // ip/tc -batch end with "Command failed -:N" after the line that says why.
    const last = stderr
      .split("\n")
      .filter((l) => l.trim() && !/^Command failed /.test(l))
      .pop();
    throw new Error(`${argv.join(" ")} in ${netns}: ${last || firstLine((err as Error).message)}`);
  }
};

/** "dev:ino" of a namespace file: what tells two paths to one namespace apart from another. Throws. */
export function netnsIdentity(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}

/** netnsIdentity, or undefined when the path cannot be examined. */
export function netnsId(path: string): string | undefined {
  try {
    return netnsIdentity(path);
  } catch {
    return undefined;
  }
}

/** The last line a failed command wrote on stderr, if any. */
function lastStderrLine(err: unknown): string | undefined {
  const stderr = String((err as { stderr?: string | Buffer }).stderr ?? "").trim();
  return stderr.split("\n").pop() || undefined;
}

/**
 * A new network namespace (only lo, down), kept alive by a bind mount on `file`, as `ip netns add` does
 * but at a path of the caller's: `unshare --net=FILE` binds the namespace there before it execs
 * /bin/true. `file` must not exist. Removing it is unmounting it and deleting the file (the namespace
 * ends with its last user). Throws in one line.
 */
export function createNetnsFile(file: string): void {
  writeFileSync(file, "", { flag: "wx", mode: 0o444 });
  try {
    execFileSync(UNSHARE, [`--net=${file}`, "/bin/true"], {
      stdio: ["ignore", "ignore", "pipe"],
      timeout: 10_000,
    });
  } catch (err) {
    rmSync(file, { force: true });
    throw new Error(
      `cannot create a network namespace at ${file}: ${lastStderrLine(err) ?? firstLine((err as Error).message)}`,
    );
  }
}

/** A process standing in a network namespace: `/proc/<pid>/ns/net` is that namespace until `stop()`. */
export interface NetnsHolder {
  pid: number;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Starts a process inside the network namespace `netns` (`nsenter --net=NETNS -- cat` on a pipe only
 * this process writes: it ends at stop(), and by EOF if this process dies first, so it cannot outlive
 * us) and resolves once `/proc/<pid>/ns/net` is that namespace. For what names a namespace by pid: the
 * OCI state that hooks get.
 */
export async function netnsHolder(netns: string, timeoutMs = 5000): Promise<NetnsHolder> {
  const want = netnsIdentity(netns);
  const child = spawn(NSENTER, [`--net=${netns}`, "--", "/bin/cat"], { stdio: ["pipe", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2048);
  });
  const gone = new Promise<void>((res) => {
    child.once("close", () => res());
    // Not started at all (no close follows for a spawn that failed).
    child.once("error", (err) => {
      stderr += `\n${err.message}`;
      if (!child.pid) res();
    });
  });
  const stop = async () => {
    child.stdin?.end();
    child.kill("SIGKILL");
    await gone;
  };
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null || !child.pid) {
      await stop();
      throw new Error(
        `cannot enter network namespace ${netns}: ${stderr.trim().split("\n").pop() || "nsenter failed"}`,
      );
    }
    if (netnsId(`/proc/${child.pid}/ns/net`) === want) return { pid: child.pid, stop };
    if (Date.now() > end) {
      await stop();
      throw new Error(
        `cannot enter network namespace ${netns}: nsenter did not get there within ${timeoutMs} ms`,
      );
    }
    await sleep(2);
  }
}
