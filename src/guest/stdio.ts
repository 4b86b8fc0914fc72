// A container process's stdio in the agent. Node's spawn "pipe" gives the child unix socketpairs, and a
// socket cannot be reopened through /proc/self/fd (`echo hi > /dev/stdout` fails with ENXIO), so the
// agent makes real pipes (native pipe(), O_CLOEXEC: no other child inherits them), gives the child its
// ends as fds 0-2 and relays ours to the channel streams.
// A terminal is made as the host engine makes it for --console-socket: the container opens /dev/ptmx of
// its own devpts after pivot (so `tty` names /dev/pts/N inside), makes the slave its 0-2 and controlling
// tty, and sends the master over a socketpair we hand the helper (plan/launch option consoleFd). The
// master is relayed: its output to the stdout stream, the stdin stream into it; resizeTerminal sets its size.
import { Socket } from "node:net";
import type { Readable, Writable } from "node:stream";
import { ReadStream } from "node:tty";
import type { StdioStreams } from "../agent/api";
import type { StdioTarget } from "../engine/launcher";
import { closeFd, pipe, recvFds, setWinsize, socketpair } from "../sys/native";

export interface ProcessIo {
  /** fds 0-2 for launch(): the child's pipe ends, or /dev/null where the host connected no stream. */
  targets: [StdioTarget, StdioTarget, StdioTarget];
  stdin: Writable | null;
  stdout: Readable | null;
  stderr: Readable | null;
  /** Once the helper is spawned (launch() settled): our copies of the child's ends go, so EOF can come. */
  closeChildEnds(): void;
  /** The launch failed: our ends go too. */
  destroy(): void;
}

export interface TerminalIo {
  /** For launch({consoleFd}): the helper's end of the console socketpair. */
  consoleFd: number;
  /** After launch() resolved (the container has sent the master by then): the relay ends. */
  attach(): { stdin: Writable; stdout: Readable; resize(rows: number, cols: number): void };
  /** Once launch() settled, successful or not. */
  close(): void;
}

export function openTerminal(): TerminalIo {
  const [mine, theirs] = socketpair();
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    for (const fd of [mine, theirs])
      try {
        closeFd(fd);
      } catch {
        // already closed
      }
  };
  return {
    consoleFd: theirs,
    close,
    attach() {
      // Blocking recvmsg, but the master is already there (or the helper's copy is closed: EOF).
      closeFd(theirs);
      const { fds } = recvFds(mine, 1);
      closed = true;
      closeFd(mine);
      const master = fds[0];
      if (master === undefined) throw new Error("the container sent no terminal");
      // A tty.ReadStream is a net.Socket over libuv's tty handle: readable and writable, EIO (the last
      // slave closed) ends it. It owns the fd: resize only while it is open.
      const tty = new ReadStream(master);
      tty.on("error", () => {});
      let open = true;
      tty.once("close", () => {
        open = false;
      });
      return {
        stdin: tty,
        stdout: tty,
        resize(rows, cols) {
          if (open) setWinsize(master, rows, cols);
        },
      };
    },
  };
}

export function openPipes(s: StdioStreams): ProcessIo {
  const childEnds: number[] = [];
  const ours: Socket[] = [];
  const make = (wanted: number, childReads: boolean): { target: StdioTarget; sock: Socket | null } => {
    if (!wanted) return { target: "ignore", sock: null };
    const [r, w] = pipe();
    const [child, mine] = childReads ? [r, w] : [w, r];
    childEnds.push(child);
    // a pipe fd in a net.Socket: libuv polls it (no thread-pool thread blocked in read)
    const sock = new Socket({ fd: mine, readable: !childReads, writable: childReads });
    ours.push(sock);
    return { target: child, sock };
  };
  const i = make(s.stdin, true);
  const o = make(s.stdout, false);
  const e = make(s.stderr, false);
  const closeChildEnds = () => {
    for (const fd of childEnds.splice(0))
      try {
        closeFd(fd);
      } catch {
        // already closed
      }
  };
  return {
    targets: [i.target, o.target, e.target],
    stdin: i.sock,
    stdout: o.sock,
    stderr: e.sock,
    closeChildEnds,
    destroy() {
      closeChildEnds();
      for (const sock of ours) sock.destroy();
    },
  };
}
