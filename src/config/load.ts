/**
 * Reading the config file (TOML) and combining it with command-line overrides.
 *
 * @module
 */
import { parse, TomlError } from "smol-toml";
import {
  type Config,
  type ConfigCheck,
  ConfigError,
  type ConfigLayer,
  DEFAULT_CONFIG_PATH,
  resolveConfig,
} from "./config.ts";

/** Options for {@linkcode loadConfig}. */
export interface LoadConfigOptions {
  /**
   * Config file given by the user; it must exist. Undefined = {@linkcode DEFAULT_CONFIG_PATH},
   * which may be missing (then only defaults and overrides apply).
   */
  path?: string;
  /** Values from command-line flags, by config key; `undefined` entries are ignored. */
  overrides?: Readonly<Record<string, unknown>>;
  /** Default file location (tests). */
  defaultPath?: string;
  /** Domain checks, reported with the parse problems (see {@linkcode resolveConfig}). */
  check?: ConfigCheck;
}

/** A loaded configuration. */
export interface LoadedConfig {
  config: Config;
  /** The file read, or undefined when the default file does not exist. */
  file: string | undefined;
}

/** Parses TOML text into raw key/values; syntax errors become a {@linkcode ConfigError}. */
export function parseConfigToml(text: string, file: string): Record<string, unknown> {
  try {
    return parse(text, { unsafeKeyBehaviour: "keep" }) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      const reason = err.message.split("\n")[0].replace(/^Invalid TOML document: /, "");
      throw new ConfigError([{
        source: `${file}:${err.line}:${err.column}`,
        key: "",
        message: `invalid TOML: ${reason}`,
      }], { cause: err });
    }
    throw err;
  }
}

/** Reads the file, or returns undefined when it is the default and does not exist. */
async function readConfigFile(file: string, explicit: boolean): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(file);
  } catch (err) {
    if (!explicit && err instanceof Deno.errors.NotFound) return undefined;
    const reason = err instanceof Deno.errors.NotFound
      ? "no such file"
      : err instanceof Deno.errors.IsADirectory
      ? "is a directory"
      : (err as Error).message;
    throw new ConfigError([{
      source: file,
      key: "",
      message: `cannot read config file: ${reason}`,
    }], {
      cause: err,
    });
  }
}

/** Reads the config file (if any), applies `overrides`, validates everything (with `check`). */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<LoadedConfig> {
  const explicit = options.path !== undefined;
  const file = options.path ?? options.defaultPath ?? DEFAULT_CONFIG_PATH;
  const text = await readConfigFile(file, explicit);
  const layers: ConfigLayer[] = [];
  if (text !== undefined) layers.push({ source: file, values: parseConfigToml(text, file) });
  const overrides = Object.fromEntries(
    Object.entries(options.overrides ?? {}).filter(([, v]) => v !== undefined),
  );
  if (Object.keys(overrides).length > 0) {
    layers.push({ source: "command line", values: overrides, fromFlags: true });
  }
  return {
    config: resolveConfig(layers, { check: options.check }),
    file: text === undefined ? undefined : file,
  };
}
