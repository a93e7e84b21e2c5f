/**
 * `config default`: an annotated config file with every key at its default value. The file
 * parses and validates as printed (the pool name is an example that must name a real pool).
 *
 * @module
 */
import { stringify } from "smol-toml";
import {
  CONFIG_KEYS,
  type ConfigKey,
  DEFAULT_CONFIG_PATH,
  DEFAULT_VALUES,
  EXAMPLE_POOL_NAME,
} from "./config.ts";

export { EXAMPLE_POOL_NAME };

/** Wraps `text` into `# `-prefixed lines of at most `width` characters. */
function comment(text: string, width = 96): string[] {
  const lines: string[] = [];
  let line = "#";
  for (const word of text.split(/\s+/)) {
    if (line.length + 1 + word.length > width && line !== "#") {
      lines.push(line);
      line = "#";
    }
    line += " " + word;
  }
  lines.push(line);
  return lines;
}

/** The annotated default configuration file. */
export function defaultConfigToml(): string {
  const out = [
    "# devmapper-snapshotter configuration (TOML).",
    `# Read from ${DEFAULT_CONFIG_PATH} unless --config names another file.`,
    "# Command-line flags override these values. Sizes are 1024-based.",
    "",
  ];
  for (const key of Object.keys(CONFIG_KEYS) as ConfigKey[]) {
    const spec = CONFIG_KEYS[key];
    const value = key === "pool_name" ? EXAMPLE_POOL_NAME : DEFAULT_VALUES[key];
    out.push(
      ...comment(spec.doc),
      `# Flag: --${spec.flag}`,
      stringify({ [key]: value }).trim(),
      "",
    );
  }
  return out.join("\n");
}
