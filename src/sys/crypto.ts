// node:crypto, loaded on first use: requiring it costs ~6 ms on the development machine, and most CLI
// calls (host-mode run, state, kill, delete) never hash or draw random bytes.
import type { Hash } from "node:crypto";

type Crypto = typeof import("node:crypto");
let loaded: Crypto | undefined;
function crypto(): Crypto {
  loaded ??= require("node:crypto") as Crypto;
  return loaded;
}

/** A SHA-256 hash to feed (`.update()`) and read (`.digest("hex")`). */
export function sha256(): Hash {
  return crypto().createHash("sha256");
}

/** The SHA-256 of data, as hex. */
export function sha256Hex(data: string | Buffer): string {
  return sha256().update(data).digest("hex");
}

/** n random bytes from the kernel's CSPRNG. */
export function randomBytes(n: number): Buffer {
  return crypto().randomBytes(n);
}
