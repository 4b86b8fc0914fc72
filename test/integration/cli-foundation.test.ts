// The CLI contract engines rely on: one-line errors, exit codes, logrus JSON lines in --log,
// runc's `list` shapes on an empty root.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { BIN, kata, REPO, tempDir } from "../helpers";

const tmp = tempDir();
after(tmp.cleanup);
const root = join(tmp.path, "root");

describe("state", () => {
  it("a missing container: exit 1, one line, no stack trace", () => {
    const r = kata(["--root", root, "state", "nope"]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'container "nope" does not exist\n');
    assert.equal(r.stdout, "");
  });

  it("--log-format json --log F ends F with a line containerd can parse", () => {
    const log = join(tmp.path, "log.json");
    const r = kata(["--root", root, "--log-format", "json", "--log", log, "state", "nope"]);
    assert.equal(r.code, 1);
    const lines = readFileSync(log, "utf8").trim().split("\n");
    const last = JSON.parse(lines[lines.length - 1]);
    assert.equal(last.level, "error");
    assert.equal(last.msg, 'container "nope" does not exist');
    assert.equal(typeof last.time, "string");
    // RFC 3339 (what Go's time.Parse(time.RFC3339, ...) accepts)
    assert.match(last.time, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/);
    assert.ok(!Number.isNaN(Date.parse(last.time)));
  });

  it("text log format writes a logrus text line", () => {
    const log = join(tmp.path, "log.txt");
    kata(["--root", root, "--log", log, "state", "nope"]);
    assert.match(
      readFileSync(log, "utf8"),
      /^time="[^"]+" level=error msg="container \\"nope\\" does not exist"\n$/,
    );
  });
});

describe("list", () => {
  it("an empty root prints only the header", () => {
    const r = kata(["--root", root, "list"]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n");
  });

  it("--format json prints []", () => {
    const r = kata(["--root", root, "list", "--format", "json"]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), "[]");
  });

  it("--quiet prints nothing", () => {
    assert.equal(kata(["--root", root, "list", "-q"]).stdout, "");
  });
});

describe("usage errors", () => {
  it("unknown command: one line, exit 1", () => {
    const r = kata(["frobnicate"]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "unknown command 'frobnicate'\n");
  });

  it("unknown flag: one line, exit 1", () => {
    const r = kata(["--frob", "list"]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.match(r.stderr, /unknown option '--frob'/);
  });

  it("invalid container ids are refused and nothing is written under --root", () => {
    const bad = ["", "a/b", "..", ".", "x".repeat(1025), "a b", "a:b"];
    for (const id of bad) {
      const r = kata(["--root", root, "state", id]);
      assert.equal(r.code, 1, `id ${JSON.stringify(id)}`);
      assert.equal(r.stderr.trim().split("\n").length, 1);
      assert.match(r.stderr, /invalid container id|does not exist/);
    }
    assert.ok(!existsSync(root) || readdirSync(root).length === 0);
  });

  it("--version and version print the same text", () => {
    const a = kata(["--version"]);
    const b = kata(["version"]);
    assert.equal(a.code, 0);
    assert.match(a.stdout, /^kata-ts version \d+\.\d+\.\d+/);
    assert.match(a.stdout, /spec: 1\.2\.0/);
    assert.equal(a.stdout, b.stdout);
  });
});

describe("launcher (bin/kata-ts)", () => {
  // Node loads NODE_EXTRA_CA_CERTS as it starts (~75 ms for the system bundle): an unreadable file makes
  // it warn on stderr, which shows whether the CLI's node loaded it.
  const unreadable = { ...process.env, NODE_EXTRA_CA_CERTS: join(tmp.path, "no-such-ca.pem") };

  it("moves NODE_EXTRA_CA_CERTS aside before node starts: not loaded, no warning, the CLI works", () => {
    const bare = spawnSync(process.execPath, ["-e", "0"], { env: unreadable, encoding: "utf8" });
    assert.match(bare.stderr, /Ignoring extra certs/, "the probe: a bare node does load the file");
    const r = kata(["--version"], { env: unreadable });
    assert.equal(r.code, 0);
    assert.equal(r.stderr, "");
    assert.match(r.stdout, /^kata-ts version /);
  });

  it("without a built bundle: one line naming the build, exit 1", () => {
    const bin = join(tmp.path, "unbuilt", "bin");
    mkdirSync(bin, { recursive: true });
    // bin/ as it is, without dist/ beside it.
    for (const f of ["kata-ts", "launch.sh", "run-cached.cjs"])
      copyFileSync(join(REPO, "bin", f), join(bin, f));
    chmodSync(join(bin, "kata-ts"), 0o755);
    const r = spawnSync(join(bin, "kata-ts"), ["--version"], { encoding: "utf8" });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^kata-ts: \S+\/dist\/kata-ts\.cjs is not built: run `npm run build`.*\n$/);
    assert.equal(r.stderr.split("\n").length, 2, "one line");
  });

  it("runs through a symlink and by a relative name; the CLI sees the launcher as its program", () => {
    const link = join(tmp.path, "kata-ts-link");
    symlinkSync(BIN, link);
    const viaLink = spawnSync(link, ["--version"], { encoding: "utf8" });
    assert.equal(viaLink.status, 0, viaLink.stderr);
    const relative = spawnSync("sh", ["kata-ts", "--version"], { cwd: join(REPO, "bin"), encoding: "utf8" });
    assert.equal(relative.status, 0, relative.stderr);
    assert.equal(relative.stdout, viaLink.stdout);
    const cfg = join(tmp.path, "none.toml");
    writeFileSync(cfg, '[runtime]\nhypervisor = "none"\n');
    const env = spawnSync(link, ["--config", cfg, "env", "--json"], { encoding: "utf8" });
    assert.equal(env.status, 0, env.stderr);
    assert.equal(JSON.parse(env.stdout).Runtime.Path, BIN, "argv[1] is the launcher, the link resolved");
    const relEnv = spawnSync("sh", ["kata-ts", "--config", cfg, "env", "--json"], {
      cwd: join(REPO, "bin"),
      encoding: "utf8",
    });
    assert.equal(JSON.parse(relEnv.stdout).Runtime.Path, BIN, "a relative name becomes an absolute argv[1]");
  });

  it("the loader hands child_process, net and tty over unloaded, and loads each at its first use", () => {
    const bundle = join(tmp.path, "lazy.cjs");
    writeFileSync(
      bundle,
      `const cp = require("node:child_process");
      const net = require("node:net");
      const loaded = (m) => process.moduleLoadList.includes("NativeModule " + m);
      const before = { cp: loaded("child_process"), net: loaded("net"), tty: loaded("tty") };
      const out = cp.spawnSync("/bin/sh", ["-c", "echo child"], { encoding: "utf8" }).stdout.trim();
      const socket = new net.Socket();
      console.log(JSON.stringify({ before, out, isSocket: socket instanceof net.Socket, keys: Object.keys(cp).includes("spawn"), cp: loaded("child_process"), tty: loaded("tty") }));`,
    );
    const r = spawnSync(process.execPath, [join(REPO, "bin", "run-cached.cjs"), bundle], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      before: { cp: false, net: false, tty: false },
      out: "child",
      isSocket: true,
      keys: true,
      cp: true,
      tty: false,
    });
  });
});
