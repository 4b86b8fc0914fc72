// `kata-ts events [--stats] [--interval 5s] ID`: runc's JSON events. --stats prints one stats event and
// exits; otherwise a stats event every interval (and an oom event on each OOM kill) until the
// container stops.
import type { Command } from "commander";
import { containerStatsEvent, parseDuration, streamEvents } from "../../runtime/operations";
import { type App, print } from "../app";

export function register(program: Command, app: App): void {
  program
    .command("events")
    .description("display container events such as OOM notifications, cpu, memory, and IO usage statistics")
    .argument("<container-id>")
    .option("--interval <duration>", "set the stats collection interval", "5s")
    .option("--stats", "display the container's stats then exit")
    .action(async (id: string, opts: { interval: string; stats?: boolean }) => {
      app.logger().with({ id });
      const ctx = { root: app.globals().root, warn: (m: string) => app.logger().warn(m) };
      if (opts.stats) return print(containerStatsEvent(ctx, id));
      const intervalMs = parseDuration(opts.interval);
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      try {
        await streamEvents(ctx, id, { intervalMs, write: print, signal: stop.signal });
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    });
}
