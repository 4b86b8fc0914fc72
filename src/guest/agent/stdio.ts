// A container process's stdio in the agent. Node's spawn "pipe" gives the child unix socketpairs, and a
// socket cannot be reopened through /proc/self/fd (`echo hi > /dev/stdout` fails with ENXIO), so the
// agent makes real pipes (native pipe(), O_CLOEXEC: no other child inherits them), gives the child its
// ends as fds 0-2 and relays ours to the channel streams.
import { Socket } from "node:net";
import type { Readable, Writable } from "node:stream";
import type { StdioStreams } from "../../agent/api";
import type { StdioTarget } from "../../engine/launcher";
import { closeFd, pipe } from "../../sys/native";

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
      } catch {}
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
