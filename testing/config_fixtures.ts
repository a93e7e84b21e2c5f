/**
 * Test support: config resolution as the host tests of `src/config/` and
 * `src/cli/config_checks.ts` drive it (values of one file layer, `/etc/x.toml`, optionally a
 * command-line layer, and the problems of a config that must fail), and the defaults written
 * out by hand.
 *
 * {@linkcode defaultConfig} is a literal on purpose, not built from `DEFAULT_VALUES`: a default
 * that changes fails the tests that compare with it.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  type Config,
  ConfigError,
  type ConfigLayer,
  type ConfigProblem,
  DEFAULT_ADDRESS,
  DEFAULT_ROOT_PATH,
  resolveConfig,
  type ResolveOptions,
} from "../src/config/config.ts";

/** Source of the file layer of {@linkcode ConfigFixtures.resolveFile}. */
export const CONFIG_FILE_SOURCE = "/etc/x.toml";

/** Raw values by config key (or by flag's key), as TOML or flags give them. */
export type RawValues = Record<string, unknown>;

/** What {@linkcode configFixtures} returns. */
export interface ConfigFixtures {
  /** Resolves `values` of the file {@linkcode CONFIG_FILE_SOURCE}, then `flags`, if any. */
  resolveFile(values: RawValues, flags?: RawValues): Config;
  /** The problems of resolving `values` and `flags`; fails the test unless it throws a ConfigError. */
  problems(values: RawValues, flags?: RawValues): ConfigProblem[];
}

/** {@linkcode ConfigFixtures} that resolve with `options` (e.g. the cli's domain checks). */
export function configFixtures(options: ResolveOptions = {}): ConfigFixtures {
  const resolveFile = (values: RawValues, flags?: RawValues): Config => {
    const layers: ConfigLayer[] = [{ source: CONFIG_FILE_SOURCE, values }];
    if (flags) layers.push({ source: "command line", values: flags, fromFlags: true });
    return resolveConfig(layers, options);
  };
  const problems = (values: RawValues, flags?: RawValues): ConfigProblem[] => {
    try {
      resolveFile(values, flags);
    } catch (err) {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
      return [...err.problems];
    }
    assert.fail("expected a ConfigError");
  };
  return { resolveFile, problems };
}

/** The config of a file that sets only `pool_name`: every other key at its default. */
export function defaultConfig(poolName: string): Config {
  return {
    rootPath: DEFAULT_ROOT_PATH,
    allowNewMetadata: false,
    poolName,
    baseImageSize: 10 * 1024 ** 3,
    fsType: "ext4",
    fsOptions: "",
    asyncRemove: false,
    discardBlocks: false,
    onlineDiscard: false,
    minFreeSpace: { percent: 10 },
    dmBackend: "auto",
    grpcTransport: "native",
    address: DEFAULT_ADDRESS,
    metricsAddress: "",
    logLevel: "info",
    logFormat: "logfmt",
  };
}
