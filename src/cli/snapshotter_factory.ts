/**
 * The production wiring: a device-mapper backend (DM ioctls, or `dmsetup` spawns), the mkfs
 * formatter, and `openSnapshotter` with the snapshotter's settings taken from the
 * configuration ({@linkcode snapshotterSettings}); with metrics on, the backend recorded in
 * them and the snapshotter's figures read by them.
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
import {
  type DevmapperSnapshotter,
  openSnapshotter,
  type SnapshotterOptions,
  type SnapshotterSettings,
} from "../snapshotter/snapshotter.ts";
import { instrumentDeviceMapper } from "../dm/instrumented.ts";
import type { Inventory, Metrics } from "../metrics/metrics.ts";
import type { DeviceState, MetadataStore } from "../metadata/store.ts";
import { RECONCILE_ACTIONS } from "../metrics/names.ts";
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

/** `ioctl` or `dmsetup`: the backend `dm` is. */
export function backendName(dm: DeviceMapper): "ioctl" | "dmsetup" {
  return dm instanceof DmIoctl ? "ioctl" : "dmsetup";
}

/**
 * Opens the devmapper snapshotter described by `config` (checks the pool, reconciles). With
 * `metrics`, every device-mapper operation is recorded, and the pool's last status, the
 * database's counts and what the reconciliation did are read at each scrape
 * ({@linkcode watchSnapshotter}).
 */
export const openDevmapperSnapshotter: SnapshotterFactory = (config, logger, metrics) => {
  const runner = new DenoCommandRunner({ logger: logger.with({ component: "exec" }) });
  const dm = createDeviceMapper(config, runner, logger);
  return openMeasuredSnapshotter({
    ...snapshotterSettings(config),
    dm,
    formatter: createFormatter(runner),
    logger: logger.with({ component: "snapshotter" }),
  }, { metrics, backend: backendName(dm) });
};

/**
 * `openSnapshotter(options)`, and with `metrics` its device-mapper backend (called `backend`
 * in them) recorded and its figures watched ({@linkcode watchSnapshotter}).
 */
export async function openMeasuredSnapshotter(
  options: SnapshotterOptions,
  { metrics, backend }: { metrics?: Metrics; backend: string },
): Promise<DevmapperSnapshotter> {
  const snapshotter = await openSnapshotter(
    metrics ? { ...options, dm: instrumentDeviceMapper(options.dm, metrics, backend) } : options,
  );
  if (metrics) {
    metrics.setBuildInfo({ dmBackend: backend });
    watchSnapshotter(metrics, snapshotter);
  }
  return snapshotter;
}

/**
 * Oldest pool status a scrape reports, ms: on a server whose calls read the status anyway a
 * scrape reads none; on an idle one it reads one at most this often, so the figures follow
 * what running containers write into the pool.
 */
export const POOL_FIGURES_MAX_AGE_MS = 5000;

/** Thin ids whose device rows are counted between two turns of the event loop. */
export const DEVICE_COUNT_SLICE = 4096;

/**
 * What `store` holds, for a scrape: the counts read from indexes at once, the device rows by
 * state a slice of {@linkcode DEVICE_COUNT_SLICE} ids at a time with calls served in between
 * (a pass over 100,000 rows holds the thread 35 ms, a slice under 2 ms). Rows that change
 * during the count may be counted as they were or as they are.
 */
export async function storeInventory(store: MetadataStore): Promise<Inventory> {
  const counts = store.counts();
  const thinDevices: Record<DeviceState, number> = {
    creating: 0,
    ready: 0,
    deleting: 0,
    foreign: 0,
  };
  for (let after = 0; after < counts.maxThinId; after += DEVICE_COUNT_SLICE) {
    if (after > 0) await new Promise((resolve) => setTimeout(resolve, 0));
    const slice = store.countDevices(after, after + DEVICE_COUNT_SLICE);
    for (const state of Object.keys(thinDevices) as DeviceState[]) {
      thinDevices[state] += slice[state];
    }
  }
  return {
    thinDevices,
    snapshots: counts.snapshots,
    templates: counts.templates,
    thinIdsAllocated: counts.thinIdsAllocated,
  };
}

/**
 * Points `metrics` at what `snapshotter` already knows: the pool's last status (read again
 * only when older than {@linkcode POOL_FIGURES_MAX_AGE_MS}), the database's counts (COUNT queries at each scrape, {@linkcode storeInventory})
 * and the reconcile report.
 */
export function watchSnapshotter(metrics: Metrics, snapshotter: DevmapperSnapshotter): void {
  metrics.watchPool(() => snapshotter.pool.figures(POOL_FIGURES_MAX_AGE_MS));
  metrics.watchInventory(() => storeInventory(snapshotter.pool.store));
  const report = snapshotter.lastReconcile;
  if (report) {
    metrics.setReconciled(
      Object.fromEntries(RECONCILE_ACTIONS.map((action) => [action, report[action].length])),
    );
  }
}
