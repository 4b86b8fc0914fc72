// The stdio relay between a stand-in's fds (the container's stdio as the engine gave it: pipes, fifos,
// sockets, files, /dev/null, or a host pty slave) and the agent's streams. pipe() gives backpressure
// both ways: a slow reader on the host stops the guest stream (the agent's flow control stops the
// workload), a slow guest stops reading the host pipe. Pipes and sockets are opened as non-blocking
// libuv handles: a blocking read on a quiet stdin must never hold one of libuv's few pool threads.
import { once } from "node:events";
import { createReadStream, createWriteStream, fstatSync } from "node:fs";
import { Socket } from "node:net";
import type { Readable, Writable } from "node:stream";
import { isatty, ReadStream as TtyReadStream, WriteStream as TtyWriteStream } from "node:tty";
import { closeFd, dupFd } from "../sys/native";
import type { ProcessStdio } from "./agent";

export function fdReadable(fd: number): Readable {
  if (isatty(fd)) return new TtyReadStream(fd);
  const st = fstatSync(fd);
  if (st.isFIFO() || st.isSocket()) return new Socket({ fd, readable: true, writable: false });
  return createReadStream("", { fd, autoClose: true });
}

export function fdWritable(fd: number): Writable {
  if (isatty(fd)) return new TtyWriteStream(fd);
  const st = fstatSync(fd);
  if (st.isFIFO() || st.isSocket()) return new Socket({ fd, readable: false, writable: true });
  return createWriteStream("", { fd, autoClose: true });
}

export interface Relay {
  /** Resolves once everything the process wrote was written to the host fds (or failed to). */
  drained: Promise<void>;
  /** Stops relaying and closes the host fds. */
  close(): void;
}

function finished(s: Writable): Promise<void> {
  return new Promise((resolve) => {
    if (s.writableFinished || s.destroyed) return resolve();
    s.once("finish", () => resolve());
    s.once("close", () => resolve());
    s.once("error", () => resolve());
  });
}

/**
 * Connects host fds to the agent streams. fds: [stdin, stdout, stderr], or [pty slave] with a terminal.
 * The fds belong to the relay from here on.
 */
export function relayStdio(fds: number[], terminal: boolean, stdio: ProcessStdio): Relay {
  const opened: (Readable | Writable)[] = [];
  const done: Promise<void>[] = [];
  const inFd = fds[0];
  // libuv reopens a pty slave it is given and dup2()s the new one over the fd number, which its close
  // then leaves open: the slave would stay held here after the process, and the master's reader (the
  // shim, an engine's console) would never see EIO. The numbers handed to tty streams are closed once
  // the streams are (see close()).
  const ptyRdev = terminal && inFd !== undefined ? fstatSync(inFd).rdev : undefined;
  const handedToTty: number[] = [];
  const outFd = terminal ? dupFd(fds[0]) : fds[1];
  const errFd = terminal ? undefined : fds[2];
  if (terminal) for (const fd of fds.slice(1)) closeFd(fd);

  if (stdio.stdin && inFd !== undefined) {
    const r = fdReadable(inFd);
    if (terminal) handedToTty.push(inFd);
    opened.push(r);
    r.on("error", () => stdio.stdin?.end());
    r.pipe(stdio.stdin);
  } else if (inFd !== undefined && !terminal) closeFd(inFd);

  const out = (src: Readable | undefined, fd: number | undefined) => {
    if (fd === undefined) return;
    if (!src) {
      closeFd(fd);
      return;
    }
    const socket = fstatSync(fd).isSocket();
    const w = fdWritable(fd);
    if (terminal) handedToTty.push(fd);
    opened.push(w);
    // Nobody reads the host side any more (EPIPE): keep draining the guest so the workload is not stuck.
    w.on("error", () => {
      src.unpipe(w);
      src.resume();
    });
    // A socket ends with a close once everything is written, never with shutdown(SHUT_WR): the caller
    // (a socketpair from the engine, or the CLI's own stderr) shares it and writes after the process
    // ended (runc's and kata-ts's last log lines), which a shutdown would cut off with EPIPE.
    src.pipe(w, { end: !socket });
    if (socket) src.once("end", () => w.write(Buffer.alloc(0), () => w.destroy()));
    done.push(finished(w));
  };
  out(stdio.stdout, outFd);
  out(stdio.stderr, errFd);
  if (terminal && !stdio.stdin && inFd !== undefined) closeFd(inFd);
  return {
    drained: Promise.all(done).then(() => {}),
    close() {
      for (const s of opened) s.destroy();
      if (ptyRdev !== undefined && handedToTty.length)
        void Promise.all(opened.map((s) => (s.closed ? undefined : once(s, "close")))).then(() => {
          for (const fd of handedToTty) closeIfSamePty(fd, ptyRdev);
        });
    },
  };
}

/** Closes `fd` if it is still a tty on the device `rdev` (libuv's leftover), never a reused number. */
function closeIfSamePty(fd: number, rdev: number): void {
  try {
    if (isatty(fd) && fstatSync(fd).rdev === rdev) closeFd(fd);
  } catch {
    // closed already (libuv used the number itself): nothing of ours is left
  }
}
