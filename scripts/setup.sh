#!/usr/bin/env bash
# Installs everything kata-ts needs to build and run on a fresh Debian 12 machine (root), idempotently:
# Debian packages, npm dependencies, the native helper/addon and the CLI bundle.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build and runtime needs. Engines for the integration tests are added by test/engines/install-deps.sh.
PACKAGES=(build-essential musl-tools libseccomp-dev libcap-dev busybox-static iproute2 util-linux procps runc crun hyperfine strace
  qemu-system-x86 jq time cpio xz-utils e2fsprogs linux-image-amd64
  linux-source-6.1 bc bison flex libelf-dev libssl-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
make -s -C native
node scripts/build.mjs
# containerd finds a runtime v2 shim on its PATH by name (runtime_type io.containerd.kata-ts.v2).
ln -sfn "$PWD/bin/containerd-shim-kata-ts-v2" /usr/local/bin/containerd-shim-kata-ts-v2

# The guest: kernel (~10 min on 2 idle cores the first time) and image, both cached under
# /var/cache/kata-ts keyed by their inputs, so later runs take well under a second.
if [ "${KATA_TS_SKIP_GUEST:-0}" != 1 ]; then
  bash guest/kernel/build.sh
  bin/kata-ts guest build
fi
