// A test-only entry that drives the VM-mode lifecycle (src/runtime/vm.ts) the way the CLI verbs will
// once they dispatch to it: `tsx src/sandbox/vmcli.ts --root R <verb> ...`. Exit codes and one-line
// errors on stderr follow the CLI's conventions. Not bundled, not shipped.
import type { RuntimeContext } from "../runtime/options";
import { containerStatus } from "../runtime/status";
import { StateStore } from "../runtime/store";
import { vmCreate, vmDelete, vmExec, vmKill, vmPause, vmPs, vmRun, vmStart } from "../runtime/vm";

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
      await vmCreate(ctx, { id, bundle, pidFile, consoleSocket });
      return 0;
    case "run":
      return vmRun(ctx, { id, bundle, pidFile, consoleSocket, detach });
    case "start":
      await vmStart(ctx, id);
      return 0;
    case "kill":
      await vmKill(ctx, id, a[0] ?? "SIGTERM", all);
      return 0;
    case "delete":
      await vmDelete(ctx, id, force);
      return 0;
    case "state": {
      const store = new StateStore(root);
      const r = store.read(id);
      process.stdout.write(`${JSON.stringify({ id, status: containerStatus(store, r), pid: r.pid })}\n`);
      return 0;
    }
    case "ps":
      process.stdout.write(`${JSON.stringify(await vmPs(ctx, id))}\n`);
      return 0;
    case "pause":
    case "resume":
      await vmPause(ctx, id, verb === "pause");
      return 0;
    case "exec": {
      const store = new StateStore(root);
      const base = store.read(id).config.process;
      return vmExec(ctx, {
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
