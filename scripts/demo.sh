#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine (root): set up kata-ts, check the host, and run a container.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
KATA=$PWD/bin/kata-ts
work=$(mktemp -d /tmp/kata-ts-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== kata-ts check"
"$KATA" check || true   # reports what this host lacks; the container below runs either way

echo "== kata-ts spec (a default OCI bundle config)"
mkdir -p "$work/bundle"
"$KATA" spec --bundle "$work/bundle"
jq -c '{ociVersion, args: .process.args, namespaces: [.linux.namespaces[].type]}' "$work/bundle/config.json"
