// Bundles the CLI into one CommonJS file (dist/kata-ts.cjs): one file to read at start-up is the
// cheapest cold start Node offers short of a snapshot. Heavy modules stay lazily required.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { build } from "esbuild";

const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
let commit = "unknown";
try {
  commit = execFileSync("git", ["rev-parse", "--short=12", "HEAD"], { stdio: ["ignore", "pipe", "ignore"] })
    .toString()
    .trim();
} catch {}

const common = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
  define: {
    __KATA_TS_VERSION__: JSON.stringify(pkg.version),
    __KATA_TS_COMMIT__: JSON.stringify(commit),
  },
};

await build({ ...common, entryPoints: ["src/cli/entry.ts"], outfile: "dist/kata-ts.cjs" });
// The sandbox supervisor (VM mode): a separate bundle, so the CLI never loads its code.
await build({ ...common, entryPoints: ["src/sandbox/main.ts"], outfile: "dist/kata-supervisor.cjs" });
// containerd's shim v2 (the Kubernetes path): one long-lived process per pod.
await build({
  ...common,
  entryPoints: ["src/shim/entry.ts"],
  outfile: "dist/containerd-shim-kata-ts-v2.cjs",
});
// The guest agent (runs inside the VM): its own bundle, copied into the guest image.
await build({ ...common, entryPoints: ["src/guest/main.ts"], outfile: "dist/kata-agent.cjs" });

// V8 code caches for bin/kata-ts (bin/run-cached.cjs), trained on the verbs engines call, and for the
// shim (code-cache.mjs).
// The guest agent's cache is made with the guest image (src/image/image.ts), whose key its inputs decide.
const { writeCodeCache, writeShimCodeCache } = await import("./code-cache.mjs");
const failed = writeCodeCache().filter((c) => !c.ok);
if (failed.length) console.warn(`code cache: trained without \`${failed[0].args.join(" ")}\` (it failed)`);
if (!writeShimCodeCache())
  console.warn("code cache: the shim's `-v` failed: the shim starts without a cache");
