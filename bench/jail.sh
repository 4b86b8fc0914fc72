#!/bin/bash
# What the VMM jail costs a cold run, side by side in one run:
#   (a) `kata-ts run` of busybox `true` in a new VM (cold), jailed (the shipped defaults: seccompsandbox,
#       rootless, jail_mount_namespace, sandbox_cgroup_only) and unjailed (all four off), alternating
#       jailed/unjailed each round so that a host whose load changes meanwhile weighs on both alike;
#   (b) the jailer by itself: kata-ts-jailer with a VM's binds, uid and capabilities, exec'ing /bin/true,
#       against /bin/true under setpriv --pdeathsig (what starts an unjailed QEMU);
#   (c) the other steps a jailed sandbox adds, each timed in-process (median of 20): the VMM user's
#       lookup, the sandbox cgroup's creation, join + leave + removal, the share's bind mount (+ unmount);
# medians, minimums and per-round differences, with the host's conditions (CPUs, load average) before and after.
#
# usage: bench/jail.sh [-n ROUNDS] [--kernel PATH] [--image PATH] [--only PART]
#   --only seccomp|rootless|mounts|cgroup: the "jailed" side has only that part on (attribution).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
rounds=5 kernel=/var/cache/kata-ts/vmlinux image=/var/cache/kata-ts/kata-ts-guest.img only=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) rounds=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "jail.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for f in "$kernel" "$image" /usr/bin/qemu-system-x86_64; do
  [ -e "$f" ] || { echo "jail.sh: $f missing (guest/kernel/build.sh, kata-ts guest build)" >&2; exit 1; }
done

make -s -C native >/dev/null
node scripts/build.mjs
work=$(mktemp -d /tmp/kata-ts-bench-jail-XXXXXX)
root=$work/root
cleanup() {
  for d in "$root"/*/; do
    id=$(basename "$d"); [ "$id" = sandboxes ] && continue
    [ -e "$d/state.json" ] && bin/kata-ts --root "$root" --config "$work/jailed.toml" delete --force "$id" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
export KATA_TS_SUPERVISOR=$repo/dist/kata-supervisor.cjs KATA_TS_NATIVE_DIR=$repo/native/build

common="[hypervisor.qemu]
kernel = \"$kernel\"
image = \"$image\"
default_memory = 512"
off() { [ -n "$only" ] && [ "$only" != "$1" ]; }
{
  echo "$common"
  off seccomp && echo 'seccompsandbox = ""'
  off rootless && echo 'rootless = false'
  off mounts && echo 'jail_mount_namespace = false'
  printf '[runtime]\nhypervisor = "qemu"\n'
  off cgroup && echo 'sandbox_cgroup_only = false'
} >"$work/jailed.toml"
printf '%s\nseccompsandbox = ""\nrootless = false\njail_mount_namespace = false\n[runtime]\nhypervisor = "qemu"\nsandbox_cgroup_only = false\n' \
  "$common" >"$work/unjailed.toml"

. bench/lib.sh
b=$work/bundle
busybox_bundle "$b" '["true"]'

conditions() { echo "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"; }
echo "== conditions before: $(conditions)"
echo "== jailed side: ${only:-all four parts}"

echo "== (a) kata-ts run busybox true, cold, alternating jailed/unjailed × $rounds"
: >"$work/jailed.txt"; : >"$work/unjailed.txt"
for i in $(seq "$rounds"); do
  for mode in jailed unjailed; do
    t=$(date +%s%N)
    bin/kata-ts --root "$root" --config "$work/$mode.toml" run --bundle "$b" "bench-$mode-$i-$$" </dev/null >/dev/null
    ms=$(ms_since "$t")
    echo "$ms" >>"$work/$mode.txt"
    echo "   round $i $mode ${ms} ms"
  done
done
j_med=$(median <"$work/jailed.txt")
u_med=$(median <"$work/unjailed.txt")
j_min=$(sort -n "$work/jailed.txt" | head -1)
u_min=$(sort -n "$work/unjailed.txt" | head -1)
# The difference within each round (both runs of a round saw about the same load), then its median.
d_med=$(paste "$work/jailed.txt" "$work/unjailed.txt" | awk '{print $1 - $2}' | median)

echo "== (b) the jailer alone (/bin/true) × 50 each"
jailer=$repo/native/build/kata-ts-jailer
id -u kata-ts-vmm >/dev/null 2>&1 || useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kata-ts-vmm
uid=$(id -u kata-ts-vmm) gid=$(id -g kata-ts-vmm)
mkdir -p /run/kata-ts/jail "$work/sandbox/shared"
jail_argv=("$jailer" --root /run/kata-ts/jail --bind "$work/sandbox" --bind-ro /usr --link /bin --link /sbin --link /lib --link /lib64
  --bind-ro "$kernel" --bind-ro "$image" --dev /dev/null --dev /dev/urandom --uid "$uid" --gid "$gid"
  --cap 0 --cap 1 --cap 3 --cap 4 --pdeathsig -- /bin/true)
: >"$work/jailer.txt"; : >"$work/setpriv.txt"
for i in $(seq 50); do
  t=$(date +%s%N); "${jail_argv[@]}"; echo $((($(date +%s%N) - t) / 1000)) >>"$work/jailer.txt"
  t=$(date +%s%N); setpriv --pdeathsig KILL -- /bin/true; echo $((($(date +%s%N) - t) / 1000)) >>"$work/setpriv.txt"
done
jr_med=$(median <"$work/jailer.txt")
sp_med=$(median <"$work/setpriv.txt")
echo "== (c) the jail's other steps × 20"
cat >bench/.jail-steps.ts <<'TS'
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ensureJailUser } from "../src/hypervisor/jail";
import { createSandboxCgroup, joinSandboxCgroup, leaveSandboxCgroup } from "../src/sandbox/cgroup";
import { sandboxPaths } from "../src/sandbox/paths";
import { makeSharedMount, unmountTree } from "../src/sandbox/share";
const ms = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e6;
const med = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)].toFixed(1);
(async () => {
  const root = process.argv[2];
  const r = { user: [] as number[], cgroup: [] as number[], end: [] as number[], share: [] as number[] };
  for (let i = 0; i < 20; i++) {
    const id = `bench-steps-${process.pid}-${i}`;
    const p = sandboxPaths(root, id);
    mkdirSync(p.dir, { recursive: true });
    let t = process.hrtime.bigint();
    ensureJailUser("kata-ts-vmm");
    r.user.push(ms(t));
    t = process.hrtime.bigint();
    createSandboxCgroup(p, { sandboxId: id });
    r.cgroup.push(ms(t));
    t = process.hrtime.bigint();
    joinSandboxCgroup(p);
    await leaveSandboxCgroup(p);
    r.end.push(ms(t));
    t = process.hrtime.bigint();
    makeSharedMount(p.shared);
    unmountTree(p.shared);
    r.share.push(ms(t));
    rmSync(p.dir, { recursive: true, force: true });
  }
  console.log(`${med(r.user)} ${med(r.cgroup)} ${med(r.end)} ${med(r.share)}`);
})();
TS
read -r st_user st_cg st_end st_share < <(node --import tsx bench/.jail-steps.ts "$work/steps")
rm -f bench/.jail-steps.ts
echo "== conditions after: $(conditions)"

echo
echo "| measure | median |"
echo "|---|---|"
echo "| (a) run busybox true, VM cold, jailed | ${j_med} ms (runs: $(tr '\n' ' ' <"$work/jailed.txt")) |"
echo "| (a) run busybox true, VM cold, unjailed | ${u_med} ms (runs: $(tr '\n' ' ' <"$work/unjailed.txt")) |"
echo "| jailed − unjailed: medians | $((j_med - u_med)) ms |"
echo "| jailed − unjailed: minimums | $((j_min - u_min)) ms |"
echo "| jailed − unjailed: median of the per-round differences | ${d_med} ms |"
echo "| (b) kata-ts-jailer … /bin/true | ${jr_med} µs |"
echo "| (b) setpriv --pdeathsig KILL /bin/true | ${sp_med} µs |"
echo "| (c) VMM user lookup (getent) | ${st_user} ms |"
echo "| (c) sandbox cgroup: create | ${st_cg} ms |"
echo "| (c) sandbox cgroup: join, leave, remove | ${st_end} ms |"
echo "| (c) share: bind mount with shared propagation + unmount | ${st_share} ms |"
