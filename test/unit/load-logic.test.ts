// The pure parts of the load and kill-point drivers (test/load.ts): percentiles and seeded kill points.
import assert from "node:assert/strict";
import { test } from "node:test";
import { percentile, pickKillPoints } from "../load";

test("percentile: nearest rank", () => {
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted on purpose
  assert.equal(percentile(xs, 50), 50);
  assert.equal(percentile(xs, 99), 99);
  assert.equal(percentile(xs, 100), 100);
  assert.equal(percentile([7], 99), 7);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test("pickKillPoints: every combination once, reproducible by seed, delays in range", () => {
  const verbs = ["create", "start", "exec", "delete"] as const;
  const a = pickKillPoints(42, [...verbs], ["cli", "supervisor", "standin"], 400);
  assert.equal(a.length, 12);
  assert.equal(new Set(a.map((p) => `${p.verb}/${p.victim}`)).size, 12);
  for (const p of a) assert.ok(p.delayMs >= 0 && p.delayMs < 400);
  assert.deepEqual(pickKillPoints(42, [...verbs], ["cli", "supervisor", "standin"], 400), a);
  assert.notDeepEqual(pickKillPoints(43, [...verbs], ["cli", "supervisor", "standin"], 400), a);
  // More points than combinations: all combinations first, then random repeats.
  const b = pickKillPoints(1, ["start"], ["supervisor"], 100, 5);
  assert.deepEqual(
    b.map((p) => p.verb + p.victim),
    Array(5).fill("startsupervisor"),
  );
});
