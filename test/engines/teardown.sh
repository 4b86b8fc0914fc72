#!/bin/bash
# Usage: teardown.sh BASE
# Undoes setup.sh: removes all containers, stops dockerd and containerd by pidfile, kills any process
# still running from BASE (conmon, containerd-shim*, container processes), unmounts everything under
# BASE (deepest first: overlay rootfs, shm, netns bind mounts, storage-home binds), removes BASE and
# the empty /run/containerd dirs containerd created. Idempotent; exits 1 if something is left behind.
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BASE" >&2
  exit 2
fi
BASE="$(realpath -m "$1")"
case "$BASE" in
/ | /tmp | /run | /var | /var/tmp | "") echo "teardown: refusing BASE=$BASE" >&2; exit 2 ;;
esac
[ -d "$BASE" ] || exit 0
P="$BASE/podman" C="$BASE/containerd" D="$BASE/docker" NS=clients

if [ -f "$BASE/env.sh" ]; then
  # shellcheck source=/dev/null
  . "$BASE/env.sh"
fi

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pidof_file() { cat "$1" 2>/dev/null || true; }

# 1. Containers, through the engines (so they unmount and delete runtime state themselves).
if command -v podman >/dev/null && [ -f "$P/containers.conf" ]; then
  podman rm -af -t 0 >/dev/null 2>&1 || true
fi
if command -v ctr >/dev/null && [ -S "$C/containerd.sock" ]; then
  for id in $(ctr -n "$NS" task ls -q 2>/dev/null); do ctr -n "$NS" task rm -f "$id" >/dev/null 2>&1; done
  for id in $(ctr -n "$NS" containers ls -q 2>/dev/null); do ctr -n "$NS" containers rm "$id" >/dev/null 2>&1; done
fi
if command -v docker >/dev/null && [ -S "$D/docker.sock" ]; then
  ids="$(docker ps -aq 2>/dev/null)"
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
fi

# 2. Daemons by pidfile (dockerd also stops its managed containerd). Each takes ~2 s to exit on
#    SIGTERM, so signal all first, then wait.
daemons="" left=""
for f in "$D/docker.pid" "$D/dockerd.pid" "$D/exec/containerd/containerd.pid" "$C/containerd.pid"; do
  pid="$(pidof_file "$f")"
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    daemons="$daemons $pid"
  fi
done
for _ in $(seq 1 200); do
  left=""
  for pid in $daemons; do alive "$pid" && left="$left $pid"; done
  [ -z "$left" ] && break
  sleep 0.05
done
# shellcheck disable=SC2086
[ -n "$left" ] && kill -KILL $left 2>/dev/null

# 3. Anything still running from BASE: by command line (conmon, shims, daemons) or by root dir
#    (container processes whose rootfs is under BASE). Not this script, nor the scanning tools.
leftover_pids() {
  {
    grep -lsF "$BASE/" /proc/[0-9]*/cmdline | cut -d/ -f3
    find /proc -mindepth 2 -maxdepth 2 -name root -lname "$BASE/*" 2>/dev/null | cut -d/ -f3
  } | sort -u | while read -r p; do
    [ -e "/proc/$p" ] || continue
    root="$(readlink "/proc/$p/root" 2>/dev/null)"
    if [[ "$root" != "$BASE"/* ]]; then
      cmd="$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
      case "$cmd" in *teardown.sh* | grep* | find* | "") continue ;; esac
    fi
    echo "$p"
  done
}
pids="$(leftover_pids)"
if [ -n "$pids" ]; then
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null
  sleep 0.2
fi

# 4. Unmount everything under BASE, deepest first (lazy as a last resort).
mounts_under() { awk -v b="$BASE" '$5 == b || index($5, b "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
for _ in 1 2 3; do
  m="$(mounts_under)"
  [ -z "$m" ] && break
  while read -r mp; do umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null; done <<<"$m"
done

# 5. Files. Never rm -rf while something is still mounted below BASE (it would delete through it).
created="" cgroups=""
[ -f "$BASE/host-paths-created" ] && created="$(cat "$BASE/host-paths-created")"
[ -f "$BASE/cgroups-created" ] && cgroups="$(cat "$BASE/cgroups-created")"
[ -z "$(mounts_under)" ] && rm -rf "$BASE" 2>/dev/null
# Fixed host paths the engines created (see setup.sh): remove the ones setup recorded as new. Directories
# are removed only when they hold nothing but empty directories, except the blob-info cache file.
for p in $created; do
  [ -e "$p" ] || continue
  rm -f "$p/cache/blob-info-cache-v1.boltdb" 2>/dev/null
  if [ -z "$(find "$p" ! -type d 2>/dev/null | head -n 1)" ]; then
    find "$p" -depth -type d -exec rmdir {} \; 2>/dev/null
  else
    echo "teardown: $p is not empty, left in place" >&2
  fi
done

# Parent cgroups setup recorded as new: rmdir works only when no task and no child cgroup is left.
for d in $cgroups; do
  [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ -d "$d" ] && echo "teardown: cgroup $d still in use, left in place" >&2
done

# 6. Verify.
bad=0
if [ -n "$(mounts_under)" ]; then
  echo "teardown: mounts left under $BASE:" >&2
  mounts_under >&2
  bad=1
fi
if [ -n "$(leftover_pids)" ]; then
  echo "teardown: processes left:" >&2
  for p in $(leftover_pids); do echo "  $p $(tr '\0' ' ' <"/proc/$p/cmdline")" >&2; done
  bad=1
fi
if [ -e "$BASE" ]; then
  echo "teardown: $BASE could not be removed" >&2
  bad=1
fi
exit $bad
