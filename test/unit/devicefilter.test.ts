// The cgroup v2 device filter generator, checked by running its encoded eBPF in a small interpreter for
// the instructions it may emit, against two independent readings of the rules: cgroup v1's exception
// list (what the kernel does with devices.allow/deny, and what runc means) and, where the two agree by
// construction, "the last rule that matches decides".
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ACC_MKNOD,
  ACC_READ,
  ACC_WRITE,
  DEV_BLOCK,
  DEV_CHAR,
  deviceFilterInsns,
  deviceFilterProgram,
  deviceRuleSet,
  OP,
} from "../../src/engine/cgroups/devicefilter";
import { DEFAULT_DEVICE_RULES, effectiveDeviceRules } from "../../src/engine/cgroups/devices";
import type { LinuxDeviceCgroup } from "../../src/oci/spec";

type DevType = "b" | "c";
interface Req {
  type: DevType;
  major: number;
  minor: number;
  access: number;
}

/**
 * Runs an encoded program on struct bpf_cgroup_dev_ctx { access << 16 | type, major, minor }. Refuses
 * what the kernel's verifier would: unknown opcodes, reads of unset registers, loads other than from ctx
 * at 0/4/8, backward or out-of-range jumps, falling off the end, a return value other than 0 or 1.
 */
function runFilter(prog: Buffer, req: Req): 0 | 1 {
  assert.equal(prog.length % 8, 0, "whole 8-byte instructions");
  const n = prog.length / 8;
  const M64 = (1n << 64n) - 1n;
  const M32 = (1n << 32n) - 1n;
  const regs: (bigint | undefined)[] = new Array(11).fill(undefined);
  let ctxReg = 1; // which register holds the ctx pointer
  const ctx = [
    BigInt(((req.access << 16) | (req.type === "b" ? DEV_BLOCK : DEV_CHAR)) >>> 0),
    BigInt(req.major),
    BigInt(req.minor),
  ];
  const get = (r: number) => {
    const v = regs[r];
    if (v === undefined) throw new Error(`read of unset register r${r}`);
    return v;
  };
  for (let pc = 0, steps = 0; ; pc++, steps++) {
    if (pc >= n) throw new Error("fell off the end of the program");
    if (steps > 10000) throw new Error("no progress");
    const op = prog.readUInt8(pc * 8);
    const dst = prog.readUInt8(pc * 8 + 1) & 0xf;
    const src = prog.readUInt8(pc * 8 + 1) >> 4;
    const off = prog.readInt16LE(pc * 8 + 2);
    const imm = prog.readInt32LE(pc * 8 + 4);
    const immU64 = BigInt(imm) & M64; // sign-extended, as the kernel does for 64-bit compares
    const jump = (taken: boolean) => {
      if (off <= 0 || pc + off >= n) throw new Error(`bad jump offset ${off} at ${pc}`);
      if (taken) pc += off;
    };
    switch (op) {
      case OP.LDX_MEM_W:
        if (src !== ctxReg || ![0, 4, 8].includes(off)) throw new Error(`bad load at ${pc}`);
        regs[dst] = ctx[off / 4];
        if (dst === ctxReg) ctxReg = -1;
        break;
      case OP.AND32_K:
        regs[dst] = get(dst) & BigInt(imm >>> 0) & M32;
        break;
      case OP.RSH32_K:
        regs[dst] = (get(dst) & M32) >> BigInt(imm);
        break;
      case OP.MOV32_X:
        regs[dst] = get(src) & M32;
        if (dst === ctxReg) ctxReg = -1;
        break;
      case OP.MOV64_K:
        regs[dst] = immU64;
        break;
      case OP.JNE_K:
        jump(get(dst) !== immU64);
        break;
      case OP.JEQ_K:
        jump(get(dst) === immU64);
        break;
      case OP.EXIT: {
        const r0 = get(0);
        if (r0 !== 0n && r0 !== 1n) throw new Error(`returns ${r0}`);
        return Number(r0) as 0 | 1;
      }
      default:
        throw new Error(`unknown opcode 0x${op.toString(16)} at ${pc}`);
    }
  }
}

const bits = (access: string) =>
  (access.includes("m") ? ACC_MKNOD : 0) |
  (access.includes("r") ? ACC_READ : 0) |
  (access.includes("w") ? ACC_WRITE : 0);

interface V1Exception {
  type: DevType;
  major: number;
  minor: number;
  access: number;
}

/**
 * cgroup v1 (security/device_cgroup.c), written from the kernel's rules: 'a' sets the behaviour and clears
 * the list; a rule against the behaviour adds bits to the exception with the same type:major:minor, a rule
 * with it removes bits from that exact exception. Checking: under deny-all one exception must cover the
 * device and every requested bit; under allow-all any exception covering the device and any requested bit
 * refuses. hole: a removal that a wider exception would silently outlive (what runc refuses).
 */
function v1Oracle(rules: readonly LinuxDeviceCgroup[]): { hole: boolean; allowed: (r: Req) => boolean } {
  let allowAll = false;
  let list: V1Exception[] = [];
  let hole = false;
  for (const rule of rules) {
    const type = rule.type ?? "a";
    const major = rule.major === undefined || rule.major < 0 ? -1 : rule.major;
    const minor = rule.minor === undefined || rule.minor < 0 ? -1 : rule.minor;
    const access = bits(rule.access || "rwm");
    if (type === "a") {
      allowAll = rule.allow;
      list = [];
      continue;
    }
    const same = list.find((e) => e.type === type && e.major === major && e.minor === minor);
    if (rule.allow !== allowAll) {
      if (same) same.access |= access;
      else list.push({ type: type as DevType, major, minor, access });
      continue;
    }
    hole ||= list.some(
      (e) =>
        e !== same &&
        e.type === type &&
        (e.major === -1 || e.major === major) &&
        (e.minor === -1 || e.minor === minor) &&
        (e.access & access) !== 0,
    );
    if (same) {
      same.access &= ~access;
      if (!same.access) list = list.filter((e) => e !== same);
    }
  }
  const covers = (e: V1Exception, r: Req) =>
    e.type === r.type && (e.major === -1 || e.major === r.major) && (e.minor === -1 || e.minor === r.minor);
  return {
    hole,
    allowed: (r) =>
      allowAll
        ? !list.some((e) => covers(e, r) && (e.access & r.access) !== 0)
        : list.some((e) => covers(e, r) && (r.access & ~e.access) === 0),
  };
}

/** "The last rule matching the device and the (single) access bit decides", from the last 'a' rule on. */
function lastMatchOracle(rules: readonly LinuxDeviceCgroup[], r: Req): boolean {
  let verdict: boolean | undefined;
  for (let i = rules.length - 1; i >= 0 && verdict === undefined; i--) {
    const rule = rules[i]!;
    const type = rule.type ?? "a";
    if (type === "a") verdict = rule.allow;
    else if (
      type === r.type &&
      (rule.major === undefined || rule.major < 0 || rule.major === r.major) &&
      (rule.minor === undefined || rule.minor < 0 || rule.minor === r.minor) &&
      bits(rule.access || "rwm") & r.access
    )
      verdict = rule.allow;
  }
  return verdict ?? false;
}

const MAJORS = [1, 5, 10, 136];
const MINORS = [0, 3, 5, 237];
function* requests(): Generator<Req> {
  for (const type of ["b", "c"] as const)
    for (const major of MAJORS)
      for (const minor of MINORS)
        for (let access = 1; access <= 7; access++) yield { type, major, minor, access };
}

/** Deterministic pseudo-random numbers (mulberry32: a failure must reproduce). */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

/** Rule lists over MAJORS/MINORS; with exactRemovals, a rule that agrees with the default then in force
 * names one exact device (so it can only undo an exception, never be outlived by a narrower one). */
function randomRules(rand: (n: number) => number, exactRemovals: boolean): LinuxDeviceCgroup[] {
  const pick = <T>(xs: readonly T[]) => xs[rand(xs.length)]!;
  const out: LinuxDeviceCgroup[] = [];
  let allowAll = false;
  if (rand(4) > 0) {
    allowAll = rand(3) === 0;
    out.push({ allow: allowAll, access: "rwm" });
  }
  const len = 1 + rand(7);
  for (let i = 0; i < len; i++) {
    if (rand(12) === 0) {
      allowAll = rand(2) === 0;
      out.push({ allow: allowAll, type: "a", access: "rwm" });
      continue;
    }
    const access = pick(["r", "w", "m", "rw", "rm", "wm", "rwm"]);
    const rule: LinuxDeviceCgroup = { allow: rand(2) === 0, type: pick(["b", "c"]), access };
    const exact = exactRemovals && rule.allow === allowAll;
    const major = exact ? pick(MAJORS) : pick([-1, ...MAJORS]);
    const minor = exact ? pick(MINORS) : pick([-1, ...MINORS]);
    if (major >= 0) rule.major = major;
    if (minor >= 0) rule.minor = minor;
    out.push(rule);
  }
  return out;
}

describe("device filter program", () => {
  test("encoding: a ctx prologue, struct bpf_insn layout, ends in exit", () => {
    const prog = deviceFilterProgram([{ allow: false, access: "rwm" }]);
    // ldxw r2, [r1+0]: opcode 0x61, src r1 in the high nibble, dst r2 in the low one.
    assert.deepEqual([...prog.subarray(0, 8)], [0x61, 0x12, 0, 0, 0, 0, 0, 0]);
    // Deny everything: the prologue, then r0 = 0; exit.
    assert.equal(prog.length, 8 * 8);
    assert.deepEqual([...prog.subarray(48, 56)], [0xb7, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...prog.subarray(56, 64)], [0x95, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(runFilter(prog, { type: "c", major: 1, minor: 3, access: ACC_READ }), 0);
    assert.equal(
      runFilter(deviceFilterProgram([{ allow: true, access: "rwm" }]), {
        type: "b",
        major: 8,
        minor: 0,
        access: 6,
      }),
      1,
    );
    // An empty list means cgroup v1's starting point here: deny all.
    assert.equal(runFilter(deviceFilterProgram([]), { type: "c", major: 1, minor: 3, access: ACC_READ }), 0);
  });

  test("the conformance case's rules: loop-control r only, fuse rwm, runc's defaults", () => {
    const prog = deviceFilterProgram(
      effectiveDeviceRules([
        { allow: false, access: "rwm" },
        { allow: true, type: "c", major: 10, minor: 229, access: "rwm" },
        { allow: true, type: "c", major: 10, minor: 237, access: "r" },
      ]),
    );
    const run = (type: DevType, major: number, minor: number, access: number) =>
      runFilter(prog, { type, major, minor, access });
    assert.equal(run("c", 10, 237, ACC_READ), 1, "loop-control read");
    assert.equal(run("c", 10, 237, ACC_WRITE), 0, "loop-control write");
    assert.equal(run("c", 10, 237, ACC_READ | ACC_WRITE), 0, "loop-control O_RDWR");
    assert.equal(run("c", 10, 237, ACC_MKNOD), 1, "mknod of any char device (runc default)");
    assert.equal(run("c", 10, 229, ACC_READ | ACC_WRITE), 1, "fuse");
    assert.equal(run("c", 1, 3, ACC_READ | ACC_WRITE), 1, "/dev/null");
    assert.equal(run("c", 136, 7, ACC_READ | ACC_WRITE), 1, "/dev/pts/7");
    assert.equal(run("c", 1, 1, ACC_READ), 0, "/dev/mem");
    assert.equal(run("b", 8, 0, ACC_READ), 0, "a disk");
    assert.equal(run("b", 8, 0, ACC_MKNOD), 1, "mknod of any block device (runc default)");
    assert.equal(run("b", 1, 3, ACC_READ), 0, "block 1:3 is not char 1:3");
  });

  test("allow-all with a denied bit: an O_RDWR open is refused as on cgroup v1", () => {
    const prog = deviceFilterProgram([
      { allow: true, access: "rwm" },
      { allow: false, type: "c", major: 1, minor: 3, access: "w" },
    ]);
    assert.equal(runFilter(prog, { type: "c", major: 1, minor: 3, access: ACC_READ }), 1);
    assert.equal(runFilter(prog, { type: "c", major: 1, minor: 3, access: ACC_WRITE }), 0);
    assert.equal(runFilter(prog, { type: "c", major: 1, minor: 3, access: ACC_READ | ACC_WRITE }), 0);
    assert.equal(runFilter(prog, { type: "c", major: 1, minor: 5, access: ACC_WRITE }), 1);
  });

  test("rule semantics: 'a' resets, exact removal, wider denial keeps narrower exceptions, holes refused", () => {
    // A later 'a' rule drops every exception before it.
    const reset = deviceRuleSet([
      { allow: true, type: "c", major: 1, minor: 3 },
      { allow: false, type: "a" },
    ]);
    assert.deepEqual(reset, { defaultAllow: false, exceptions: [] });
    // Removing bits from the exact exception.
    assert.deepEqual(
      deviceRuleSet([
        { allow: true, type: "c", major: 1, minor: 3, access: "rwm" },
        { allow: false, type: "c", major: 1, minor: 3, access: "w" },
      ]).exceptions,
      [{ type: "c", major: 1, minor: 3, access: ACC_READ | ACC_MKNOD }],
    );
    // A wider deny after a narrower allow removes nothing (cgroup v1, and runc): 1:3 stays allowed.
    const wider = [
      { allow: false, access: "rwm" },
      { allow: true, type: "c", major: 1, minor: 3, access: "rw" },
      { allow: false, type: "c", major: 1, access: "rw" },
    ];
    assert.equal(
      runFilter(deviceFilterProgram(wider), { type: "c", major: 1, minor: 3, access: ACC_READ }),
      1,
    );
    // A narrower deny under a wider allow would be ignored by v1: refused with both rules named.
    assert.throws(
      () =>
        deviceRuleSet([
          { allow: true, type: "c", major: 1, access: "rw" },
          { allow: false, type: "c", major: 1, minor: 3, access: "w" },
        ]),
      /^Error: device rule "c 1:3 w" \(deny\) cannot punch a hole in the wider rule "c 1:\* rw"$/,
    );
    assert.throws(() => deviceRuleSet([{ allow: true, type: "x" }]), /invalid device rule type "x"/);
    assert.throws(
      () => deviceRuleSet([{ allow: true, type: "c", access: "rx" }]),
      /invalid device rule access/,
    );
    assert.throws(() => deviceRuleSet([{ allow: true, type: "c", major: 2 ** 31 }]), /out of range/);
  });

  test("the default allow-list as a filter: exceptions are merged per device, not repeated", () => {
    const set = deviceRuleSet(effectiveDeviceRules(undefined));
    assert.equal(set.defaultAllow, false);
    assert.equal(set.exceptions.length, DEFAULT_DEVICE_RULES.length);
    const merged = deviceRuleSet([
      { allow: false, access: "rwm" },
      { allow: true, type: "c", major: 1, minor: 3, access: "r" },
      { allow: true, type: "c", major: 1, minor: 3, access: "w" },
    ]);
    assert.deepEqual(merged.exceptions, [{ type: "c", major: 1, minor: 3, access: ACC_READ | ACC_WRITE }]);
    // Blocks of the default list: type, major, minor tests (the rwm ones need no access test), verdict.
    assert.ok(deviceFilterInsns(set).length < 6 + 2 + DEFAULT_DEVICE_RULES.length * 7);
  });

  test("random rule lists: the program agrees with cgroup v1 on every (type, major, minor, access)", () => {
    const rand = rng(20261130);
    let compared = 0;
    let holes = 0;
    for (let i = 0; i < 300; i++) {
      const rules = randomRules(rand, false);
      if (rand(3) === 0) rules.push(...DEFAULT_DEVICE_RULES);
      const oracle = v1Oracle(rules);
      let prog: Buffer;
      try {
        prog = deviceFilterProgram(rules);
      } catch (err) {
        assert.ok(oracle.hole, `unexpected refusal of ${JSON.stringify(rules)}: ${(err as Error).message}`);
        assert.match((err as Error).message, /cannot punch a hole/);
        holes++;
        continue;
      }
      assert.equal(oracle.hole, false, `a hole was let through: ${JSON.stringify(rules)}`);
      for (const r of requests()) {
        assert.equal(
          runFilter(prog, r) === 1,
          oracle.allowed(r),
          `${JSON.stringify(rules)} on ${JSON.stringify(r)}`,
        );
        compared++;
      }
    }
    // The generator must exercise both outcomes.
    assert.ok(holes > 10 && compared > 40000, `holes=${holes} compared=${compared}`);
  });

  test("random rule lists with exact removals: the last matching rule decides each access bit", () => {
    const rand = rng(7);
    let compared = 0;
    for (let i = 0; i < 400; i++) {
      const rules = randomRules(rand, true);
      let prog: Buffer;
      try {
        prog = deviceFilterProgram(rules);
      } catch {
        continue; // a hole: checked above
      }
      for (const r of requests()) {
        if (r.access !== ACC_MKNOD && r.access !== ACC_READ && r.access !== ACC_WRITE) continue;
        assert.equal(
          runFilter(prog, r) === 1,
          lastMatchOracle(rules, r),
          `${JSON.stringify(rules)} on ${JSON.stringify(r)}`,
        );
        compared++;
      }
    }
    assert.ok(compared > 20000, `compared=${compared}`);
  });
});
