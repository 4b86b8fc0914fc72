// Wall-clock laps of one operation, for a one-line breakdown in a log: "stand-in 2 ms, share 4 ms, guest
// 412 ms". The supervisor and the agent log one per container create, so where a VM container's start
// goes can be read from the logs of any run (docs/sandbox.md) instead of being guessed.

export interface Laps {
  /** Ends the current lap under `name` and starts the next one. */
  lap(name: string): void;
  /** "name N ms, ..." of the laps so far. */
  toString(): string;
}

export function laps(now: () => number = () => performance.now()): Laps {
  let last = now();
  const done: string[] = [];
  return {
    lap(name) {
      const t = now();
      done.push(`${name} ${Math.round(t - last)} ms`);
      last = t;
    },
    toString: () => done.join(", "),
  };
}
