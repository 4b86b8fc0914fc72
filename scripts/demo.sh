#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine (root): set up kata-ts, check the host, and run a container
# from a busybox bundle built here (no registry needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
KATA=$PWD/bin/kata-ts
work=$(mktemp -d /tmp/kata-ts-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== kata-ts check"
"$KATA" check || true # reports what this host lacks; the container below runs either way

echo "== building a busybox bundle in $work/bundle"
rootfs=$work/bundle/rootfs
mkdir -p "$rootfs/bin"
cp /bin/busybox "$rootfs/bin/busybox"
chroot "$rootfs" /bin/busybox --install -s /bin
"$KATA" spec --bundle "$work/bundle"
jq '.process.terminal = false | .process.args = ["sh", "-c",
  "echo \"hello from $(hostname), kernel $(uname -r), pid $$\"; id; cat /proc/self/status | grep CapEff"]' \
  "$work/bundle/config.json" >"$work/config.json"
mv "$work/config.json" "$work/bundle/config.json"

# hypervisor = "qemu" (the default) runs the container in its own VM; KATA_TS_DEMO_HYPERVISOR=none runs
# the same engine directly on the host, as runc does.
mode=${KATA_TS_DEMO_HYPERVISOR:-qemu}
printf '[runtime]\nhypervisor = "%s"\n' "$mode" >"$work/configuration.toml"
echo "== kata-ts run (hypervisor = $mode)"
"$KATA" --root "$work/state" --config "$work/configuration.toml" run --bundle "$work/bundle" "demo-$$"
echo "== exit code $? ; containers left: $("$KATA" --root "$work/state" list -q | wc -l)"
