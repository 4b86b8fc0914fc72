// The engine's launch() (src/engine/launcher.ts) with one difference the agent needs: the container's
// stdio is not inherited from us but given per process (pipes the agent relays to channel streams).
// Same handshake, same helper; kept here as an adapter until launcher.ts takes a `stdio` option.
import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import type { Socket } from "node:net";
import { ContainerStartError, helperPath, signalNumber } from "../../engine/launcher";
import { encodeRecords, type Rec, RecordDecoder } from "../../engine/protocol";

export interface GuestLaunchOptions {
  phase1: Rec[];
  onPid: (pid: number) => Promise<Rec[]> | Rec[];
  expectReady: boolean;
  /** fds 0-2 of the container: "pipe" (we relay it), "ignore" (/dev/null) or an fd we own. */
  stdio: ["pipe" | "ignore" | number, "pipe" | "ignore" | number, "pipe" | "ignore" | number];
  env?: NodeJS.ProcessEnv;
}

export interface GuestLaunched {
  pid: number;
  /** In wait mode the helper is the container process's parent and exits with its status. */
  helper: ChildProcess;
  /** The workload's exit code, 128+signal when it was killed. */
  exited: Promise<number>;
}

export function launchWithStdio(o: GuestLaunchOptions): Promise<GuestLaunched> {
  const syncFd = 3;
  const stdio: StdioOptions = [...o.stdio, "pipe"];
  const helper = spawn(helperPath(o.env), [String(syncFd)], { stdio, detached: false, env: o.env });
  const exited = new Promise<number>((resolve) => {
    helper.on("exit", (code, signal) => resolve(code ?? 128 + signalNumber(signal)));
    helper.on("error", () => resolve(255));
  });
  const sock = helper.stdio[syncFd] as Socket;
  const decoder = new RecordDecoder();
  return new Promise<GuestLaunched>((resolve, reject) => {
    let pid = 0;
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      sock.removeAllListeners("data");
      sock.destroy();
      if (err) {
        if (pid > 0)
          try {
            process.kill(pid, "SIGKILL");
          } catch {}
        reject(err);
      } else resolve({ pid, helper, exited });
    };
    helper.on("error", (err) => finish(new Error(`start the container helper: ${err.message}`)));
    sock.on("error", () => {});
    sock.on("data", (chunk: Buffer) => {
      for (const [op, arg] of decoder.push(chunk)) {
        if (op === "pid") {
          pid = Number(arg);
          Promise.resolve()
            .then(() => o.onPid(pid))
            .then((phase2) => {
              if (!settled) sock.write(encodeRecords(phase2));
            })
            .catch((err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));
        } else if (op === "ready") finish();
        else if (op === "error")
          finish(
            new ContainerStartError(
              arg ?? "container init failed",
              /^unable to start container process: exec:/.test(arg ?? "") ? 127 : 1,
            ),
          );
      }
    });
    sock.on("close", () => {
      if (settled) return;
      if (pid > 0 && !o.expectReady) finish();
      else
        finish(
          new Error(pid > 0 ? "container init exited before it was ready" : "container helper exited early"),
        );
    });
    sock.write(encodeRecords(o.phase1));
  });
}
