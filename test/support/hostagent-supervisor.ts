// Entry of a test-only supervisor bundle (built by test/integration/vm-relay.test.ts, named
// kata-supervisor.cjs like the real one): the supervisor with the VM replaced by host processes
// (./hostagent.ts), so its own logic is testable without QEMU. Never built into dist/.
import { supervisorMain } from "../../src/sandbox/daemon";
import { HostAgent } from "./hostagent";

supervisorMain(async () => ({ agent: new HostAgent() }));
