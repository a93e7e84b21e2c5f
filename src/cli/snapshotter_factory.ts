/**
 * The production wiring: `dmsetup` through a command runner, mkfs formatter, and
 * `openSnapshotter` with the configured settings.
 *
 * @module
 */
import { Dmsetup } from "../dm/dmsetup.ts";
import { DenoCommandRunner } from "../dm/runner.ts";
import { createFormatter } from "../pool/formatter.ts";
import { openSnapshotter } from "../snapshotter.ts";
import type { SnapshotterFactory } from "./serve.ts";

/** Opens the devmapper snapshotter described by `config` (checks the pool, reconciles). */
export const openDevmapperSnapshotter: SnapshotterFactory = (config, logger) => {
  const runner = new DenoCommandRunner({ logger: logger.with({ component: "exec" }) });
  const dm = new Dmsetup({ runner, logger: logger.with({ component: "dm" }) });
  return openSnapshotter({
    rootPath: config.rootPath,
    poolName: config.poolName,
    baseImageSize: config.baseImageSize,
    fsType: config.fsType,
    fsOptions: config.fsOptions,
    asyncRemove: config.asyncRemove,
    discardBlocks: config.discardBlocks,
    dm,
    formatter: createFormatter(runner),
    logger: logger.with({ component: "snapshotter" }),
  });
};
