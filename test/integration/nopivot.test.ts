// `run --no-pivot` (hypervisor = none) against runc 1.1.5: may the workload mount a fresh procfs or
// sysfs? Under a chroot the host's full procfs and sysfs stay in the container's mount namespace, and
// the kernel lets a process that makes its own user namespace mount a fresh one when a full one is in
// its mount namespace; runc (msMoveRoot) detaches them first, so its no_pivot.bats expects "mount:
// permission denied" from `unshare -mrpf ... mount -t proc`. Each case runs with and without
// --no-pivot under both runtimes: the container's own capabilities without CAP_SYS_ADMIN, with it, with
// it in a user namespace, and a workload that makes its own user namespace. Every run happens inside a
// throw-away mount namespace whose / is made rshared and the container's rootfsPropagation "shared", so
// an unmount that propagated out of the container would show in that namespace's mount table, which
// must be unchanged.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { deleteRuncLeftovers, hostRuntimes, type Rt } from "../fixtures/parity";
import {
  cgroupDirs,
  cli,
  type Env,
  haveBusybox,
  type JsonSpec,
  makeBundle,
  makeEnv,
  mountsMentioning,
} from "../fixtures/probe/bundle";

const haveUnshare = spawnSync("unshare", ["-m", "--propagation", "private", "true"]).status === 0;
const skip = !haveBusybox()
  ? "busybox-static is not installed (apt-get install -y busybox-static)"
  : !haveUnshare
    ? "unshare -m (util-linux) does not work here"
    : false;

type Setup = "default caps" | "CAP_SYS_ADMIN" | "userns + CAP_SYS_ADMIN" | "workload's own userns";
const SETUPS: Setup[] = ["default caps", "CAP_SYS_ADMIN", "userns + CAP_SYS_ADMIN", "workload's own userns"];
const FS = ["proc", "sysfs"] as const;

/**
 * Whether the fresh mount succeeds, as measured with runc 1.1.5 on Linux 6.18. In a user namespace with
 * CAP_SYS_ADMIN both runtimes allow a fresh procfs (the container's /proc counts as fully visible: its
 * masks are not locked in the namespace that made them) and, under --no-pivot, a fresh sysfs (the host's
 * is locked there, so it can only be covered, and a cover does not hide it from the kernel's check).
 */
function allowed(fs: (typeof FS)[number], setup: Setup, pivot: boolean): boolean {
  if (setup === "CAP_SYS_ADMIN") return true;
  if (setup === "userns + CAP_SYS_ADMIN") return fs === "proc" || !pivot;
  return false;
}

describe("--no-pivot: a fresh procfs/sysfs in the container (hypervisor = none)", { skip }, () => {
  let env: Env;
  let runtimes: Rt[];
  let wrap: string;
  let seq = 0;
  before(() => {
    env = makeEnv();
    chmodSync(env.dir, 0o755); // a user namespace's root must reach the bundles
    runtimes = hostRuntimes(env);
    // $1: where to write the namespace's mount table before and after; the rest: the runtime's command.
    wrap = join(env.dir, "wrap.sh");
    writeFileSync(
      wrap,
      'out=$1; shift; mount --make-rshared / || exit 97\ncat /proc/self/mountinfo > "$out.before"\n"$@"; rc=$?\ncat /proc/self/mountinfo > "$out.after"\nexit $rc\n',
    );
  });
  after(() => {
    deleteRuncLeftovers(env);
    env.cleanup();
  });

  // Can the host make a user namespace at all? The workload's own one needs that.
  const nestedProbe = spawnSync("unshare", ["-Ur", "true"], { encoding: "utf8" });
  const nestedSkip =
    nestedProbe.status === 0 ? false : `unshare -Ur fails here: ${nestedProbe.stderr.trim()}`;

  for (const setup of SETUPS) {
    for (const fs of FS) {
      test(`${setup}: mount -t ${fs}`, { skip: setup === "workload's own userns" && nestedSkip }, () => {
        const hostBefore = readFileSync("/proc/self/mountinfo", "utf8");
        // one bundle for the four runs: the workload writes nothing in it
        const b = makeBundle(env, `${fs}-${SETUPS.indexOf(setup)}`, (s) => edit(s, setup, fs));
        for (const pivot of [true, false]) {
          const seen: Record<string, boolean> = {};
          for (const rt of runtimes) {
            const name = `${rt.name}-${fs}-${SETUPS.indexOf(setup)}-${pivot ? "pivot" : "nopivot"}`;
            const c = `np-${name}-${process.pid}-${seq++}`;
            const tables = join(env.dir, `${name}.mountinfo`);
            const r = cli(env, ["run", ...(pivot ? [] : ["--no-pivot"]), "--bundle", b, c], {
              bin: "unshare",
              globals: ["-m", "--propagation", "private", "sh", wrap, tables, rt.bin, ...rt.globals],
            });
            const what = `${rt.name}, ${pivot ? "pivot" : "--no-pivot"}: ${r.stdout}${r.stderr}`;
            assert.notEqual(r.code, 97, "the throw-away namespace was made");
            seen[rt.name] = r.code === 0;
            if (seen[rt.name]) assert.equal(r.stdout, "MOUNTED\n", what);
            else assert.match(`${r.stdout}${r.stderr}`, /mount: permission denied/, what);
            assert.equal(seen[rt.name], allowed(fs, setup, pivot), what);
            const table = (when: string) => ours(readFileSync(`${tables}.${when}`, "utf8"), env.dir);
            assert.deepEqual(table("after"), table("before"), `${what}: the caller's mount table changed`);
            assert.deepEqual(cgroupDirs(c), [], "no cgroup left");
            if (rt.name === "kata") assert.equal(existsSync(join(env.root, c)), false, "no state left");
          }
          if ("runc" in seen)
            assert.equal(seen.kata, seen.runc, `as runc, ${pivot ? "pivot" : "--no-pivot"}`);
        }
        assert.deepEqual(mountsMentioning(env.dir), [], "no mount left on the host");
        const hostAfter = readFileSync("/proc/self/mountinfo", "utf8");
        for (const line of procSys(hostBefore))
          assert.ok(hostAfter.includes(line), `host mount kept: ${line}`);
      });
    }
  }
});

/** The container's config for one case: the workload mounts a fresh `fs` on /tmp and says MOUNTED. */
function edit(s: JsonSpec, setup: Setup, fs: string): void {
  const mount = `mount -t ${fs} none /tmp && echo MOUNTED`;
  s.root.readonly = false;
  s.linux.rootfsPropagation = "shared";
  const caps = s.process.capabilities;
  const add = (cap: string) => {
    for (const set of ["bounding", "effective", "permitted"]) caps[set].push(cap);
  };
  if (setup === "workload's own userns") {
    // runc's no_pivot.bats: writing "0 0 1" to uid_map needs CAP_SETFCAP (Linux 5.12+); -n so that
    // sysfs may be mounted (it needs a network namespace the new user namespace owns).
    add("CAP_SETFCAP");
    s.process.args = ["unshare", "-mrpfn", "sh", "-c", mount];
  } else {
    if (setup !== "default caps") add("CAP_SYS_ADMIN");
    s.process.args = ["sh", "-c", mount];
  }
  if (setup === "userns + CAP_SYS_ADMIN") {
    s.linux.namespaces.push({ type: "user" });
    s.linux.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
    s.linux.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
  }
}

/** The host's own /proc and /sys mount lines, to check that neither went away. */
function procSys(mountinfo: string): string[] {
  const lines = mountinfo.split("\n").filter((l) => / (\/proc|\/sys) .* - (proc|sysfs) /.test(l));
  assert.ok(lines.length >= 2, "the host has /proc and /sys");
  return lines;
}

/**
 * The lines of a mount table that other tests cannot change: /, /proc, /sys, /dev and below, and ours.
 * (Another test's mount in the throw-away namespace goes when that test removes its mount point.)
 */
function ours(mountinfo: string, dir: string): string[] {
  const lines = mountinfo.split("\n").filter((l) => {
    const mp = l.split(" ")[4] ?? "";
    return mp === "/" || /^\/(proc|sys|dev)(\/|$)/.test(mp) || mp.startsWith(`${dir}/`);
  });
  assert.ok(
    lines.some((l) => / \/proc .* - proc /.test(l)),
    "the table has /proc",
  );
  return lines;
}
