// cgroup v2 device filter. v2 has no devices.allow file: the kernel runs the BPF_PROG_TYPE_CGROUP_DEVICE
// programs attached to a cgroup on every open and mknod of a device node, and refuses with EPERM when one
// returns 0. This module turns the OCI device rules into such a program, as runc's devicefilter.go does:
// the rules are first replayed with cgroup v1's semantics (a default, and a set of exceptions to it), so a
// rule list means the same thing on v1 and v2, and the exceptions become one test block each.
// Pure: loading and attaching the program is the native addon's job (src/sys/native.ts).
import type { LinuxDeviceCgroup } from "../../oci/spec";
import { deviceRuleString, parseDeviceRule } from "./devices";

/** struct bpf_cgroup_dev_ctx access bits (BPF_DEVCG_ACC_*): the high 16 bits of access_type. */
export const ACC_MKNOD = 1;
export const ACC_READ = 2;
export const ACC_WRITE = 4;
const ACC_ALL = ACC_MKNOD | ACC_READ | ACC_WRITE;
/** struct bpf_cgroup_dev_ctx device types (BPF_DEVCG_DEV_*): the low 16 bits of access_type. */
export const DEV_BLOCK = 1;
export const DEV_CHAR = 2;

/** One exception to the default: a device (-1 = any major/minor) and the access bits it is about. */
export interface DeviceException {
  type: "b" | "c";
  major: number;
  minor: number;
  /** ACC_* bits. */
  access: number;
}

/** What a rule list amounts to: a default, and exceptions that reverse it. */
export interface DeviceRuleSet {
  defaultAllow: boolean;
  exceptions: DeviceException[];
}

export function accessBits(access: string): number {
  let bits = 0;
  if (access.includes("m")) bits |= ACC_MKNOD;
  if (access.includes("r")) bits |= ACC_READ;
  if (access.includes("w")) bits |= ACC_WRITE;
  return bits;
}

function accessString(bits: number): string {
  return `${bits & ACC_READ ? "r" : ""}${bits & ACC_WRITE ? "w" : ""}${bits & ACC_MKNOD ? "m" : ""}`;
}

// The largest value a JNE immediate (a sign-extended s32) can compare a zero-extended u32 field with.
const MAX_DEVICE_NUMBER = 0x7fffffff;

/**
 * Replays rules as cgroup v1 does from "deny all" (runc's devices emulator): a rule of type `a` sets the
 * default and drops every exception; a rule that reverses the default adds its access bits to the exception
 * for exactly that (type, major, minor); a rule that agrees with the default takes its bits away from that
 * exact exception. Taking bits away from a wildcard exception that merely covers the device ("deny c 1:3"
 * under "allow c *:*") is an error, as in runc: v1 would silently keep allowing it.
 */
export function deviceRuleSet(rules: readonly LinuxDeviceCgroup[]): DeviceRuleSet {
  let defaultAllow = false;
  const exceptions = new Map<string, DeviceException>();
  const key = (t: string, major: number, minor: number) => `${t} ${major}:${minor}`;
  for (const rule of rules) {
    const p = parseDeviceRule(rule);
    if (p.type === "a") {
      defaultAllow = p.allow;
      exceptions.clear();
      continue;
    }
    if (p.major > MAX_DEVICE_NUMBER || p.minor > MAX_DEVICE_NUMBER)
      throw new Error(`device rule "${deviceRuleString(rule)}": device number out of range`);
    const bits = accessBits(p.access);
    const k = key(p.type, p.major, p.minor);
    const have = exceptions.get(k);
    if (p.allow !== defaultAllow) {
      exceptions.set(k, { type: p.type, major: p.major, minor: p.minor, access: (have?.access ?? 0) | bits });
      continue;
    }
    for (const [major, minor] of [
      [-1, p.minor],
      [p.major, -1],
      [-1, -1],
    ] as const) {
      if (major === p.major && minor === p.minor) continue;
      const wide = exceptions.get(key(p.type, major, minor));
      if (wide && wide.access & bits)
        throw new Error(
          `device rule "${deviceRuleString(rule)}" (${p.allow ? "allow" : "deny"}) cannot punch a hole in the wider rule "${deviceRuleString({ ...wide, allow: !p.allow, access: accessString(wide.access) })}"`,
        );
    }
    if (!have) continue;
    const left = have.access & ~bits;
    if (left) exceptions.set(k, { ...have, access: left });
    else exceptions.delete(k);
  }
  return { defaultAllow, exceptions: [...exceptions.values()] };
}

// eBPF encoding (include/uapi/linux/bpf.h, bpf_common.h).
const R0 = 0;
const R1 = 1;
const R2 = 2;
const R3 = 3;
const R4 = 4;
const R5 = 5;
export const OP = {
  LDX_MEM_W: 0x61, // BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
  AND32_K: 0x54, // BPF_ALU | BPF_AND | BPF_K: dst = (u32)dst & imm
  RSH32_K: 0x74, // BPF_ALU | BPF_RSH | BPF_K
  MOV32_X: 0xbc, // BPF_ALU | BPF_MOV | BPF_X: dst = (u32)src
  MOV64_K: 0xb7, // BPF_ALU64 | BPF_MOV | BPF_K
  JNE_K: 0x55, // BPF_JMP | BPF_JNE | BPF_K: if dst != imm, pc += off
  JEQ_K: 0x15, // BPF_JMP | BPF_JEQ | BPF_K: if dst == imm, pc += off
  EXIT: 0x95, // BPF_JMP | BPF_EXIT: return r0
} as const;

/** One struct bpf_insn: opcode, dst/src registers, a signed 16-bit offset, a signed 32-bit immediate. */
export interface Insn {
  op: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
}

const insn = (op: number, dst: number, src: number, off: number, imm: number): Insn => ({
  op,
  dst,
  src,
  off,
  imm,
});

/**
 * The program for a rule set. ctx (r1) is struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
 * u32 minor; }, access_type = access << 16 | type, and one open asks for read and write at once. It returns
 * 1 to allow, 0 to refuse. Access is matched as cgroup v1 matches it: under "deny all" an allowing
 * exception must cover every requested bit; under "allow all" a denying exception refuses as soon as it
 * covers any requested bit (runc's v2 filter tests both the first way, so an O_RDWR open slips past a
 * "deny w" exception there). No matching exception: the default.
 */
export function deviceFilterInsns(set: DeviceRuleSet): Insn[] {
  const out: Insn[] = [
    insn(OP.LDX_MEM_W, R2, R1, 0, 0),
    insn(OP.AND32_K, R2, 0, 0, 0xffff), // r2 = type
    insn(OP.LDX_MEM_W, R3, R1, 0, 0),
    insn(OP.RSH32_K, R3, 0, 0, 16), // r3 = requested access
    insn(OP.LDX_MEM_W, R4, R1, 4, 0), // r4 = major
    insn(OP.LDX_MEM_W, R5, R1, 8, 0), // r5 = minor
  ];
  const verdict = set.defaultAllow ? 0 : 1;
  for (const e of set.exceptions) {
    // Each test jumps past the rest of this block when the exception does not apply.
    const tests: Insn[] = [insn(OP.JNE_K, R2, 0, 0, e.type === "b" ? DEV_BLOCK : DEV_CHAR)];
    if ((e.access & ACC_ALL) !== ACC_ALL) {
      tests.push(insn(OP.MOV32_X, R1, R3, 0, 0));
      if (set.defaultAllow)
        // r1 = requested bits this exception denies; none → not this one
        tests.push(insn(OP.AND32_K, R1, 0, 0, e.access), insn(OP.JEQ_K, R1, 0, 0, 0));
      // r1 = requested bits this exception does not allow; any → not this one
      else tests.push(insn(OP.AND32_K, R1, 0, 0, ~e.access), insn(OP.JNE_K, R1, 0, 0, 0));
    }
    if (e.major >= 0) tests.push(insn(OP.JNE_K, R4, 0, 0, e.major));
    if (e.minor >= 0) tests.push(insn(OP.JNE_K, R5, 0, 0, e.minor));
    const block = [...tests, insn(OP.MOV64_K, R0, 0, 0, verdict), insn(OP.EXIT, 0, 0, 0, 0)];
    block.forEach((ins, i) => {
      if (ins.op === OP.JNE_K || ins.op === OP.JEQ_K) ins.off = block.length - i - 1;
    });
    out.push(...block);
  }
  out.push(insn(OP.MOV64_K, R0, 0, 0, set.defaultAllow ? 1 : 0), insn(OP.EXIT, 0, 0, 0, 0));
  return out;
}

/** struct bpf_insn[] as the kernel takes it (little-endian x86/arm64 layout: dst in the low nibble). */
export function encodeInsns(insns: readonly Insn[]): Buffer {
  const buf = Buffer.alloc(insns.length * 8);
  insns.forEach((i, n) => {
    buf.writeUInt8(i.op, n * 8);
    buf.writeUInt8((i.src << 4) | i.dst, n * 8 + 1);
    buf.writeInt16LE(i.off, n * 8 + 2);
    buf.writeInt32LE(i.imm | 0, n * 8 + 4);
  });
  return buf;
}

/** The encoded device filter for an OCI rule list (spec rules plus the defaults, in order). */
export function deviceFilterProgram(rules: readonly LinuxDeviceCgroup[]): Buffer {
  return encodeInsns(deviceFilterInsns(deviceRuleSet(rules)));
}
