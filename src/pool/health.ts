/**
 * Thin-pool health: turns a pool's status into clear errors before the snapshotter asks it
 * for work (upstream never checks, spec §6.13), and opens a configured pool.
 *
 * @module
 */
import { InvalidArgumentError, UnavailableError } from "../util/errors.ts";
import { isErrno } from "../dm/errors.ts";
import type { DeviceInfo, DeviceMapper, PoolStatus } from "../dm/types.ts";

/**
 * Throws {@linkcode UnavailableError} when the pool cannot take new work: failed (`Fail`),
 * flagged `needs_check`, read-only, or out of data space. Returns normally for a healthy
 * read-write pool.
 */
export function checkPoolHealth(status: PoolStatus, poolName: string): void {
  const prefix = `Pool "${poolName}"`;
  if (status.failed || status.mode === "fail") {
    throw new UnavailableError(
      `${prefix} has failed (status "Fail"): check and repair its metadata with thin_check/thin_repair`,
    );
  }
  if (status.needsCheck) {
    throw new UnavailableError(
      `${prefix} needs a metadata check (needs_check flag set): deactivate it and run thin_check`,
    );
  }
  if (status.mode === "ro") {
    throw new UnavailableError(
      `${prefix} is read-only (metadata error or metadata space exhausted, ` +
        `metadata ${status.usedMetadataBlocks}/${status.totalMetadataBlocks} blocks used)`,
    );
  }
  if (status.mode === "out_of_data_space") {
    throw new UnavailableError(
      `${prefix} is out of data space (${status.usedDataBlocks}/${status.totalDataBlocks} ` +
        `data blocks used): extend the data device or remove snapshots`,
    );
  }
}

/** What {@linkcode openPool} found. */
export interface OpenedPool {
  info: DeviceInfo;
  status: PoolStatus;
}

/**
 * Checks that `name` is an active, healthy thin-pool (2 spawns with `dmsetup`). Errors:
 * missing device or no live table or suspended → {@linkcode UnavailableError}
 * (`Cannot open pool "x": no such device`), another target → {@linkcode InvalidArgumentError}
 * (`Cannot open pool "x": not a thin-pool (target "linear")`), unhealthy → the error of
 * {@linkcode checkPoolHealth}.
 */
export async function openPool(dm: DeviceMapper, name: string): Promise<OpenedPool> {
  const prefix = `Cannot open pool "${name}"`;
  const info = await dm.info(name);
  if (!info) throw new UnavailableError(`${prefix}: no such device`);
  if (!info.live) throw new UnavailableError(`${prefix}: device has no live table`);
  if (info.suspended) throw new UnavailableError(`${prefix}: device is suspended`);
  let lines;
  try {
    lines = await dm.status(name);
  } catch (err) {
    if (isErrno(err, "ENXIO")) {
      throw new UnavailableError(`${prefix}: no such device`, { cause: err });
    }
    throw err;
  }
  const targets = lines.map((l) => l.target);
  if (lines.length !== 1 || lines[0].target !== "thin-pool") {
    throw new InvalidArgumentError(
      `${prefix}: not a thin-pool (target${targets.length === 1 ? "" : "s"} ${
        targets.map((t) => JSON.stringify(t)).join(", ") || "none"
      })`,
    );
  }
  const status = lines[0] as PoolStatus;
  checkPoolHealth(status, name);
  return { info, status };
}
