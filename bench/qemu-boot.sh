#!/bin/bash
# The VM "floor": spawn-to-READY of a bare QEMU guest (busybox initramfs whose /init writes
# "READY <uptime>" on the virtio-serial agent port), booted through kata-ts's QEMU driver, plus the
# host memory (RSS/PSS from /proc/PID/smaps_rollup) of an idle guest. The real agent's boot time is
# compared against this number.
#
# usage: bench/qemu-boot.sh [-n RUNS] [--kernel built|stock|both|/path/vmlinux] [--machine microvm|q35|pc]
#                           [--memory MiB] [--accel tcg|kvm|auto] [--console serial|virtio]
#   built = /var/cache/kata-ts/vmlinux (guest/kernel/build.sh); stock = Debian's /boot/vmlinuz-*,
#   extracted, with its virtio modules insmod'ed by the floor's /init.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10 kernel=both machine=microvm memory=512 accel=tcg console=serial
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --machine) machine=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --console) console=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "qemu-boot.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$kernel" = both ]; then
  kernels=(stock)
  [ -e /var/cache/kata-ts/vmlinux ] && kernels=(built stock) || echo "(no built kernel yet: guest/kernel/build.sh)"
else
  kernels=("$kernel")
fi

script=$(mktemp bench/.qemu-boot-XXXXXX.ts)
work=$(mktemp -d /tmp/kata-ts-bench-XXXXXX)
trap 'rm -rf "$script" "$work"' EXIT
cat >"$script" <<'TS'
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { defaultConfig } from "../src/config/config";
import { ensureFloorInitramfs, stockFloorModules } from "../test/support/floor";
import { ensureStockKernel, type GuestKernel, resolveGuestKernel } from "../src/image/kernel";
import { startVm, type Vm } from "../src/hypervisor/qemu";

const [which, runsS, machine, memory, accel, consoleKind, work] = process.argv.slice(2);
const runs = Number(runsS);

function firstLine(path: string, deadline: number): Promise<{ sock: Socket; line: string }> {
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = connect(path);
      let buf = "";
      s.on("error", () => (Date.now() > deadline ? reject(new Error("agent socket")) : setTimeout(attempt, 2)));
      s.on("data", (d) => {
        buf += d.toString();
        const i = buf.indexOf("\n");
        if (i >= 0) resolve({ sock: s, line: buf.slice(0, i) });
      });
    };
    attempt();
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

(async () => {
  let kernel: GuestKernel;
  if (which === "built") kernel = await resolveGuestKernel("/var/cache/kata-ts/vmlinux");
  else if (which === "stock") kernel = await ensureStockKernel();
  else kernel = await resolveGuestKernel(which);
  const modules = kernel.needsModules ? stockFloorModules(kernel.id!, machine) : [];
  const initrd = await ensureFloorInitramfs({ modules });
  const config = { ...defaultConfig().hypervisor, kernel: kernel.path, image: "", initrd, machineType: machine };
  config.accel = accel as typeof config.accel;
  console.log(`kernel: ${kernel.kind} ${kernel.id ?? ""} ${kernel.path}${modules.length ? ` (+${modules.length} modules)` : ""}`);
  const times: number[] = [];
  const uptimes: number[] = [];
  let idle: Vm | undefined;
  for (let i = 0; i <= runs; i++) {
    const t0 = performance.now();
    const vm = await startVm({
      id: `bench${i}`,
      dir: `${work}/vm${i}`,
      config,
      memoryMiB: Number(memory),
      console: consoleKind as "serial" | "virtio",
    });
    const { sock, line } = await firstLine(vm.agentSocket, Date.now() + 60_000);
    const ms = performance.now() - t0;
    if (!line.startsWith("READY")) throw new Error(`unexpected first line: ${line}`);
    if (i === 0) console.log(`  warm-up ${ms.toFixed(0)} ms (${vm.accel.accel}; ${vm.argv.join(" ")})`);
    else {
      times.push(ms);
      uptimes.push(Number(line.split(" ")[1]) * 1000);
      console.log(`  run ${i}: spawn→READY ${ms.toFixed(0)} ms, guest uptime at READY ${line.split(" ")[1]} s`);
    }
    if (i === runs) {
      idle = vm;
      sock.write("PING x\n");
    } else {
      sock.destroy();
      await vm.stop();
    }
  }
  // Idle memory: give the guest 2 s after READY, then read QEMU's rollup.
  await new Promise((r) => setTimeout(r, 2000));
  const roll = readFileSync(`/proc/${idle!.pid}/smaps_rollup`, "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(roll)?.[1] ?? 0);
  await idle!.stop();
  console.log(
    `RESULT kernel=${kernel.kind} machine=${machine} accel=${accel} runs=${runs} ` +
      `median_ms=${median(times).toFixed(0)} min_ms=${Math.min(...times).toFixed(0)} max_ms=${Math.max(...times).toFixed(0)} ` +
      `guest_uptime_median_ms=${median(uptimes).toFixed(0)} qemu_rss_mb=${(kb("Rss") / 1024).toFixed(0)} ` +
      `qemu_pss_mb=${(kb("Pss") / 1024).toFixed(0)}`,
  );
})().catch((err) => {
  console.error(`qemu-boot: ${(err as Error).message}`);
  process.exit(1);
});
TS
for k in "${kernels[@]}"; do
  node --import tsx "$script" "$k" "$runs" "$machine" "$memory" "$accel" "$console" "$work"
done
