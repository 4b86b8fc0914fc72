// Runs a CommonJS bundle with V8's code cache (BUNDLE.v8cache next to it): Node 20 has no module compile
// cache, and compiling a bundle is the largest cost of a start after Node's own (~30 ms for the CLI on
// the host; ~10× that for the agent in a TCG guest). A missing or stale cache is rejected by V8 and the
// bundle is simply compiled as usual. With KATA_TS_WRITE_CODE_CACHE=1 the cache is (re)written at exit,
// holding every function compiled by then, those it was given included: the build trains the CLI's cache
// over several calls that way (scripts/code-cache.mjs).
// Used by bin/kata-ts (the CLI), bin/containerd-shim-kata-ts-v2 and, in the guest image, by the init to
// start the agent:
//   node run-cached.cjs [--as PROGRAM] BUNDLE [args...]
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");
const Module = require("node:module");

// Built-in modules a bundle only sometimes uses, handed to it as stand-ins that load the module at its
// first use. The bundle names them at its top (esbuild turns every import into a require there, and
// commander requires child_process for subcommands kata-ts never uses), but `state`, `start`, `kill`,
// `delete` and `list` spawn nothing and open no socket: loading child_process with net and tty cost
// ~6 ms of every such call.
const LAZY_BUILTINS = new Set(["node:child_process", "node:net", "node:tty"]);

function lazyBuiltin(id) {
  let loaded;
  const real = () => {
    loaded ??= require(id);
    return loaded;
  };
  return new Proxy(
    {},
    {
      get: (_, key) => real()[key],
      has: (_, key) => key in real(),
      ownKeys: () => Reflect.ownKeys(real()),
      getOwnPropertyDescriptor: (_, key) => {
        const d = Object.getOwnPropertyDescriptor(real(), key);
        return d && { ...d, configurable: true };
      },
    },
  );
}

function runCached(file) {
  const cacheFile = `${file}.v8cache`;
  let cachedData;
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {}
  const script = new vm.Script(Module.wrap(fs.readFileSync(file, "utf8")), { filename: file, cachedData });
  // What became of the cache, for the bundle to report (the agent says it in its ping answer).
  globalThis.kataTsCodeCache = !cachedData ? "none" : script.cachedDataRejected ? "rejected" : "accepted";
  const mod = new Module(file, module);
  mod.filename = file;
  mod.paths = Module._nodeModulePaths(path.dirname(file));
  if (process.env.KATA_TS_WRITE_CODE_CACHE === "1") {
    // Written aside and renamed: a CLI starting meanwhile reads the old cache or the new one, whole.
    process.on("exit", () => {
      fs.writeFileSync(`${cacheFile}.${process.pid}`, script.createCachedData());
      fs.renameSync(`${cacheFile}.${process.pid}`, cacheFile);
    });
  }
  const dir = path.dirname(file);
  const req = (id) => (LAZY_BUILTINS.has(id) ? lazyBuiltin(id) : mod.require(id));
  script.runInThisContext().call(mod.exports, mod.exports, req, mod, file, dir);
}

module.exports = { runCached };

if (require.main === module) {
  // node run-cached.cjs [--as PROGRAM] BUNDLE [args...]: the bundle sees PROGRAM (its launcher, as
  // engines ran it: bin/kata-ts) or else itself as the script, argv[1]; its arguments follow.
  const as = process.argv[2] === "--as" ? process.argv[3] : undefined;
  const at = as === undefined ? 2 : 4;
  const file = path.resolve(process.argv[at]);
  process.argv.splice(1, at, as ?? file);
  runCached(file);
}
