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

/** The v1 devices.allow/devices.deny line: "c 1:3 rwm", "a *:* rwm"; absent/negative numbers are "*". */
export function deviceRuleString(rule: LinuxDeviceCgroup): string {
  const type = rule.type ?? "a";
  if (!/^[abc]$/.test(type)) throw new Error(`invalid device rule type "${type}" (want a, b or c)`);
  const access = rule.access || "rwm";
  if (!/^[rwm]{1,3}$/.test(access)) throw new Error(`invalid device rule access "${access}" (want r, w, m)`);
  const num = (n: number | undefined) => (n === undefined || n === null || n < 0 ? "*" : String(n));
  return `${type} ${num(rule.major)}:${num(rule.minor)} ${access}`;
}

/** True when a rule list amounts to "allow every device" (the only thing v2 can honour without eBPF). */
export function allowsEverything(rules: readonly LinuxDeviceCgroup[]): boolean {
  let allowAll = false;
  for (const r of rules) {
    if ((r.type ?? "a") === "a") allowAll = r.allow;
    else if (!r.allow && allowAll) return false;
  }
  return allowAll;
}
