// One driver per engine CLI. Every driver selects the runtime registered by setup.sh as "kata-ts":
//   podman: containers.conf `runtime = "kata-ts"` ([engine.runtimes] kata-ts = [BASE/bin/kata-ts])
//   ctr:    --runc-binary BASE/bin/kata-ts --runc-root BASE/state/ctr (shim io.containerd.runc.v2)
//   docker: --runtime kata-ts (daemon.json "runtimes"); dockerd rejects absolute paths here
import { existsSync } from "node:fs";
import { join } from "node:path";
import { CTR_NAMESPACE, check, IMAGE, type Result, sh, shAsync, shTty, waitFor } from "./harness";

export type EngineName = "podman" | "ctr" | "docker";
export type Status = "running" | "paused" | "exited" | "unknown";

export interface Driver {
  name: EngineName;
  /** Foreground `run --rm`; `tty` gives the container a terminal (-it / -t). */
  run(cmd: string[], opts?: { tty?: boolean; id?: string }): Result;
  /** Same, in the background (for kill scenarios where the engine reports the exit code). */
  runAsync(id: string, cmd: string[]): { done: Promise<Result> };
  /** Detached container `id` running `cmd`. */
  start(id: string, cmd: string[]): void;
  exec(id: string, cmd: string[], opts?: { tty?: boolean }): Result;
  pid(id: string): number;
  status(id: string): Status;
  pause(id: string): void;
  resume(id: string): void;
  kill(id: string, signal: "KILL" | "TERM"): void;
  /** Graceful stop (SIGTERM, then SIGKILL after `timeoutS`); undefined if the CLI has none. */
  stop?(id: string, timeoutS: number): Result;
  /** Exit code of a detached container, waiting for it to exit. */
  wait?(id: string): Promise<number>;
  /** Memory limit update; undefined if the CLI has none. */
  updateMemory?(id: string, bytes: number): Result;
  /** Removes the container whatever its state. */
  remove(id: string): void;
  /** Containers the engine still knows. */
  list(): string[];
}

/** Which engines are installed here, and why one is not. */
export function missingBinaries(name: EngineName): string | undefined {
  const need: Record<EngineName, string[]> = {
    podman: ["podman", "conmon"],
    ctr: ["containerd", "ctr", "containerd-shim-runc-v2"],
    docker: ["dockerd", "docker"],
  };
  const missing = need[name].filter((b) => sh("sh", ["-c", `command -v ${b}`]).code !== 0);
  return missing.length ? `${missing.join(", ")} not installed (test/engines/install-deps.sh)` : undefined;
}

export function dockerCli(): string {
  return (
    process.env.KATA_TS_ENGINE_DOCKER_CLI ?? (existsSync("/usr/bin/docker") ? "/usr/bin/docker" : "docker")
  );
}

function inspect(cli: string, env: NodeJS.ProcessEnv, id: string, fmt: string): string {
  return check(sh(cli, ["inspect", "-f", fmt, id], { env }), `${cli} inspect ${id}`).stdout.trim();
}

/** podman and docker share nearly all verbs. */
function dockerLike(name: "podman" | "docker", cli: string, env: NodeJS.ProcessEnv): Driver {
  // docker needs the runtime by name and no network; podman gets both from containers.conf.
  const runFlags = name === "docker" ? ["--runtime", "kata-ts", "--network", "none"] : [];
  const d: Driver = {
    name,
    run(cmd, opts = {}) {
      const args = ["run", "--rm", ...runFlags, ...(opts.id ? ["--name", opts.id] : [])];
      if (opts.tty) return shTty(cli, [...args, "-it", IMAGE, ...cmd], env);
      return sh(cli, [...args, IMAGE, ...cmd], { env });
    },
    runAsync(id, cmd) {
      return shAsync(cli, ["run", "--rm", ...runFlags, "--name", id, IMAGE, ...cmd], env);
    },
    start(id, cmd) {
      check(sh(cli, ["run", "-d", ...runFlags, "--name", id, IMAGE, ...cmd], { env }), `${name} run -d`);
    },
    exec(id, cmd, opts = {}) {
      if (opts.tty) return shTty(cli, ["exec", "-it", id, ...cmd], env);
      return sh(cli, ["exec", id, ...cmd], { env });
    },
    pid(id) {
      return Number(inspect(cli, env, id, "{{.State.Pid}}"));
    },
    status(id) {
      const s = inspect(cli, env, id, "{{.State.Status}}");
      return s === "running" || s === "paused" || s === "exited" ? s : "unknown";
    },
    pause(id) {
      check(sh(cli, ["pause", id], { env }), `${name} pause`);
    },
    resume(id) {
      check(sh(cli, ["unpause", id], { env }), `${name} unpause`);
    },
    kill(id, signal) {
      check(sh(cli, ["kill", "-s", signal, id], { env }), `${name} kill`);
    },
    stop(id, timeoutS) {
      return sh(cli, ["stop", "-t", String(timeoutS), id], { env });
    },
    async wait(id) {
      const r = check(sh(cli, ["wait", id], { env }), `${name} wait`);
      return Number(r.stdout.trim().split("\n").pop());
    },
    updateMemory(id, bytes) {
      // docker refuses a memory limit above the (implicit) swap limit unless both are given
      const swap = name === "docker" ? ["--memory-swap", String(bytes * 2)] : [];
      return sh(cli, ["update", "--memory", String(bytes), ...swap, id], { env });
    },
    remove(id) {
      // podman rm -f waits the stop timeout (10 s) for a SIGTERM-ignoring init; -t 0 kills at once
      sh(cli, ["rm", "-f", ...(name === "podman" ? ["-t", "0"] : []), id], { env });
    },
    list() {
      return check(sh(cli, ["ps", "-aq"], { env }), `${name} ps`)
        .stdout.split("\n")
        .filter(Boolean);
    },
  };
  return d;
}

export function podman(env: NodeJS.ProcessEnv): Driver {
  return dockerLike("podman", "podman", env);
}

export function docker(env: NodeJS.ProcessEnv): Driver {
  return dockerLike("docker", dockerCli(), env);
}

export function ctr(env: NodeJS.ProcessEnv, base: string): Driver {
  const wrap = join(base, "bin", "kata-ts");
  const runFlags = ["--runc-binary", wrap, "--runc-root", join(base, "state", "ctr")];
  const c = (args: string[]) => sh("ctr", ["-n", CTR_NAMESPACE, ...args], { env });
  let execSeq = 0;
  const task = (id: string): { pid: number; status: string } | undefined => {
    for (const line of check(c(["task", "ls"]), "ctr task ls")
      .stdout.split("\n")
      .slice(1)) {
      const [tid, pid, status] = line.trim().split(/\s+/);
      if (tid === id) return { pid: Number(pid), status: status.toLowerCase() };
    }
    return undefined;
  };
  return {
    name: "ctr",
    run(cmd, opts = {}) {
      const id = opts.id ?? `kt-run-${process.pid}-${++execSeq}`;
      const args = ["-n", CTR_NAMESPACE, "run", "--rm", ...runFlags, ...(opts.tty ? ["-t"] : [])];
      if (opts.tty) return shTty("ctr", [...args, IMAGE, id, ...cmd], env);
      return sh("ctr", [...args, IMAGE, id, ...cmd], { env });
    },
    runAsync(id, cmd) {
      return shAsync("ctr", ["-n", CTR_NAMESPACE, "run", "--rm", ...runFlags, IMAGE, id, ...cmd], env);
    },
    start(id, cmd) {
      check(c(["run", "-d", ...runFlags, IMAGE, id, ...cmd]), "ctr run -d");
    },
    exec(id, cmd, opts = {}) {
      const args = [
        "-n",
        CTR_NAMESPACE,
        "task",
        "exec",
        "--exec-id",
        `e${++execSeq}`,
        ...(opts.tty ? ["-t"] : []),
      ];
      if (opts.tty) return shTty("ctr", [...args, id, ...cmd], env);
      return sh("ctr", [...args, id, ...cmd], { env });
    },
    pid(id) {
      const t = task(id);
      if (!t) throw new Error(`ctr has no task ${id}`);
      return t.pid;
    },
    status(id) {
      const s = task(id)?.status;
      return s === "running" || s === "paused" ? s : s === "stopped" ? "exited" : "unknown";
    },
    pause(id) {
      check(c(["task", "pause", id]), "ctr task pause");
    },
    resume(id) {
      check(c(["task", "resume", id]), "ctr task resume");
    },
    kill(id, signal) {
      check(c(["task", "kill", "-s", `SIG${signal}`, id]), "ctr task kill");
    },
    // ctr 1.6 has neither `stop`, `wait` with an exit code, nor `task update`.
    remove(id) {
      if (task(id)) c(["task", "rm", "-f", id]);
      c(["container", "rm", id]);
    },
    list() {
      return check(c(["container", "ls", "-q"]), "ctr container ls")
        .stdout.split("\n")
        .filter(Boolean);
    },
  };
}

/** Waits until the engine reports `status` for `id`. */
export function waitStatus(d: Driver, id: string, status: Status, timeoutMs = 10_000): Promise<Status> {
  return waitFor(
    `${d.name} ${id} to be ${status}`,
    () => (d.status(id) === status ? status : undefined),
    timeoutMs,
  );
}
