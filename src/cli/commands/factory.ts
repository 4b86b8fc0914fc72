// `kata-ts factory init|status|destroy` (Kata's names): the VM template that `create` clones instead of
// booting when [factory] enable_template is on (src/factory/template.ts), and with vm_cache_number = N
// the cache server that keeps N clones ready (src/sandbox/cacheserver.ts): `init` then runs it in the
// foreground, as Kata's does, until `factory destroy`, SIGTERM or SIGINT.
import { rmSync } from "node:fs";
import type { Command } from "commander";
import { processConfig, type RuntimeConfig } from "../../config/config";
import { cacheRequest, cacheStatus, cleanCacheLeftovers } from "../../factory/cache";
import {
  destroyTemplates,
  findTemplate,
  listTemplates,
  makeTemplates,
  removeTemplateNetnsLeftovers,
  TEMPLATE_NIC_COUNTS,
  templateAccel,
} from "../../factory/template";
import { ensureJailUser } from "../../hypervisor/jail";
import { checkBootFiles } from "../../hypervisor/qemu";
import { runCacheServer } from "../../sandbox/cacheserver";
import { SHARE_TAG } from "../../sandbox/paths";
import { unmountTree } from "../../sandbox/share";
import { type App, print } from "../app";
import { CliError } from "../errors";

function config(app: App): RuntimeConfig {
  const loaded = processConfig(app.globals().config);
  for (const w of loaded.warnings) app.logger().warn(w);
  return loaded.config;
}

export function register(program: Command, app: App): void {
  const factory = program
    .command("factory")
    .description("manage the VM template that VM containers are cloned from");

  factory
    .command("init")
    .description(
      "boot and save the VM templates (without a NIC, with one) of the current configuration (nothing if they exist)",
    )
    .action(async () => {
      const c = config(app);
      if (c.runtime.hypervisor === "none")
        throw new CliError('factory init: hypervisor = "none" has no VMs to template');
      if (c.hypervisor.sharedFs === "virtio-fs")
        throw new CliError(
          "factory init: shared_fs = virtio-fs cannot be templated (vhost-user devices do not migrate)",
        );
      // The verb names itself once, whichever step failed (the boot files, a template, the server).
      const failed = (err: unknown) => new CliError(`factory init: ${(err as Error).message}`);
      try {
        checkBootFiles(c.hypervisor);
      } catch (err) {
        throw failed(err);
      }
      if (c.factory.vmCacheNumber > 0) {
        try {
          await runCacheServer({
            config: c,
            configPath: app.globals().config,
            log: (m) => app.logger().info(m),
            onListening: (st) =>
              print(
                `VM cache: keeping ${st.number} VM(s) of template ${st.key} on ${c.factory.vmCacheEndpoint}`,
              ),
          });
        } catch (err) {
          throw failed(err);
        }
        return;
      }
      const jailUser = c.hypervisor.rootless ? ensureJailUser(c.hypervisor.rootlessUser) : undefined;
      const made = await makeTemplates(c, {
        shareTag: SHARE_TAG,
        jailUser,
        log: (m) => app.logger().info(m),
      }).catch((err) => {
        throw failed(err);
      });
      if (!c.factory.enableTemplate)
        app.logger().warn("factory: enable_template is off in [factory]: create will not use the template");
      for (const r of made) {
        const nics = `${r.meta.macs.length} NIC${r.meta.macs.length === 1 ? "" : "s"}`;
        print(
          r.made
            ? `template created: ${r.files.dir} (${nics}; boot ${r.meta.bootMs} ms, warm-up ${r.meta.warmUpMs} ms, save ${r.meta.saveMs} ms)`
            : `template up to date: ${r.files.dir} (${nics})`,
        );
      }
    });

  factory
    .command("status")
    .description("show the template for the current configuration")
    .option("--json", "print the status as JSON")
    .action(async (opts: { json?: boolean }) => {
      const c = config(app);
      const accel = await templateAccel(c);
      const found = findTemplate(c, accel.accel);
      // The ones for pods with NICs (a pod's eth0), by NIC count.
      const withNics = TEMPLATE_NIC_COUNTS.filter((n) => n > 0).map((nics) => {
        const f = findTemplate(c, accel.accel, nics);
        return f.ok ? { nics, dir: f.files.dir, key: f.files.key } : { nics, reason: f.why };
      });
      const status = {
        enableTemplate: c.factory.enableTemplate,
        templatePath: c.factory.templatePath,
        templates: listTemplates(c),
        current: found.ok ? { dir: found.files.dir, ...found.meta } : null,
        reason: found.ok ? undefined : found.why,
        withNics,
        vmCacheNumber: c.factory.vmCacheNumber,
        vmCacheEndpoint: c.factory.vmCacheEndpoint,
        cache: (await cacheStatus(c.factory.vmCacheEndpoint)) ?? null,
      };
      if (opts.json) {
        print(JSON.stringify(status, null, 2));
        return;
      }
      print(`enable_template: ${c.factory.enableTemplate}`);
      print(`template_path: ${c.factory.templatePath}`);
      if (found.ok)
        print(`template: ${found.files.dir} (created ${found.meta.created}, ${found.meta.accel})`);
      else print(`template: none usable: ${found.why}`);
      for (const t of withNics)
        print(`template with ${t.nics} NIC(s): ${"dir" in t ? t.dir : `none usable: ${t.reason}`}`);
      print(`vm_cache_number: ${c.factory.vmCacheNumber}`);
      const st = status.cache;
      if (st)
        print(`VM cache: ${st.idle} ready, ${st.booting} starting, ${st.served} served (of ${st.number})`);
      else if (c.factory.vmCacheNumber > 0) print(`VM cache: no server on ${c.factory.vmCacheEndpoint}`);
    });

  factory
    .command("destroy")
    .description("stop the VM cache server and remove every template under template_path")
    .action(async () => {
      const c = config(app);
      // The server stops its idle VMs; VMs already serving a sandbox stay until that sandbox's delete.
      // Answered once its idle VMs are stopped (a slot that hangs is killed after 10 s).
      const stopped = await cacheRequest(c.factory.vmCacheEndpoint, { op: "stop" }, 30_000).then(
        () => true,
        () => false,
      );
      if (stopped) print(`stopped the VM cache server on ${c.factory.vmCacheEndpoint}`);
      else rmSync(c.factory.vmCacheEndpoint, { force: true }); // a killed server's socket
      const slots = await cleanCacheLeftovers(c, unmountTree);
      if (slots > 0) print(`removed ${slots} cached VM(s)`);
      const n = destroyTemplates(c);
      print(`removed ${n} template(s)`);
      // The network namespaces of one-NIC template boots whose `factory init` was killed.
      const netns = removeTemplateNetnsLeftovers();
      if (netns > 0) print(`removed ${netns} network namespace(s) of unfinished templates`);
    });
}
