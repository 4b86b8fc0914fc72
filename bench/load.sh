#!/bin/bash
# Load and kill points at full size (issue 9 item 5): 200 host-mode create/start/delete cycles 16 at a
# time, 10 VM sandboxes at once, and kill -9 of the CLI, supervisor, QEMU or stand-in at seeded random
# points of create/start/exec/delete followed by `delete --force`. Prints total time, p50/p99 per verb
# and every failure (goal: none). The CI runs short forms (test/integration/load.test.ts).
#
# usage: bench/load.sh [host] [vm] [kill] [--cycles N] [--width N] [--vms N] [--seed N] [--kills N] [--point VERB/VICTIM]
#                      [--kernel PATH] [--image PATH]
#   (no mode: all three; VM parts need the guest kernel and image: kata-ts guest build)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,9p' "$0"; exit 0 ;; esac
make -s -C native >/dev/null
node scripts/build.mjs
exec node --import tsx bench/load.ts "$@"
