#!/usr/bin/env bash
# Container engine benchmark: kata-ts (hypervisor = "none"), runc and crun side by side in ONE
# hyperfine run: `run` of busybox `true`, create+start+delete, and `state` of a created container;
# plus the peak RSS of each runtime call (/usr/bin/time), and `node -e 0` for the CLI's own cost
# (kata-ts run minus Node's start, beside runc run). Prints a markdown table.
#
# Usage: bash bench/engine.sh [runs]          (root; build kata-ts first: bash scripts/setup.sh)
#   KATA_TS_BENCH_RUNTIMES="kata-ts runc crun"   which runtimes (default all three)
#
# crun 1.8 refuses the cgroup v1 "hybrid" layout of this machine, so the whole run happens in a
# private mount namespace where /sys/fs/cgroup/unified is unmounted: every runtime then sees the
# same plain v1 layout. A runtime whose first `run` fails gets a "failed" row instead of aborting.
set -euo pipefail

if [[ ${1:-} != --inner ]]; then
  [[ $(id -u) == 0 ]] || { echo "bench/engine.sh needs root" >&2; exit 1; }
  for t in hyperfine jq /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y hyperfine jq time)" >&2; exit 1; }
  done
  exec unshare -m --propagation private bash "$0" --inner "$@"
fi
shift
runs=${1:-20}
repo=$(cd "$(dirname "$0")/.." && pwd)
if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi

work=$(mktemp -d /tmp/kata-ts-bench-XXXXXX)
declare -A RT=(
  [kata-ts]="$repo/bin/kata-ts --root $work/root-kata-ts --config $work/kata.toml"
  [runc]="/usr/sbin/runc --root $work/root-runc"
  [crun]="/usr/bin/crun --root $work/root-crun"
)
names=(${KATA_TS_BENCH_RUNTIMES:-kata-ts runc crun})

cleanup() {
  for n in "${names[@]}"; do
    for id in pre s c r; do ${RT[$n]} delete --force "$id-$n" >/dev/null 2>&1 || true; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Bundle: busybox-static rootfs, `runc spec` with no terminal, workload `true`.
. "$repo/bench/lib.sh"
b=$work/bundle
busybox_bundle "$b" '["/bin/true"]'
printf '[runtime]\nhypervisor = "none"\n' >"$work/kata.toml"

# Container stdio always goes to files or /dev/null: a created container keeps the create call's
# stdio open, and a pipe would never see EOF. Every call has a deadline so a broken runtime cannot
# hang the benchmark.
call() { timeout 60 "$@" </dev/null >>"$work/calls.log" 2>&1; }

ok=()
declare -A FAILED
for n in "${names[@]}"; do
  : >"$work/calls.log"
  if call ${RT[$n]} run --bundle "$b" "pre-$n" && call ${RT[$n]} create --bundle "$b" "s-$n"; then
    ok+=("$n")
  else
    FAILED[$n]=$(grep -v '^$' "$work/calls.log" | tail -1 | tr '|' '/' | cut -c1-100)
    call ${RT[$n]} delete --force "pre-$n" || true
  fi
done

args=()
for n in "${ok[@]}"; do
  rt=${RT[$n]}
  args+=(-n "$n run" "$rt run --bundle $b r-$n")
  args+=(-n "$n create+start+delete" "$rt create --bundle $b c-$n && $rt start c-$n && $rt delete --force c-$n")
  args+=(-n "$n state" "$rt state s-$n")
done
# Node's own start, so the CLI's own cost (kata-ts run − node -e 0) can be set beside runc run. It runs
# as bin/kata-ts runs node: without NODE_EXTRA_CA_CERTS, which the launcher moves aside (src/nodeenv.ts).
args+=(-n "node -e 0" "env -u NODE_EXTRA_CA_CERTS node -e 0")
if ((${#ok[@]} > 0)); then
  hyperfine --warmup 3 --runs "$runs" --export-json "$work/h.json" "${args[@]}" >"$work/hyperfine.log" 2>&1 ||
    { cat "$work/hyperfine.log" >&2; exit 1; }
fi

ms() { jq -r --arg n "$1" '.results[] | select(.command == $n) | (.median * 1000 * 10 | round / 10)' "$work/h.json"; }
rss() {
  timeout 60 /usr/bin/time -o "$work/rss" -f %M "$@" </dev/null >/dev/null 2>&1 || true
  tail -1 "$work/rss"
}

echo "| runtime | run \`true\` (ms) | create+start+delete (ms) | state (ms) | peak RSS MB: run / create / start / state / delete |"
echo "|---|---:|---:|---:|---|"
for n in "${names[@]}"; do
  if [[ -n ${FAILED[$n]:-} ]]; then
    echo "| $n: failed | – | – | – | ${FAILED[$n]} |"
    continue
  fi
  rt=${RT[$n]}
  r_run=$(rss $rt run --bundle "$b" "m-$n")
  r_create=$(rss $rt create --bundle "$b" "m-$n")
  r_start=$(rss $rt start "m-$n")
  r_state=$(rss $rt state "s-$n")
  sleep 0.1
  r_delete=$(rss $rt delete --force "m-$n")
  mb=$(printf '%s\n' "$r_run" "$r_create" "$r_start" "$r_state" "$r_delete" |
    awk '{ printf "%s%.1f", (NR > 1 ? " / " : ""), $1 / 1024 }')
  echo "| $n | $(ms "$n run") | $(ms "$n create+start+delete") | $(ms "$n state") | $mb |"
done
echo
node_ms=$(ms "node -e 0")
echo "node -e 0: ${node_ms} ms"
if [[ " ${ok[*]} " == *" kata-ts "* && " ${ok[*]} " == *" runc "* ]]; then
  own=$(awk -v k="$(ms "kata-ts run")" -v n="$node_ms" 'BEGIN { printf "%.1f", k - n }')
  echo "the CLI's own cost: kata-ts run − node -e 0 = ${own} ms, runc run $(ms "runc run") ms:" \
    "$(awk -v o="$own" -v r="$(ms "runc run")" 'BEGIN { printf "%.2f", o / r }') × runc"
fi
echo "median of $runs runs each (hyperfine, shell start-up subtracted), one hyperfine run; private mount namespace without /sys/fs/cgroup/unified"
