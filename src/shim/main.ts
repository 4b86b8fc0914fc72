// containerd-shim-kata-ts-v2: containerd's runtime v2 contract (runtime/v2/README.md in containerd).
//   <shim> -namespace NS -address A -publish-binary B -id ID start    (cwd: the bundle)
//       prints the ttrpc address of the shim serving ID: a new daemon, or — for a container of a pod
//       (io.kubernetes.cri.sandbox-id) — the pod's own shim, which serves every container of the pod.
//   <shim> ... -id ID [-bundle DIR] delete                              (cwd: the bundle)
//       cleans up after a shim that is gone; prints a DeleteResponse (protobuf) on stdout.
//   <shim> ... -id ID                                                   the daemon: serves containerd.task.v2.Task
// One daemon per pod, driving its sandbox in-process through the runtime library (no CLI per call).
import { type ChildProcess, spawn } from "node:child_process";
import {
  closeSync,
  constants as fsConstants,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { nodeChildEnv } from "../nodeenv";
import { containerKind } from "../oci/annotations";
import { deleteContainer, type RuntimeContext } from "../runtime/lifecycle";
import { shortSocketName } from "../sandbox/paths";
import { setChildSubreaper } from "../sys/native";
import { encode, schema, TtrpcServer, timestamp } from "../ttrpc";
import { VERSION } from "../version";
import { TtrpcPublisher } from "./events";
import { TaskService, unmount } from "./task";

const TASK_SERVICE = "containerd.task.v2.Task";
/** Where the shim keeps its state (kata-ts's --root per namespace) and its sockets. */
const SHIM_DIR = process.env.KATA_TS_SHIM_DIR || "/run/kata-ts-shim";
const READY_MS = 30_000;

interface Flags {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle?: string;
  debug: boolean;
  socket?: string;
  action?: string;
}

/** Go's flag syntax, as containerd passes it: -name value, --name value, -name=value, bare booleans. */
export function parseFlags(argv: string[]): Flags {
  const f: Flags = { namespace: "", address: "", publishBinary: "", id: "", debug: false };
  const names: Record<string, keyof Flags> = {
    namespace: "namespace",
    address: "address",
    "publish-binary": "publishBinary",
    id: "id",
    bundle: "bundle",
    socket: "socket",
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) {
      f.action = a;
      continue;
    }
    if (m[1] === "debug" || m[1] === "v") {
      f.debug = m[2] === undefined || m[2] === "true";
      if (m[1] === "v") f.action = "version";
      continue;
    }
    const key = names[m[1]];
    if (!key) throw new Error(`flag provided but not defined: -${m[1]}`);
    (f as unknown as Record<string, string>)[key] = m[2] ?? argv[++i] ?? "";
  }
  return f;
}

export function stateRoot(namespace: string): string {
  return join(SHIM_DIR, "state", namespace || "default");
}

/**
 * The socket of the shim serving `group` (a pod's sandbox id or a lone container's id), unique per
 * containerd. 128 bits of the hash: the console sockets in `<socket>.d/` must still fit in sun_path.
 */
export function shimSocket(f: Flags, group: string): string {
  return join(SHIM_DIR, "s", shortSocketName(`${f.address}\0${f.namespace}\0${group}`, 32));
}

function groupOf(bundle: string, id: string): string {
  try {
    const spec = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8"));
    return containerKind(spec.annotations, id).sandboxId ?? id;
  } catch {
    return id;
  }
}

function answers(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      res(true);
    });
    s.once("error", () => res(false));
  });
}

/** start: reuse the pod's shim, or spawn a daemon and wait until it listens. */
async function start(f: Flags): Promise<void> {
  const bundle = process.cwd();
  const group = groupOf(bundle, f.id);
  const socket = shimSocket(f, group);
  const address = `unix://${socket}`;
  if (!(await answers(socket))) {
    rmSync(socket, { force: true });
    mkdirSync(join(SHIM_DIR, "s"), { recursive: true, mode: 0o711 });
    // The daemon is this program again: through its launcher (argv[1], a shell script: bin/) as
    // containerd ran it, or node and the bundle when that is how this one was run.
    const self = process.argv[1];
    const [program, script] = /\.[cm]?[jt]s$/.test(self) ? [process.execPath, [self]] : [self, []];
    const args = [
      ...script,
      "-namespace",
      f.namespace,
      "-address",
      f.address,
      "-publish-binary",
      f.publishBinary,
      "-id",
      group,
      "-socket",
      socket,
    ];
    if (f.debug) args.push("-debug");
    // containerd's shim log: a fifo in the bundle it reads (opened O_RDWR on its side, so this never blocks).
    let log: number | "ignore" = "ignore";
    try {
      log = openSync(join(bundle, "log"), fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    } catch {
      // no log fifo (an older containerd, a manual start): the daemon logs nowhere
    }
    const child: ChildProcess = spawn(program, args, {
      cwd: bundle,
      detached: true,
      stdio: ["ignore", "ignore", log, "pipe"],
      env: nodeChildEnv(),
    });
    if (typeof log === "number") closeSync(log);
    const ready = await new Promise<string>((res) => {
      let buf = "";
      const timer = setTimeout(() => res(`the shim did not start within ${READY_MS} ms`), READY_MS);
      const pipe = child.stdio[3] as NodeJS.ReadableStream;
      pipe.on("data", (d) => {
        buf += d;
        if (buf.includes("\n")) {
          clearTimeout(timer);
          res(buf.split("\n")[0]);
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        res(buf.split("\n")[0] || `the shim exited (${code}) before it listened`);
      });
    });
    if (ready !== "ok") {
      child.kill("SIGKILL");
      throw new Error(ready);
    }
    child.unref();
    (child.stdio[3] as unknown as { destroy(): void }).destroy();
  }
  writeFileSync(join(bundle, "address"), address);
  process.stdout.write(address);
}

/** delete: the shim is gone; whatever is left of the container goes. */
async function cleanup(f: Flags): Promise<void> {
  const bundle = f.bundle || process.cwd();
  const ctx: RuntimeContext = { root: stateRoot(f.namespace), warn: (m) => process.stderr.write(`${m}\n`) };
  await deleteContainer(ctx, f.id, true).catch((err: Error) =>
    process.stderr.write(`delete ${f.id}: ${err.message}\n`),
  );
  unmount(join(bundle, "rootfs"));
  // A dead shim's socket and console directory (a live one, serving the rest of a pod, keeps them).
  const socket = shimSocket(f, groupOf(bundle, f.id));
  if (!(await answers(socket))) {
    rmSync(socket, { force: true });
    rmSync(`${socket}.d`, { recursive: true, force: true });
  }
  process.stdout.write(
    encode("containerd.task.v2.DeleteResponse", { pid: 0, exit_status: 128 + 9, exited_at: timestamp() }),
  );
}

/** The daemon: the Task service on the socket `start` chose. */
async function serve(f: Flags): Promise<void> {
  const log = (m: string) => process.stderr.write(`${new Date().toISOString()} kata-ts-shim ${f.id}: ${m}\n`);
  if (!f.socket) throw new Error("-socket is required for the shim daemon");
  const socket = f.socket;
  // Orphans of the container processes come to us, not to init (as runc's shim does).
  setChildSubreaper();
  const ctx: RuntimeContext = {
    root: stateRoot(f.namespace),
    warn: log,
    debug: f.debug ? (m, fields) => log(`${m} ${JSON.stringify(fields ?? {})}`) : undefined,
  };
  mkdirSync(ctx.root, { recursive: true, mode: 0o711 });
  const events = new TtrpcPublisher(process.env.TTRPC_ADDRESS || `${f.address}.ttrpc`, f.namespace, log);
  const server = new TtrpcServer({ onError: (err, where) => log(`${where}: ${err.message}`) });
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    // containerd never waits for a shim that says it stopped: whatever a connection or a queued
    // event still holds, the process is gone within 3 s.
    setTimeout(() => process.exit(0), 3000);
    rmSync(socket, { force: true });
    await server.close({ timeoutMs: 1000 }).catch(() => {});
    try {
      events.close();
    } finally {
      process.exit(0);
    }
  };
  const service = new TaskService(ctx, events, `${socket}.d`, () => void shutdown());
  const handlers = service.methods();
  const svc = schema().root.lookupService(TASK_SERVICE);
  const methods: Record<
    string,
    { request: string; response: string; handler: (r: object) => Promise<object> }
  > = {};
  for (const m of Object.values(svc.methods)) {
    m.resolve();
    const handler = handlers[m.name];
    if (!handler) continue;
    methods[m.name] = {
      request: m.resolvedRequestType?.fullName.replace(/^\./, "") ?? m.requestType,
      response: m.resolvedResponseType?.fullName.replace(/^\./, "") ?? m.responseType,
      handler: (r) => handler(r),
    };
  }
  server.register(TASK_SERVICE, methods);
  await server.listen(socket);
  process.on("SIGTERM", () => void shutdown());
  process.on("SIGINT", () => {});
  log(`serving ${TASK_SERVICE} on ${socket} (kata-ts ${VERSION.version}, state ${ctx.root})`);
  // Tell `start` we listen.
  try {
    writeFileSync(3, "ok\n");
    closeSync(3);
  } catch {
    // started by hand, without the readiness pipe
  }
}

/** One invocation; resolves with the exit code (the daemon keeps running after it resolves). */
export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv);
  if (f.action === "version") {
    process.stdout.write(`containerd-shim-kata-ts-v2:\n  Version: ${VERSION.version}\n  Runtime: kata-ts\n`);
    return 0;
  }
  if (!f.id) throw new Error("-id is required");
  if (f.action === "start") await start(f);
  else if (f.action === "delete") await cleanup(f);
  else if (f.action !== undefined) throw new Error(`unknown action ${JSON.stringify(f.action)}`);
  else await serve(f);
  return 0;
}
