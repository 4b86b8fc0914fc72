// The conformance suite with kata-ts in VM mode (hypervisor = "qemu", the default): every case boots
// its own VM under the guest kernel and image that scripts/setup.sh builds into /var/cache/kata-ts.
// Cases that differ in a VM say so (vmHostOnly / vmAdapted in cases.ts; docs/conformance.md "VM mode").
// ~5-8 min under TCG. KATA_TS_CONFORMANCE_VM=0 skips it (e.g. while iterating on host-only work).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { GUEST_ASSET_DIR } from "../../src/config/config";
import { KATA_TS_BIN, Runtime } from "../conformance/runtime";
import { describeConformance } from "../conformance/suite";

const kernel = join(GUEST_ASSET_DIR, "vmlinux");
const image = join(GUEST_ASSET_DIR, "kata-ts-guest.img");
const skip =
  process.env.KATA_TS_CONFORMANCE_VM === "0"
    ? "KATA_TS_CONFORMANCE_VM=0"
    : // CI builds them first (scripts/setup.sh): there a missing asset is a failure, not a skip.
      process.env.CI !== "true" && (!existsSync(kernel) || !existsSync(image))
      ? `no guest kernel/image in ${GUEST_ASSET_DIR} (scripts/setup.sh builds them)`
      : false;

describeConformance(
  "conformance in VM mode",
  () =>
    new Runtime(KATA_TS_BIN, {
      configText: `[runtime]\nhypervisor = "qemu"\n[hypervisor.qemu]\nkernel = "${kernel}"\nimage = "${image}"\ndefault_memory = 512\n`,
    }),
  { skip },
);
