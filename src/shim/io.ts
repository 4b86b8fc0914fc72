// A task's stdio: the fifos containerd made (CreateTaskRequest/ExecProcessRequest stdin, stdout,
// stderr), turned into the three fds the process (its stand-in in VM mode) gets, as runc's shim does.
//   - stdout/stderr: the fifo itself, opened for writing, goes to the process: no copy through us.
//   - stdin: copied by us into a pipe, so that CloseIO can end it (the process sees EOF) while
//     containerd may keep its end open.
//   - terminal: the process gets a pty through a console socket of ours; we copy stdin → master and
//     master → stdout, and ResizePty sets the master's size.
import { closeSync, createWriteStream, constants as fsConstants, openSync, type WriteStream } from "node:fs";
import { open } from "node:fs/promises";
import { createServer, type Server, Socket } from "node:net";
import { join } from "node:path";
import { ReadStream } from "node:tty";
import { MAX_SOCKET_PATH, shortSocketName } from "../sandbox/paths";
import { closeFd, dupFd, pipe, recvFds, setWinsize } from "../sys/native";

export interface StdioPaths {
  stdin?: string;
  stdout?: string;
  stderr?: string;
  terminal: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Opens a fifo for writing without blocking the event loop (the open waits for its reader). */
async function openWriter(path: string): Promise<number> {
  const h = await open(path, fsConstants.O_WRONLY);
  // The fd outlives the FileHandle object: dup it, then let the handle close its own.
  const fd = dupFd(h.fd);
  await h.close();
  return fd;
}

/**
 * The stdin fifo, opened without waiting for containerd's writer (a blocking open would park a
 * thread-pool thread until it came, and a thread parked in open(2) keeps the process from exiting).
 * Linux reports no hang-up on a fifo whose writer has not come yet, so the copy waits for it; once
 * the writer has been and closed, the copy reads EOF, as containerd's own shim does.
 */
function openStdinFifo(path: string): number {
  return openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
}

export class ProcessIo {
  /** The process's fds 0-2 (closed here once the process has them: closeChildSide). */
  readonly stdio: [number, number, number];
  /** Terminal: where the process's runtime sends its pty master (runc's --console-socket). */
  readonly consoleSocket?: string;
  private childSide: number[] = [];
  private stdinCopy?: { from: Socket; to: Socket };
  private console?: { server: Server; master?: number; pty?: ReadStream; out?: WriteStream; sizeFd?: number };
  private outputDone: Promise<void> = Promise.resolve();
  private finishOutput?: () => void;

  private constructor(stdio: [number, number, number], consoleSocket?: string) {
    this.stdio = stdio;
    this.consoleSocket = consoleSocket;
  }

  /**
   * Opens the process's side. `consoleDir`: a private directory for the console socket (terminal only).
   */
  static async open(p: StdioPaths, consoleDir: string, name: string): Promise<ProcessIo> {
    const devNull = () => openSync("/dev/null", "r+");
    if (p.terminal) {
      const path = join(consoleDir, `${shortSocketName(name)}.sock`);
      if (Buffer.byteLength(path) > MAX_SOCKET_PATH)
        throw new Error(`console socket path too long (${path}): set a shorter KATA_TS_SHIM_DIR`);
      const io = new ProcessIo([devNull(), devNull(), devNull()], path);
      io.childSide.push(...io.stdio);
      await io.listenConsole(p);
      return io;
    }
    const out = p.stdout ? await openWriter(p.stdout) : devNull();
    const err = p.stderr ? (p.stderr === p.stdout ? dupFd(out) : await openWriter(p.stderr)) : devNull();
    let stdin: number;
    let copy: ProcessIo["stdinCopy"];
    if (p.stdin) {
      const [r, w] = pipe();
      stdin = r;
      const to = new Socket({ fd: w, readable: false, writable: true });
      to.on("error", () => {}); // the process closed its stdin: what it reads no longer matters
      const from = new Socket({ fd: openStdinFifo(p.stdin), readable: true, writable: false });
      from.on("error", () => to.end());
      from.pipe(to);
      copy = { from, to };
    } else stdin = devNull();
    const io = new ProcessIo([stdin, out, err]);
    io.stdinCopy = copy;
    io.childSide.push(stdin, out, err);
    return io;
  }

  private async listenConsole(p: StdioPaths): Promise<void> {
    const server = createServer({ pauseOnConnect: true }, (s) => void this.acceptMaster(s, p));
    this.console = { server };
    this.outputDone = new Promise((r) => {
      this.finishOutput = r;
    });
    await new Promise<void>((res, rej) => {
      server.once("error", rej);
      server.listen(this.consoleSocket, () => res());
    });
  }

  private async acceptMaster(s: Socket, p: StdioPaths): Promise<void> {
    const fd = (s as unknown as { _handle: { fd: number } })._handle.fd;
    let master: number | undefined;
    for (let i = 0; i < 500 && master === undefined; i++) {
      try {
        master = recvFds(fd, 1, 256).fds[0];
      } catch {
        await sleep(10);
      }
    }
    s.destroy();
    const c = this.console;
    if (master === undefined || !c) return;
    c.server.close();
    c.master = master;
    c.sizeFd = dupFd(master);
    const pty = new ReadStream(master);
    c.pty = pty;
    const out = p.stdout ? createWriteStream("", { fd: await openWriter(p.stdout) }) : undefined;
    c.out = out;
    out?.on("error", () => {});
    const done = () => {
      if (out) out.end(() => this.finishOutput?.());
      else this.finishOutput?.();
    };
    pty.on("data", (d: Buffer) => out?.write(d));
    // EIO once the last slave closes: the process has ended.
    pty.once("error", done);
    pty.once("end", done);
    if (p.stdin) {
      const from = new Socket({ fd: openStdinFifo(p.stdin), readable: true, writable: false });
      from.on("error", () => {});
      from.on("data", (d) => {
        if (!pty.destroyed) pty.write(d);
      });
      this.stdinCopy = { from, to: new Socket() };
    }
  }

  /** Once the process holds its fds: ours are closed (the fifos then end with the process). */
  closeChildSide(): void {
    for (const fd of this.childSide.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
  }

  /** CloseIO(stdin): the process reads EOF once what was written is read. */
  closeStdin(): void {
    if (this.console?.pty) {
      // A terminal's EOF is ^D at the start of a line, as a user would type it.
      this.console.pty.write("\x04");
      return;
    }
    this.stdinCopy?.to.end();
  }

  resize(width: number, height: number): void {
    const fd = this.console?.sizeFd;
    if (fd !== undefined && width > 0 && height > 0) setWinsize(fd, height, width);
  }

  /** Resolves when the process's terminal output is all written out (non-terminal: at once). */
  drained(timeoutMs = 3000): Promise<void> {
    return Promise.race([this.outputDone, sleep(timeoutMs).then(() => {})]);
  }

  /** Everything of ours, after the process has gone. */
  close(): void {
    this.closeChildSide();
    this.stdinCopy?.from.destroy();
    this.stdinCopy?.to.destroy();
    const c = this.console;
    if (c) {
      c.server.close();
      c.pty?.destroy();
      c.out?.destroy();
      if (c.sizeFd !== undefined) closeFd(c.sizeFd);
      this.console = undefined;
    }
  }
}
