#!/bin/bash
# VM mode end to end, in one run:
#   (a) the floor: bare QEMU boot to READY (bench/qemu-boot.sh, the same kernel);
#   (b) `run` of busybox `true` in a VM, cold (a new sandbox = a new VM per run), through the VM
#       CLI (bin/kata-ts; its verbs use the VM backend, src/runtime/vm.ts, when hypervisor = "qemu");
#   (c) `runc run` of the same bundle, for scale;
# medians, the ratio b/a, and the host memory of one running sandbox: PSS (/proc/PID/smaps_rollup) of
# QEMU, virtiofsd (with virtio-fs), the supervisor and the stand-in.
#
# usage: bench/vm.sh [-n RUNS] [--kernel PATH|stock] [--image PATH] [--host-agent]
#                    [--shared-fs virtio-9p|virtio-fs]
#   --kernel stock: Debian's kernel with a bootstrap initramfs loading virtio/ext4/9p modules, and the
#   image built from this tree into a temporary cache (for when kata-ts's kernel is not built yet).
#   --host-agent: no VM (the supervisor runs workloads as host processes): measures what the
#   supervisor, the stand-in and the CLI cost by themselves; (a) is skipped.
#   --shared-fs: how container files reach the guest (default: the shipped configuration's).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
runs=5 kernel=/var/cache/kata-ts/vmlinux image=/var/cache/kata-ts/kata-ts-guest.img host_agent=0 shared_fs=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --host-agent) host_agent=1; shift ;;
    --shared-fs) shared_fs=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "vm.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$host_agent" = 0 ] && [ "$kernel" != stock ]; then
  for f in "$kernel" "$image" /usr/bin/qemu-system-x86_64; do
    [ -e "$f" ] || { echo "vm.sh: $f missing (guest/kernel/build.sh, kata-ts guest build)" >&2; exit 1; }
  done
fi

make -s -C native >/dev/null
node scripts/build.mjs
work=$(mktemp -d /tmp/kata-ts-bench-vm-XXXXXX)
root=$work/root
cleanup() {
  for d in "$root"/*/; do
    id=$(basename "$d"); [ "$id" = sandboxes ] && continue
    [ -e "$d/state.json" ] && bin/kata-ts --root "$root" --config "$work/config.toml" delete --force "$id" >/dev/null 2>&1 || true
  done
  runc --root "$work/runc" delete --force bench-runc >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
export KATA_TS_SUPERVISOR=$repo/dist/kata-supervisor.cjs KATA_TS_NATIVE_DIR=$repo/native/build
if [ "$host_agent" = 1 ]; then
  # The supervisor with its VM replaced by host processes: a test-only bundle, never in dist/.
  node_modules/.bin/esbuild test/support/hostagent-supervisor.ts --bundle --platform=node --format=cjs \
    --log-level=warning --outfile="$work/kata-supervisor.cjs"
  export KATA_TS_SUPERVISOR=$work/kata-supervisor.cjs
fi
qemu_path=/usr/bin/qemu-system-x86_64 initrd=""
if [ "$kernel" = stock ] && [ "$host_agent" = 0 ]; then
  cat >"$work/prep.ts" <<'TS'
import { writeFileSync } from "node:fs";
import { bootstrapModuleNames, buildBootstrapInitramfs } from "../test/support/bootstrap";
import { moduleLoadOrder } from "../test/support/floor";
import { buildImage, defaultSources } from "../src/image/image";
import { ensureStockKernel } from "../src/image/kernel";
const work = process.argv[2];
(async () => {
  const img = await buildImage({ sources: defaultSources(), cacheDir: `${work}/cache` });
  const k = await ensureStockKernel();
  const mods = moduleLoadOrder(`/lib/modules/${k.id}`, [...bootstrapModuleNames(), "9pnet_virtio", "9p"]);
  writeFileSync(`${work}/bootstrap.cpio`, buildBootstrapInitramfs({ modules: mods }));
  console.log(`${k.path} ${img.paths.image}`);
})();
TS
  cp "$work/prep.ts" bench/.vm-prep.ts
  read -r kernel image < <(node --import tsx bench/.vm-prep.ts "$work")
  rm -f bench/.vm-prep.ts
  initrd=$work/bootstrap.cpio
  qemu_path=$work/qemu-image.sh
  printf '#!/bin/sh\nexec /usr/bin/qemu-system-x86_64 "$@" -drive if=none,id=image,file=%s,format=raw,readonly=on -device virtio-blk-device,drive=image\n' "$image" >"$qemu_path"
  chmod +x "$qemu_path"
  image=""
fi
cat >"$work/config.toml" <<EOF
[hypervisor.qemu]
path = "$qemu_path"
kernel = "$kernel"
image = "$image"
initrd = "$initrd"
default_memory = 512
$([ -n "$shared_fs" ] && echo "shared_fs = \"$shared_fs\"")
$([ -n "$initrd" ] && echo "jail_mount_namespace = false  # the stock wrapper's image is not among the jail's binds")
[runtime]
hypervisor = "qemu"
EOF

# The busybox bundle (static busybox, applet links).
. bench/lib.sh
b=$work/bundle
busybox_bundle "$b" '["true"]'

# The real CLI (its verbs dispatch to VM mode with hypervisor = "qemu").
vmcli() { bin/kata-ts --root "$root" --config "$work/config.toml" "$@"; }

floor=""
if [ "$host_agent" = 0 ]; then
  floor_kernel=$kernel; [ -n "$initrd" ] && floor_kernel=stock
  echo "== (a) floor: bench/qemu-boot.sh -n $runs --kernel $floor_kernel"
  out=$(bench/qemu-boot.sh -n "$runs" --kernel "$floor_kernel" | tee /dev/stderr)
  floor=$(echo "$out" | sed -n 's/.* median_ms=\([0-9]*\).*/\1/p' | head -1)
fi

echo "== (b) kata-ts run (VM mode, cold: one new VM per run) × $runs"
: >"$work/b.txt"
for i in $(seq "$runs"); do
  t=$(date +%s%N)
  vmcli run --bundle "$b" "bench-$i-$$" </dev/null >/dev/null
  ms_since "$t" >>"$work/b.txt"
done
b_med=$(median <"$work/b.txt")
echo "   runs: $(tr '\n' ' ' <"$work/b.txt")ms"

echo "== (c) runc run × $runs"
: >"$work/c.txt"
for i in $(seq "$runs"); do
  t=$(date +%s%N)
  runc --root "$work/runc" run --bundle "$b" bench-runc </dev/null >/dev/null
  ms_since "$t" >>"$work/c.txt"
done
c_med=$(median <"$work/c.txt")

echo "== memory of one running sandbox (PSS, kB)"
jq '.process.args = ["sleep", "1000"]' "$b/config.json" >"$b/config.tmp" && mv "$b/config.tmp" "$b/config.json"
vmcli create --bundle "$b" --pid-file "$work/standin.pid" bench-mem </dev/null >/dev/null 2>&1
vmcli start bench-mem
sleep 1
info=$root/sandboxes/bench-mem/sandbox.json
sup_pid=$(sed -n 's/.*"supervisorPid":\([0-9]*\).*/\1/p' "$info")
vm_pid=$(sed -n 's/.*"vmPid":\([0-9]*\).*/\1/p' "$info")
standin_pid=$(cat "$work/standin.pid")
qemu_pss=$([ "${vm_pid:-0}" != 0 ] && pss_kb "$vm_pid" || echo "-")
sup_pss=$(pss_kb "$sup_pid")
# virtiofsd: the daemon and the child it forked into its own namespaces.
vfsd_pss="-"
if [ -s "$root/sandboxes/bench-mem/virtiofsd.pid" ]; then
  read -r vfsd_pid _ <"$root/sandboxes/bench-mem/virtiofsd.pid"
  vfsd_pss=0
  for p in $vfsd_pid $(cat "/proc/$vfsd_pid/task/$vfsd_pid/children" 2>/dev/null); do
    vfsd_pss=$((vfsd_pss + $(pss_kb "$p")))
  done
fi
standin_pss=$(pss_kb "$standin_pid")
vmcli delete --force bench-mem

echo
echo "| measure | median |"
echo "|---|---|"
[ -n "$floor" ] && echo "| (a) QEMU boot floor, spawn → READY | ${floor} ms |"
echo "| (b) kata-ts run busybox true, VM cold$([ "$host_agent" = 1 ] && echo ' (host agent: no VM)')$([ -n "$shared_fs" ] && echo ", $shared_fs") | ${b_med} ms |"
echo "| (c) runc run busybox true | ${c_med} ms |"
[ -n "$floor" ] && [ "$floor" -gt 0 ] && echo "| b / a | $(awk -v b="$b_med" -v a="$floor" 'BEGIN{printf "%.2f", b/a}') |"
echo "| b / c | $(awk -v b="$b_med" -v c="$c_med" 'BEGIN{printf "%.1f", b/c}') |"
echo "| PSS QEMU | ${qemu_pss} kB |"
echo "| PSS virtiofsd (both processes) | ${vfsd_pss} kB |"
echo "| PSS supervisor | ${sup_pss} kB |"
echo "| PSS stand-in | ${standin_pss} kB |"
