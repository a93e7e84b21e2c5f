/**
 * The production wiring: a device-mapper backend (DM ioctls, or `dmsetup` spawns), the mkfs
 * formatter, and `openSnapshotter` with the snapshotter's settings taken from the
 * configuration ({@linkcode snapshotterSettings}).
 *
 * @module
 */
import { Dmsetup } from "../dm/dmsetup/dmsetup.ts";
import { DmIoctl, DmIoctlUnavailableError } from "../dm/ioctl/ioctl.ts";
import { FS_TYPES, isFsType } from "../dm/mkfs.ts";
import { DenoCommandRunner } from "../dm/runner.ts";
import type { DeviceMapper } from "../dm/types.ts";
import type { Logger } from "../util/log.ts";
import type { Config } from "../config/config.ts";
import { createFormatter } from "../pool/formatter.ts";
import { openSnapshotter, type SnapshotterSettings } from "../snapshotter/snapshotter.ts";
import type { CommandRunner } from "../dm/runner.ts";
import type { SnapshotterFactory } from "./serve.ts";

/**
 * The device-mapper backend `config.dmBackend` asks for. `auto` takes DM ioctls when
 * `/dev/mapper/control` can be used through FFI and falls back to `dmsetup` (logged).
 */
export function createDeviceMapper(
  config: Pick<Config, "dmBackend">,
  runner: CommandRunner,
  logger: Logger,
): DeviceMapper {
  const dmLogger = logger.with({ component: "dm" });
  if (config.dmBackend !== "dmsetup") {
    try {
      const dm = new DmIoctl({ logger: dmLogger });
      logger.info("device-mapper backend: ioctl", { backend: "ioctl" });
      return dm;
    } catch (err) {
      if (config.dmBackend === "ioctl" || !(err instanceof DmIoctlUnavailableError)) throw err;
      logger.warn("DM ioctls unavailable; using dmsetup", { error: err });
    }
  }
  logger.info("device-mapper backend: dmsetup", { backend: "dmsetup" });
  return new Dmsetup({ runner, logger: dmLogger });
}

/**
 * The snapshotter's settings from a configuration that passed `checkConfig` (config_checks.ts).
 * Throws
 * when `fsType` is not one mkfs makes (a configuration that skipped the check).
 */
export function snapshotterSettings(config: Config): SnapshotterSettings {
  const { fsType } = config;
  if (!isFsType(fsType)) {
    throw new Error(
      `Cannot use fs_type ${JSON.stringify(fsType)}: unsupported filesystem type (use ${
        FS_TYPES.join(", ")
      })`,
    );
  }
  return {
    rootPath: config.rootPath,
    allowNewMetadata: config.allowNewMetadata,
    poolName: config.poolName,
    baseImageSize: config.baseImageSize,
    fsType,
    fsOptions: config.fsOptions,
    asyncRemove: config.asyncRemove,
    discardBlocks: config.discardBlocks,
    onlineDiscard: config.onlineDiscard,
    minFreeSpace: config.minFreeSpace,
  };
}

/** Opens the devmapper snapshotter described by `config` (checks the pool, reconciles). */
export const openDevmapperSnapshotter: SnapshotterFactory = (config, logger) => {
  const runner = new DenoCommandRunner({ logger: logger.with({ component: "exec" }) });
  return openSnapshotter({
    ...snapshotterSettings(config),
    dm: createDeviceMapper(config, runner, logger),
    formatter: createFormatter(runner),
    logger: logger.with({ component: "snapshotter" }),
  });
};
