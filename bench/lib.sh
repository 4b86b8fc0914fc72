# Shared by the bench/*.sh scripts (sourced, not run).

# busybox_bundle DIR ARGS_JSON: a bundle with the static busybox, its applet links, `runc spec` without
# a terminal and process.args = ARGS_JSON (e.g. '["/bin/true"]').
busybox_bundle() {
  local b=$1 args=$2
  mkdir -p "$b/rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,run,var}
  cp /bin/busybox "$b/rootfs/bin/busybox"
  chroot "$b/rootfs" /bin/busybox --install -s
  echo 'root:x:0:0:root:/root:/bin/sh' >"$b/rootfs/etc/passwd"
  echo 'root:x:0:' >"$b/rootfs/etc/group"
  (cd "$b" && /usr/sbin/runc spec)
  jq --argjson a "$args" '.process.terminal = false | .process.args = $a' "$b/config.json" >"$b/config.tmp"
  mv "$b/config.tmp" "$b/config.json"
}

# Milliseconds since a `date +%s%N` stamp.
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
# Median of the numbers on stdin (one per line).
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
# pss_kb PID / rss_kb PID: from /proc/PID/smaps_rollup; "?" when the process is gone.
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo "?"; }
rss_kb() { awk '/^Rss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo "?"; }
# qemu_pss_parts PID GUEST_MIB TB_MIB: QEMU's PSS (kB) split by mapping, from /proc/PID/smaps:
# "guest tcg kernel other" — guest RAM (the mapping of GUEST_MIB, anonymous or a template's memory
# file), the TCG translation buffer (the mapping of TB_MIB, tcg_tb_size), the guest kernel's file as
# QEMU's loader keeps it mapped (its boot image, kept for a reset), and the rest (heap, libraries).
qemu_pss_parts() {
  awk -v g=$(($2 * 1024)) -v t=$(($3 * 1024)) '
    /^[0-9a-f]+-[0-9a-f]+ / { kind = "other"; path = $6 }
    /^Size:/ {
      if ($2 == g || path ~ /\/memory$/) kind = "guest"
      else if ($2 >= t - 8 && $2 <= t + 8) kind = "tcg"
      else if (path ~ /vmlinu/) kind = "kernel"
    }
    /^Pss:/ { sum[kind] += $2 }
    END { printf "%d %d %d %d\n", sum["guest"], sum["tcg"], sum["kernel"], sum["other"] }' "/proc/$1/smaps" 2>/dev/null || echo "? ? ? ?"
}
