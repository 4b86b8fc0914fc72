// Build-time warm-up of the agent bundle, for its V8 code cache (bin/run-cached.cjs): V8 compiles
// functions lazily, and a code cache holds only what ran before it was written. Under TCG every
// function compiled in the guest costs ~10× its host time, so the build runs the paths of a first
// container once on the host, without side effects: an RPC through the real framing (a local socket,
// server and client), and the init plan of a default spec. Nothing here runs in the guest.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AgentClient } from "../agent/client";
import { type AgentHandlers, serve } from "../agent/server";
import { hostFacts } from "../engine/host";
import { buildInitPlan } from "../engine/plan";
import { defaultSpec } from "../oci/defaults";

export async function warmUp(handlers: Partial<AgentHandlers>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "kata-ts-agent-warmup-"));
  try {
    const spec = defaultSpec();
    const plan = buildInitPlan(
      {
        spec,
        bundle: dir,
        rootfs: "/",
        fifo: join(dir, "exec.fifo"),
        facts: hostFacts("/", () => []),
        consoleFd: false,
      },
      true,
    );
    plan.phase2(JSON.stringify({ ociVersion: spec.ociVersion, id: "warmup", status: "creating", pid: 1 }));

    const sock = join(dir, "agent.sock");
    const server = createServer((s) => serve(s, handlers));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    const io = netConnect(sock);
    await new Promise((resolve) => io.once("connect", resolve));
    const client = new AgentClient(io);
    await client.call("ping", {});
    io.destroy();
    server.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
