# Sourced by bin/kata-ts and bin/containerd-shim-kata-ts-v2 once they know their own absolute path
# ($self, a symlink followed): `launch BUNDLE ARGS...` runs dist/BUNDLE.cjs in node with its V8 code
# cache (run-cached.cjs), the launcher's path as the bundle's argv[1], in place of this shell (same pid).
#
# Why a shell script and not a node one: Node parses the file named by NODE_EXTRA_CA_CERTS as it starts,
# before any script could stop it (~75 ms where it names the system's CA bundle, docs/machine-notes.md),
# and kata-ts needs no extra CA but for an https OTLP export: the variable is moved aside for that, under
# the name src/nodeenv.ts gives it.
launch() {
  bundle=${self%/*}/../dist/$1.cjs
  shift
  if [ ! -f "$bundle" ]; then
    echo "${self##*/}: $bundle is not built: run \`npm run build\` (or scripts/setup.sh)" >&2
    exit 1
  fi
  if [ -n "${NODE_EXTRA_CA_CERTS:-}" ]; then
    KATA_TS_NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS
    export KATA_TS_NODE_EXTRA_CA_CERTS
    unset NODE_EXTRA_CA_CERTS
  fi
  exec node "${self%/*}/run-cached.cjs" --as "$self" "$bundle" "$@"
}
