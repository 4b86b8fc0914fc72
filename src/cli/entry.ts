// The bundle's entry: run one CLI invocation and set the exit code (never process.exit, so stdout
// written to a pipe is flushed before Node leaves).
import { oneLine } from "../errors";
import { main } from "./main";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`${oneLine(err)}\n`);
    process.exitCode = 1;
  },
);
