import assert from "node:assert/strict";
import { ConfigError, DEFAULT_CONFIG_PATH } from "./config.ts";
import { loadConfig, parseConfigToml } from "./load.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the default config path is /etc/devmapper-snapshotter/config.toml", () => {
  assert.equal(DEFAULT_CONFIG_PATH, "/etc/devmapper-snapshotter/config.toml");
});

Deno.test("a missing default file means defaults (+ flags)", async () => {
  await withDir(async (dir) => {
    const loaded = await loadConfig({
      defaultPath: `${dir}/none.toml`,
      overrides: { pool_name: "p" },
    });
    assert.equal(loaded.file, undefined);
    assert.equal(loaded.config.poolName, "p");
    assert.equal(loaded.config.baseImageSize, 10 * 1024 ** 3);
  });
});

Deno.test("a missing explicitly given file is an error naming the file", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/missing.toml`;
    await assert.rejects(
      loadConfig({ path: file, overrides: { pool_name: "p" } }),
      (err: Error) =>
        err instanceof ConfigError && err.message ===
          `Invalid configuration: ${file}: cannot read config file: no such file`,
    );
    await assert.rejects(loadConfig({ path: dir }), /cannot read config file: is a directory/);
  });
});

Deno.test("file values load; flags override them", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/c.toml`;
    await Deno.writeTextFile(
      file,
      'pool_name = "file-pool"\nbase_image_size = "16Mb"\nasync_remove = true\nlog_level = "warn"\n',
    );
    const a = await loadConfig({ path: file });
    assert.equal(a.file, file);
    assert.deepEqual(
      [a.config.poolName, a.config.baseImageSize, a.config.asyncRemove, a.config.logLevel],
      ["file-pool", 16 * 1024 ** 2, true, "warn"],
    );
    const b = await loadConfig({
      path: file,
      overrides: { pool_name: "flag-pool", async_remove: false, log_level: undefined },
    });
    assert.deepEqual(
      [b.config.poolName, b.config.baseImageSize, b.config.asyncRemove, b.config.logLevel],
      ["flag-pool", 16 * 1024 ** 2, false, "warn"],
    );
  });
});

Deno.test("problems of the file, the flags and the check are reported together", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/c.toml`;
    await Deno.writeTextFile(file, 'pool_name = "p"\ndm_backend = "lvm"\ncolour = "blue"\n');
    const err = await loadConfig({
      path: file,
      overrides: { log_level: "loud", fs_type: "zfs" },
      check: (config) => [{ key: "fs_type", message: `no ${config.fsType} here` }],
    }).then(
      () => assert.fail("expected an error"),
      (e) => e as ConfigError,
    );
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.problems.map((p) => `${p.source}|${p.key}`), [
      `${file}|`,
      "command line|--fs-type",
      `${file}|dm_backend`,
      "command line|--log-level",
    ]);
    assert.match(err.problems[0].message, /unknown key "colour"/);
    assert.equal(err.problems[1].message, "no zfs here");
  });
});

Deno.test("TOML syntax errors name file, line and column", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/bad.toml`;
    await Deno.writeTextFile(file, 'pool_name = "p"\nbase_image_size = 10GB\n');
    await assert.rejects(loadConfig({ path: file }), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.problems.length, 1);
      assert.match(err.problems[0].source, /bad\.toml:2:\d+$/);
      assert.match(err.problems[0].message, /^invalid TOML: /);
      return true;
    });
  });
  assert.throws(
    () => parseConfigToml('a = "x"\na = "y"\n', "f.toml"),
    /f\.toml:2:\d+: invalid TOML/,
  );
});

Deno.test("upstream-style nested plugin tables are rejected as unknown keys", () => {
  const raw = parseConfigToml(
    '[plugins."io.containerd.snapshotter.v1.devmapper"]\npool_name = "p"\n',
    "c.toml",
  );
  assert.deepEqual(Object.keys(raw), ["plugins"]);
});
