// The architecture as rules (docs/architecture.md, "Layers"): imports point down the list, never up
// and never sideways between folders of one layer; no cycles anywhere. `npx depcruise src` (the lint
// step of scripts/test.sh) fails the build on a violation.
//
//   cli, shim                             the CLI program (runc's verbs); containerd's shim v2 program
//   guest                                 the in-VM agent program (a separate bundle)
//   runtime, image                        verbs over the host/VM backends; guest image + kernel builder
//   sandbox                               supervisor, stand-ins, sandbox launch and teardown
//   factory                               the VM template (boot once, save, clone)
//   hypervisor, network                   QEMU/virtiofsd; the pod network in the VM
//   engine, agent                         the container engine; the host-guest contract and wire
//   oci, sys, config, log, ttrpc          OCI types and rules, native and /proc access, settings, logs;
//                                         containerd's ttrpc and the shim v2 protobuf schemas
//   errors.ts, version.ts, nodeenv.ts     the error base and one-line messages; the build's version;
//                                         the environment of kata-ts's own node processes
const LAYERS = [
  ["cli", "shim"],
  ["guest"],
  ["runtime", "image"],
  ["sandbox"],
  ["factory"],
  ["hypervisor", "network"],
  ["engine", "agent"],
  ["oci", "sys", "config", "log", "ttrpc"],
  ["errors.ts", "version.ts", "nodeenv.ts"],
];

const at = (name) => (name.endsWith(".ts") ? `^src/${name.replace(".", "\\.")}$` : `^src/${name}/`);

// The in-VM agent (guest) is a program of its own: it sits beside the CLI, and neither imports the
// other nor the host-only layers (runtime, image, sandbox, hypervisor).
const EXTRA = [
  { from: "guest", to: ["cli", "shim", "runtime", "image", "sandbox", "factory", "hypervisor"] },
  { from: "shim", to: ["guest"] },
];

const rules = [];
LAYERS.forEach((layer, i) => {
  const above = LAYERS.slice(0, i + 1).flat();
  for (const name of layer) {
    const forbidden = above.filter((n) => n !== name);
    // The top (the CLI) may import anything; the guest program has its own rule below.
    if (forbidden.length === 0 || name === "guest") continue;
    rules.push({
      name: `layer-${name.replace(".ts", "")}`,
      comment: `${name} may import only folders below its layer`,
      severity: "error",
      from: { path: at(name) },
      to: { path: forbidden.map(at) },
    });
  }
});
for (const e of EXTRA)
  rules.push({
    name: `layer-${e.from}`,
    comment: `${e.from} is a separate program: no host-side layers, no CLI`,
    severity: "error",
    from: { path: at(e.from) },
    to: { path: e.to.map(at) },
  });
rules.push({
  name: "no-circular",
  comment: "no import cycles (a cycle is two modules that cannot be understood apart)",
  severity: "error",
  from: {},
  to: { circular: true },
});
rules.push({
  name: "no-test-code-in-src",
  comment: "test fakes and bench helpers live in test/ and bench/, never imported by shipped code",
  severity: "error",
  from: { path: "^src/" },
  to: { path: "^(test|bench)/" },
});

module.exports = {
  forbidden: rules,
  options: {
    doNotFollow: { path: "node_modules" },
    tsConfig: { fileName: "tsconfig.json" },
    tsPreCompilationDeps: true,
    exclude: { path: "^(dist|native|node_modules)/" },
  },
};
