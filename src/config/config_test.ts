import assert from "node:assert/strict";
import {
  type Config,
  CONFIG_KEYS,
  type ConfigCheck,
  ConfigError,
  type ConfigKey,
  configValue,
  DEFAULT_ADDRESS,
  DEFAULT_ROOT_PATH,
  DEFAULT_VALUES,
  type KeySpec,
  resolveConfig,
} from "./config.ts";
import { LEVELS } from "../util/log.ts";
import { configFixtures, defaultConfig } from "../../testing/config_fixtures.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

const { resolveFile, problems } = configFixtures();

Deno.test("defaults: only pool_name must be given", () => {
  assert.deepEqual(resolveFile({ pool_name: "pool" }), defaultConfig("pool"));
  assert.equal(DEFAULT_ROOT_PATH, "/var/lib/devmapper-snapshotter");
  assert.equal(DEFAULT_ADDRESS, "/run/devmapper-snapshotter/devmapper-snapshotter.sock");
  assert.deepEqual(Object.keys(DEFAULT_VALUES).sort(), Object.keys(CONFIG_KEYS).sort());
});

Deno.test("every key set in the file is used", () => {
  assert.deepEqual(
    resolveFile({
      root_path: "/data/snap",
      allow_new_metadata: true,
      pool_name: "thin",
      base_image_size: "512Mb",
      async_remove: true,
      discard_blocks: true,
      online_discard: true,
      min_free_space: "2GB",
      dm_backend: "dmsetup",
      grpc_transport: "grpc-js",
      fs_type: "ext2",
      fs_options: "stride=8",
      address: "unix:///run/s.sock",
      metrics_address: "127.0.0.1:9477",
      log_level: "debug",
      log_format: "json",
    }),
    {
      rootPath: "/data/snap",
      allowNewMetadata: true,
      poolName: "thin",
      baseImageSize: 512 * MiB,
      fsType: "ext2",
      fsOptions: "stride=8",
      asyncRemove: true,
      discardBlocks: true,
      onlineDiscard: true,
      minFreeSpace: { bytes: 2 * GiB },
      dmBackend: "dmsetup",
      grpcTransport: "grpc-js",
      address: "/run/s.sock",
      metricsAddress: "127.0.0.1:9477",
      logLevel: "debug",
      logFormat: "json",
    },
  );
});

Deno.test("sizes use parseSize's 1024-based rules", () => {
  const size = (v: unknown) => resolveFile({ pool_name: "p", base_image_size: v }).baseImageSize;
  assert.equal(size("10GB"), 10 * GiB);
  assert.equal(size("16Mb"), 16 * MiB);
  assert.equal(size("8192MB"), 8 * GiB);
  assert.equal(size("1.5g"), 1.5 * GiB);
  assert.equal(size("1 GiB"), GiB);
  assert.equal(size("1048576"), MiB);
  assert.equal(size(2 * MiB), 2 * MiB, "a TOML integer is bytes");
});

Deno.test("size errors: unparsable, empty, zero, not sector-aligned, wrong type", () => {
  const one = (v: unknown) => {
    const p = problems({ pool_name: "p", base_image_size: v });
    assert.equal(p.length, 1, JSON.stringify(p));
    assert.equal(p[0].key, "base_image_size");
    assert.equal(p[0].source, "/etc/x.toml");
    return p[0].message;
  };
  assert.match(one("10 parsecs"), /failed to parse base image size '10 parsecs': invalid suffix/);
  assert.match(one("ten"), /failed to parse base image size 'ten': invalid size/);
  assert.match(one(""), /failed to parse base image size '': invalid size/);
  assert.match(one("0"), /must be greater than zero/);
  assert.match(one("1000"), /1000 bytes is not a multiple of 512/);
  assert.match(one(true), /must be a size string like "10GB", not boolean/);
  assert.match(one(1.5), /must be a size string/);
});

Deno.test("min_free_space: a percentage or a 1024-based size; problems name the key", () => {
  const space = (v: unknown) => resolveFile({ pool_name: "p", min_free_space: v }).minFreeSpace;
  assert.deepEqual(space("10%"), { percent: 10 });
  assert.deepEqual(space("2.5%"), { percent: 2.5 });
  assert.deepEqual(space("0"), { bytes: 0 });
  assert.deepEqual(space("2GB"), { bytes: 2 * GiB });
  assert.deepEqual(space(512 * MiB), { bytes: 512 * MiB }, "a TOML integer is bytes");
  assert.deepEqual(
    resolveFile({ pool_name: "p", min_free_space: "5%" }, { min_free_space: "1GB" }).minFreeSpace,
    { bytes: GiB },
    "the flag wins",
  );
  const one = (v: unknown) => {
    const p = problems({ pool_name: "p", min_free_space: v });
    assert.equal(p.length, 1, JSON.stringify(p));
    assert.equal(p[0].key, "min_free_space");
    return p[0].message;
  };
  assert.equal(
    one("100%"),
    `invalid percentage: '100%' (must be below 100%): use a percentage like "10%" or a size like "2GB"`,
  );
  assert.match(one("lots"), /^invalid size: 'lots': use a percentage/);
  assert.match(one(true), /^must be a percentage like "10%" or a size like "2GB", not boolean$/);
  assert.match(one(-1), /not number/);
  const [flag] = problems({ pool_name: "p" }, { min_free_space: "x%" });
  assert.deepEqual(flag.key, "--min-free-space");
});

Deno.test("pool_name: required, a string (a valid dm name: cli/config_checks_test)", () => {
  assert.deepEqual(problems({}), [{
    source: "/etc/x.toml",
    key: "pool_name",
    message: "is required: the name of an existing thin-pool (or use --pool-name)",
  }]);
  assert.throws(
    () => resolveConfig([]),
    /^ConfigError: Invalid configuration: configuration \(no config file\): pool_name: is required/,
  );
  assert.match(problems({ pool_name: 7 })[0].message, /must be a string, not number/);
  assert.equal(resolveFile({ pool_name: "any name" }).poolName, "any name", "not checked here");
});

Deno.test("fs_type: empty means ext4; a string (cli/config_checks_test: one mkfs makes)", () => {
  assert.equal(resolveFile({ pool_name: "p", fs_type: "" }).fsType, "ext4");
  assert.equal(resolveFile({ pool_name: "p", fs_type: "xfs" }).fsType, "xfs");
  assert.match(problems({ pool_name: "p", fs_type: 4 })[0].message, /must be a string, not number/);
});

Deno.test("booleans must be booleans (flags may say true/false)", () => {
  const [p] = problems({ pool_name: "p", async_remove: "yes" });
  assert.equal(p.key, "async_remove");
  assert.match(p.message, /must be true or false, not string "yes"/);
  assert.match(problems({ pool_name: "p", discard_blocks: 1 })[0].message, /not number 1/);
  const c = resolveFile({ pool_name: "p" }, { async_remove: "true", discard_blocks: "false" });
  assert.equal(c.asyncRemove, true);
  assert.equal(c.discardBlocks, false);
});

Deno.test("paths: absolute in the file; relative flag values resolve against cwd", () => {
  const [root] = problems({ pool_name: "p", root_path: "var/lib/x" });
  assert.deepEqual(root, {
    source: "/etc/x.toml",
    key: "root_path",
    message: 'must be an absolute path, not "var/lib/x"',
  });
  assert.match(problems({ pool_name: "p", root_path: "" })[0].message, /is required/);
  const [addr] = problems({ pool_name: "p", address: "x.sock" });
  assert.match(addr.message, /must be an absolute socket path/);
  const c = resolveFile({ pool_name: "p" }, { root_path: "rel/root", address: "s.sock" });
  assert.equal(c.rootPath, `${Deno.cwd()}/rel/root`);
  assert.equal(c.address, `${Deno.cwd()}/s.sock`);
});

Deno.test("address: only unix sockets, bounded length; log_level: known levels", () => {
  assert.match(problems({ pool_name: "p", address: "tcp://1.2.3.4:5" })[0].message, /only unix/);
  assert.match(
    problems({ pool_name: "p", address: "/" + "x".repeat(200) })[0].message,
    /the limit is 107/,
  );
  assert.match(problems({ pool_name: "p", address: "" })[0].message, /is required/);
  const [lvl] = problems({ pool_name: "p", log_level: "verbose" });
  assert.equal(lvl.key, "log_level");
  assert.match(lvl.message, /unknown level "verbose" \(use trace, debug, info, warn, error\)/);
});

Deno.test("log_format: logfmt by default, json, anything else a clear problem", () => {
  assert.equal(resolveFile({ pool_name: "p" }).logFormat, "logfmt");
  assert.equal(resolveFile({ pool_name: "p", log_format: "json" }).logFormat, "json");
  assert.equal(
    resolveFile({ pool_name: "p", log_format: "json" }, { log_format: "logfmt" }).logFormat,
    "logfmt",
    "the flag overrides the file",
  );
  const [text] = problems({ pool_name: "p", log_format: "text" });
  assert.equal(text.key, "log_format");
  assert.equal(text.message, 'unknown log format "text" (use logfmt, json)');
  const [typed] = problems({ pool_name: "p", log_format: 1 });
  assert.equal(typed.key, "log_format");
  assert.match(typed.message, /must be a string, not number/);
});

Deno.test("unknown keys are listed together, and tables are unknown keys too", () => {
  const p = problems({ pool_name: "p", pool: "x", data_device: "/dev/sdb", plugins: {} });
  assert.equal(p.length, 1);
  assert.equal(p[0].source, "/etc/x.toml");
  assert.match(p[0].message, /^unknown keys "pool", "data_device", "plugins" \(known keys: /);
});

Deno.test("every problem is reported at once: the check's after its key's parse problems", () => {
  const seen: Config[] = [];
  const check: ConfigCheck = (config) => {
    seen.push(config);
    return [
      { key: "log_level", message: "checked log_level" },
      { key: "pool_name", message: "checked pool_name" },
      { key: "base_image_size", message: "dropped: the key failed to parse" },
      { key: "fs_type", message: "checked fs_type" },
    ];
  };
  let error: ConfigError | undefined;
  try {
    resolveConfig([
      { source: "/etc/x.toml", values: { pool_name: "p", base_image_size: "big", bogus: 1 } },
      { source: "command line", values: { fs_type: "zfs", root_path: "" }, fromFlags: true },
    ], { check });
  } catch (err) {
    error = err as ConfigError;
  }
  assert.ok(error instanceof ConfigError);
  assert.deepEqual(error.problems, [
    { source: "/etc/x.toml", key: "", message: error.problems[0].message },
    { source: "/etc/x.toml", key: "pool_name", message: "checked pool_name" },
    { source: "command line", key: "--root-path", message: "is required" },
    { source: "command line", key: "--fs-type", message: "checked fs_type" },
    {
      source: "/etc/x.toml",
      key: "base_image_size",
      message: "failed to parse base image size 'big': invalid size: 'big'",
    },
    { source: "/etc/x.toml", key: "log_level", message: "checked log_level" },
  ]);
  assert.match(error.problems[0].message, /^unknown key "bogus"/);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].fsType, "zfs", "the check sees the parsed values");
  assert.equal(seen[0].poolName, "p");
  const ok = resolveConfig([{ source: "f", values: { pool_name: "p" } }], { check: () => [] });
  assert.equal(ok.poolName, "p");
});

Deno.test("flags override the file and are reported as --flags", () => {
  const c = resolveFile(
    { pool_name: "file-pool", base_image_size: "1GB", log_level: "warn" },
    { pool_name: "flag-pool", base_image_size: "2GB", log_level: undefined },
  );
  assert.equal(c.poolName, "flag-pool");
  assert.equal(c.baseImageSize, 2 * GiB);
  assert.equal(c.logLevel, "warn", "an undefined flag does not override");
  const p = problems({ pool_name: "p", fs_type: "btrfs" }, {
    base_image_size: "x",
    fs_type: "ext4",
  });
  assert.deepEqual(p, [{
    source: "command line",
    key: "--base-image-size",
    message: "failed to parse base image size 'x': invalid size: 'x'",
  }]);
});

Deno.test("grpc_transport accepts native, grpc-js and nothing else", () => {
  for (const t of ["native", "grpc-js"]) {
    assert.equal(resolveFile({ pool_name: "p", grpc_transport: t }).grpcTransport, t);
  }
  assert.throws(
    () => resolveFile({ pool_name: "p", grpc_transport: "http1" }),
    /grpc_transport: unknown transport "http1"/,
  );
});

Deno.test("dm_backend accepts auto, ioctl, dmsetup and nothing else", () => {
  for (const b of ["auto", "ioctl", "dmsetup"]) {
    assert.equal(resolveFile({ pool_name: "p", dm_backend: b }).dmBackend, b);
  }
  assert.throws(
    () => resolveFile({ pool_name: "p", dm_backend: "lvm" }),
    /dm_backend: unknown backend "lvm"/,
  );
});

Deno.test("CONFIG_KEYS: every key names its Config field and a distinct flag", () => {
  const config = resolveFile({ pool_name: "p" });
  assert.deepEqual(
    Object.values(CONFIG_KEYS).map((spec) => spec.field).sort(),
    Object.keys(config).sort(),
  );
  for (const [key, spec] of Object.entries(CONFIG_KEYS) as [ConfigKey, KeySpec][]) {
    assert.equal(configValue(config, key), config[spec.field]);
    assert.equal(spec.flag, key.replaceAll("_", "-"));
    assert.ok(spec.summary !== "" && !spec.summary.includes("|"), key);
  }
  const required = Object.entries(CONFIG_KEYS).filter(([, s]) => s.required).map(([k]) => k);
  assert.deepEqual(required, ["pool_name"]);
  assert.deepEqual(problems({}).map((p) => p.key), required, "only required keys have no default");
  for (const level of LEVELS) assert.ok(CONFIG_KEYS.log_level.summary.includes(`\`${level}\``));
});

Deno.test("src/config's modules import nothing but src/util", async () => {
  const dir = new URL("./", import.meta.url);
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !entry.name.endsWith(".ts") || entry.name.endsWith("_test.ts")) continue;
    const text = await Deno.readTextFile(new URL(entry.name, dir));
    for (const [, spec] of text.matchAll(/^(?:import|export)[^;]*? from "([^"]+)"/gms)) {
      assert.ok(
        spec.startsWith("./") || spec.startsWith("../util/") || spec.startsWith("node:") ||
          spec === "smol-toml",
        `${entry.name} imports ${spec}`,
      );
    }
  }
});
