/**
 * `pool create|status|destroy`: loop-file-backed thin-pools for dev and test hosts. Every
 * subcommand takes `--log-level` (default info), like `serve`.
 *
 * @module
 */
import { EXAMPLE_POOL_NAME } from "../config/config.ts";
import { Dmsetup } from "../dm/dmsetup/dmsetup.ts";
import { DenoCommandRunner } from "../dm/runner.ts";
import { errorMessage } from "../util/errors.ts";
import { isLevel, type Level, LEVELS, type Logger } from "../util/log.ts";
import {
  createLoopPool,
  destroyLoopPool,
  MAX_META_SIZE,
  MIN_META_SIZE,
  poolStatus,
} from "../pool/loop_pool.ts";
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

Manage a thin-pool backed by two sparse loop files (for dev and test hosts; production pools
are usually made with LVM). Needs root.

Commands:
  create    create the pool: <dir>/<name>-data.img and <name>-meta.img on loop devices
  status    show the pool's mode and space
  destroy   remove the pool, detach its loop devices, delete its files

Flags:
  --name NAME           pool name (default ${EXAMPLE_POOL_NAME}, as in \`config default\`)
  --dir DIR             directory of the backing files (create, destroy; default
                        ${DEFAULT_POOL_DIR})
  --data-size SIZE      data size (create; default ${DEFAULT_DATA_SIZE}, 1024-based units)
  --meta-size SIZE      metadata size (create; default data/64, between 2MiB and 16GiB)
  --block-size SIZE     pool block size, a multiple of 64KiB (create; default 64KiB)
  --error-if-no-space   fail writes at once when the pool is full instead of queueing (create)
  --force               also deactivate the pool's thin devices (destroy)
  --json                print JSON (status)
  --log-level LEVEL     ${LEVELS.join(", ")} (default info)
  -h, --help            show this help
`;

/** What the pool commands need besides their flags. */
export interface PoolCommandContext {
  /** Makes the logger, at the level `--log-level` names (info without the flag). */
  logger: (level: Level) => Logger;
  stdout: (text: string) => void;
}

/** The `--log-level` option every subcommand takes. */
const LOG_LEVEL_OPTION = { "log-level": { type: "string" } } as const;

/** The level `--log-level` names (info when absent); a UsageError naming the flag otherwise. */
function logLevelFlag(command: string, value: string | boolean | undefined): Level {
  if (value === undefined) return "info";
  const text = String(value);
  if (isLevel(text)) return text;
  throw new UsageError(
    `${command}: --log-level: unknown level ${JSON.stringify(text)} (use ${LEVELS.join(", ")})`,
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

/** The runner and dmsetup backend, logging at the level of `--log-level`. */
function backends(command: string, values: ParsedFlags["values"], ctx: PoolCommandContext) {
  const logger = ctx.logger(logLevelFlag(command, values["log-level"]));
  const runner = new DenoCommandRunner({ logger: logger.with({ component: "exec" }) });
  return { runner, dm: new Dmsetup({ runner, logger: logger.with({ component: "dm" }) }) };
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
          ...LOG_LEVEL_OPTION,
        },
      });
      if (values.help) return ctx.stdout(POOL_HELP), 0;
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
        options: { name: { type: "string" }, json: { type: "boolean" }, ...LOG_LEVEL_OPTION },
      });
      if (values.help) return ctx.stdout(POOL_HELP), 0;
      const name = String(values.name ?? EXAMPLE_POOL_NAME);
      const { dm } = backends(command, values, ctx);
      const s = await poolStatus(dm, name);
      if (values.json) {
        const { status: _raw, ...space } = s;
        ctx.stdout(JSON.stringify({ name, ...space }, null, 2) + "\n");
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
          ...LOG_LEVEL_OPTION,
        },
      });
      if (values.help) return ctx.stdout(POOL_HELP), 0;
      const { dm, runner } = backends(command, values, ctx);
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
