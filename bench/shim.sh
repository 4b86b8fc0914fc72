#!/bin/bash
# Round trips through containerd-shim-kata-ts-v2, against the per-call process they replace: a private
# containerd 1.6 (test/support/cri.ts) runs one `sleep` container with the kata-ts runtime; then N times
# each: the Task State, Pids and Exec calls straight on the shim's ttrpc socket (Exec as containerd
# does it: Exec, Start, Wait, Delete of `true`), and `kata-ts state` / `kata-ts exec` processes on the
# same container. Prints median, p90 and min-max per measure.
#
# usage: bench/shim.sh [-n N] [host|vm]     (default: -n 50, host = [runtime] hypervisor = "none")
# Root; containerd, runc and the CNI plugins from test/engines/install-deps.sh; vm needs the guest image.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,9p' "$0"; exit 0 ;; esac
[[ $(id -u) == 0 ]] || { echo "bench/shim.sh needs root" >&2; exit 1; }
exec node --import tsx bench/shim.ts "$@"
