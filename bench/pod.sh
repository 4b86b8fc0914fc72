#!/bin/bash
# A second container in an existing pod (VM mode): no boot, so it should start in a fraction of the
# first one's time and cost little host memory. Per run:
#   first  = create + start of the pod's sandbox container (boots the VM)       [CRI annotations]
#   second = create + start of a member container of that pod (joins the VM)
#   memory = growth of the host RSS (/proc/PID/smaps_rollup) of QEMU and the supervisor when the second
#            container is up (1 s settle), plus the new stand-in's own RSS.
# Prints medians, second/first (goal ≤ 0.2) and the RSS added (goal ≤ 2 MB).
#
# usage: bench/pod.sh [-n RUNS] [--kernel PATH] [--image PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5 kernel=/var/cache/kata-ts/vmlinux image=/var/cache/kata-ts/kata-ts-guest.img
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "pod.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for f in "$kernel" "$image" /usr/bin/qemu-system-x86_64; do
  [ -e "$f" ] || { echo "pod.sh: $f missing (guest/kernel/build.sh, kata-ts guest build)" >&2; exit 1; }
done
. bench/lib.sh

make -s -C native >/dev/null
node scripts/build.mjs
work=$(mktemp -d /tmp/kata-ts-bench-pod-XXXXXX)
root=$work/root
vmcli() { bin/kata-ts --root "$root" --config "$work/config.toml" "$@"; }
cleanup() {
  for d in "$root"/*/; do
    id=$(basename "$d"); [ "$id" = sandboxes ] && continue
    [ -e "$d/state.json" ] && vmcli delete --force "$id" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
export KATA_TS_SUPERVISOR=$PWD/dist/kata-supervisor.cjs KATA_TS_NATIVE_DIR=$PWD/native/build
cat >"$work/config.toml" <<EOF
[hypervisor.qemu]
kernel = "$kernel"
image = "$image"
default_memory = 512
[runtime]
hypervisor = "qemu"
EOF

# Two bundles on one busybox rootfs: the pod's sandbox container and a member, both `sleep`.
busybox_bundle "$work/sandbox" '["sleep", "1000"]'
mkdir -p "$work/member"
jq --arg r "$work/sandbox/rootfs" '.root.path = $r' "$work/sandbox/config.json" >"$work/member/config.json"
annotate() { # BUNDLE TYPE SANDBOX-ID
  jq --arg t "$2" --arg s "$3" \
    '.annotations["io.kubernetes.cri.container-type"] = $t | .annotations["io.kubernetes.cri.sandbox-id"] = $s' \
    "$1/config.json" >"$1/config.tmp"
  mv "$1/config.tmp" "$1/config.json"
}

# RSS (kB) of a sandbox's QEMU and supervisor, as "qemu supervisor".
sandbox_rss() { jq -r '.vmPid, .supervisorPid' "$root/sandboxes/$1/sandbox.json" | while read -r p; do rss_kb "$p"; done | paste -sd' '; }

# create_start BUNDLE ID TIMES: create + start, the time appended to $work/TIMES.txt; then 1 s to settle.
create_start() {
  local t
  t=$(date +%s%N)
  vmcli create --bundle "$work/$1" --pid-file "$work/$2.pid" "$2" </dev/null >/dev/null 2>&1
  vmcli start "$2"
  ms_since "$t" >>"$work/$3.txt"
  sleep 1
}

: >"$work/first.txt" >"$work/second.txt" >"$work/qemu.txt" >"$work/sup.txt" >"$work/standin.txt"
for i in $(seq "$runs"); do
  pod=pod$i-$$
  annotate "$work/sandbox" sandbox "$pod"
  annotate "$work/member" container "$pod"
  create_start sandbox "$pod" first
  read -r q0 s0 < <(sandbox_rss "$pod")
  create_start member "$pod-c" second
  read -r q1 s1 < <(sandbox_rss "$pod")
  echo $((q1 - q0)) >>"$work/qemu.txt"
  echo $((s1 - s0)) >>"$work/sup.txt"
  rss_kb "$(cat "$work/$pod-c.pid")" >>"$work/standin.txt"
  vmcli delete --force "$pod-c"
  vmcli delete --force "$pod"
  echo "   run $i: first $(tail -1 "$work/first.txt") ms, second $(tail -1 "$work/second.txt") ms," \
    "RSS added: QEMU $(tail -1 "$work/qemu.txt") kB, supervisor $(tail -1 "$work/sup.txt") kB, stand-in $(tail -1 "$work/standin.txt") kB"
done

first=$(median <"$work/first.txt")
second=$(median <"$work/second.txt")
qemu=$(median <"$work/qemu.txt") sup=$(median <"$work/sup.txt") standin=$(median <"$work/standin.txt")
echo
echo "| measure ($runs runs) | median |"
echo "|---|---|"
echo "| first container of a pod: create + start (boots the VM) | ${first} ms |"
echo "| second container of the pod: create + start | ${second} ms |"
echo "| second / first | $(awk -v s="$second" -v f="$first" 'BEGIN{printf "%.3f", s/f}') |"
echo "| host RSS added by the second container | $((qemu + sup + standin)) kB |"
echo "| … QEMU (guest RAM it touched; under TCG also translated code) | ${qemu} kB |"
echo "| … supervisor | ${sup} kB |"
echo "| … its stand-in | ${standin} kB |"
