import assert from "node:assert/strict";
import { test } from "node:test";
import { laps } from "../../src/log/laps";

test("laps: each lap is the time since the previous one, rounded to the millisecond", () => {
  const ticks = [100, 102.4, 150.6, 150.7];
  const took = laps(() => ticks.shift() ?? 0);
  assert.equal(String(took), "");
  took.lap("stand-in");
  took.lap("guest create");
  took.lap("relays");
  assert.equal(`${took}`, "stand-in 2 ms, guest create 48 ms, relays 0 ms");
});
