// A foreground `run` (or exec) with a terminal and no --console-socket in VM mode: the CLI itself holds the
// master of the host pty the stand-in stands on, and attaches the caller's terminal to it, as runc's
// foreground run does with its own pty: the caller's terminal goes raw (the guest's pty does echo and line
// editing), its size is copied to the pty now and on every SIGWINCH (the stand-in, whose controlling tty
// the slave is, forwards that to the guest), and everything is restored when the process ends.
import { execFileSync } from "node:child_process";
import { ReadStream, type WriteStream } from "node:tty";
import { closeFd, dupFd, getWinsize, setWinsize } from "../sys/native";

export interface AttachedConsole {
  /** Copies the caller's terminal size to the pty (after the stand-in took it as its controlling tty). */
  syncSize(): void;
  /** Once the process exited: waits for the last output (EIO or a short quiet spell), restores the terminal. */
  finish(): Promise<void>;
}

/** The end of the output: the pty reports EIO once no slave is open any more. */
const QUIET_MS = 300;
const FINISH_MAX_MS = 3000;

export function attachConsole(master: number): AttachedConsole {
  const stdin = process.stdin as NodeJS.ReadStream & Partial<ReadStream>;
  const stdout = process.stdout as NodeJS.WriteStream & Partial<WriteStream>;
  const raw = Boolean(stdin.isTTY && stdin.setRawMode);
  if (raw) {
    stdin.setRawMode?.(true);
    // libuv's raw mode keeps output post-processing (ONLCR): the guest's pty already turned "\n" into
    // "\r\n", and a second pass would print "\r\r\n". runc's raw terminal clears OPOST; so do we
    // (setRawMode(false) restores the whole saved termios, OPOST included).
    try {
      execFileSync("stty", ["-opost"], { stdio: [0, "ignore", "ignore"], timeout: 5000 });
    } catch {
      // no stty: the output keeps its post-processing (a doubled \r at worst), the session still works
    }
  }
  // libuv's tty handle over the master: readable and writable; it owns the fd.
  const pty = new ReadStream(master);
  let lastData = Date.now();
  let ended = false;
  const done = () => {
    ended = true;
  };
  pty.once("end", done);
  pty.once("close", done);
  pty.once("error", done); // EIO: the last slave is closed
  pty.on("data", (d: Buffer) => {
    lastData = Date.now();
    stdout.write(d);
  });
  const toPty = (d: Buffer) => {
    if (!ended) pty.write(d);
  };
  stdin.on("data", toPty);
  stdin.resume();
  const sizeFd = dupFd(master);
  const syncSize = () => {
    if (!stdout.isTTY) return;
    try {
      const ws = getWinsize(1);
      if (ws.rows && ws.cols) setWinsize(sizeFd, ws.rows, ws.cols);
    } catch {
      // the terminal or the pty went away: nothing to resize
    }
  };
  process.on("SIGWINCH", syncSize);
  return {
    syncSize,
    async finish() {
      const deadline = Date.now() + FINISH_MAX_MS;
      while (!ended && Date.now() < deadline && Date.now() - lastData < QUIET_MS)
        await new Promise((r) => setTimeout(r, 50));
      process.off("SIGWINCH", syncSize);
      stdin.off("data", toPty);
      stdin.pause();
      // A paused stdin that is a pipe or socket must not keep this process alive either.
      (stdin as { unref?: () => void }).unref?.();
      if (raw) stdin.setRawMode?.(false);
      // A pty stream does not leave on its own: the event loop must not wait for it.
      pty.destroy();
      closeFd(sizeFd);
      await new Promise<void>((res) => (stdout.writableLength ? stdout.once("drain", () => res()) : res()));
    },
  };
}
