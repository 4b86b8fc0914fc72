// Device cgroup rules. runc's specconv appends a fixed allow-list to the spec's rules and applies the lot
// on top of "deny everything"; we do the same so `docker run` and `runc` containers see the same /dev.
import type { LinuxDeviceCgroup } from "../../oci/spec";

/** runc 1.1's AllowedDevices rules (the ones its containers always get). */
export const DEFAULT_DEVICE_RULES: readonly LinuxDeviceCgroup[] = [
  { allow: true, type: "c", access: "m" }, // mknod of any char device (opening it is still denied)
  { allow: true, type: "b", access: "m" }, // mknod of any block device
  { allow: true, type: "c", major: 1, minor: 3, access: "rwm" }, // /dev/null
  { allow: true, type: "c", major: 1, minor: 8, access: "rwm" }, // /dev/random
  { allow: true, type: "c", major: 1, minor: 7, access: "rwm" }, // /dev/full
  { allow: true, type: "c", major: 5, minor: 0, access: "rwm" }, // /dev/tty
  { allow: true, type: "c", major: 1, minor: 5, access: "rwm" }, // /dev/zero
  { allow: true, type: "c", major: 1, minor: 9, access: "rwm" }, // /dev/urandom
  { allow: true, type: "c", major: 5, minor: 1, access: "rwm" }, // /dev/console
  { allow: true, type: "c", major: 136, access: "rwm" }, // /dev/pts/*
  { allow: true, type: "c", major: 5, minor: 2, access: "rwm" }, // /dev/ptmx
  { allow: true, type: "c", major: 10, minor: 200, access: "rwm" }, // /dev/net/tun
];

/** The spec's rules followed by the defaults, in the order they must be applied. */
export function effectiveDeviceRules(rules: readonly LinuxDeviceCgroup[] | undefined): LinuxDeviceCgroup[] {
  return [...(rules ?? []), ...DEFAULT_DEVICE_RULES];
}

/** A rule with its defaults filled in: type "a" when absent, -1 for a wildcard number, "rwm" when empty. */
export interface ParsedDeviceRule {
  allow: boolean;
  type: "a" | "b" | "c";
  major: number;
  minor: number;
  access: string;
}

/** Validates one rule and fills in the defaults (absent or negative numbers are wildcards). */
export function parseDeviceRule(rule: LinuxDeviceCgroup): ParsedDeviceRule {
  const type = rule.type ?? "a";
  if (type !== "a" && type !== "b" && type !== "c")
    throw new Error(`invalid device rule type "${type}" (want a, b or c)`);
  const access = rule.access || "rwm";
  if (!/^[rwm]{1,3}$/.test(access)) throw new Error(`invalid device rule access "${access}" (want r, w, m)`);
  const num = (n: number | undefined) => (n === undefined || n === null || n < 0 ? -1 : n);
  return { allow: rule.allow, type, major: num(rule.major), minor: num(rule.minor), access };
}

/** The v1 devices.allow/devices.deny line: "c 1:3 rwm", "a *:* rwm"; absent/negative numbers are "*". */
export function deviceRuleString(rule: LinuxDeviceCgroup): string {
  const p = parseDeviceRule(rule);
  const num = (n: number) => (n < 0 ? "*" : String(n));
  return `${p.type} ${num(p.major)}:${num(p.minor)} ${p.access}`;
}
