/**
 * The service configuration: upstream devmapper keys (`root_path`, `pool_name`,
 * `base_image_size`, `async_remove`, `discard_blocks`, `fs_type`, `fs_options`) plus
 * `online_discard`, `min_free_space`, `allow_new_metadata`, `dm_backend`, `grpc_transport`,
 * `address`, `log_level` and `log_format`.
 *
 * Values come in layers (defaults, then the file, then command-line flags; later layers win).
 * {@linkcode resolveConfig} checks every key of every layer and reports every problem at once,
 * each with its key and where it came from.
 *
 * This layer checks syntax and the values it owns: types, sizes, absolute paths, the socket
 * address and its own enumerations (`dm_backend`, `grpc_transport`, `log_level`,
 * `log_format`). What a value means to the rest of the program (is `pool_name` a
 * device-mapper name, can mkfs make `fs_type`) is checked by the caller's
 * {@linkcode ConfigCheck}, whose problems are reported together with the others. The config
 * layer imports nothing but `src/util`.
 *
 * {@linkcode CONFIG_KEYS} is the one list of keys: the parser, the flags, `config default`,
 * `config check` and the README's table are all made from it.
 *
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import { errorMessage } from "../util/errors.ts";
import { type Level, LEVELS, LOG_FORMATS, type LogFormat } from "../util/log.ts";
import { parseSize } from "../util/size.ts";
import { type FreeSpace, parseFreeSpace } from "../util/free_space.ts";
import { socketPath } from "../util/socket_path.ts";
import { parseListenAddress } from "../util/listen_address.ts";

/** Default config file; a missing default file means "all defaults". */
export const DEFAULT_CONFIG_PATH = "/etc/devmapper-snapshotter/config.toml";
/** Default socket. */
export const DEFAULT_ADDRESS = "/run/devmapper-snapshotter/devmapper-snapshotter.sock";
/** Default directory of the metadata database. */
export const DEFAULT_ROOT_PATH = "/var/lib/devmapper-snapshotter";
/** Default virtual size of parentless thin devices. */
export const DEFAULT_BASE_IMAGE_SIZE = "10GB";
/** Default filesystem (also what an empty `fs_type` means). */
export const DEFAULT_FS_TYPE = "ext4";
/** Default log level. */
export const DEFAULT_LOG_LEVEL: Level = "info";
/** Default log line format (containerd's default too). */
export const DEFAULT_LOG_FORMAT: LogFormat = "logfmt";
/** Default free space the pool keeps for new snapshots (Docker's `dm.min_free_space`). */
export const DEFAULT_MIN_FREE_SPACE = "10%";
/**
 * Pool name written by `config default` and the default of `pool create --name`. `pool_name`
 * itself has no default: it must name a pool that exists.
 */
export const EXAMPLE_POOL_NAME = "devmapper-snapshotter-pool";

/** How the snapshotter talks to device-mapper. */
export type DmBackend = "auto" | "ioctl" | "dmsetup";
/** The accepted `dm_backend` values. */
export const DM_BACKENDS: readonly DmBackend[] = ["auto", "ioctl", "dmsetup"];

/** Which gRPC implementation serves the socket. */
export type GrpcTransport = "native" | "grpc-js";
/** The accepted `grpc_transport` values. */
export const GRPC_TRANSPORTS: readonly GrpcTransport[] = ["native", "grpc-js"];

/** The resolved configuration: the snapshotter's settings plus the server's. */
export interface Config {
  /** Absolute path of the directory holding the metadata database. */
  rootPath: string;
  /** Start with a new database when it is missing or empty though devices of ours are active. */
  allowNewMetadata: boolean;
  /** Name of the thin-pool (the caller's check decides whether it is a valid dm name). */
  poolName: string;
  /** Virtual size of parentless thin devices in bytes: positive, whole sectors. */
  baseImageSize: number;
  /** Filesystem name, `ext4` when empty (the caller's check decides whether mkfs makes it). */
  fsType: string;
  /** mkfs `-E` options; "" for the defaults. */
  fsOptions: string;
  /** Remove only marks devices; Cleanup deletes them. */
  asyncRemove: boolean;
  /** Discard a device's blocks before deleting it. */
  discardBlocks: boolean;
  /** Mount active ext4/xfs snapshots with `discard`. */
  onlineDiscard: boolean;
  /** Free data space (metadata: more, see `src/pool/health.ts`) below which Prepare/View are refused. */
  minFreeSpace: FreeSpace;
  /** `ioctl` (DM ioctls on /dev/mapper/control), `dmsetup` (spawns), `auto` (ioctl if usable). */
  dmBackend: DmBackend;
  /** `native` (this project's HTTP/2 server) or `grpc-js` (`@grpc/grpc-js`). */
  grpcTransport: GrpcTransport;
  /** Absolute path of the unix socket to serve on. */
  address: string;
  /** Where `GET /metrics` is served: `HOST:PORT` or `unix:/abs/path`; "" = no metrics. */
  metricsAddress: string;
  logLevel: Level;
  /** Log line format: `logfmt` (`key=value`) or `json` (one object per line). */
  logFormat: LogFormat;
}

/** A key of the config file. */
export type ConfigKey =
  | "root_path"
  | "allow_new_metadata"
  | "pool_name"
  | "base_image_size"
  | "async_remove"
  | "discard_blocks"
  | "online_discard"
  | "min_free_space"
  | "fs_type"
  | "fs_options"
  | "dm_backend"
  | "grpc_transport"
  | "address"
  | "metrics_address"
  | "log_level"
  | "log_format";

/** Description of one key: its value type, command-line flag and documentation. */
export interface KeySpec {
  /** `space`: a percentage ("10%") or a size ("2GB"). */
  type: "string" | "boolean" | "size" | "space";
  /** The {@linkcode Config} field holding the parsed value. */
  field: keyof Config;
  /** The overriding command-line flag (without `--`). */
  flag: string;
  /** The key has no default: leaving it unset is a problem. */
  required?: boolean;
  /** One-paragraph explanation (used by `config default`). */
  doc: string;
  /** One line of Markdown for the README's configuration table. */
  summary: string;
}

/** Every key, in the order `config default`, `config check` and the README list them. */
export const CONFIG_KEYS: Readonly<Record<ConfigKey, KeySpec>> = {
  pool_name: {
    type: "string",
    field: "poolName",
    flag: "pool-name",
    required: true,
    doc: "Name of an existing device-mapper thin-pool (under /dev/mapper, no prefix). Required.",
    summary: "dm name of an existing thin-pool (no `/dev/mapper/`); `pool create` makes " +
      `\`${EXAMPLE_POOL_NAME}\``,
  },
  root_path: {
    type: "string",
    field: "rootPath",
    flag: "root-path",
    doc: "Absolute path of the directory holding the metadata database.",
    summary: "directory of the metadata database `metadata.db`",
  },
  allow_new_metadata: {
    type: "boolean",
    field: "allowNewMetadata",
    flag: "allow-new-metadata",
    doc: "Start with a new, empty metadata database when metadata.db is missing or empty even " +
      "though active devices of this root_path are in the pool (their snapshots are then " +
      "forgotten and the devices left alone). Without it such a start is refused; pass it once.",
    summary: "start with a new `metadata.db` though devices of this `root_path` are active " +
      "(refused otherwise); pass once",
  },
  base_image_size: {
    type: "size",
    field: "baseImageSize",
    flag: "base-image-size",
    doc: "Virtual size of every thin device, 1024-based units " +
      '("10GB" = 10 GiB, "512Mb" = 512 MiB; a bare number is bytes).',
    summary: "virtual size of new parentless devices; children keep their parent's size",
  },
  fs_type: {
    type: "string",
    field: "fsType",
    flag: "fs-type",
    doc: "Filesystem made on parentless devices: ext4, ext2, xfs (empty = ext4).",
    summary: "`ext4`, `ext2` or `xfs` for new parentless snapshots; children keep their parent's",
  },
  fs_options: {
    type: "string",
    field: "fsOptions",
    flag: "fs-options",
    doc: "Extended options passed to mkfs as `-E <value>` (ext4 and ext2 only; empty = defaults).",
    summary: "mkfs `-E` options (ext4/ext2); empty = " +
      "`nodiscard,lazy_itable_init=0,lazy_journal_init=0` for ext4",
  },
  async_remove: {
    type: "boolean",
    field: "asyncRemove",
    flag: "async-remove",
    doc: "Remove only marks devices deleted; Cleanup (run after containerd's GC) deletes them.",
    summary: "Remove only marks a device; containerd's Cleanup (after GC) deletes it",
  },
  discard_blocks: {
    type: "boolean",
    field: "discardBlocks",
    flag: "discard-blocks",
    doc:
      "Discard a device's blocks (blkdiscard) before deleting it, returning space to the pool's " +
      "backing store.",
    summary: "`blkdiscard` a device before deleting it",
  },
  online_discard: {
    type: "boolean",
    field: "onlineDiscard",
    flag: "online-discard",
    doc: "Mount active ext4 and xfs snapshots with -o discard: the blocks of files deleted in a " +
      "running container go back to the pool at once, not when the snapshot is removed.",
    summary:
      "mount active ext4/xfs snapshots with `discard`: a deleted file's blocks go back to the " +
      "pool at once",
  },
  min_free_space: {
    type: "space",
    field: "minFreeSpace",
    flag: "min-free-space",
    doc: "Free space the pool keeps for running containers: Prepare and View are refused " +
      "(ResourceExhausted) while free data space is below it, a percentage of the data device " +
      '("10%") or a size ("2GB", 1024-based). Metadata keeps twice that fraction (at most 50%), ' +
      "and at least the kernel's low-water mark, min(4 MiB, a quarter of the metadata device), " +
      'because a pool whose metadata fills turns read-only. "0" turns the guard off.',
    summary: "Prepare/View refused below this much free data space (`10%` or a size); " +
      "metadata keeps 2×; `0` = off",
  },
  dm_backend: {
    type: "string",
    field: "dmBackend",
    flag: "dm-backend",
    doc: "How to drive device-mapper: ioctl (DM ioctls on /dev/mapper/control, no process " +
      "spawns), dmsetup (spawn dmsetup), auto (ioctl when usable, else dmsetup).",
    summary: "`ioctl` (DM ioctls on `/dev/mapper/control`, no spawns), `dmsetup` (spawns), " +
      "`auto` (ioctl if usable)",
  },
  grpc_transport: {
    type: "string",
    field: "grpcTransport",
    flag: "grpc-transport",
    doc: "gRPC implementation serving the socket: native (this program's own HTTP/2 server, " +
      "the fastest per call) or grpc-js (@grpc/grpc-js over node:http2).",
    summary: "`native` (this program's own HTTP/2 server, the cheapest per call) or `grpc-js` " +
      "(`@grpc/grpc-js`)",
  },
  address: {
    type: "string",
    field: "address",
    flag: "address",
    doc: "Unix socket to serve the gRPC snapshots API on (a path or unix:// address). " +
      "Point containerd's [proxy_plugins.<name>] address at it.",
    summary: "unix socket served (mode 0660)",
  },
  metrics_address: {
    type: "string",
    field: "metricsAddress",
    flag: "metrics-address",
    doc: "Where to serve Prometheus metrics (HTTP GET /metrics): HOST:PORT (e.g. " +
      '"127.0.0.1:9477"), unix:/path/to/metrics.sock, or empty for no metrics endpoint.',
    summary: "Prometheus `GET /metrics` on `HOST:PORT` or `unix:PATH`; empty (default) = off",
  },
  log_level: {
    type: "string",
    field: "logLevel",
    flag: "log-level",
    doc: `Log level: ${LEVELS.join(", ")}.`,
    summary: "`trace`, `debug` (one line per RPC with its duration), `info`, `warn`, `error`",
  },
  log_format: {
    type: "string",
    field: "logFormat",
    flag: "log-format",
    doc: 'Log line format: logfmt (time=... level=info msg="..." key=value) or json (one ' +
      "object per line with the same fields: time, level, msg, then the line's own), as " +
      "containerd's --log-format.",
    summary: "`logfmt` (`time=… level=… msg=… key=value`) or `json` (one object per line, " +
      "same fields)",
  },
};

/** Default value of every key, as it would be written in the file ("" pool_name = unset). */
export const DEFAULT_VALUES: Readonly<Record<ConfigKey, string | boolean>> = {
  pool_name: "",
  root_path: DEFAULT_ROOT_PATH,
  allow_new_metadata: false,
  base_image_size: DEFAULT_BASE_IMAGE_SIZE,
  fs_type: DEFAULT_FS_TYPE,
  fs_options: "",
  async_remove: false,
  discard_blocks: false,
  online_discard: false,
  min_free_space: DEFAULT_MIN_FREE_SPACE,
  dm_backend: "auto",
  grpc_transport: "native",
  address: DEFAULT_ADDRESS,
  metrics_address: "",
  log_level: DEFAULT_LOG_LEVEL,
  log_format: DEFAULT_LOG_FORMAT,
};

/** True when `key` is a config key. */
export function isConfigKey(key: string): key is ConfigKey {
  return Object.hasOwn(CONFIG_KEYS, key);
}

/** One set of values and where they came from. */
export interface ConfigLayer {
  /** Where the values came from: a file path, or "command line". */
  source: string;
  /** Raw values by config key (from TOML or flags). */
  values: Readonly<Record<string, unknown>>;
  /** Values came from flags: report keys as `--flag`, resolve relative paths against cwd. */
  fromFlags?: boolean;
}

/** One configuration problem. */
export interface ConfigProblem {
  /** File path or "command line". */
  source: string;
  /** The key (or `--flag` for flags). */
  key: string;
  message: string;
}

/** The configuration is invalid; `problems` lists every problem found. */
export class ConfigError extends Error {
  /** Every problem: unknown keys first, then by key. */
  readonly problems: readonly ConfigProblem[];
  /** Creates the error. */
  constructor(problems: readonly ConfigProblem[], options?: ErrorOptions) {
    super(formatProblems(problems), options);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** `Invalid configuration: <source>: <key>: <message>; ...` (one problem per line). */
export function formatProblems(problems: readonly ConfigProblem[]): string {
  const lines = problems.map((p) => `${p.source}: ${p.key ? p.key + ": " : ""}${p.message}`);
  return lines.length === 1
    ? `Invalid configuration: ${lines[0]}`
    : `Invalid configuration (${lines.length} problems):\n  ${lines.join("\n  ")}`;
}

function typeName(value: unknown): string {
  if (Array.isArray(value)) return "array";
  if (value === null) return "null";
  if (value instanceof Date) return "date";
  return typeof value === "object" ? "table" : typeof value;
}

interface Picked {
  value: unknown;
  layer: ConfigLayer;
}

/** A problem a {@linkcode ConfigCheck} found with one key's value. */
export interface KeyProblem {
  key: ConfigKey;
  message: string;
}

/**
 * A check the caller adds: what the parsed values mean to the rest of the program (is the pool
 * name a device-mapper name, can mkfs make the filesystem). It gets every value parsed (keys
 * that failed to parse hold their default) and returns the problems it finds.
 */
export type ConfigCheck = (config: Readonly<Config>) => readonly KeyProblem[];

/** Options of {@linkcode resolveConfig}. */
export interface ResolveOptions {
  /** Domain checks; their problems are reported with the others, with key and source. */
  check?: ConfigCheck;
}

/**
 * The order problems are listed in (after unknown keys): what the pool is and where the data
 * goes, then the filesystem and size of devices, then behaviour, backend, socket and logging.
 */
const PROBLEM_ORDER: readonly ConfigKey[] = [
  "pool_name",
  "root_path",
  "allow_new_metadata",
  "fs_type",
  "fs_options",
  "base_image_size",
  "async_remove",
  "discard_blocks",
  "online_discard",
  "min_free_space",
  "dm_backend",
  "grpc_transport",
  "address",
  "metrics_address",
  "log_level",
  "log_format",
];

/** The value of `key` in `config` (the field {@linkcode KeySpec.field} names). */
export function configValue(
  config: Readonly<Config>,
  key: ConfigKey,
): string | number | boolean | FreeSpace {
  return config[CONFIG_KEYS[key].field];
}

/**
 * Merges `layers` (later wins) onto the defaults and validates the result. Reports unknown keys,
 * wrong types and invalid values of every layer, and the problems of `options.check`, in one
 * {@linkcode ConfigError}: unknown keys first, then by key. A key that fails to parse is not
 * passed to the check's verdict (one problem per mistake).
 */
export function resolveConfig(
  layers: readonly ConfigLayer[],
  options: ResolveOptions = {},
): Config {
  const unknownKeys: ConfigProblem[] = [];
  const problems = new Map<ConfigKey, ConfigProblem[]>();
  const picked = new Map<ConfigKey, Picked>();
  const file = layers.find((l) => !l.fromFlags);
  const defaults: ConfigLayer = {
    source: file ? file.source : "configuration (no config file)",
    values: DEFAULT_VALUES,
  };
  for (const key of Object.keys(CONFIG_KEYS) as ConfigKey[]) {
    picked.set(key, { value: DEFAULT_VALUES[key], layer: defaults });
  }
  for (const layer of layers) {
    const unknown = Object.keys(layer.values).filter((k) => !isConfigKey(k));
    if (unknown.length > 0) {
      unknownKeys.push({
        source: layer.source,
        key: "",
        message: `unknown key${unknown.length > 1 ? "s" : ""} ${
          unknown.map((k) => JSON.stringify(k)).join(", ")
        } (known keys: ${Object.keys(CONFIG_KEYS).join(", ")})`,
      });
    }
    for (const [key, value] of Object.entries(layer.values)) {
      if (isConfigKey(key) && value !== undefined) picked.set(key, { value, layer });
    }
  }

  const fail = (key: ConfigKey, message: string) => {
    const { layer } = picked.get(key)!;
    const problem = {
      source: layer.source,
      key: layer.fromFlags ? `--${CONFIG_KEYS[key].flag}` : key,
      message,
    };
    problems.set(key, [...problems.get(key) ?? [], problem]);
  };

  const str = (key: ConfigKey): string | undefined => {
    const { value } = picked.get(key)!;
    if (typeof value === "string") return value;
    fail(key, `must be a string, not ${typeName(value)}`);
    return undefined;
  };
  const bool = (key: ConfigKey): boolean => {
    const { value } = picked.get(key)!;
    if (typeof value === "boolean") return value;
    if (typeof value === "string" && (value === "true" || value === "false")) {
      return value === "true";
    }
    fail(key, `must be true or false, not ${typeName(value)} ${JSON.stringify(value)}`);
    return false;
  };
  const path = (key: ConfigKey): string => {
    const value = str(key);
    if (value === undefined) return "";
    if (value === "") {
      fail(key, "is required");
      return "";
    }
    if (isAbsolute(value)) return value;
    if (picked.get(key)!.layer.fromFlags) return resolve(value);
    fail(key, `must be an absolute path, not ${JSON.stringify(value)}`);
    return value;
  };
  /** One of `allowed`; anything else is a problem naming the allowed values. */
  const choice = <T extends string>(
    key: ConfigKey,
    allowed: readonly T[],
    fallback: T,
    noun: string,
  ) => {
    const text = str(key);
    if (text === undefined) return fallback;
    if ((allowed as readonly string[]).includes(text)) return text as T;
    fail(key, `unknown ${noun} ${JSON.stringify(text)} (use ${allowed.join(", ")})`);
    return fallback;
  };

  const poolName = str("pool_name") ?? "";
  if (poolName === "") {
    fail("pool_name", "is required: the name of an existing thin-pool (or use --pool-name)");
  }

  const rootPath = path("root_path");
  const allowNewMetadata = bool("allow_new_metadata");

  const fsText = str("fs_type");
  const fsType = fsText === undefined || fsText === "" ? DEFAULT_FS_TYPE : fsText;
  const fsOptions = str("fs_options") ?? "";

  let baseImageSize = 0;
  const sizeValue = picked.get("base_image_size")!.value;
  if (typeof sizeValue === "number" && Number.isSafeInteger(sizeValue)) baseImageSize = sizeValue;
  else if (typeof sizeValue === "string") {
    try {
      baseImageSize = parseSize(sizeValue.trim());
    } catch (err) {
      fail(
        "base_image_size",
        `failed to parse base image size '${sizeValue}': ${errorMessage(err)}`,
      );
      baseImageSize = -1;
    }
  } else {
    fail("base_image_size", `must be a size string like "10GB", not ${typeName(sizeValue)}`);
    baseImageSize = -1;
  }
  if (baseImageSize === 0) fail("base_image_size", "must be greater than zero");
  else if (baseImageSize > 0 && baseImageSize % 512 !== 0) {
    fail("base_image_size", `${baseImageSize} bytes is not a multiple of 512 (one sector)`);
  }

  const asyncRemove = bool("async_remove");
  const discardBlocks = bool("discard_blocks");
  const onlineDiscard = bool("online_discard");

  let minFreeSpace = parseFreeSpace(DEFAULT_MIN_FREE_SPACE);
  const spaceValue = picked.get("min_free_space")!.value;
  if (typeof spaceValue === "number" && Number.isSafeInteger(spaceValue) && spaceValue >= 0) {
    minFreeSpace = { bytes: spaceValue };
  } else if (typeof spaceValue === "string") {
    try {
      minFreeSpace = parseFreeSpace(spaceValue);
    } catch (err) {
      fail(
        "min_free_space",
        `${errorMessage(err)}: use a percentage like "10%" or a size like "2GB"`,
      );
    }
  } else {
    fail(
      "min_free_space",
      `must be a percentage like "10%" or a size like "2GB", not ${typeName(spaceValue)}`,
    );
  }

  const dmBackend = choice("dm_backend", DM_BACKENDS, "auto", "backend");
  const grpcTransport = choice("grpc_transport", GRPC_TRANSPORTS, "native", "transport");

  let address = "";
  const addressText = str("address");
  if (addressText !== undefined) {
    if (addressText === "") fail("address", "is required");
    else {
      try {
        const fromFlags = picked.get("address")!.layer.fromFlags === true;
        address = socketPath(addressText);
        const bare = addressText.replace(/^unix:(\/\/)?/, "");
        if (!fromFlags && !isAbsolute(bare)) {
          fail("address", `must be an absolute socket path, not ${JSON.stringify(addressText)}`);
        }
      } catch (err) {
        fail("address", errorMessage(err));
      }
    }
  }

  let metricsAddress = "";
  const metricsText = str("metrics_address");
  if (metricsText) {
    try {
      const parsed = parseListenAddress(metricsText.trim());
      const fromFlags = picked.get("metrics_address")!.layer.fromFlags === true;
      const bare = metricsText.trim().replace(/^unix:(\/\/)?/, "");
      if (parsed.transport === "unix" && !fromFlags && !isAbsolute(bare)) {
        fail(
          "metrics_address",
          `must be HOST:PORT or unix: and an absolute path, not ${JSON.stringify(metricsText)}`,
        );
      }
      metricsAddress = parsed.transport === "unix" ? `unix:${parsed.path}` : metricsText.trim();
    } catch (err) {
      fail("metrics_address", errorMessage(err));
    }
  }

  const logLevel = choice("log_level", LEVELS, DEFAULT_LOG_LEVEL, "level");
  const logFormat = choice("log_format", LOG_FORMATS, DEFAULT_LOG_FORMAT, "log format");

  const config: Config = {
    rootPath,
    allowNewMetadata,
    poolName,
    baseImageSize,
    fsType,
    fsOptions,
    asyncRemove,
    discardBlocks,
    onlineDiscard,
    minFreeSpace,
    dmBackend,
    grpcTransport,
    address,
    metricsAddress,
    logLevel,
    logFormat,
  };
  if (options.check) {
    const parsed = new Set(
      (Object.keys(CONFIG_KEYS) as ConfigKey[]).filter((key) => !problems.has(key)),
    );
    for (const { key, message } of options.check(config)) {
      if (parsed.has(key)) fail(key, message);
    }
  }
  const all = [...unknownKeys, ...PROBLEM_ORDER.flatMap((key) => problems.get(key) ?? [])];
  if (all.length > 0) throw new ConfigError(all);
  return config;
}
