import assert from "node:assert/strict";
import { CONFIG_KEYS, resolveConfig } from "./config.ts";
import { defaultConfigToml, EXAMPLE_POOL_NAME } from "./default_toml.ts";
import { loadConfig, parseConfigToml } from "./load.ts";
import { defaultConfig } from "../../testing/config_fixtures.ts";

Deno.test("`config default` output parses, validates and equals the defaults", async () => {
  const text = defaultConfigToml();
  const raw = parseConfigToml(text, "default.toml");
  assert.deepEqual(Object.keys(raw).sort(), Object.keys(CONFIG_KEYS).sort());
  const config = resolveConfig([{ source: "default.toml", values: raw }]);
  assert.deepEqual(config, defaultConfig(EXAMPLE_POOL_NAME));
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/c.toml`, text);
    assert.deepEqual((await loadConfig({ path: `${dir}/c.toml` })).config, config);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("`config default` documents every key with its flag, in comments", () => {
  const text = defaultConfigToml();
  for (const [key, spec] of Object.entries(CONFIG_KEYS)) {
    assert.match(text, new RegExp(`^# Flag: --${spec.flag}\\n${key} = `, "m"));
  }
  for (const line of text.split("\n")) {
    assert.ok(line.length <= 100, `line too long: ${line}`);
    assert.ok(line === "" || line.startsWith("#") || /^[a-z_]+ = /.test(line), line);
  }
});
