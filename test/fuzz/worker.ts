// The fuzz worker: runs inside throw-away namespaces (mount with private propagation, uts, ipc, net:
// the driver starts it under `unshare -m -u -i -n --propagation private`) so that a kata-ts defect that
// mounts, pivots, renames the host or writes sysctls in the caller's namespaces damages only this
// worker, which the driver then replaces. Everything a case touches lives on a tmpfs mounted here.
//
// Protocol (JSON lines): stdin gets {index, token, case, mode, config}; stdout answers
// {index, steps, violations}. The first line out is {ready: true, pid}.
import { spawnSync } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { sandboxPaths } from "../../src/sandbox/paths";
import { findLeaks, snapshotHost } from "../leaks";
import { applyMutations, type FuzzCase, fill, type Json, SYSCTL_KEYS, type Verb } from "./gen";
import { checkOutput, type StepResult } from "./output";

const REPO = resolve(__dirname, "..", "..");
const BIN = join(REPO, "bin", "kata-ts");

export interface CaseRequest {
  index: number;
  token: string;
  case: FuzzCase;
  mode: "host" | "vm";
  /** configuration.toml for kata-ts */
  config: string;
}

export interface CaseReply {
  index: number;
  steps: StepResult[];
  violations: string[];
  /** time spent outside the CLI calls (setup, snapshots, checks) */
  overheadMs?: number;
}

const base = process.argv[2];
if (!base) throw new Error("usage: worker.ts BASE_DIR");

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
}

// The tmpfs: a superblock of its own, so even a remount by a defect cannot touch a host filesystem.
mkdirSync(base, { recursive: true });
sh("mount", ["-t", "tmpfs", "-o", "size=512m,mode=755", "kata-fuzz", base]);
process.chdir(base);

const TEMPLATE = join(base, "template");
function buildTemplate(): void {
  for (const d of ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "mnt", "run"])
    mkdirSync(join(TEMPLATE, d), { recursive: true });
  copyFileSync("/bin/busybox", join(TEMPLATE, "bin", "busybox"));
  sh("chroot", [TEMPLATE, "/bin/busybox", "--install", "-s", "/bin"]);
  writeFileSync(
    join(TEMPLATE, "etc", "passwd"),
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
  );
  writeFileSync(join(TEMPLATE, "etc", "group"), "root:x:0:\nnogroup:x:65534:\n");
}
buildTemplate();

/** runc's default spec (from `kata-ts spec`), no terminal, a long-running workload. */
function baseSpec(): Json {
  const dir = join(base, "spec");
  mkdirSync(dir, { recursive: true });
  sh(BIN, ["spec", "--bundle", dir]);
  const s = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  s.process.terminal = false;
  s.process.args = ["sleep", "30"];
  return s;
}
const BASE_SPEC = baseSpec();

// --- snapshots of what must not change ----------------------------------------------------------

/** A tree's files with type, mode, owner, size and (small files) content. */
function treeSnapshot(dir: string, skip: string[] = []): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string, depth: number) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(d, n);
      if (skip.includes(p)) continue;
      let st: import("node:fs").Stats;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      let extra = "";
      if (st.isSymbolicLink()) extra = readlinkSync(p);
      else if (st.isFile() && st.size < 4096) extra = readFileSync(p, "utf8");
      out.set(p, `${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.rdev} ${extra}`);
      if (st.isDirectory() && depth < 8) walk(p, depth + 1);
    }
  };
  walk(dir, 0);
  return out;
}

function diffTrees(what: string, a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of a) {
    const w = b.get(k);
    if (w === undefined) out.push(`${what}: ${k} removed`);
    else if (w !== v) out.push(`${what}: ${k} changed (${v.slice(0, 60)} -> ${w.slice(0, 60)})`);
  }
  for (const k of b.keys()) if (!a.has(k)) out.push(`${what}: ${k} created`);
  return out;
}

function readSysctl(key: string): string | undefined {
  try {
    return readFileSync(`/proc/sys/${key.replaceAll(".", "/")}`, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** The caller's (this worker's) own namespaced values: hostname, domainname, sysctls, links. */
function callerFacts(): Map<string, string> {
  const m = new Map<string, string>();
  for (const k of [...SYSCTL_KEYS, "kernel.hostname"]) m.set(`sysctl ${k}`, readSysctl(k) ?? "<none>");
  const links = spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).stdout ?? "";
  m.set(
    "links",
    links
      .replace(/\d+: /g, "")
      .split("\n")
      .map((l) => l.split(":")[0])
      .sort()
      .join(" "),
  );
  m.set("cwd", process.cwd());
  return m;
}

// --- running the CLI -----------------------------------------------------------------------------

function runCli(
  args: string[],
  opts: { cwd: string; out: string; timeoutMs: number },
): {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  ms: number;
  vanished: boolean;
} {
  const o = `${opts.out}.out`;
  const e = `${opts.out}.err`;
  const fo = openSync(o, "w");
  const fe = openSync(e, "w");
  const t0 = Date.now();
  let r: ReturnType<typeof spawnSync>;
  try {
    r = spawnSync(BIN, args, { cwd: opts.cwd, stdio: ["ignore", fo, fe], timeout: opts.timeoutMs });
  } finally {
    closeSync(fo);
    closeSync(fe);
  }
  const read = (f: string) => {
    try {
      return readFileSync(f, "utf8");
    } catch {
      return undefined;
    }
  };
  const stdout = read(o);
  const stderr = read(e);
  const res = {
    code: r.status,
    signal: r.signal,
    stdout: stdout ?? "",
    stderr: stderr ?? "",
    ms: Date.now() - t0,
    // The call removed its own output files: it deleted a directory outside its state.
    vanished: stdout === undefined || stderr === undefined,
  };
  rmSync(o, { force: true });
  rmSync(e, { force: true });
  return res;
}

function verbArgs(v: Verb, c: FuzzCase, bundle: string, out: string): { args: string[]; cwd?: string } {
  const create = (verb: string, extra: string[] = []) => ({
    args: [verb, ...extra, ...(c.bundleFromCwd ? [] : ["--bundle", bundle]), ...c.createFlags, c.id],
    cwd: c.bundleFromCwd ? bundle : undefined,
  });
  switch (v) {
    case "create":
    case "create-again":
      return create("create");
    case "run-detach":
      return create("run", ["--detach"]);
    case "exec": {
      if ("processJson" in c.exec) {
        const file = join(out, "process.json");
        writeFileSync(file, JSON.stringify(c.exec.processJson));
        return { args: ["exec", "--process", file, ...c.exec.flags, c.id] };
      }
      return { args: ["exec", ...c.exec.flags, c.id, ...c.exec.args] };
    }
    case "kill":
      return { args: ["kill", ...c.kill.flags, c.id, c.kill.signal] };
    case "delete":
      return { args: ["delete", "--force", c.id] };
    default:
      return { args: [v, c.id] };
  }
}

// --- one case --------------------------------------------------------------------------------------

function initPid(root: string, id: string): number | undefined {
  try {
    return JSON.parse(readFileSync(join(root, id, "state.json"), "utf8")).pid;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

function killPids(pids: number[]): void {
  for (const p of pids) {
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  }
}

/** Leftovers of a failed case are removed so the next case starts clean (and reported first). */
function scrub(caseDir: string, root: string, token: string, globals: string[]): void {
  for (const name of safeList(root)) {
    if (name.startsWith(".")) continue;
    spawnSync(BIN, [...globals, "delete", "--force", name], { stdio: "ignore", timeout: 60_000 });
  }
  const leaks = findLeaks(snapshotHost(), { root, bundle: caseDir, id: token });
  killPids(
    leaks
      .map((l) => /^process (\d+)/.exec(l)?.[1])
      .filter(Boolean)
      .map(Number),
  );
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((m) => m && (m === caseDir || m.startsWith(`${caseDir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) spawnSync("umount", ["-l", m], { stdio: "ignore" });
  for (const l of leaks) {
    const cg = /^cgroup (.*)$/.exec(l)?.[1];
    if (cg) rmCgroup(cg);
  }
  rmSync(caseDir, { recursive: true, force: true });
}

function rmCgroup(dir: string): void {
  for (const e of safeList(dir)) {
    try {
      if (lstatSync(join(dir, e)).isDirectory()) rmCgroup(join(dir, e));
    } catch {}
  }
  try {
    rmdirSync(dir);
  } catch {}
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function runCase(req: CaseRequest): CaseReply {
  const c = fill(req.case, join(base, `c${req.index}`), req.token);
  const caseDir = join(base, `c${req.index}`);
  const moat = join(caseDir, "moat");
  const bundle = join(moat, "a", "b", "c", "bundle");
  const rootfs = join(bundle, "rootfs");
  const src = join(caseDir, "host", "src");
  const out = join(caseDir, "host", "out");
  const root = join(caseDir, "state");
  const t0 = Date.now();
  mkdirSync(join(src, "dir"), { recursive: true });
  mkdirSync(out, { recursive: true });
  mkdirSync(join(moat, "target"), { recursive: true });
  writeFileSync(join(src, "file"), "host file\n");
  writeFileSync(join(src, "dir", "inner"), "inner\n");
  symlinkSync(join(src, "dir"), join(src, "link"));
  mkdirSync(bundle, { recursive: true });
  sh("cp", ["-al", TEMPLATE, rootfs]);
  for (const [p, target] of c.symlinks) {
    const at = join(rootfs, p);
    rmSync(at, { recursive: true, force: true });
    mkdirSync(join(at, ".."), { recursive: true });
    symlinkSync(target, at);
  }
  const spec = fill(applyMutations(BASE_SPEC, (req.case.spec as Json).mutations), caseDir, req.token);
  writeFileSync(join(bundle, "config.json"), JSON.stringify(spec, null, 1));

  // root.path may name another directory of the case (a mount source, through a symlink): that one is
  // the container's rootfs then, and the runtime may make mount points in it.
  let ownRoot = rootfs;
  try {
    ownRoot = realpathSync(resolve(bundle, String(spec?.root?.path ?? "rootfs")));
  } catch {}
  const watched = () =>
    new Map([
      ...treeSnapshot(src, [ownRoot]),
      ...treeSnapshot(moat, [bundle, ownRoot]),
      ...treeSnapshot(bundle, [rootfs]),
      ...treeSnapshot(base, [join(base, "template"), join(base, "spec"), caseDir]),
    ]);
  const before = { files: watched(), facts: callerFacts(), host: snapshotHost() };
  const globals = ["--root", root, "--config", req.config, ...c.globals];
  const timeoutMs = req.mode === "vm" ? 240_000 : 30_000;
  const debugLog = c.globals.includes("--debug") && !c.globals.includes("--log");
  const steps: StepResult[] = [];
  const violations: string[] = [];
  const verbs: Verb[] = [...c.verbs, "delete"];
  let created = false;
  for (const [i, v] of verbs.entries()) {
    // Once a create has failed, the verbs before the final delete only say "does not exist": skipped.
    if (
      !created &&
      i > 0 &&
      v !== "delete" &&
      steps.some((s) => s.verb === "create" || s.verb === "run-detach")
    )
      continue;
    const { args: raw, cwd } = verbArgs(v, c, bundle, out);
    // argv cannot carry a NUL byte (execve ends the string there): pass what a caller could.
    const args = raw.map((a) => a.split("\0")[0]);
    const r = runCli([...globals, ...args], { cwd: cwd ?? out, out: join(caseDir, `step${i}`), timeoutMs });
    const { vanished, ...rest } = r;
    if (vanished) {
      violations.push(`${v}: the case directory ${caseDir} vanished (removed outside the state dir)`);
      mkdirSync(caseDir, { recursive: true });
    }
    const step: StepResult = { verb: v, args: [...globals, ...args], ...rest };
    steps.push(step);
    violations.push(...checkOutput(step, { timeoutMs, debugLog }));
    if ((v === "create" || v === "run-detach") && r.code === 0) created = true;
    if (v === "create" && r.code === 0) {
      // A created container waits on its exec fifo: an init that already died makes `start` impossible.
      const pid = initPid(root, c.id);
      if (!pid || !alive(pid))
        violations.push(`create exited 0 but the container's init is gone (pid ${pid})`);
    }
    if (v === "create-again" && r.code === 0) violations.push("create of an existing id succeeded");
  }

  // After `delete --force`: nothing of the container is left.
  const left = safeList(root).filter((n) => !n.startsWith("."));
  if (left.length) violations.push(`state left under --root: ${left.join(", ")}`);
  // /run/netns is shared with the other programs on this machine; a netns kata-ts bind-mounted shows
  // in the caller's mount table instead (checked from outside by the driver).
  for (const l of findLeaks(before.host, { root, bundle: caseDir, id: req.token }))
    if (!l.startsWith("netns ")) violations.push(`leak: ${l}`);
  // VM mode: a sandbox whose directory is too deep for socket paths keeps its sockets under
  // /run/kata-ts/s/<hash>: that directory must go too.
  for (const sid of [c.id, ...Object.values((spec?.annotations ?? {}) as Record<string, unknown>)]) {
    if (typeof sid !== "string" || !sid || sid.includes("/") || sid === "." || sid === "..") continue;
    const p = sandboxPaths(root, sid);
    if (p.sockDir !== p.dir && existsSync(p.sockDir)) violations.push(`leak: socket dir ${p.sockDir}`);
  }
  const after = { files: watched(), facts: callerFacts() };
  // Files the caller named (--pid-file, --log; relative ones against the call's cwd) may appear.
  const named = new Set<string>();
  for (const step of steps)
    step.args.forEach((a, i) => {
      if (i > 0 && (step.args[i - 1] === "--pid-file" || step.args[i - 1] === "--log"))
        named.add(resolve(c.bundleFromCwd && /^(create|run)/.test(step.verb) ? bundle : out, a));
    });
  violations.push(
    ...diffTrees("host file", before.files, after.files).filter((v) => !named.has(v.split(" ")[2])),
  );
  for (const [k, v] of before.facts) {
    const w = after.facts.get(k);
    if (w !== v) violations.push(`caller's ${k} changed: ${JSON.stringify(v)} -> ${JSON.stringify(w)}`);
  }
  scrub(caseDir, root, req.token, globals);
  const stepMs = steps.reduce((a, s) => a + s.ms, 0);
  return { index: req.index, steps, violations, overheadMs: Date.now() - t0 - stepMs };
}

process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const req = JSON.parse(line) as CaseRequest;
  let reply: CaseReply;
  try {
    reply = runCase(req);
  } catch (err) {
    reply = { index: req.index, steps: [], violations: [`worker error: ${(err as Error).stack}`] };
    rmSync(join(base, `c${req.index}`), { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
});
rl.on("close", () => {
  spawnSync("umount", ["-l", base]);
  process.exit(0);
});
