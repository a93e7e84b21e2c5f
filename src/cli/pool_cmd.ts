/**
 * `pool create|status|destroy`: loop-file-backed thin-pools for dev and test hosts, and with
 * `--lvm VG` LVM thin pools (an autoextend profile, monitored by dmeventd). Every subcommand
 * takes `--log-level` (default info) and `--log-format` (default logfmt), like `serve`.
 *
 * @module
 */
import { EXAMPLE_POOL_NAME } from "../config/config.ts";
import { Dmsetup } from "../dm/dmsetup/dmsetup.ts";
import { DenoCommandRunner } from "../dm/runner.ts";
import { errorMessage } from "../util/errors.ts";
import {
  isLevel,
  isLogFormat,
  type Level,
  LEVELS,
  LOG_FORMATS,
  type LogFormat,
  type Logger,
} from "../util/log.ts";
import {
  createLoopPool,
  destroyLoopPool,
  MAX_META_SIZE,
  MIN_META_SIZE,
  poolStatus,
} from "../pool/loop_pool.ts";
import {
  createLvmPool,
  DEFAULT_AUTOEXTEND_PERCENT,
  DEFAULT_AUTOEXTEND_THRESHOLD,
  destroyLvmPool,
  type LvmPool,
  lvmPoolStatus,
} from "../pool/lvm_pool.ts";
import { formatSize, parseSize } from "../util/size.ts";
import { type ParsedFlags, parseFlags, UsageError } from "./usage.ts";

/** Default directory of loop pool backing files. */
export const DEFAULT_POOL_DIR = "/var/lib/devmapper-snapshotter/pool";
/** Default data size of `pool create`. */
export const DEFAULT_DATA_SIZE = "10GB";
/** Default pool block size (64 KiB). */
export const DEFAULT_BLOCK_SIZE = "64KB";

/** Help text of `pool`. */
export const POOL_HELP = `Usage: devmapper-snapshotter pool <create|status|destroy> [flags]

Manage a thin-pool backed by two sparse loop files (for dev and test hosts), or with --lvm an
LVM thin pool (production). Needs root.

Commands:
  create    create the pool: <dir>/<name>-data.img and <name>-meta.img on loop devices; with
            --lvm VG, thin-pool LV <name> in VG with an autoextend profile, monitored by dmeventd
  status    show the pool's mode and space (with --lvm also LVM's size, monitoring, autoextend)
  destroy   remove the pool, detach its loop devices, delete its files; with --lvm, lvremove it
            and delete its profile

Flags:
  --name NAME           pool name (default ${EXAMPLE_POOL_NAME}, as in \`config default\`);
                        with --lvm the LV name (pool_name is then VG-NAME, hyphens doubled)
  --lvm VG              an LVM thin pool in volume group VG (which must exist)
  --dir DIR             directory of the backing files (create, destroy; default
                        ${DEFAULT_POOL_DIR})
  --data-size SIZE      data size (create; default ${DEFAULT_DATA_SIZE}, 1024-based units)
  --meta-size SIZE      metadata size (create; default data/64, between 2MiB and 16GiB)
  --block-size SIZE     pool block size, a multiple of 64KiB (create; default 64KiB)
  --error-if-no-space   fail writes at once when the pool is full instead of queueing (create)
  --autoextend-threshold N  grow the LVM pool when data or metadata is N% full (create --lvm;
                        default ${DEFAULT_AUTOEXTEND_THRESHOLD}, 50..100, 100 = never)
  --autoextend-percent N    by N% of its size (create --lvm; default ${DEFAULT_AUTOEXTEND_PERCENT})
  --force               also deactivate the pool's thin devices (destroy)
  --json                print JSON (status)
  --log-level LEVEL     ${LEVELS.join(", ")} (default info)
  --log-format FORMAT   ${LOG_FORMATS.join(", ")} (default logfmt)
  -h, --help            show this help
`;

/** What the pool commands need besides their flags. */
export interface PoolCommandContext {
  /**
   * Makes the logger, at the level `--log-level` names (info without the flag), in the format
   * `--log-format` names (logfmt without it).
   */
  logger: (level: Level, format: LogFormat) => Logger;
  stdout: (text: string) => void;
}

/** The `--log-level` and `--log-format` options every subcommand takes. */
const LOG_LEVEL_OPTION = {
  "log-level": { type: "string" },
  "log-format": { type: "string" },
} as const;

/** The level `--log-level` names (info when absent); a UsageError naming the flag otherwise. */
function logLevelFlag(command: string, value: string | boolean | undefined): Level {
  if (value === undefined) return "info";
  const text = String(value);
  if (isLevel(text)) return text;
  throw new UsageError(
    `${command}: --log-level: unknown level ${JSON.stringify(text)} (use ${LEVELS.join(", ")})`,
  );
}

/** The format `--log-format` names (logfmt when absent); a UsageError naming the flag otherwise. */
function logFormatFlag(command: string, value: string | boolean | undefined): LogFormat {
  if (value === undefined) return "logfmt";
  const text = String(value);
  if (isLogFormat(text)) return text;
  throw new UsageError(
    `${command}: --log-format: unknown log format ${JSON.stringify(text)} (use ${
      LOG_FORMATS.join(", ")
    })`,
  );
}

function sizeFlag(command: string, flag: string, value: string): number {
  try {
    return parseSize(value);
  } catch (err) {
    throw new UsageError(`${command}: --${flag}: ${errorMessage(err)}`, { cause: err });
  }
}

/** Default metadata size for `dataSize`: 1/64 of it, 4 KiB aligned, within dm-thin's limits. */
export function defaultMetaSize(dataSize: number): number {
  const size = Math.ceil(dataSize / 64 / 4096) * 4096;
  return Math.min(MAX_META_SIZE, Math.max(MIN_META_SIZE, size));
}

/** A percentage flag: a UsageError naming the flag unless it is a whole number. */
function percentFlag(command: string, flag: string, value: string | boolean | undefined) {
  if (value === undefined) return undefined;
  const text = String(value);
  if (!/^\d+$/.test(text)) {
    throw new UsageError(`${command}: --${flag}: ${JSON.stringify(text)} is not a whole number`);
  }
  return Number(text);
}

/** Refuses flags that do not apply to the kind of pool (`--lvm` or loop files). */
function rejectFlags(command: string, values: ParsedFlags["values"], flags: string[], why: string) {
  const given = flags.find((f) => values[f] !== undefined);
  if (given) throw new UsageError(`${command}: --${given} ${why}`);
}

/** What `pool status` prints about an LVM pool beyond the kernel's view. */
function lvmLines(pool: LvmPool): string[] {
  const a = pool.autoextend;
  return [
    `lvm:        ${pool.vg}/${pool.lv}, ${formatSize(pool.volume.size)} data, ${
      formatSize(pool.volume.metadataSize)
    } metadata, ${pool.volume.monitor || "not monitored"}`,
    `autoextend: ${
      a === undefined
        ? "unknown"
        : a.threshold >= 100
        ? "off"
        : `at ${a.threshold}% full by ${a.percent}%`
    }${pool.volume.profile ? ` (profile ${pool.volume.profile})` : ""}`,
    ...(pool.thinVolumes.length > 0 ? [`LVM thin volumes: ${pool.thinVolumes.join(", ")}`] : []),
  ];
}

/** The runner and dmsetup backend, logging at `--log-level` in `--log-format`. */
function backends(command: string, values: ParsedFlags["values"], ctx: PoolCommandContext) {
  const logger = ctx.logger(
    logLevelFlag(command, values["log-level"]),
    logFormatFlag(command, values["log-format"]),
  );
  const runner = new DenoCommandRunner({ logger: logger.with({ component: "exec" }) });
  return { runner, dm: new Dmsetup({ runner, logger: logger.with({ component: "dm" }) }) };
}

/** `pool create --lvm VG`. */
async function createLvm(
  command: string,
  values: ParsedFlags["values"],
  ctx: PoolCommandContext,
): Promise<number> {
  rejectFlags(command, values, ["dir"], "does not apply to LVM pools (--lvm)");
  const optionalSize = (flag: string) =>
    values[flag] === undefined ? undefined : sizeFlag(command, flag, String(values[flag]));
  const blockBytes = optionalSize("block-size");
  if (blockBytes !== undefined && blockBytes % 512 !== 0) {
    throw new UsageError(`${command}: --block-size: ${blockBytes} bytes is not whole sectors`);
  }
  const threshold = percentFlag(command, "autoextend-threshold", values["autoextend-threshold"]);
  const percent = percentFlag(command, "autoextend-percent", values["autoextend-percent"]);
  const { dm, runner } = backends(command, values, ctx);
  const pool = await createLvmPool({
    vg: String(values.lvm),
    lv: String(values.name ?? EXAMPLE_POOL_NAME),
    dataSize: sizeFlag(command, "data-size", String(values["data-size"] ?? DEFAULT_DATA_SIZE)),
    metaSize: optionalSize("meta-size"),
    blockSectors: blockBytes === undefined ? undefined : blockBytes / 512,
    errorIfNoSpace: values["error-if-no-space"] === true,
    autoextend: { threshold, percent },
    dm,
    runner,
  });
  const { dataTotalBytes, metadataTotalBytes, blockBytes: block } = pool.space;
  const sizes = `data ${formatSize(dataTotalBytes)}, metadata ${formatSize(metadataTotalBytes)}`;
  ctx.stdout(
    [
      `created LVM thin pool ${pool.vg}/${pool.lv}: ${sizes}, block ${formatSize(block)}`,
      ...lvmLines(pool).slice(1),
      `profile file: ${pool.profilePath}`,
      `pool_name = ${JSON.stringify(pool.dmName)}`,
      "",
    ].join("\n"),
  );
  return 0;
}

/** Runs `pool <sub> ...`; returns the exit code. */
export async function runPoolCommand(args: string[], ctx: PoolCommandContext): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined) {
    throw new UsageError("pool: missing command (use create, status or destroy)");
  }
  if (sub === "--help" || sub === "-h" || sub === "help") {
    ctx.stdout(POOL_HELP);
    return 0;
  }
  const command = `pool ${sub}`;
  switch (sub) {
    case "create": {
      const { values } = parseFlags(rest, {
        command,
        options: {
          name: { type: "string" },
          dir: { type: "string" },
          "data-size": { type: "string" },
          "meta-size": { type: "string" },
          "block-size": { type: "string" },
          "error-if-no-space": { type: "boolean" },
          lvm: { type: "string" },
          "autoextend-threshold": { type: "string" },
          "autoextend-percent": { type: "string" },
          ...LOG_LEVEL_OPTION,
        },
      });
      if (values.help) return ctx.stdout(POOL_HELP), 0;
      if (values.lvm !== undefined) return await createLvm(command, values, ctx);
      rejectFlags(
        command,
        values,
        ["autoextend-threshold", "autoextend-percent"],
        "applies to LVM pools only (--lvm)",
      );
      const dataSize = sizeFlag(
        command,
        "data-size",
        String(values["data-size"] ?? DEFAULT_DATA_SIZE),
      );
      const metaSize = values["meta-size"] === undefined
        ? defaultMetaSize(dataSize)
        : sizeFlag(command, "meta-size", String(values["meta-size"]));
      const blockBytes = sizeFlag(
        command,
        "block-size",
        String(values["block-size"] ?? DEFAULT_BLOCK_SIZE),
      );
      if (blockBytes % 512 !== 0) {
        throw new UsageError(`${command}: --block-size: ${blockBytes} bytes is not whole sectors`);
      }
      const { dm, runner } = backends(command, values, ctx);
      const pool = await createLoopPool({
        name: String(values.name ?? EXAMPLE_POOL_NAME),
        dir: String(values.dir ?? DEFAULT_POOL_DIR),
        dataSize,
        metaSize,
        blockSectors: blockBytes / 512,
        errorIfNoSpace: values["error-if-no-space"] === true,
        dm,
        runner,
      });
      ctx.stdout(
        `created pool ${pool.name}: data ${pool.dataFile} on ${pool.dataLoop}, ` +
          `metadata ${pool.metaFile} on ${pool.metaLoop}\ntable: ${pool.table}\n`,
      );
      return 0;
    }
    case "status": {
      const { values } = parseFlags(rest, {
        command,
        options: {
          name: { type: "string" },
          json: { type: "boolean" },
          lvm: { type: "string" },
          ...LOG_LEVEL_OPTION,
        },
      });
      if (values.help) return ctx.stdout(POOL_HELP), 0;
      const { dm, runner } = backends(command, values, ctx);
      const lvmPool = values.lvm === undefined ? undefined : await lvmPoolStatus({
        vg: String(values.lvm),
        lv: String(values.name ?? EXAMPLE_POOL_NAME),
        runner,
        dm,
      });
      const name = lvmPool?.dmName ?? String(values.name ?? EXAMPLE_POOL_NAME);
      const s = lvmPool?.space ?? await poolStatus(dm, name);
      if (values.json) {
        const { status: _raw, ...space } = s;
        const lvm = lvmPool && {
          vg: lvmPool.vg,
          lv: lvmPool.lv,
          sizeBytes: lvmPool.volume.size,
          metadataSizeBytes: lvmPool.volume.metadataSize,
          monitor: lvmPool.volume.monitor,
          profile: lvmPool.volume.profile,
          autoextend: lvmPool.autoextend ?? null,
          thinVolumes: lvmPool.thinVolumes,
        };
        ctx.stdout(JSON.stringify({ name, ...space, ...(lvm ? { lvm } : {}) }, null, 2) + "\n");
      } else {
        const pct = (used: number, total: number) =>
          total > 0 ? ` (${(100 * used / total).toFixed(1)}%)` : "";
        ctx.stdout(
          [
            `pool:       ${name}`,
            `mode:       ${s.mode}${s.needsCheck ? ", needs_check" : ""}${
              s.failed ? ", FAILED" : ""
            }`,
            `block size: ${formatSize(s.blockBytes)}`,
            `data:       ${formatSize(s.dataUsedBytes)} of ${formatSize(s.dataTotalBytes)} used` +
            pct(s.dataUsedBytes, s.dataTotalBytes),
            `metadata:   ${formatSize(s.metadataUsedBytes)} of ${
              formatSize(s.metadataTotalBytes)
            } used` +
            pct(s.metadataUsedBytes, s.metadataTotalBytes),
            `transaction id: ${s.transactionId}`,
            ...(lvmPool ? lvmLines(lvmPool) : []),
            "",
          ].join("\n"),
        );
      }
      return s.failed ? 1 : 0;
    }
    case "destroy": {
      const { values } = parseFlags(rest, {
        command,
        options: {
          name: { type: "string" },
          dir: { type: "string" },
          force: { type: "boolean" },
          lvm: { type: "string" },
          ...LOG_LEVEL_OPTION,
        },
      });
      if (values.help) return ctx.stdout(POOL_HELP), 0;
      const { dm, runner } = backends(command, values, ctx);
      if (values.lvm !== undefined) {
        rejectFlags(command, values, ["dir"], "does not apply to LVM pools (--lvm)");
        const vg = String(values.lvm);
        const lv = String(values.name ?? EXAMPLE_POOL_NAME);
        const done = await destroyLvmPool({ vg, lv, force: values.force === true, dm, runner });
        ctx.stdout(
          [
            ...done.removedDevices.map((d) => `deactivated thin device ${d}`),
            `removed LVM thin pool ${vg}/${lv}`,
            ...(done.deletedProfile ? [`deleted ${done.deletedProfile}`] : []),
            "",
          ].join("\n"),
        );
        return 0;
      }
      const done = await destroyLoopPool({
        name: String(values.name ?? EXAMPLE_POOL_NAME),
        dir: String(values.dir ?? DEFAULT_POOL_DIR),
        force: values.force === true,
        dm,
        runner,
      });
      ctx.stdout(
        [
          done.removedPool ? "removed pool device" : "pool device was not present",
          ...done.removedDevices.map((d) => `deactivated thin device ${d}`),
          ...done.detachedLoops.map((l) => `detached ${l}`),
          ...done.deletedFiles.map((f) => `deleted ${f}`),
          "",
        ].join("\n"),
      );
      return 0;
    }
    default:
      throw new UsageError(`pool: unknown command '${sub}' (use create, status or destroy)`);
  }
}
