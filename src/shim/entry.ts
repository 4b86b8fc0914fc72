// The shim bundle's entry (dist/containerd-shim-kata-ts-v2.cjs): one invocation, one-line errors.
import { oneLine } from "../errors";
import { main } from "./main";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`containerd-shim-kata-ts-v2: ${oneLine(err)}\n`);
    process.exitCode = 1;
  },
);
