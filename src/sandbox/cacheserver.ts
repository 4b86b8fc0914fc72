// The VM cache server (Kata's `vm_cache_number`): `kata-ts factory init` with vm_cache_number = N runs
// it in the foreground. It makes the template if there is none, then keeps N slots (src/sandbox/slot.ts:
// idle supervisors holding a resumed clone) and starts a new one whenever one is taken or dies, one at a
// time (a clone's restore is CPU-bound; two at once on a small host only slow each other and the
// `create`s they serve). The protocol on vm_cache_endpoint is src/factory/cache.ts's.
//
// A slot is a detached process, not tied to the server's life by a signal: one that was taken serves its
// sandbox until that sandbox's `delete`, whatever happens to the server. An idle one watches its fd 3 (a
// socketpair with the server) and stops itself when the server is gone, even after a kill -9.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { join, resolve } from "node:path";
import type { RuntimeConfig } from "../config/config";
import {
  type CacheRequest,
  type CacheSlotInfo,
  type CacheStatus,
  cacheRequest,
  cacheRoot,
  cleanCacheLeftovers,
  SLOT_SOCKET,
  type TakeReply,
} from "../factory/cache";
import { makeTemplate, makeTemplates, templateAccel, templateKey } from "../factory/template";
import { ensureJailUser } from "../hypervisor/jail";
import { nodeChildEnv } from "../nodeenv";
import { randomBytes } from "../sys/crypto";
import { processStartTime } from "../sys/proc";
import { supervisorScript } from "./launch";
import { SHARE_TAG } from "./paths";
import { unmountTree } from "./share";

/** A taken slot that no `create` claimed within this time is stopped (its `create` died). */
const CLAIM_MS = 30_000;
/** After this many slots in a row failed to start, the server waits before trying again. */
const FAILURES_BEFORE_PAUSE = 3;
const PAUSE_MS = 30_000;

interface Slot {
  dir: string;
  child: ChildProcess;
  pid: number;
  start: number;
  state: CacheSlotInfo["state"];
  link: Socket;
}

export interface CacheServerOptions {
  config: RuntimeConfig;
  configPath?: string;
  log: (m: string) => void;
  /** Resolves once the endpoint listens (tests and `factory init` print it). */
  onListening?: (status: CacheStatus) => void;
}

/** Runs the cache server until `factory destroy` (op "stop"), SIGTERM or SIGINT. */
export async function runCacheServer(o: CacheServerOptions): Promise<void> {
  const { config, log } = o;
  const endpoint = config.factory.vmCacheEndpoint;
  const number = config.factory.vmCacheNumber;
  if (existsSync(endpoint)) {
    const other = await cacheRequest<{ ok: boolean }>(endpoint, { op: "status" }, 2000).catch(
      () => undefined,
    );
    if (other?.ok) throw new Error(`a VM cache server already serves ${endpoint}`);
    rmSync(endpoint, { force: true });
  }
  // What a previous server's slots left (a kill -9 of it: they stop by themselves, their dirs may stay).
  await cleanCacheLeftovers(config, unmountTree);
  const q = config.hypervisor;
  const jailUser = q.rootless ? ensureJailUser(q.rootlessUser) : undefined;
  // With enable_template, the one-NIC template too: a pod with an interface, which no cached VM can take,
  // is cloned from it.
  const make = config.factory.enableTemplate ? makeTemplates : makeTemplate;
  await make(config, { shareTag: SHARE_TAG, jailUser, log });
  const key = templateKey(config, (await templateAccel(config)).accel);
  const root = cacheRoot(config);
  mkdirSync(root, { recursive: true, mode: 0o700 });

  const slots = new Map<string, Slot>();
  let served = 0;
  let failures = 0;
  let pausedUntil = 0;
  let stopping = false;
  let done: () => void = () => {};
  // Whatever the idle slots did not remove themselves (a SIGKILLed one) goes last.
  const stopped = new Promise<void>((r) => {
    done = r;
  }).then(() => cleanCacheLeftovers(config, unmountTree).then(() => {}));

  const status = (): CacheStatus => {
    const list = [...slots.values()];
    return {
      key,
      number,
      idle: list.filter((s) => s.state === "idle").length,
      booting: list.filter((s) => s.state === "booting").length,
      served,
      slots: list.map((s) => ({ dir: s.dir, pid: s.pid, state: s.state })),
    };
  };

  const fill = () => {
    if (stopping) return;
    const list = [...slots.values()];
    if (list.some((s) => s.state === "booting")) return;
    if (list.filter((s) => s.state === "idle").length >= number) return;
    const wait = pausedUntil - Date.now();
    if (wait > 0) {
      setTimeout(fill, wait).unref();
      return;
    }
    startSlot();
  };

  const script = supervisorScript();
  const startSlot = () => {
    const dir = join(root, randomBytes(8).toString("hex"));
    let logFd: number;
    try {
      mkdirSync(dir, { mode: 0o700 });
      logFd = openSync(join(dir, "supervisor.log"), "a", 0o600);
    } catch (err) {
      // The cache's directory is gone or full: no slot now, another try after the pause.
      log(`cache: cannot make a slot in ${root}: ${(err as Error).message}`);
      pausedUntil = Date.now() + PAUSE_MS;
      setTimeout(fill, PAUSE_MS).unref();
      return;
    }
    const args = [script, "--cache-slot", dir];
    if (o.configPath) args.push("--config", resolve(o.configPath));
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, args, {
        detached: true,
        stdio: ["ignore", logFd, logFd, "pipe"],
        env: nodeChildEnv(),
      });
    } finally {
      closeSync(logFd);
    }
    child.unref();
    child.on("error", (e) => log(`cache: slot ${dir}: ${e.message}`));
    const link = child.stdio[3] as Socket | null;
    if (!child.pid || !link) {
      rmSync(dir, { recursive: true, force: true });
      pausedUntil = Date.now() + PAUSE_MS;
      setTimeout(fill, PAUSE_MS).unref();
      return;
    }
    const slot: Slot = {
      dir,
      child,
      pid: child.pid ?? 0,
      start: processStartTime(child.pid ?? 0) ?? 0,
      state: "booting",
      link,
    };
    slots.set(dir, slot);
    const t0 = Date.now();
    let buf = "";
    link.setEncoding("utf8");
    link.on("error", () => {});
    link.on("data", (d: string) => {
      buf += d;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === "ready" && slot.state === "booting") {
          slot.state = "idle";
          failures = 0;
          log(`cache: slot ${dir} ready in ${Date.now() - t0} ms`);
          fill();
        } else if (line.startsWith("error: ")) {
          log(`cache: slot ${dir} failed: ${line.slice(7)}`);
        }
      }
    });
    // The link ends when the slot was taken (it detached), stopped, or died.
    link.on("close", () => {
      slots.delete(dir);
      if (slot.state === "booting") {
        failures++;
        if (failures >= FAILURES_BEFORE_PAUSE) {
          log(`cache: ${failures} slots in a row failed to start: trying again in ${PAUSE_MS / 1000} s`);
          pausedUntil = Date.now() + PAUSE_MS;
        }
      }
      if (stopping && slots.size === 0) done();
      fill();
    });
    // A slot that died without cleaning up (kill -9) and served nobody: its directory goes.
    child.once("exit", () => {
      if (slot.state !== "taken" && existsSync(dir)) {
        unmountTree(dir);
        rmSync(dir, { recursive: true, force: true });
      }
    });
  };

  const take = (req: { key: string }): TakeReply => {
    if (req.key !== key)
      return {
        ok: false,
        why: "the cache serves another configuration (kernel, image or VM settings differ): restart `kata-ts factory init`",
      };
    const slot = [...slots.values()].find((s) => s.state === "idle");
    if (!slot) return { ok: false, why: `no cached VM ready (${number} kept; the next is starting)` };
    slot.state = "taken";
    served++;
    // Its `create` connects next; one that died first leaves a slot nobody claims.
    setTimeout(() => {
      if (slots.has(slot.dir)) {
        log(`cache: slot ${slot.dir} was taken but not claimed within ${CLAIM_MS} ms: stopping it`);
        slot.child.kill("SIGTERM");
      }
    }, CLAIM_MS).unref();
    setImmediate(fill);
    return { ok: true, socket: join(slot.dir, SLOT_SOCKET), pid: slot.pid, start: slot.start };
  };

  const stop = () => {
    if (stopping) return;
    stopping = true;
    log("cache: stopping");
    server.close();
    rmSync(endpoint, { force: true });
    const idle = [...slots.values()].filter((s) => s.state !== "taken");
    for (const s of idle) s.child.kill("SIGTERM");
    if (slots.size === 0) done();
    // A slot that does not stop within 10 s is killed (its QEMU dies with it); its dir is removed above.
    setTimeout(() => {
      for (const s of slots.values()) s.child.kill("SIGKILL");
      setTimeout(done, 2000).unref();
    }, 10_000).unref();
  };

  const server = createServer((sock) => {
    sock.setEncoding("utf8");
    sock.on("error", () => {});
    let buf = "";
    sock.on("data", (d: string) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      let req: CacheRequest;
      try {
        req = JSON.parse(buf.slice(0, nl)) as CacheRequest;
      } catch {
        sock.end(`${JSON.stringify({ ok: false, why: "a request that is not JSON" })}\n`);
        return;
      }
      buf = buf.slice(nl + 1);
      if (req.op === "take") sock.end(`${JSON.stringify(take(req))}\n`);
      else if (req.op === "status") sock.end(`${JSON.stringify({ ok: true, status: status() })}\n`);
      else if (req.op === "stop") {
        // Answered once the idle VMs are gone: `factory destroy` then finds nothing of ours running.
        stop();
        void stopped.then(() => sock.end(`${JSON.stringify({ ok: true })}\n`));
      } else sock.end(`${JSON.stringify({ ok: false, why: "unknown request" })}\n`);
    });
  });
  await new Promise<void>((res, rej) => {
    server.once("error", rej);
    server.listen(endpoint, () => {
      server.off("error", rej);
      res();
    });
  });
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  log(`cache: serving ${number} VM(s) of template ${key} on ${endpoint}`);
  o.onListening?.(status());
  fill();
  await stopped;
}
