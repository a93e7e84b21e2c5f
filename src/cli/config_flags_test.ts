import assert from "node:assert/strict";
import { CONFIG_KEYS, ConfigError } from "../config/config.ts";
import {
  configFlagHelp,
  configFlagOptions,
  configOverrides,
  loadConfigFromFlags,
} from "./config_flags.ts";
import { UsageError } from "./usage.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-flags-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("one flag per config key, in help and in the overrides", () => {
  const options = configFlagOptions();
  const help = configFlagHelp();
  for (const [key, spec] of Object.entries(CONFIG_KEYS)) {
    assert.equal(options[spec.flag].type, spec.type === "boolean" ? "boolean" : "string", key);
    const flag = spec.type === "boolean" ? `--[no-]${spec.flag}` : `--${spec.flag} VALUE`;
    assert.match(
      help,
      new RegExp(`^ {6}${flag.replace(/[[\]]/g, "\\$&")} +overrides ${key}$`, "m"),
    );
  }
  const column = new Set(
    help.split("\n").map((l) => /^ +\S+(?: \S+)* {2,}(?=\S)/.exec(l)?.[0].length),
  );
  assert.deepEqual([...column], [33], "explanations start in one column");
  assert.deepEqual(configOverrides({ "pool-name": "p", "async-remove": false, other: "x" }), {
    pool_name: "p",
    async_remove: false,
  });
});

Deno.test("problems of the file, the flags and the checks are reported together", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/c.toml`;
    await Deno.writeTextFile(file, 'pool_name = "p"\nfs_type = "zfs"\ncolour = "blue"\n');
    const err = await loadConfigFromFlags({ config: file, "log-level": "loud" }).then(
      () => assert.fail("expected an error"),
      (e) => e as ConfigError,
    );
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.problems.map((p) => `${p.source}|${p.key}`), [
      `${file}|`,
      `${file}|fs_type`,
      "command line|--log-level",
    ]);
    assert.match(err.problems[0].message, /unknown key "colour"/);
  });
});

Deno.test("problems only from flags are one UsageError naming each flag", async () => {
  await withDir(async (dir) => {
    const err = await loadConfigFromFlags(
      { "pool-name": "bad name", "fs-type": "zfs" },
      `${dir}/none.toml`,
    ).then(() => assert.fail("expected an error"), (e) => e as Error);
    assert.ok(err instanceof UsageError);
    assert.equal(
      err.message,
      '--pool-name: Invalid device-mapper name "bad name": contains whitespace or control ' +
        'characters; --fs-type: unsupported filesystem type "zfs" (use ext4, ext2, xfs)',
    );
    assert.ok(err.cause instanceof ConfigError);
  });
});
