#!/bin/bash
# The VM factory (template + clones) against a cold boot, in one run:
#   (a) the floor: bare QEMU boot to READY (bench/qemu-boot.sh, the same kernel);
#   (b) `kata-ts run` of busybox `true`, VM cold (enable_template = false);
#   (t) `kata-ts factory init`: boot + save of the template;
#   (c) `kata-ts run` of the same bundle from the template (enable_template = true);
#   (e) `kata-ts exec` of `true` into a running container of a template clone, 1.5 s apart;
#   (n) `kata-ts run` of the same bundle in a pod network namespace with one veth (as podman's or a CNI
#       pod's eth0): cold, then from the one-NIC template;
#   (k) `kata-ts run` of the same bundle from the VM cache (vm_cache_number = 1, `factory init` as a
#       server in the background; each run waits, untimed, until the server has a VM ready again);
#   memory: PSS (/proc/PID/smaps_rollup) of QEMU and the supervisor of one idle sandbox, cold and clone;
#   density: D sandboxes from the template running at once, each answering an `exec`: the time to
#   start them all, their total PSS (QEMU + supervisor + stand-in), then all deleted.
#
#   QEMU's PSS is also split into guest RAM, TCG translation buffer, the kernel file QEMU keeps mapped,
#   and the rest (bench/lib.sh qemu_pss_parts).
#
# usage: bench/factory.sh [-n RUNS] [-d DENSITY] [--kernel PATH] [--image PATH] [--tb-size MIB]
#                         [--machine microvm|q35]   (q35: the image is mapped with DAX, see hypervisor.md)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
runs=5 density=10 kernel=/var/cache/kata-ts/vmlinux image=/var/cache/kata-ts/kata-ts-guest.img tb=64
machine=microvm
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    -d) density=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --tb-size) tb=$2; shift 2 ;;
    --machine) machine=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "factory.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for f in "$kernel" "$image" /usr/bin/qemu-system-x86_64; do
  [ -e "$f" ] || { echo "factory.sh: $f missing (guest/kernel/build.sh, kata-ts guest build)" >&2; exit 1; }
done
make -s -C native >/dev/null
node scripts/build.mjs
work=$(mktemp -d /tmp/kata-ts-bench-factory-XXXXXX)
root=$work/root
export KATA_TS_SUPERVISOR=$repo/dist/kata-supervisor.cjs KATA_TS_NATIVE_DIR=$repo/native/build
config() { # config FILE ENABLE [CACHE_NUMBER]
  cat >"$1" <<TOML
[hypervisor.qemu]
kernel = "$kernel"
image = "$image"
default_memory = 512
machine_type = "$machine"
tcg_tb_size = $tb
[factory]
enable_template = $2
template_path = "$work/templates"
vm_cache_number = ${3:-0}
vm_cache_endpoint = "$work/cache.sock"
[runtime]
hypervisor = "qemu"
TOML
}
config "$work/cold.toml" false
config "$work/tmpl.toml" true
config "$work/cache.toml" true 1
kts() { local c=$1; shift; bin/kata-ts --root "$root" --config "$c" "$@"; }
cleanup() {
  for d in "$root"/*/; do
    [ -e "$d/state.json" ] && kts "$work/cold.toml" delete --force "$(basename "$d")" >/dev/null 2>&1 || true
  done
  kts "$work/cache.toml" factory destroy >/dev/null 2>&1 || true
  kts "$work/tmpl.toml" factory destroy >/dev/null 2>&1 || true
  ip netns del "$podns" 2>/dev/null || true
  ip netns del "$peerns" 2>/dev/null || true
  rm -rf "$work"
}
podns=ktbench-pod-$$ peerns=ktbench-peer-$$
trap cleanup EXIT
. bench/lib.sh
b=$work/bundle
busybox_bundle "$b" '["true"]'
s=$work/sleeper
busybox_bundle "$s" '["sleep", "1000"]'

# (n): the pod's network namespace, its eth0 one end of a veth whose peer sits in a namespace of its own.
ip netns add "$podns"
ip netns add "$peerns"
ip link add "ktbp$$" netns "$peerns" type veth peer name eth0 netns "$podns"
ip -n "$podns" addr add 10.254.0.2/24 dev eth0
ip -n "$podns" link set eth0 up
ip -n "$peerns" addr add 10.254.0.1/24 dev "ktbp$$"
ip -n "$peerns" link set "ktbp$$" up
n=$work/netbundle
busybox_bundle "$n" '["true"]'
jq --arg p "/var/run/netns/$podns" '.linux.namespaces |= map(if .type == "network" then .path = $p else . end)' \
  "$n/config.json" >"$n/config.tmp"
mv "$n/config.tmp" "$n/config.json"

echo "== (a) floor: bench/qemu-boot.sh -n $runs --kernel $kernel"
out=$(bench/qemu-boot.sh -n "$runs" --kernel "$kernel" --machine "$machine" | tee /dev/stderr)
floor=$(echo "$out" | sed -n 's/.* median_ms=\([0-9]*\).*/\1/p' | head -1)

cache_ready() { # waits (untimed) until the cache server has a VM ready
  for _ in $(seq 600); do
    [ "$(kts "$work/cache.toml" factory status --json 2>/dev/null | jq -r '.cache.idle // 0')" -ge 1 ] && return 0
    sleep 0.2
  done
  echo "factory.sh: the VM cache has no VM ready after 120 s" >&2; exit 1
}
timed_runs() { # timed_runs CONFIG FILE [BUNDLE]
  : >"$2"
  for i in $(seq "$runs"); do
    [ "$1" = "$work/cache.toml" ] && cache_ready
    t=$(date +%s%N)
    kts "$1" run --bundle "${3:-$b}" "bench-$i-$$" </dev/null >/dev/null 2>&1
    ms_since "$t" >>"$2"
  done
}
echo "== (b) kata-ts run, cold × $runs"
timed_runs "$work/cold.toml" "$work/b.txt"
echo "== (t) factory init"
t=$(date +%s%N)
kts "$work/tmpl.toml" factory init
init_ms=$(ms_since "$t")
echo "== (c) kata-ts run, from the template × $runs"
timed_runs "$work/tmpl.toml" "$work/c.txt"
echo "== (e) kata-ts exec true into a running container of a template clone × $runs (1.5 s apart)"
kts "$work/tmpl.toml" run -d --bundle "$s" "bench-exec-$$" </dev/null >/dev/null 2>&1
: >"$work/e.txt"
for i in $(seq "$runs"); do
  sleep 1.5
  t=$(date +%s%N)
  kts "$work/tmpl.toml" exec "bench-exec-$$" true </dev/null >/dev/null 2>&1
  ms_since "$t" >>"$work/e.txt"
done
kts "$work/tmpl.toml" delete --force "bench-exec-$$"
echo "== (n) kata-ts run in a pod netns with one NIC, cold, then from the one-NIC template × $runs"
timed_runs "$work/cold.toml" "$work/nb.txt" "$n"
timed_runs "$work/tmpl.toml" "$work/nc.txt" "$n"

echo "== (k) kata-ts run, from the VM cache × $runs"
kts "$work/cache.toml" factory init >"$work/cache-server.log" 2>&1 &
server=$!
timed_runs "$work/cache.toml" "$work/k.txt"

sandbox_pss() { # sandbox_pss CONFIG ID → "qemu supervisor" kB
  [ "$1" = "$work/cache.toml" ] && cache_ready
  kts "$1" create --bundle "$s" "$2" </dev/null >/dev/null 2>&1
  kts "$1" start "$2"
  sleep 2
  local info=$root/sandboxes/$2/sandbox.json
  local sup vm
  sup=$(sed -n 's/.*"supervisorPid":\([0-9]*\).*/\1/p' "$info")
  vm=$(sed -n 's/.*"vmPid":\([0-9]*\).*/\1/p' "$info")
  echo "$(pss_kb "$vm") $(pss_kb "$sup") $(qemu_pss_parts "$vm" 512 "$tb")"
  kts "$1" delete --force "$2"
}
read -r cold_qemu cold_sup cold_parts < <(sandbox_pss "$work/cold.toml" bench-mem-cold)
read -r clone_qemu clone_sup clone_parts < <(sandbox_pss "$work/tmpl.toml" bench-mem-clone)
read -r cached_qemu cached_sup cached_parts < <(sandbox_pss "$work/cache.toml" bench-mem-cached)
# The server stops its idle VM on SIGTERM; the template stays for the density run.
kill "$server"; wait "$server" || true

echo "== density: $density sandboxes from the template at once"
t=$(date +%s%N)
for i in $(seq "$density"); do
  kts "$work/tmpl.toml" create --bundle "$s" --pid-file "$work/d$i.pid" "dens-$i-$$" </dev/null >/dev/null 2>&1
  kts "$work/tmpl.toml" start "dens-$i-$$"
done
ok=0
for i in $(seq "$density"); do
  [ "$(kts "$work/tmpl.toml" exec "dens-$i-$$" echo ok 2>/dev/null)" = ok ] && ok=$((ok + 1))
done
dens_ms=$(ms_since "$t")
total=0
for i in $(seq "$density"); do
  info=$root/sandboxes/dens-$i-$$/sandbox.json
  for p in $(sed -n 's/.*"supervisorPid":\([0-9]*\).*"vmPid":\([0-9]*\).*/\1 \2/p' "$info") $(cat "$work/d$i.pid"); do
    total=$((total + $(pss_kb "$p")))
  done
done
for i in $(seq "$density"); do kts "$work/tmpl.toml" delete --force "dens-$i-$$"; done

row() { # row LABEL FILE [ratio]: the runs in FILE, their median, with "ratio" also its ratio to the floor
  local med r=""
  med=$(median <"$2")
  [ "${3:-}" = ratio ] && r=" ($(awk -v x="$med" -v a="$floor" 'BEGIN{printf "%.2f", x/a}') × floor)"
  echo "| $1 (median; runs: $(tr '\n' ' ' <"$2")) | ${med} ms$r |"
}
echo
echo "| measure | value |"
echo "|---|---|"
echo "| machine, tcg_tb_size | $machine, ${tb} MiB |"
echo "| (a) QEMU boot floor, spawn → READY (median) | ${floor} ms |"
row "(b) run true, VM cold" "$work/b.txt" ratio
echo "| (t) factory init | ${init_ms} ms |"
row "(c) run true from the template" "$work/c.txt" ratio
row "(e) exec true into a clone's running container" "$work/e.txt"
row "(n) run true with one NIC, cold" "$work/nb.txt" ratio
row "(n) run true with one NIC from the one-NIC template" "$work/nc.txt" ratio
row "(k) run true from the VM cache" "$work/k.txt" ratio
echo "| PSS per sandbox, cold: QEMU + supervisor (QEMU: guest tcg kernel other) | ${cold_qemu} + ${cold_sup} kB (${cold_parts}) |"
echo "| PSS per sandbox, clone: QEMU + supervisor (QEMU: guest tcg kernel other) | ${clone_qemu} + ${clone_sup} kB (${clone_parts}) |"
echo "| PSS per sandbox, from the cache: QEMU + supervisor (QEMU: guest tcg kernel other) | ${cached_qemu} + ${cached_sup} kB (${cached_parts}) |"
echo "| density: $density clones started + exec'd ($ok answered) | ${dens_ms} ms, total PSS $((total / 1024)) MB ($((total / 1024 / density)) MB per sandbox) |"
