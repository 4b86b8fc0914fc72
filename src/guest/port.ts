// The guest end of the agent channel: the virtio-serial port, a character device. libuv cannot wrap a
// char device in a net.Socket (it is neither a pipe, a socket nor a tty), so it is one O_RDWR fd driven
// with fs.read/fs.write (one thread-pool thread blocks in read while the host is connected). A read of 0
// bytes means the host side is not connected (QEMU's chardev has no client): that ends the session, and
// we poll until the host connects again, each connection being a fresh byte stream.
import { closeSync, openSync, read, readdirSync, readFileSync, write } from "node:fs";
import { join } from "node:path";
import { Duplex } from "node:stream";

/** /dev/<vportNpM> of the virtio-serial port called `name`, from /sys/class/virtio-ports/<port>/name. */
export function findPort(name: string, sysDir = "/sys/class/virtio-ports"): string {
  let ports: string[] = [];
  try {
    ports = readdirSync(sysDir);
  } catch {
    // no virtio-ports in sysfs: no port, the caller reports it
  }
  for (const p of ports) {
    try {
      if (readFileSync(join(sysDir, p, "name"), "utf8").trim() === name) return join("/dev", p);
    } catch {
      // a port without a readable name is not ours
    }
  }
  throw new Error(
    `virtio-serial port ${name} not found under ${sysDir} (ports: ${ports.join(", ") || "none"})`,
  );
}

// Reads in flight on the thread pool. Node's exit joins the pool's threads, so the agent may only exit
// when none is blocked in read() on the port (the host hung up): see readsSettled().
let inFlight = 0;
let onSettled: (() => void)[] = [];

function readAsync(fd: number, buf: Buffer): Promise<number> {
  inFlight++;
  return new Promise<number>((resolve, reject) =>
    read(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))),
  ).finally(() => {
    if (--inFlight === 0) for (const f of onSettled.splice(0)) f();
  });
}

/** True once no read on the port is in flight (at once, or within `ms`). */
export function readsSettled(ms: number): Promise<boolean> {
  if (inFlight === 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      onSettled = onSettled.filter((f) => f !== done);
      resolve(false);
    }, ms);
    onSettled.push(done);
  });
}

function writeAll(fd: number, chunk: Buffer, cb: (err?: Error | null) => void): void {
  write(fd, chunk, 0, chunk.length, null, (err, n) => {
    if (err) {
      if ((err as NodeJS.ErrnoException).code === "EAGAIN") setTimeout(() => writeAll(fd, chunk, cb), 5);
      else cb(err);
    } else if (n < chunk.length) writeAll(fd, chunk.subarray(n), cb);
    else cb();
  });
}

/** One host connection over the port: ends when a read returns 0 (host gone). Does not close the fd. */
class PortSession extends Duplex {
  private wantRead?: () => void;

  constructor(
    private readonly fd: number,
    first: Buffer,
  ) {
    super();
    this.push(first);
    this.pump().catch((err) => this.destroy(err));
  }

  private async pump(): Promise<void> {
    for (;;) {
      const buf = Buffer.allocUnsafe(64 * 1024);
      const n = await readAsync(this.fd, buf);
      if (this.destroyed) return;
      if (n === 0) {
        this.push(null);
        return;
      }
      if (!this.push(buf.subarray(0, n))) await new Promise<void>((r) => (this.wantRead = r));
    }
  }

  override _read(): void {
    const w = this.wantRead;
    this.wantRead = undefined;
    w?.();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    writeAll(this.fd, chunk, cb);
  }

  override _final(cb: () => void): void {
    cb();
  }
}

/**
 * Opens the port and calls onSession for every host connection, forever (until close()). close() stops
 * accepting sessions; the fd is closed once no read is blocked on it (a read in flight returns when the
 * host hangs up, and closing under it would let the number be reused while it still reads).
 */
export function servePort(device: string, onSession: (io: Duplex) => Promise<unknown>): { close(): void } {
  const fd = openSync(device, "r+");
  let closed = false;
  (async () => {
    const buf = Buffer.allocUnsafe(64 * 1024);
    while (!closed) {
      const n = await readAsync(fd, buf).catch(() => 0);
      if (closed) break;
      if (n === 0) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      await onSession(new PortSession(fd, Buffer.from(buf.subarray(0, n))));
    }
  })();
  return {
    close() {
      if (closed) return;
      closed = true;
      const closeFd = () => {
        try {
          closeSync(fd);
        } catch {
          // already closed
        }
      };
      if (inFlight === 0) closeFd();
      else onSettled.push(closeFd);
    },
  };
}
