#!/bin/bash
# Logging wrapper around the OCI runtime under test. setup.sh copies it to $BASE/bin/kata-ts and writes
# $BASE/bin/wrap.env next to it (WRAP_REAL, WRAP_LOG, WRAP_DUMP, WRAP_DEFAULT_ROOT). Engines invoke it by
# that name, so the name "kata-ts" is what podman/dockerd/containerd see.
#
# Per call it appends to $WRAP_LOG:
#   #SEQ call  sub=SUBCOMMAND caller=COMM[PPID] cwd=DIR argv: ARGS (bash %q quoting, exactly as the engine sent them)
#   #SEQ root  injected --root DIR                (only when the engine passed no --root, see below)
#   #SEQ stderr: LINE                              (runtime stderr, not for create/run/exec: see below)
#   #SEQ log: LINE                                 (lines the runtime appended to the engine's --log file)
#   #SEQ done  rc=N ms=N
# and copies config.json (create/run), the --process file (exec) and the --resources payload (update)
# to $WRAP_DUMP/SEQ.<kind>.json.
#
# The real runtime runs as a child (not exec) so the exit code and timing can be logged; engines.md
# measured that this changes no engine behaviour. Inherited fds (conmon's sync pipes) pass through.
# stdio of create/run/exec is left untouched because the runtime hands it to the container process;
# for every other command stderr is captured and replayed, so the engine still sees it.
#
# podman (as root) never passes --root, so the runtime would use its compiled-in default state dir
# (/run/runc for runc). To keep the harness isolated and its "state root is empty" check exact, the
# wrapper then prepends --root $WRAP_DEFAULT_ROOT and logs that it did.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
. "$here/wrap.env"

start_ns=$(date +%s%N)
seq="${start_ns}-$$"
caller="$(cat /proc/$PPID/comm 2>/dev/null || echo '?')[$PPID]"

# Parse the global flags (before the subcommand) and the few subcommand flags we dump.
args=("$@")
root="" logfile="" sub="" bundle="" process="" resources=""
i=0
while [ $i -lt ${#args[@]} ]; do
  a="${args[$i]}"
  case "$a" in
  --root=*) root="${a#--root=}" ;;
  --root) i=$((i + 1)); root="${args[$i]:-}" ;;
  --log=*) logfile="${a#--log=}" ;;
  --log) i=$((i + 1)); logfile="${args[$i]:-}" ;;
  --log-format | --criu | --rootless) i=$((i + 1)) ;;
  -*) ;;
  *)
    if [ -z "$sub" ]; then
      sub="$a"
    fi
    ;;
  esac
  if [ -n "$sub" ]; then
    break
  fi
  i=$((i + 1))
done
j=$((i + 1))
while [ $j -lt ${#args[@]} ]; do
  a="${args[$j]}"
  case "$a" in
  --bundle=* | -b=*) bundle="${a#*=}" ;;
  --bundle | -b) j=$((j + 1)); bundle="${args[$j]:-}" ;;
  --process=* | -p=*) process="${a#*=}" ;;
  --process | -p) j=$((j + 1)); process="${args[$j]:-}" ;;
  --resources=* | -r=*) resources="${a#*=}" ;;
  --resources | -r) j=$((j + 1)); resources="${args[$j]:-}" ;;
  esac
  j=$((j + 1))
done

{
  printf '%s #%s call sub=%s caller=%s cwd=%q argv:' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$seq" "${sub:--}" \
    "$caller" "$PWD"
  printf ' %q' "$@"
  printf '\n'
} >>"$WRAP_LOG"

extra=()
if [ -z "$root" ] && [ -n "$sub" ] && [ -n "${WRAP_DEFAULT_ROOT:-}" ]; then
  extra=(--root "$WRAP_DEFAULT_ROOT")
  printf '#%s root injected --root %s\n' "$seq" "$WRAP_DEFAULT_ROOT" >>"$WRAP_LOG"
fi

mkdir -p "$WRAP_DUMP"
case "$sub" in
create | run)
  cp "${bundle:-.}/config.json" "$WRAP_DUMP/$seq.config.json" 2>/dev/null
  ;;
exec)
  if [ -n "$process" ]; then
    cp "$process" "$WRAP_DUMP/$seq.process.json" 2>/dev/null
  fi
  ;;
esac

logsize=0
if [ -n "$logfile" ] && [ -f "$logfile" ]; then
  logsize=$(stat -c %s "$logfile")
fi

errf=""
case "$sub" in
create | run | exec)
  "$WRAP_REAL" "${extra[@]}" "$@"
  rc=$?
  ;;
*)
  errf="$(mktemp "${WRAP_DUMP}/stderr.XXXXXX")"
  if [ "$sub" = update ] && [ "$resources" = "-" ]; then
    cat >"$WRAP_DUMP/$seq.resources.json"
    "$WRAP_REAL" "${extra[@]}" "$@" <"$WRAP_DUMP/$seq.resources.json" 2>"$errf"
    rc=$?
  else
    if [ "$sub" = update ] && [ -n "$resources" ]; then
      cp "$resources" "$WRAP_DUMP/$seq.resources.json" 2>/dev/null
    fi
    "$WRAP_REAL" "${extra[@]}" "$@" 2>"$errf"
    rc=$?
  fi
  ;;
esac

{
  if [ -n "$errf" ]; then
    sed "s/^/#$seq stderr: /" "$errf"
  fi
  if [ -n "$logfile" ] && [ -f "$logfile" ]; then
    tail -c +"$((logsize + 1))" "$logfile" | sed "s/^/#$seq log: /"
  fi
  printf '#%s done rc=%d ms=%d\n' "$seq" "$rc" "$((($(date +%s%N) - start_ns) / 1000000))"
} >>"$WRAP_LOG"
if [ -n "$errf" ]; then
  cat "$errf" >&2
  rm -f "$errf"
fi
exit "$rc"
