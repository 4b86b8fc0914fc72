#!/usr/bin/env bash
# Cold start of the CLI: `kata-ts --version` next to bare `node -e 0` and `runc --version`, in one
# hyperfine run (median of 20 runs each), plus peak RSS of one call of each (/usr/bin/time -v). `node -e 0`
# runs as bin/kata-ts runs node: without NODE_EXTRA_CA_CERTS (the launcher moves it aside, src/nodeenv.ts).
# Usage: bash bench/cli-startup.sh [runs]     (build first: bash scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
hyperfine -N --warmup 3 --runs "$runs" --export-json "$out/h.json" \
  -n 'kata-ts --version' "$PWD/bin/kata-ts --version" \
  -n 'node -e 0' "env -u NODE_EXTRA_CA_CERTS node -e 0" \
  -n 'runc --version' "runc --version" >/dev/null
printf '%-20s %10s %10s %10s %12s\n' command median_ms mean_ms stddev_ms peak_rss_kb
for name in 'kata-ts --version' 'node -e 0' 'runc --version'; do
  case $name in
    kata-ts*) cmd=("$PWD/bin/kata-ts" --version) ;;
    node*) cmd=(env -u NODE_EXTRA_CA_CERTS node -e 0) ;;
    runc*) cmd=(runc --version) ;;
  esac
  rss=$(/usr/bin/time -v "${cmd[@]}" 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print $2}')
  jq -r --arg n "$name" --arg rss "$rss" '.results[] | select(.command == $n) |
    [$n, (.median*1000|.*10|round/10), (.mean*1000|.*10|round/10), (.stddev*1000|.*10|round/10), $rss] | @tsv' \
    "$out/h.json" | awk -F'\t' '{printf "%-20s %10s %10s %10s %12s\n", $1, $2, $3, $4, $5}'
done
