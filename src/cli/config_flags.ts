/**
 * Command-line flags that override config keys (`--pool-name`, `--address`, ...), shared by
 * `serve` and `config check`, and loading the configuration for use: parsed by the config layer,
 * checked by {@linkcode checkConfig}, every problem reported at once.
 *
 * @module
 */
import type { ParseArgsOptionsConfig } from "node:util";
import { CONFIG_KEYS, ConfigError, type ConfigKey, DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { loadConfig, type LoadedConfig } from "../config/load.ts";
import { checkConfig } from "./config_checks.ts";
import { UsageError } from "./usage.ts";

/** parseArgs definitions: `--config`/`-c` plus one flag per config key. */
export function configFlagOptions(): ParseArgsOptionsConfig {
  const options: ParseArgsOptionsConfig = { config: { type: "string", short: "c" } };
  for (const spec of Object.values(CONFIG_KEYS)) {
    options[spec.flag] = { type: spec.type === "boolean" ? "boolean" : "string" };
  }
  return options;
}

/** Help lines describing the config flags and `--help`, their explanations in one column. */
export function configFlagHelp(): string {
  const rows: [string, string][] = [
    ["-c, --config FILE", `config file (default ${DEFAULT_CONFIG_PATH}; may be missing)`],
  ];
  for (const [key, spec] of Object.entries(CONFIG_KEYS)) {
    const flag = spec.type === "boolean" ? `--[no-]${spec.flag}` : `--${spec.flag} VALUE`;
    rows.push([`    ${flag}`, `overrides ${key}`]);
  }
  rows.push(["-h, --help", "show this help"]);
  const width = Math.max(...rows.map(([flags]) => flags.length));
  return rows.map(([flags, text]) => `  ${flags.padEnd(width)}  ${text}`).join("\n");
}

/** Config overrides from parsed flag values (absent flags are left out). */
export function configOverrides(
  values: Record<string, string | boolean | undefined>,
): Partial<Record<ConfigKey, string | boolean>> {
  const out: Partial<Record<ConfigKey, string | boolean>> = {};
  for (
    const [key, spec] of Object.entries(CONFIG_KEYS) as [ConfigKey, typeof CONFIG_KEYS[ConfigKey]][]
  ) {
    const v = values[spec.flag];
    if (v !== undefined) out[key] = v;
  }
  return out;
}

/**
 * Loads the config named by `--config` with the flag overrides and checks what its values mean
 * ({@linkcode checkConfig}). When every problem comes from
 * the command line, the error is a one-line {@linkcode UsageError} (exit 2); problems in the
 * file stay a {@linkcode ConfigError} (exit 1).
 */
export async function loadConfigFromFlags(
  values: Record<string, string | boolean | undefined>,
  defaultPath?: string,
): Promise<LoadedConfig> {
  const path = typeof values.config === "string" ? values.config : undefined;
  try {
    return await loadConfig({
      path,
      overrides: configOverrides(values),
      defaultPath,
      check: checkConfig,
    });
  } catch (err) {
    if (err instanceof ConfigError && err.problems.every((p) => p.source === "command line")) {
      throw new UsageError(
        err.problems.map((p) => `${p.key}: ${p.message}`).join("; "),
        { cause: err },
      );
    }
    throw err;
  }
}
