// Version facts printed by `--version` and `version`. The package version is injected at build time
// so the CLI never reads package.json at start-up.
declare const __KATA_TS_VERSION__: string | undefined;
declare const __KATA_TS_COMMIT__: string | undefined;

export const OCI_SPEC_VERSION = "1.2.0";

const version = typeof __KATA_TS_VERSION__ === "string" ? __KATA_TS_VERSION__ : "0.0.0-dev";
const commit = typeof __KATA_TS_COMMIT__ === "string" ? __KATA_TS_COMMIT__ : "unknown";

export const VERSION = {
  version,
  commit,
  spec: OCI_SPEC_VERSION,
  text: `kata-ts version ${version}\ncommit: ${commit}\nspec: ${OCI_SPEC_VERSION}\nnode: ${process.version}`,
};
