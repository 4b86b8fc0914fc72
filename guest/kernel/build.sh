#!/bin/bash
# Builds the kata-ts guest kernel: Debian's linux-source-6.1, x86_64 defconfig + config-fragment, no
# modules, output an uncompressed vmlinux (PVH direct boot: QEMU loads it without a decompressor).
#
# Cache: $CACHE/kernel/<key>/{vmlinux,config,build-info}, key = first 16 hex of
#   sha256("<linux-source-6.1 version>\n<sha256 of config-fragment>\n<sha256 of this script>\n")
# (src/guest/kernel.ts computes the same key). $CACHE/vmlinux is a symlink to the newest build: it is
# the configured default kernel path. Idempotent: nothing is rebuilt when the key's vmlinux exists.
#
# usage: build.sh [--cache-dir DIR] [--jobs N] [--print-key]
#   env: KATA_TS_CACHE (default /var/cache/kata-ts), KATA_TS_KERNEL_SOURCE (default
#   /usr/src/linux-source-6.1.tar.xz; apt-get install linux-source-6.1 bc bison flex libelf-dev libssl-dev)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${KATA_TS_CACHE:-/var/cache/kata-ts}
jobs=2
print_key=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cache-dir) cache=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --print-key) print_key=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

pkg=linux-source-6.1
source_tar=${KATA_TS_KERNEL_SOURCE:-/usr/src/$pkg.tar.xz}
fragment=$here/config-fragment
say() { printf '[kernel %s] %s\n' "$(date +%T)" "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) ||
  die "$pkg is not installed (apt-get install -y $pkg bc bison flex libelf-dev libssl-dev)"
[ -r "$source_tar" ] || die "$source_tar not found"
sha() { sha256sum "$1" | cut -d' ' -f1; }
key=$(printf '%s\n%s\n%s\n' "$version" "$(sha "$fragment")" "$(sha "$here/build.sh")" | sha256sum | cut -c1-16)
if [ "$print_key" = 1 ]; then echo "$key"; exit 0; fi

out=$cache/kernel/$key
link() {
  # Atomic symlink swap: a reader sees either the old or the new kernel, never none.
  ln -sfn "kernel/$key/vmlinux" "$cache/.vmlinux.tmp.$$"
  mv -Tf "$cache/.vmlinux.tmp.$$" "$cache/vmlinux"
}
mkdir -p "$cache/kernel"
# One build per key at a time: a second caller waits, then finds the result.
exec 9>"$cache/kernel/.lock-$key"
flock 9
if [ -s "$out/vmlinux" ]; then
  link
  say "up to date: $out/vmlinux ($pkg $version, key $key)"
  exit 0
fi

for tool in make gcc bc bison flex; do command -v "$tool" >/dev/null || die "$tool is missing"; done
[ -e /usr/include/libelf.h ] || die "libelf-dev is missing"
[ -e /usr/include/openssl/ssl.h ] || die "libssl-dev is missing"

work=$cache/kernel/build-$key
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
say "building $pkg $version with $(basename "$fragment") (key $key, make -j$jobs) in $work"
say "extracting $source_tar"
nice -n 19 tar -xJf "$source_tar" -C "$work" --strip-components=1
src=$work
say "configuring: x86_64_defconfig + fragment"
make -C "$src" -s ARCH=x86_64 x86_64_defconfig
(cd "$src" && KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null)
make -C "$src" -s ARCH=x86_64 olddefconfig
# Kconfig silently drops options whose dependencies are not met: insist on every line of the fragment.
missing=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qxF "$line" "$src/.config" || { echo "  not in .config: $line" >&2; missing=1; } ;;
    "# CONFIG_"*" is not set")
      sym=${line#\# }; sym=${sym%% *}
      ! grep -q "^$sym=" "$src/.config" || { echo "  still set: $sym" >&2; missing=1; } ;;
  esac
done <"$fragment"
[ "$missing" = 0 ] || die "the fragment does not apply cleanly to $pkg $version (see above)"
say "compiling vmlinux (nice -n 19 make -j$jobs; ~10 min on 2 cores)"
nice -n 19 make -C "$src" -s ARCH=x86_64 -j"$jobs" vmlinux 2>&1 | grep -v '^\s*$' || true
[ -s "$src/vmlinux" ] || die "make did not produce vmlinux"
mkdir -p "$out.tmp"
cp "$src/vmlinux" "$out.tmp/vmlinux"
cp "$src/.config" "$out.tmp/config"
elapsed=$(($(date +%s) - start))
printf 'package=%s\nversion=%s\nkey=%s\nbuild_seconds=%s\nbuilt=%s\n' \
  "$pkg" "$version" "$key" "$elapsed" "$(date -u +%FT%TZ)" >"$out.tmp/build-info"
rm -rf "$out"
mv "$out.tmp" "$out"
link
say "done in ${elapsed}s: $out/vmlinux ($(du -h "$out/vmlinux" | cut -f1))"
