// A test-only entry that drives the lifecycle verbs in VM mode whatever the configuration says (the VM
// backend, src/runtime/vm.ts), with no CLI around them: `vmcli --root R <verb> ...` (the tests bundle it
// with esbuild). Exit codes and one-line errors on stderr follow the CLI's conventions. Not shipped.
import {
  createContainer,
  deleteContainer,
  execInContainer,
  killContainer,
  runContainer,
  startContainer,
} from "../../src/runtime/lifecycle";
import { pauseContainer, resumeContainer } from "../../src/runtime/operations";
import type { RuntimeContext } from "../../src/runtime/options";
import { containerStatus } from "../../src/runtime/status";
import { StateStore } from "../../src/runtime/store";
import { sandboxCall } from "../../src/sandbox/launch";

function opt(a: string[], name: string): string | undefined {
  const i = a.indexOf(name);
  if (i < 0) return undefined;
  const v = a[i + 1];
  a.splice(i, 2);
  return v;
}

function flag(a: string[], name: string): boolean {
  const i = a.indexOf(name);
  if (i < 0) return false;
  a.splice(i, 1);
  return true;
}

async function main(argv: string[]): Promise<number> {
  const a = [...argv];
  const root = opt(a, "--root") ?? "/run/kata-ts";
  const ctx: RuntimeContext = {
    root,
    configPath: opt(a, "--config"),
    warn: (m) => process.stderr.write(`${m}\n`),
    hypervisor: "qemu",
  };
  const verb = a.shift();
  const bundle = opt(a, "--bundle");
  const pidFile = opt(a, "--pid-file");
  const consoleSocket = opt(a, "--console-socket");
  const detach = flag(a, "--detach") || flag(a, "-d");
  const force = flag(a, "--force");
  const all = flag(a, "--all");
  const tty = flag(a, "--tty");
  const id = a.shift() ?? "";
  switch (verb) {
    case "create":
      await createContainer(ctx, { id, bundle, pidFile, consoleSocket });
      return 0;
    case "run":
      return runContainer(ctx, { id, bundle, pidFile, consoleSocket, detach });
    case "start":
      await startContainer(ctx, id);
      return 0;
    case "kill":
      await killContainer(ctx, id, a[0] ?? "SIGTERM", all);
      return 0;
    case "delete":
      await deleteContainer(ctx, id, force);
      return 0;
    case "state": {
      const store = new StateStore(root);
      const r = store.read(id);
      process.stdout.write(`${JSON.stringify({ id, status: containerStatus(store, r), pid: r.pid })}\n`);
      return 0;
    }
    case "ps": {
      // The guest's pids, as the agent lists them (the CLI's ps prints the stand-ins').
      const r = new StateStore(root).read(id);
      const { pids } = await sandboxCall({ root, id: r.sandboxId }, "ps", { containerId: id });
      process.stdout.write(`${JSON.stringify(pids)}\n`);
      return 0;
    }
    case "pause":
    case "resume":
      await (verb === "pause" ? pauseContainer(ctx, id) : resumeContainer(ctx, id));
      return 0;
    case "exec": {
      const store = new StateStore(root);
      const base = store.read(id).config.process;
      return execInContainer(ctx, {
        id,
        detach,
        pidFile,
        consoleSocket,
        process: { ...(base ?? { cwd: "/", user: { uid: 0, gid: 0 } }), terminal: tty, args: a },
      });
    }
    default:
      throw new Error(`unknown verb ${verb}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
