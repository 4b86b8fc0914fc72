// Command-line pieces the TypeScript benchmarks share.

/** Takes `-n N` out of `argv` (N a whole number >= 1, else `fallback`); the rest stays in argv. */
export function takeRuns(argv: string[], fallback: number): number {
  const i = argv.indexOf("-n");
  if (i < 0) return fallback;
  const runs = Number(argv.splice(i, 2)[1]);
  if (!Number.isInteger(runs) || runs < 1) throw new Error("-n takes a whole number >= 1");
  return runs;
}
