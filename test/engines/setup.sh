#!/bin/bash
# Usage: setup.sh BASE RUNTIME [ENGINES]
#
# Prepares podman, containerd (ctr) and dockerd to drive RUNTIME (an OCI runtime binary, e.g. bin/kata-ts
# or /usr/sbin/runc), everything isolated under BASE:
#   BASE/bin/kata-ts      logging wrapper around RUNTIME (runtime-wrap.sh); engines know it as "kata-ts"
#   BASE/kata-ts.toml     kata-ts config (KATA_CONF_FILE, set by the wrapper): hypervisor = "none", or a
#                         copy of $KATA_TS_ENGINE_CONFIG
#   BASE/logs/runtime.log one line per runtime call (+ rc, stderr, --log lines); BASE/logs/dump/ payloads
#   BASE/state/podman     runtime state root for podman's calls (podman passes no --root; the wrapper adds it)
#   BASE/state/ctr        --runc-root for ctr (the runtime gets --root BASE/state/ctr/<namespace>)
#   BASE/podman           containers.conf, storage.conf, graphroot, runroot, tmp
#   BASE/containerd       config.toml, root, state, containerd.sock, containerd.pid, containerd.log
#   BASE/docker           daemon.json, data-root, exec-root, docker.sock, docker.pid, dockerd.log, cli config,
#                         key.json (deprecated-key-path: otherwise dockerd 20.10 writes /etc/docker/key.json)
#   BASE/env.sh           exports CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, CONTAINERD_ADDRESS, DOCKER_HOST...
#   BASE/engines          the engines that were set up, one per line
# ENGINES is a comma-separated subset of podman,ctr,docker (default: all three); an engine whose
# binaries are missing is an error. No registry is used: the busybox image is built from busybox-static.
# The host's default engine config and sockets are never touched; daemons run in the host mount
# namespace (a private one is only needed for crun, see README.md). teardown.sh BASE undoes everything.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BASE RUNTIME [podman,ctr,docker]" >&2
  exit 2
fi
BASE="$(realpath -m "$1")"
RUNTIME="$(realpath "$2")"
ENGINES="${3:-podman,ctr,docker}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NS=clients # containerd namespace used by ctr
IMAGE=localhost/busybox:latest

want() { case ",$ENGINES," in *",$1,"*) return 0 ;; esac; return 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
step_start=0
step() { step_start=$(now_ms); echo "setup: $1" >&2; }
step_done() { echo "setup: $1 took $(($(now_ms) - step_start)) ms" >&2; }
need() { command -v "$1" >/dev/null || { echo "setup: $1 not installed (run test/engines/install-deps.sh)" >&2; exit 1; }; }

[ -x "$RUNTIME" ] || { echo "setup: runtime $RUNTIME is not executable" >&2; exit 1; }
need busybox
want podman && need podman && need conmon
want ctr && need containerd && need ctr && need containerd-shim-runc-v2
want docker && need dockerd && need docker

# Wait until a unix socket answers (by file presence + a client call), or fail with the daemon log.
wait_for() { # DESCRIPTION LOGFILE CMD...
  local what="$1" log="$2"
  shift 2
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "setup: $what did not come up; last log lines:" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
}

mkdir -p "$BASE"/{bin,logs/dump,state/podman,state/ctr,images}
# Host paths the engines create at fixed locations whatever their configuration says (measured):
#   /run/containerd/{s,fifo}  containerd 1.6 shim sockets and ctr's fifos
#   /run/docker/plugins       dockerd's plugin socket dir
#   /run/containers/networks  podman 4.3's network run dir (empty with netns = "none")
#   /var/lib/containers/cache containers/image blob-info cache (podman import/save as root)
# Record which of them did not exist, so teardown removes exactly those (and only if empty / ours).
: >"$BASE/host-paths-created"
for p in /run/containerd /run/docker /run/containers /var/lib/containers; do
  [ -e "$p" ] || echo "$p" >>"$BASE/host-paths-created"
done
# Parent cgroups the engines create in every hierarchy and never remove (cgroupfs driver): ctr puts
# containers in /<namespace>/<id>, dockerd in /docker/<id>, podman in /libpod_parent/libpod-<id> and
# conmon in /libpod_parent/conmon. Same rule: teardown removes those that did not exist, when empty.
: >"$BASE/cgroups-created"
for c in /sys/fs/cgroup/*/; do
  for n in "$NS" docker libpod_parent; do
    [ -e "$c$n" ] || echo "$c$n" >>"$BASE/cgroups-created"
  done
done

# ---- runtime wrapper ----------------------------------------------------------------------------------
step "runtime wrapper for $RUNTIME"
install -m 0755 "$HERE/runtime-wrap.sh" "$BASE/bin/kata-ts"
cat >"$BASE/bin/wrap.env" <<EOF
WRAP_REAL=$(printf %q "$RUNTIME")
WRAP_LOG=$(printf %q "$BASE/logs/runtime.log")
WRAP_DUMP=$(printf %q "$BASE/logs/dump")
WRAP_DEFAULT_ROOT=$(printf %q "$BASE/state/podman")
export KATA_CONF_FILE=$(printf %q "$BASE/kata-ts.toml")
EOF
# kata-ts reads $KATA_CONF_FILE (engines pass no --config): hypervisor = "none" runs containers on the
# host like runc. KATA_TS_ENGINE_CONFIG=file replaces this minimal config. Other runtimes ignore it.
if [ -n "${KATA_TS_ENGINE_CONFIG:-}" ]; then
  cp "$KATA_TS_ENGINE_CONFIG" "$BASE/kata-ts.toml"
else
  printf '[runtime]\nhypervisor = "none"\n' >"$BASE/kata-ts.toml"
fi
: >"$BASE/logs/runtime.log"
step_done wrapper

# ---- busybox image from busybox-static -------------------------------------------------------------------
step "busybox rootfs"
R="$BASE/rootfs/busybox"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,run,var}
BB="$(command -v busybox)"
file -L "$BB" 2>/dev/null | grep -q 'statically linked' || ldd "$BB" 2>&1 | grep -q 'not a dynamic' ||
  { echo "setup: $BB is not static (install busybox-static)" >&2; exit 1; }
cp "$BB" "$R/bin/busybox"
chroot "$R" /bin/busybox --install -s
echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
echo 'root:x:0:' >"$R/etc/group"
tar -C "$R" -cf "$BASE/images/busybox-rootfs.tar" .
step_done rootfs

# ---- podman ------------------------------------------------------------------------------------------------
P="$BASE/podman"
mkdir -p "$P"/{root,runroot,tmp,cni}
cat >"$P/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$P/root"
runroot = "$P/runroot"
EOF
# default_ulimits: root lacks CAP_SYS_RESOURCE here, and podman's default nofile (1048576) is above the
# hard limit, so without this every create fails. conmon_env_vars: conmon runs the exit command
# (podman container cleanup) with only these variables; without the two config paths it would use
# the host's default storage and never find the container.
cat >"$P/containers.conf" <<EOF
[containers]
netns = "none"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_config_dir = "$P/cni"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$P/tmp"
lock_type = "file"
runtime = "kata-ts"
runtime_supports_json = ["crun", "runc", "kata", "runsc", "youki", "krun", "kata-ts"]
runtime_supports_nocgroups = ["crun", "krun"]
conmon_env_vars = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_CONF=$P/containers.conf", "CONTAINERS_STORAGE_CONF=$P/storage.conf"]

[engine.runtimes]
kata-ts = ["$BASE/bin/kata-ts"]
EOF

# ---- containerd ----------------------------------------------------------------------------------------------
C="$BASE/containerd"
mkdir -p "$C"
cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$C/containerd.sock"
[ttrpc]
  address = "$C/containerd.sock.ttrpc"
EOF

# ---- dockerd ---------------------------------------------------------------------------------------------------
D="$BASE/docker"
mkdir -p "$D/cli"
echo '{}' >"$D/cli/config.json" # DOCKER_CONFIG: podman reads it too (auth file) and fails if missing
cat >"$D/daemon.json" <<EOF
{
  "data-root": "$D/root",
  "exec-root": "$D/exec",
  "pidfile": "$D/docker.pid",
  "hosts": ["unix://$D/docker.sock"],
  "bridge": "none",
  "iptables": false,
  "ip6tables": false,
  "ip-forward": false,
  "ip-masq": false,
  "storage-driver": "overlay2",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "deprecated-key-path": "$D/key.json",
  "runtimes": { "kata-ts": { "path": "$BASE/bin/kata-ts" } }
}
EOF

cat >"$BASE/env.sh" <<EOF
export CONTAINERS_CONF=$P/containers.conf
export CONTAINERS_STORAGE_CONF=$P/storage.conf
export CONTAINERD_ADDRESS=$C/containerd.sock
export CONTAINERD_NAMESPACE=$NS
export DOCKER_HOST=unix://$D/docker.sock
export DOCKER_CONFIG=$D/cli
EOF
# shellcheck source=/dev/null
. "$BASE/env.sh"
: >"$BASE/engines"

# Start the daemons first (they come up in parallel with the podman import).
if want ctr; then
  step "start containerd"
  setsid containerd --config "$C/config.toml" </dev/null >"$C/containerd.log" 2>&1 &
  echo $! >"$C/containerd.pid"
fi
if want docker; then
  step "start dockerd"
  setsid dockerd --config-file "$D/daemon.json" </dev/null >"$D/dockerd.log" 2>&1 &
  echo $! >"$D/dockerd.pid" # dockerd writes docker.pid itself too, once it is up
fi

if want podman || want ctr || want docker; then
  step "podman import + save"
  podman import --change 'CMD ["/bin/sh"]' "$BASE/images/busybox-rootfs.tar" "$IMAGE" >/dev/null
  want ctr && podman save --format oci-archive -o "$BASE/images/busybox-oci.tar" "$IMAGE"
  want docker && podman save --format docker-archive -o "$BASE/images/busybox-docker.tar" "$IMAGE"
  step_done "podman import + save"
  want podman && echo podman >>"$BASE/engines"
fi

if want ctr; then
  step "containerd up + image import"
  wait_for containerd "$C/containerd.log" ctr version
  ctr -n "$NS" image import "$BASE/images/busybox-oci.tar" >/dev/null
  ctr -n "$NS" image ls -q | grep -qx "$IMAGE" || { echo "setup: ctr import did not yield $IMAGE" >&2; exit 1; }
  echo ctr >>"$BASE/engines"
  step_done "containerd"
fi

if want docker; then
  step "dockerd up + image load"
  wait_for dockerd "$D/dockerd.log" docker version
  docker load -i "$BASE/images/busybox-docker.tar" >/dev/null
  docker image inspect "$IMAGE" >/dev/null
  echo docker >>"$BASE/engines"
  step_done "dockerd"
fi
echo "setup: done ($(tr '\n' ' ' <"$BASE/engines"))" >&2
