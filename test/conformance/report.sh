#!/bin/sh
# In-container reporter for the conformance suite (busybox sh; copied to /report.sh in the rootfs).
# Prints what the container sees as one `key=value` per line, in a fixed order, so that two runtimes'
# reports can be diffed line by line. Values that vary between runs (mount ids, major:minor of block
# devices, timestamps) are left out here; namespace inodes and pids are printed raw and normalised by
# the test, which knows the host's values.
#
# Arguments are extra probes, each printed as `probe.<arg>=<result>`:
#   write:/path        create and remove a file in the directory /path (or write to the file /path)
#   mkdir:/path[:mode] mkdir (with -m mode) and rmdir again
#   read:/path         read the first bytes of /path
#   kill:SIG           send SIG (USR1 or USR2, ignored meanwhile) to the shell itself
#   sysctl:a.b.c       value of /proc/sys/a/b/c
#   stat:/path         file type, mode, owner and device numbers of /path
#   ls:/dir            sorted entries of /dir
# Errors are reported by their strerror text (busybox prints `applet: ...: <text>`), so that the test
# can assert on the errno a runtime caused (EROFS from a read-only mount, EPERM from seccomp, ...).

err() { sed -e 's/.*: //' -e 1q; }

echo "report.version=1"
echo "hostname=$(hostname)"
echo "domainname=$(cat /proc/sys/kernel/domainname)"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "user=$(id -un 2>/dev/null)"
echo "etc.hostname=$(cat /etc/hostname 2>/dev/null)"
for k in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp; do
  echo "status.$k=$(sed -n "s/^$k:[[:space:]]*//p" /proc/self/status)"
done
echo "umask=$(umask)"
echo "cwd=$(pwd)"
echo "pid.self=$$"
echo "pid1.cmdline=$(tr '\0' ' ' </proc/1/cmdline | sed 's/ $//')"
echo "oom_score_adj=$(cat /proc/self/oom_score_adj)"
echo "uname.m=$(uname -m)"
echo "uid_map=$(sed 's/  */ /g; s/^ //' /proc/self/uid_map | tr '\n' ';')"
echo "gid_map=$(sed 's/  */ /g; s/^ //' /proc/self/gid_map | tr '\n' ';')"
echo "setgroups=$(cat /proc/self/setgroups)"

# The environment the workload was started with (not the shell's own additions).
tr '\0' '\n' </proc/$$/environ | sort | sed 's/^/env./'

# Resource limits: "rlimit.<Name>=<soft> <hard>" from /proc/self/limits (the name column is 26 wide).
sed 1d /proc/self/limits | while IFS= read -r line; do
  name=$(echo "$line" | cut -c1-26 | sed 's/ *$//; s/ /_/g')
  set -- $(echo "$line" | cut -c27-)
  echo "rlimit.$name=$1 $2"
done

# Namespaces: type=inode.
for f in /proc/self/ns/*; do
  n=${f##*/}
  echo "ns.$n=$(readlink "$f" | sed 's/.*\[\(.*\)\]/\1/')"
done

# The loopback interface's flags in the container's network namespace (0x9: up; 0x8: down).
echo "lo.flags=$(cat /sys/class/net/lo/flags 2>&1 | err)"

# Mounts: mountpoint, root within the source fs, fstype, mount options, propagation, super options.
# Dropped: mount ids, major:minor and source (they name host devices and paths).
awk '{
  i = 7; prop = "private";
  while ($i != "-") { split($i, p, ":"); if (p[1] == "shared" || p[1] == "master") prop = p[1]; i++ }
  print "mount=" $5 " root=" $4 " type=" $(i + 1) " opts=" $6 " prop=" prop " super=" $(i + 3)
}' /proc/self/mountinfo

# Cgroups as the container sees them (v1 hybrid here; also the v2 names when present).
sed 's/^/cgroup.self=/' /proc/self/cgroup | sort
for f in memory/memory.limit_in_bytes memory/memory.soft_limit_in_bytes memory/memory.memsw.limit_in_bytes \
  pids/pids.max cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.shares cpuset/cpuset.cpus \
  cpuset/cpuset.mems memory.max pids.max cpu.max cpu.weight; do
  [ -e "/sys/fs/cgroup/$f" ] && echo "cgroup.$f=$(cat "/sys/fs/cgroup/$f" 2>&1 | head -1)"
done

# Sysctls the conformance cases set (read back inside the container's namespaces).
for s in net/ipv4/ip_forward kernel/shm_rmid_forced kernel/msgmax; do
  echo "sysctl.$(echo $s | tr / .)=$(cat /proc/sys/$s 2>&1 | err)"
done

# Masked paths: a masked file is /dev/null bound over it (char 1:3, reads empty), a masked directory
# is an empty read-only tmpfs.
for p in /proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list \
  /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware; do
  if [ -d "$p" ]; then
    echo "masked.$p=dir entries=$(ls -A "$p" 2>/dev/null | wc -l)"
  elif [ -c "$p" ]; then
    echo "masked.$p=chr $(stat -c '%t:%T' "$p") bytes=$(head -c 64 "$p" 2>/dev/null | wc -c)"
  elif [ -e "$p" ]; then
    echo "masked.$p=file bytes=$(head -c 64 "$p" 2>/dev/null | wc -c)"
  else
    echo "masked.$p=absent"
  fi
done

# Read-only paths: writing the current UTS hostname back into /proc/sys is harmless when it works
# (it is per-UTS-namespace) and must fail with EROFS when /proc/sys is read-only.
if h=$(cat /proc/sys/kernel/hostname) && (echo "$h" >/proc/sys/kernel/hostname) 2>/dev/null; then
  echo "readonly./proc/sys=writable"
else
  echo "readonly./proc/sys=$( (echo "$h" >/proc/sys/kernel/hostname) 2>&1 | err)"
fi
if touch /.report-probe 2>/dev/null; then
  rm -f /.report-probe
  echo "readonly./=writable"
else
  echo "readonly./=$(touch /.report-probe 2>&1 | err)"
fi

# Devices: name, type, major:minor (hex, as stat prints them), mode, owner.
for d in /dev/* /dev/pts/* /dev/mqueue /dev/shm; do
  [ -e "$d" ] || [ -L "$d" ] || continue
  if [ -L "$d" ]; then
    echo "dev.$d=link $(readlink "$d")"
  else
    echo "dev.$d=$(stat -c '%F %t:%T %a %u:%g' "$d")"
  fi
done

# Open descriptors. CVE-2024-21626: no descriptor of the runtime (e.g. a host directory such as
# /sys/fs/cgroup) may leak into the container: a leaked fd without O_CLOEXEC is inherited by every
# exec, so a fresh `ls` shows it. fds.exec lists that exec's descriptor numbers (the last one is ls's
# own directory fd); fd.N=target lists those whose link is readable (the probe itself makes fd 1 a
# pipe and fd 2 /dev/null; ls's directory fd is gone by the time it reads the link).
echo "fds.exec=$(ls /proc/self/fd 2>/dev/null | sort -n | tr '\n' ' ' | sed 's/ $//')"
ls -l /proc/self/fd/ 2>/dev/null |
  awk '$(NF - 1) == "->" { t = $NF; sub(/:\[[0-9]+\]$/, "", t); print "fd." $(NF - 2) "=" t }' | sort -t. -k2 -n

# Seccomp denial probe: mkdir on a tmpfs that is always writable (/dev/shm).
if mkdir /dev/shm/.report-mkdir 2>/dev/null; then
  rmdir /dev/shm/.report-mkdir
  echo "seccomp.mkdir=ok"
else
  echo "seccomp.mkdir=$(mkdir /dev/shm/.report-mkdir 2>&1 | err)"
fi

for a in "$@"; do
  kind=${a%%:*}
  arg=${a#*:}
  case $kind in
  write)
    if [ -d "$arg" ]; then t="$arg/.report-probe"; else t="$arg"; fi
    if out=$( (echo probe >>"$t") 2>&1); then
      [ -d "$arg" ] && rm -f "$t"
      r=ok
    else
      r=$(echo "$out" | err)
    fi
    ;;
  mkdir)
    p=${arg%%:*}
    m=${arg#*:}
    [ "$m" = "$arg" ] && m=""
    if out=$(mkdir ${m:+-m "$m"} "$p" 2>&1); then
      r="ok mode=$(stat -c %a "$p")"
      rmdir "$p"
    else
      r=$(echo "$out" | err)
    fi
    ;;
  read)
    if out=$(head -c 64 "$arg" 2>&1); then r="ok $(echo "$out" | head -1)"; else r=$(echo "$out" | err); fi
    ;;
  kill)
    trap '' USR1 USR2
    if out=$(kill -"$arg" $$ 2>&1); then r=ok; else r=$(echo "$out" | err); fi
    trap - USR1 USR2
    ;;
  sysctl)
    r=$(cat "/proc/sys/$(echo "$arg" | tr . /)" 2>&1 | err)
    ;;
  stat)
    r=$(stat -c '%F %a %u:%g %t:%T' "$arg" 2>&1 | err)
    ;;
  ls)
    r=$(ls -A "$arg" 2>&1 | sort | tr '\n' ' ' | sed 's/ $//')
    ;;
  *) r="unknown probe" ;;
  esac
  echo "probe.$a=$r"
done
echo "report.end=1"
