// The shim round trips of bench/shim.sh (see there). usage: node --import tsx bench/shim.ts [-n N] [host|vm]
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { packJsonAny, SPEC_TYPE_URLS, TtrpcClient } from "../src/ttrpc";
import { REPO } from "../test/helpers";
import {
  BUSYBOX_IMAGE,
  CRI_NAMESPACE,
  criPrerequisites,
  findKataShim,
  startCriContainerd,
} from "../test/support/cri";
import { takeRuns } from "./args";

const argv = process.argv.slice(2);
const RUNS = takeRuns(argv, 50);
const MODE = argv[0] ?? "host";
const TASK = "containerd.task.v2.Task";
const ID = "bench-shim";

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  const f = (x: number) => x.toFixed(x < 10 ? 2 : 0);
  return `${f(at(0.5))} | ${f(at(0.9))} | ${f(s[0]!)}-${f(s[s.length - 1]!)}`;
}

async function timeAsync(fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}

function timeProcess(args: string[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    const r = spawnSync(join(REPO, "bin", "kata-ts"), args, { encoding: "utf8" });
    out.push(performance.now() - t);
    if (r.status !== 0) throw new Error(`kata-ts ${args.join(" ")}: exit ${r.status}: ${r.stderr.trim()}`);
  }
  return out;
}

async function main(): Promise<void> {
  if (MODE !== "host" && MODE !== "vm") throw new Error(`mode is host or vm, not ${MODE}`);
  for (const f of [criPrerequisites(), findKataShim()]) if (!f.ok) throw new Error(f.reason);
  const base = mkdtempSync(join(tmpdir(), "kata-ts-bench-shim-"));
  const shimDir = join(base, "shim");
  const config = join(base, "config.toml");
  writeFileSync(config, MODE === "host" ? '[runtime]\nhypervisor = "none"\n' : "");
  const cri = await startCriContainerd(join(base, "c"), { env: { KATA_TS_SHIM_DIR: shimDir } });
  const ctr = (...args: string[]) => {
    const r = spawnSync("ctr", ["--address", cri.socket, "-n", CRI_NAMESPACE, ...args], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`ctr ${args.join(" ")}: ${r.stderr.trim()}`);
  };
  let client: TtrpcClient | undefined;
  try {
    ctr(
      "run",
      "-d",
      "--fifo-dir",
      join(base, "fifo"),
      "--runtime",
      "io.containerd.kata-ts.v2",
      "--runtime-config-path",
      config,
      BUSYBOX_IMAGE,
      ID,
      "sleep",
      "1000",
    );
    const bundle = join(cri.base, "state", "io.containerd.runtime.v2.task", CRI_NAMESPACE, ID);
    const address = readFileSync(join(bundle, "address"), "utf8")
      .trim()
      .replace(/^unix:\/\//, "");
    client = await TtrpcClient.connect(address);
    const c = client;
    const call = (method: string, req: string, res: string, obj: object) =>
      c.call(TASK, method, `containerd.task.v2.${req}`, res, obj);
    const EMPTY = "google.protobuf.Empty";
    let execs = 0;
    const spec = packJsonAny(SPEC_TYPE_URLS.Process, {
      args: ["true"],
      cwd: "/",
      env: ["PATH=/bin:/usr/bin"],
      user: { uid: 0, gid: 0 },
    });
    const execCycle = async () => {
      const execId = `x${++execs}`;
      await call("Exec", "ExecProcessRequest", EMPTY, { id: ID, exec_id: execId, spec });
      await call("Start", "StartRequest", "containerd.task.v2.StartResponse", { id: ID, exec_id: execId });
      await call("Wait", "WaitRequest", "containerd.task.v2.WaitResponse", { id: ID, exec_id: execId });
      await call("Delete", "DeleteRequest", "containerd.task.v2.DeleteResponse", { id: ID, exec_id: execId });
    };
    // One of each first: connections, caches and the guest's page cache warm, as in a running pod.
    await call("State", "StateRequest", "containerd.task.v2.StateResponse", { id: ID });
    await execCycle();
    const root = join(shimDir, "state", CRI_NAMESPACE);
    const rows: [string, number[]][] = [
      [
        "shim State",
        await timeAsync(() => call("State", "StateRequest", "containerd.task.v2.StateResponse", { id: ID })),
      ],
      [
        "shim Pids",
        await timeAsync(() => call("Pids", "PidsRequest", "containerd.task.v2.PidsResponse", { id: ID })),
      ],
      [
        "shim Exec (registers the process)",
        await timeAsync(() =>
          call("Exec", "ExecProcessRequest", EMPTY, { id: ID, exec_id: `r${++execs}`, spec }),
        ),
      ],
      ["shim Exec+Start+Wait+Delete of `true`", await timeAsync(execCycle)],
      ["`kata-ts state` process", timeProcess(["--root", root, "state", ID])],
      ["`kata-ts ps` process", timeProcess(["--root", root, "ps", ID])],
      ["`kata-ts exec ... true` process", timeProcess(["--root", root, "exec", ID, "true"])],
    ];
    console.log(
      `containerd-shim-kata-ts-v2, ${MODE} mode, ${RUNS} calls each; load average ${loadavg()
        .map((x) => x.toFixed(1))
        .join(" ")}\n`,
    );
    console.log("| measure | median ms | p90 ms | min-max ms |\n|---|---:|---:|---|");
    for (const [name, xs] of rows) console.log(`| ${name} | ${stats(xs)} |`);
  } finally {
    client?.close();
    spawnSync("ctr", ["--address", cri.socket, "-n", CRI_NAMESPACE, "task", "kill", "-s", "KILL", ID]);
    for (let i = 0; i < 50; i++) {
      const r = spawnSync("ctr", ["--address", cri.socket, "-n", CRI_NAMESPACE, "task", "delete", ID]);
      if (r.status === 0 || /not found/.test(String(r.stderr))) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    spawnSync("ctr", ["--address", cri.socket, "-n", CRI_NAMESPACE, "container", "rm", ID]);
    await cri.stop();
    rmSync(base, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`bench/shim: ${(e as Error).message}`);
    process.exit(1);
  },
);
