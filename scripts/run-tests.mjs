// Runs the test layers with node:test (Node 20's runner takes explicit file lists, so we expand them).
//   unit        — no root, no devices; fast logic tests (test/unit/**/*.test.ts)
//   integration — real processes, real kernel features; needs root (test/integration/**/*.test.ts)
//   all         — both, unit first
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const layer = process.argv[2] ?? "all";
const filter = process.argv.slice(3);

function collect(dir) {
  let out = [];
  let entries = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries.sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out = out.concat(collect(p));
    else if (e.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

const layers = layer === "all" ? ["unit", "integration"] : [layer];
let files = layers.flatMap((l) => collect(join("test", l)));
if (filter.length) files = files.filter((f) => filter.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error(`no test files for layer ${layer}`);
  process.exit(1);
}
if (layers.includes("integration") && process.getuid?.() !== 0) {
  console.error("integration tests need root");
  process.exit(1);
}
const r = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", ...files],
  { stdio: "inherit" },
);
process.exit(r.status ?? 1);
