// The environment of kata-ts's own node processes. Node reads and parses the file named by
// NODE_EXTRA_CA_CERTS when it starts, before any script runs: ~75 ms of every node start on a machine
// where it names the system's CA bundle (docs/machine-notes.md), and a VM container's create starts two
// (the CLI and the sandbox supervisor). kata-ts makes no TLS connection but an https OTLP export, so
// its launchers (bin/kata-ts, bin/containerd-shim-kata-ts-v2, in sh) and the node processes it spawns
// get the variable moved aside, under SAVED_EXTRA_CA_CERTS, where that export finds it.

export const SAVED_EXTRA_CA_CERTS = "KATA_TS_NODE_EXTRA_CA_CERTS";

/** env for a node process of kata-ts's own (supervisor, cache slot, shim daemon): the CA file moved aside. */
export function nodeChildEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const file = env.NODE_EXTRA_CA_CERTS;
  if (!file) return env;
  const { NODE_EXTRA_CA_CERTS: _, ...rest } = env;
  return { ...rest, [SAVED_EXTRA_CA_CERTS]: file };
}

/** The extra CA file this process's Node did not load (it was moved aside), for an https client to add. */
export function extraCaCertsFile(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.NODE_EXTRA_CA_CERTS ? undefined : env[SAVED_EXTRA_CA_CERTS] || undefined;
}
