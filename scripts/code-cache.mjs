// Writes dist/kata-ts.cjs.v8cache, the V8 code cache bin/run-cached.cjs gives the CLI bundle (and the
// shim's, writeShimCodeCache below).
//
// V8 puts in a code cache only the functions compiled by the time it is written, and it compiles a
// function the first time it runs: a cache made from `list` alone left every function of create, start
// and delete to be compiled at each call (~14 ms of a host-mode `run`). So the cache is trained: each
// call below runs with KATA_TS_WRITE_CODE_CACHE=1, starts from the cache the previous one wrote and
// adds what it compiled. As root, with the helper built and a static /bin/busybox, the calls are a
// host-mode container's whole life (spec, run, create, start, state, exec, ps, kill, delete) in a
// temporary state root, bundle and configuration, all removed afterwards; otherwise `list` alone.
// A call that fails only trains less: the cache is an optimisation, never an input. The container ids
// name the building process (kt-code-cache-PID), so a leak would be traceable to it.
import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(REPO, "bin", "kata-ts");
const SHIM = join(REPO, "bin", "containerd-shim-kata-ts-v2");

/** Returns the calls made, each with whether it succeeded. `work`: the temporary directory to use. */
export function writeCodeCache({ work = mkdtempSync(join(tmpdir(), "kata-ts-build-")) } = {}) {
  mkdirSync(work, { recursive: true });
  const root = join(work, "root");
  const config = join(work, "kata.toml");
  const bundle = join(work, "bundle");
  const id = `kt-code-cache-${process.pid}`;
  writeFileSync(config, '[runtime]\nhypervisor = "none"\n');
  const calls = [];
  const cli = (...args) => {
    const ok = writingCall(CLI, ["--root", root, "--config", config, ...args]);
    calls.push({ args, ok });
    return ok;
  };
  rmSync(cacheFile("kata-ts"), { force: true });
  try {
    if (process.getuid?.() === 0 && existsSync("/bin/busybox")) trainOnAContainer(cli, bundle, id);
    cli("list");
  } finally {
    for (const c of [`${id}-run`, id]) {
      spawnSync(CLI, ["--root", root, "--config", config, "delete", "--force", c], { stdio: "ignore" });
    }
    rmSync(work, { recursive: true, force: true });
  }
  return calls;
}

function trainOnAContainer(cli, bundle, id) {
  mkdirSync(join(bundle, "rootfs", "bin"), { recursive: true });
  copyFileSync("/bin/busybox", join(bundle, "rootfs", "bin", "busybox"));
  if (!cli("spec", "--bundle", bundle)) return;
  const spec = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8"));
  const withArgs = (args) =>
    writeFileSync(
      join(bundle, "config.json"),
      JSON.stringify({ ...spec, process: { ...spec.process, terminal: false, args } }),
    );
  withArgs(["/bin/busybox", "true"]);
  if (!cli("run", "--bundle", bundle, `${id}-run`)) return;
  withArgs(["/bin/busybox", "sleep", "60"]);
  if (!cli("create", "--bundle", bundle, id) || !cli("start", id)) return;
  cli("state", id);
  cli("exec", id, "/bin/busybox", "true");
  cli("ps", id);
  cli("kill", id, "KILL");
  cli("delete", "--force", id);
}

/**
 * Writes dist/containerd-shim-kata-ts-v2.cjs.v8cache from one `-v`. containerd starts the shim twice per
 * pod (`start`, which spawns the daemon, and the daemon), and most of each start is compiling the
 * bundle's top level: measured `-v` 78.2 → 57.3 ms with the cache (hyperfine, 30 runs each). The
 * daemon's own paths need containerd to train on; they compile once per pod, in a long-lived process.
 * Returns whether the call succeeded.
 */
export function writeShimCodeCache() {
  rmSync(cacheFile("containerd-shim-kata-ts-v2"), { force: true });
  return writingCall(SHIM, ["-v"]);
}

/** The code cache bin/run-cached.cjs reads for dist/NAME.cjs. */
function cacheFile(name) {
  return join(REPO, "dist", `${name}.cjs.v8cache`);
}

/** One call of a launcher that (re)writes its bundle's code cache at exit, adding what it compiled. */
function writingCall(program, args) {
  const r = spawnSync(program, args, {
    env: { ...process.env, KATA_TS_WRITE_CODE_CACHE: "1" },
    stdio: "ignore",
    timeout: 20_000,
  });
  return r.status === 0;
}
