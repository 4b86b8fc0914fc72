#!/bin/bash
# Installs the Debian packages the engine integration tests need (Debian 12 bookworm). Idempotent:
# runs apt-get only when something is missing. Package -> what the harness uses from it:
#   podman          podman 4.3 (also builds the busybox image: import/save, no registry)
#   conmon          podman's container monitor (calls the runtime's create/exec)
#   containerd      containerd 1.6, ctr, containerd-shim-runc-v2
#   docker.io       dockerd 20.10 + docker CLI (docker-init, its managed containerd is the one above)
#   busybox-static  the image's only binary
#   runc            reference runtime the harness is validated with (KATA_TS_ENGINE_RUNTIME=/usr/sbin/runc)
#   crun            second reference runtime (optional comparisons; needs a private mount ns, see README)
#   bsdutils        `script` (gives exec -it a pty); file: static-binary check in setup.sh
#   containernetworking-plugins  CNI bridge, host-local, loopback in /usr/lib/cni (the CRI test, test/support/cri.ts)
# The packages' postinst scripts do not start daemons here (no systemd; policy-rc.d).
set -euo pipefail
PKGS=(podman conmon containerd docker.io busybox-static runc crun bsdutils file containernetworking-plugins)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all present (${PKGS[*]})"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
apt-get install -y "${missing[@]}"
