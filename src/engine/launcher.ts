// Spawns the helper and runs the handshake (docs/engine.md):
//   we → phase 1 (setns, mkfifo, console, clone) ; helper → "pid N"
//   we: uid/gid maps, cgroups, prestart/createRuntime hooks (onPid) ; we → phase 2 ... "go"
//   container → "ready" (it now blocks on the exec fifo) | "error MSG" | EOF (it exec'd: exec without fifo)
// The container's stdio is ours (fds 0-2) unless `stdio` names others (the guest agent gives each process
// pipes it relays), and preserved fds 3..3+N-1 keep their numbers; the sync socket is the next fd, so a
// caller's extra fds (conmon's 3 and 4) never reach the container unless preserved.

import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, statSync } from "node:fs";
import type { Socket } from "node:net";
import { constants as osConstants } from "node:os";
import { KataError } from "../errors";
import { NAMESPACE_TYPES, type NamespaceType } from "../oci/spec";
import { findNativeFile, sendFds } from "../sys/native";
import { PROC_NS_NAME } from "./plan";
import { encodeRecords, type Rec, RecordDecoder } from "./protocol";

export const HELPER_FILE = "kata-ts-helper";

export function helperPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.KATA_TS_HELPER && existsSync(env.KATA_TS_HELPER)) return env.KATA_TS_HELPER;
  const p = findNativeFile(HELPER_FILE, env);
  if (!p) throw new Error("container helper not built: run `make -C native`");
  return p;
}

/** An error the container process (or the helper) reported over the sync socket. */
export class ContainerStartError extends KataError {
  /** exitCode: 127 when the workload could not be exec'd (a shell's "command not found"), else 1. */
  constructor(message: string, exitCode = 1) {
    super(message, exitCode);
  }
}

export interface LaunchOptions {
  phase1: Rec[];
  /** Called with the container's host pid; returns phase 2 (it runs maps, cgroups, host hooks first). */
  onPid: (pid: number) => Promise<Rec[]> | Rec[];
  /** True: the container blocks on the exec fifo and says "ready"; false: success is its execve. */
  expectReady: boolean;
  preserveFds?: number;
  /** Foreground: the helper stays as the container's parent and exits with its status. */
  wait: boolean;
  /** fds 0-2 of the helper and so of the container: ours ("inherit", the default), /dev/null or an fd. */
  stdio?: [StdioTarget, StdioTarget, StdioTarget];
  /** A unix socket the container sends its pty master over (plan option consoleFd): the fd after sync. */
  consoleFd?: number;
  /** The helper's environment (the agent passes its own; default process.env). */
  env?: NodeJS.ProcessEnv;
  /**
   * A helper spawned ahead of need (spawnSpareHelper, with the same env): used instead of a spawn when it
   * is still waiting and no fds are preserved. Its stdio is sent to it over the sync socket.
   */
  spare?: SpareHelper;
}

/**
 * A helper started before it is needed (`kata-ts-helper 3 spare`): its spawn and its re-exec from the
 * sealed memfd are done, and it waits for its stdio fds on the sync socket. The guest agent
 * keeps one, since under TCG that start is ~0.1 s of every create and exec (docs/guest.md).
 */
export interface SpareHelper {
  helper: ChildProcess;
  exited: Promise<number>;
  /** Started before a VM template was saved: it executes itself again before it runs a plan. */
  stale?: boolean;
}

export function spawnSpareHelper(env?: NodeJS.ProcessEnv): SpareHelper {
  const helper = spawn(helperPath(env), ["3", "spare"], {
    stdio: ["ignore", "ignore", "ignore", "pipe"],
    detached: true,
    env,
  });
  const exited = exitCodeOf(helper);
  // Waiting is not work: a spare keeps neither the event loop nor its owner alive.
  helper.unref();
  (helper.stdio[3] as Socket).unref();
  return { helper, exited };
}

/** True while the spare has not exited (it may still be starting: it reads its fds when it gets there). */
export function spareAlive(s: SpareHelper): boolean {
  return s.helper.exitCode === null && s.helper.signalCode === null && !s.helper.killed;
}

export type StdioTarget = "inherit" | "ignore" | number;

export interface Launched {
  pid: number;
  /** The helper (in wait mode: resolves with the workload's exit code, 128+signal when killed). */
  helper: ChildProcess;
  exited: Promise<number>;
}

export function launch(o: LaunchOptions): Promise<Launched> {
  const preserve = o.preserveFds ?? 0;
  const syncFd = 3 + preserve;
  const base = o.stdio ?? ["inherit", "inherit", "inherit"];
  const stdio: (StdioTarget | "pipe")[] = [...base];
  for (let i = 0; i < preserve; i++) stdio.push(3 + i);
  stdio.push("pipe");
  if (o.consoleFd !== undefined) stdio.push(o.consoleFd);
  const spare = o.spare && preserve === 0 ? adoptSpare(o.spare, base, o.consoleFd) : undefined;
  // A spare handed to us and not used is stopped: nobody else would send it anything.
  if (o.spare && !spare) o.spare.helper.kill("SIGKILL");
  // Its own session: a terminal's ^C reaches us once and we relay it once (not twice via the process group).
  const helper =
    spare?.helper ?? spawn(helperPath(o.env), [String(syncFd)], { stdio, detached: true, env: o.env });
  const exited = spare?.exited ?? exitCodeOf(helper);
  const sock = helper.stdio[syncFd] as Socket;
  const decoder = new RecordDecoder();
  return new Promise<Launched>((resolve, reject) => {
    let pid = 0;
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      sock.removeAllListeners("data");
      sock.destroy();
      if (err) {
        if (pid > 0) killQuietly(pid);
        reject(err);
      } else resolve({ pid, helper, exited });
    };
    helper.on("error", (err) => finish(new Error(`start the container helper: ${err.message}`)));
    sock.on("error", () => {});
    sock.on("data", (chunk: Buffer) => {
      for (const rec of decoder.push(chunk)) {
        const [op, arg] = rec;
        if (op === "pid") {
          pid = Number(arg);
          Promise.resolve()
            .then(() => o.onPid(pid))
            .then((phase2) => {
              if (!settled) sock.write(encodeRecords(phase2));
            })
            .catch((err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));
        } else if (op === "ready") {
          finish();
        } else if (op === "error") {
          const msg = arg ?? "container init failed";
          finish(
            new ContainerStartError(msg, /^unable to start container process: exec:/.test(msg) ? 127 : 1),
          );
        }
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

function exitCodeOf(helper: ChildProcess): Promise<number> {
  return new Promise<number>((resolve) => {
    helper.on("exit", (code, signal) => resolve(code ?? 128 + signalNumber(signal)));
    helper.on("error", () => resolve(255));
  });
}

/**
 * The spare, given fds 0-2 (and the console fd) as a spawn would have set them, in one SCM_RIGHTS
 * message; undefined when it is gone or cannot take them: the caller spawns.
 */
function adoptSpare(spare: SpareHelper, stdio: StdioTarget[], consoleFd?: number): SpareHelper | undefined {
  if (!spareAlive(spare)) return undefined;
  const sock = spare.helper.stdio[3] as Socket;
  const opened: number[] = [];
  try {
    const fds = stdio.map((t, i) => {
      if (t === "inherit") return i;
      if (t === "ignore") {
        opened.push(openSync("/dev/null", "r+"));
        return opened[opened.length - 1];
      }
      return t;
    });
    if (consoleFd !== undefined) fds.push(consoleFd);
    // the sync socket is a unix socketpair (libuv's "pipe"); its fd is the handle's
    const byte = Buffer.from(spare.stale ? "r" : "\0", "latin1");
    sendFds((sock as unknown as { _handle: { fd: number } })._handle.fd, fds, byte);
  } catch {
    return undefined; // gone meanwhile (EPIPE): the caller stops it and spawns
  } finally {
    for (const fd of opened) closeSync(fd);
  }
  spare.helper.ref();
  sock.ref();
  return spare;
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone: what we wanted
  }
}

const SIGNALS = osConstants.signals as Record<string, number>;

export function signalNumber(name: string | null | undefined): number {
  return name ? (SIGNALS[name] ?? 0) : 0;
}

/** What an exec joins: /proc/PID/ns/* of the container's init for each namespace that differs from ours. */
export function namespacesToJoin(initPid: number): Partial<Record<NamespaceType, string>> {
  const joins: Partial<Record<NamespaceType, string>> = {};
  for (const t of NAMESPACE_TYPES) {
    if (t === "time") continue; // a time namespace can only be joined before exec: runc does not either
    const theirs = `/proc/${initPid}/ns/${PROC_NS_NAME[t]}`;
    const a = nsInode(theirs);
    if (a && a !== nsInode(`/proc/self/ns/${PROC_NS_NAME[t]}`)) joins[t] = theirs;
  }
  return joins;
}

function nsInode(path: string): string | undefined {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}
