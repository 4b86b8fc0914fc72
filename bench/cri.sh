#!/bin/bash
# The Kubernetes CRI path, timed: a private containerd 1.6 with its CRI plugin (test/support/cri.ts),
# per runtime handler and run: RunPodSandbox, CreateContainer+StartContainer of the pod's first
# container, the same for a second container in that pod, then StopPodSandbox+RemovePodSandbox.
# Prints the median (and min-max) of N runs per handler as a table. containerd starts once for all.
#
# usage: bench/cri.sh [-n RUNS] [HANDLER...]     handlers: runc, kata-ts (default: runc)
#   KATA_TS_CRI_SHIM_DIR=dir     where containerd finds containerd-shim-kata-ts-v2 (default: bin/)
#   KATA_TS_CRI_KATA_CONFIG=f    the kata-ts handler's options.ConfigPath
# Root; runc, containerd and the CNI plugins from test/engines/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,10p' "$0"; exit 0 ;; esac
[[ $(id -u) == 0 ]] || { echo "bench/cri.sh needs root" >&2; exit 1; }
exec node --import tsx bench/cri.ts "$@"
