// Running iproute2 inside a network namespace given by path: `nsenter --net=PATH -- CMD ...`. The
// engine (podman/netavark, CNI, docker) made the namespace; kata-ts only enters it. Synchronous: these
// are a handful of short calls while a sandbox starts or is cleaned up, not a hot path.

import { execFileSync } from "node:child_process";
import { statSync } from "node:fs";
import { firstLine } from "../errors";

/** Runs argv in the namespace and returns stdout; `input` is fed on stdin (ip/tc -batch -). */
export type NetnsRunner = (netns: string, argv: string[], input?: string) => string;

export const NSENTER = "/usr/bin/nsenter";

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
