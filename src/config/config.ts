// Placeholder removed by the configuration work: search paths only.
export function defaultConfigPaths(): string[] {
  return ["/etc/kata-ts/configuration.toml", "/usr/share/defaults/kata-ts/configuration.toml"];
}
