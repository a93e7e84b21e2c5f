import assert from "node:assert/strict";
import { CONFIG_KEYS, ConfigError, resolveConfig } from "../config/config.ts";
import { FS_TYPES, MIN_XFS_SIZE } from "../dm/mkfs.ts";
import { checkConfig } from "./config_checks.ts";
import { snapshotterSettings } from "./snapshotter_factory.ts";
import { configFixtures } from "../../testing/config_fixtures.ts";

const { resolveFile, problems } = configFixtures({ check: checkConfig });

Deno.test("pool_name must be a valid device-mapper name", () => {
  const [p] = problems({ pool_name: "a/b" });
  assert.equal(p.key, "pool_name");
  assert.match(p.message, /Invalid device-mapper name "a\/b": contains '\/'/);
  assert.match(problems({ pool_name: "-x" })[0].message, /starts with '-'/);
  assert.deepEqual(problems({}), [{
    source: "/etc/x.toml",
    key: "pool_name",
    message: "is required: the name of an existing thin-pool (or use --pool-name)",
  }], "an empty name is reported once, as missing");
  assert.match(problems({ pool_name: 7 })[0].message, /must be a string, not number/);
  assert.equal(problems({ pool_name: 7 }).length, 2, "as before: not a string, and required");
});

Deno.test("fs_type: empty means ext4; unknown rejected; xfs rules", () => {
  assert.equal(resolveFile({ pool_name: "p", fs_type: "" }).fsType, "ext4");
  assert.equal(resolveFile({ pool_name: "p", fs_type: "xfs" }).fsType, "xfs");
  const [bad] = problems({ pool_name: "p", fs_type: "btrfs" });
  assert.equal(bad.key, "fs_type");
  assert.match(bad.message, /unsupported filesystem type "btrfs" \(use ext4, ext2, xfs\)/);
  const [opts] = problems({ pool_name: "p", fs_type: "xfs", fs_options: "x=1" });
  assert.equal(opts.key, "fs_options");
  assert.match(opts.message, /only used with ext4 and ext2/);
  const [small] = problems({ pool_name: "p", fs_type: "xfs", base_image_size: "256MB" });
  assert.equal(small.key, "base_image_size");
  assert.match(small.message, /xfs needs at least 300MiB/);
  assert.equal(MIN_XFS_SIZE, 300 * 1024 ** 2);
  assert.equal(
    resolveFile({ pool_name: "p", fs_type: "xfs", base_image_size: "300MB" }).baseImageSize,
    MIN_XFS_SIZE,
  );
  const [unaligned] = problems({ pool_name: "p", fs_type: "xfs", base_image_size: "1000" });
  assert.match(unaligned.message, /not a multiple of 512/, "one problem per mistake");
});

Deno.test("every problem is reported at once, each with key and source", () => {
  let error: ConfigError | undefined;
  try {
    resolveFile({
      pool_name: "",
      root_path: "rel",
      base_image_size: "big",
      fs_type: "zfs",
      async_remove: "no",
      discard_blocks: 0,
      online_discard: "yes",
      address: "tcp://x",
      log_level: "loud",
      bogus: 1,
    });
  } catch (err) {
    error = err as ConfigError;
  }
  assert.ok(error instanceof ConfigError);
  assert.deepEqual(error.problems.map((p) => p.key), [
    "",
    "pool_name",
    "root_path",
    "fs_type",
    "base_image_size",
    "async_remove",
    "discard_blocks",
    "online_discard",
    "address",
    "log_level",
  ]);
  assert.ok(error.problems.every((p) => p.source === "/etc/x.toml"));
  assert.match(error.message, /^Invalid configuration \(10 problems\):\n {2}\/etc\/x\.toml: /);
  assert.match(error.message, /\/etc\/x\.toml: fs_type: unsupported filesystem type "zfs"/);
});

Deno.test("flags override the file before the checks run, and are reported as --flags", () => {
  const p = problems({ pool_name: "p", fs_type: "btrfs" }, {
    base_image_size: "x",
    fs_type: "ext4",
  });
  assert.deepEqual(p, [{
    source: "command line",
    key: "--base-image-size",
    message: "failed to parse base image size 'x': invalid size: 'x'",
  }]);
  assert.deepEqual(problems({ pool_name: "p" }, { pool_name: "bad name", fs_type: "zfs" }), [
    {
      source: "command line",
      key: "--pool-name",
      message: 'Invalid device-mapper name "bad name": contains whitespace or control characters',
    },
    {
      source: "command line",
      key: "--fs-type",
      message: 'unsupported filesystem type "zfs" (use ext4, ext2, xfs)',
    },
  ]);
});

Deno.test("the fs_type docs name every filesystem mkfs makes", () => {
  for (const fs of FS_TYPES) {
    assert.ok(CONFIG_KEYS.fs_type.doc.includes(fs), `${fs} in ${CONFIG_KEYS.fs_type.doc}`);
    assert.ok(CONFIG_KEYS.fs_type.summary.includes(`\`${fs}\``), fs);
  }
  assert.ok(CONFIG_KEYS.fs_type.doc.includes(FS_TYPES.join(", ")));
});

Deno.test("snapshotterSettings maps a checked config; an unchecked fs_type is refused", () => {
  const config = resolveFile({ pool_name: "p", fs_type: "xfs", async_remove: true });
  assert.deepEqual(snapshotterSettings(config), {
    rootPath: config.rootPath,
    allowNewMetadata: false,
    poolName: "p",
    baseImageSize: 10 * 1024 ** 3,
    fsType: "xfs",
    fsOptions: "",
    asyncRemove: true,
    discardBlocks: false,
    onlineDiscard: false,
    minFreeSpace: { percent: 10 },
  });
  const unchecked = resolveConfig([{ source: "f", values: { pool_name: "p", fs_type: "zfs" } }]);
  assert.throws(() => snapshotterSettings(unchecked), /Cannot use fs_type "zfs": unsupported/);
});
