#!/usr/bin/env node
// The full fuzz runs, rerunnable by anyone (as root, after `npm ci`):
//   node scripts/fuzz.mjs --cases 5000 --seed 1 --mode host
//   node scripts/fuzz.mjs --cases 200 --seed 1 --mode vm      (builds the guest image of this tree first)
//   node scripts/fuzz.mjs --replay test/fuzz/regressions/NAME.json [--mode host|vm]
//   node scripts/fuzz.mjs --seed 1 --shrink INDEX               (minimise one failing case of a seed)
// Options: --config FILE (a configuration.toml instead of the built-in one), --out DIR (failing cases
// are written there as regression-case JSON), --verbose (one line per case).
// Every case runs in a throw-away worker (its own mount, uts, ipc and net namespaces, a private tmpfs):
// see test/fuzz/driver.ts. CI runs a seeded slice: test/integration/fuzz.test.ts.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
if (process.getuid?.() !== 0) {
  console.error("fuzz: needs root (namespaces, mounts, cgroups)");
  process.exit(1);
}
for (const [cmd, args] of [
  ["make", ["-s", "-C", join(repo, "native")]],
  [process.execPath, [join(repo, "scripts", "build.mjs")]],
]) {
  const r = spawnSync(cmd, args, { cwd: repo, stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
const r = spawnSync(
  process.execPath,
  ["--import", "tsx", join(repo, "test", "fuzz", "run.ts"), ...process.argv.slice(2)],
  { cwd: repo, stdio: "inherit" },
);
process.exit(r.status ?? 1);
