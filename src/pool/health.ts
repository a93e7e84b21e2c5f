/**
 * Thin-pool health: turns a pool's status into clear errors before the snapshotter asks it
 * for work (upstream never checks, spec §6.13), guards its free space (`min_free_space`), and
 * opens a configured pool.
 *
 * Invariants:
 * - {@linkcode openPool} refuses only what cannot be a pool to serve: a missing device, one
 *   without a live table or suspended, or a device that is not a thin-pool. A full, read-only,
 *   failed or unchecked pool opens: the snapshotter then serves reads (and removals, where the
 *   pool allows them) and refuses creations with the reason;
 * - a space problem (out of data space, free space below the guard) is
 *   {@linkcode ResourceExhaustedError}: it goes away by itself once space is freed or added. A
 *   pool that refuses every change (read-only, failed, needs_check) is
 *   {@linkcode UnavailableError} for creations and {@linkcode FailedPreconditionError} for
 *   deletions (containerd's garbage collector skips a snapshot whose Remove fails with
 *   FailedPrecondition and goes on; any other error ends the collection);
 * - every message names the pool, what is wrong (with used/total blocks and the threshold) and
 *   what the operator can do about it.
 *
 * The guard keeps metadata more free space than data: running out of data space only stops
 * writes until space is added, but a pool whose metadata runs out turns read-only, refuses even
 * deletions, and may need an offline `thin_check`/`thin_repair`. Writes into existing devices
 * (and the copy-on-write of every block a snapshot shares) add mappings that the guard cannot
 * refuse, so metadata needs room to grow after the last device the guard let through. Metadata
 * must therefore keep twice the data fraction free (at most 50%), and never less than the
 * kernel's own metadata low-water mark, min(4 MiB, a quarter of the metadata device), below
 * which dm-thin itself raises the event that asks for the metadata to be extended. With the
 * default 10%: data keeps 10% free, metadata 20% (25% on metadata devices up to 16 MiB).
 *
 * @module
 */
import {
  FailedPreconditionError,
  InvalidArgumentError,
  ResourceExhaustedError,
  type SnapshotterError,
  UnavailableError,
} from "../util/errors.ts";
import { formatFreeSpace, type FreeSpace, isNoFreeSpace } from "../util/free_space.ts";
import { isErrno } from "../dm/errors.ts";
import type { DeviceInfo, DeviceMapper, PoolStatus } from "../dm/types.ts";

/** Bytes of one thin-pool metadata block (fixed by dm-thin). */
export const METADATA_BLOCK_BYTES = 4096;
/** dm-thin's metadata low-water mark is at most this many metadata blocks (4 MiB). */
export const KERNEL_METADATA_LOW_WATER_BLOCKS = 1024;
/** Metadata keeps this many times the data fraction free... */
export const METADATA_FACTOR = 2;
/** ...but never more than this fraction of the metadata device. */
export const METADATA_MAX_FRACTION = 0.5;

/** Free blocks a pool must keep for new devices. */
export interface SpaceLimits {
  /** Data blocks (in the pool's block size). */
  dataBlocks: number;
  /** Metadata blocks (4 KiB each). */
  metadataBlocks: number;
}

/** `Math.ceil` that ignores floating-point dust (`0.07 * 100` is 7, not 8). */
function ceil(x: number): number {
  return Math.ceil(x - 1e-9);
}

/**
 * The free blocks `status`'s pool must keep under `min_free_space` = `min` (see the module doc
 * for the metadata rule). A size is read as the fraction of the data device it is. Zero (a
 * guard that is off) keeps nothing, metadata included.
 */
export function spaceLimits(status: PoolStatus, min: FreeSpace): SpaceLimits {
  if (isNoFreeSpace(min) || status.totalDataBlocks <= 0) {
    return { dataBlocks: 0, metadataBlocks: 0 };
  }
  const dataBytes = status.length * 512;
  const blockBytes = dataBytes / status.totalDataBlocks;
  const fraction = "percent" in min ? min.percent / 100 : min.bytes / dataBytes;
  const dataBlocks = "percent" in min
    ? ceil(min.percent * status.totalDataBlocks / 100)
    : ceil(min.bytes / blockBytes);
  const meta = status.totalMetadataBlocks;
  const doubled = ceil(Math.min(METADATA_FACTOR * fraction, METADATA_MAX_FRACTION) * meta);
  const lowWater = Math.min(KERNEL_METADATA_LOW_WATER_BLOCKS, Math.floor(meta / 4));
  return { dataBlocks, metadataBlocks: Math.max(doubled, lowWater) };
}

/** What is wrong with a pool, most serious first. */
export type PoolState =
  | "failed"
  | "needs_check"
  | "read_only"
  | "out_of_data_space"
  | "low_space";

/** A pool that cannot take new devices, and why. */
export interface PoolProblem {
  state: PoolState;
  /** Free data space is below the guard (or gone). */
  dataLow: boolean;
  /** Free metadata space is below the guard. */
  metadataLow: boolean;
  /** The pool still deletes devices (its metadata can change). */
  canDelete: boolean;
  /** `pool "p" is ...: <what to do>`. */
  message: string;
}

/** About `bytes`, in the largest binary unit it reaches, one decimal (`6.4MiB`, `512B`). */
function aboutSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (i < units.length - 1 && bytes >= 1024 ** (i + 1)) i++;
  return `${Number((bytes / 1024 ** i).toFixed(1))}${units[i]}`;
}

/** `12.3%` of `part` in `whole` (one decimal, `.0` dropped). */
function percent(part: number, whole: number): string {
  if (whole <= 0) return "0%";
  return `${Number((100 * part / whole).toFixed(1))}%`;
}

const FREE_DATA = "remove unused images and snapshots (with discard_blocks their blocks go back " +
  "to the pool at once), or extend the pool: lvextend its data, or grow the data device and " +
  "reload the pool table with the new length (dmsetup reload, suspend, resume)";
const FREE_METADATA = "remove unused images and snapshots, or extend the pool's metadata: " +
  "lvextend --poolmetadatasize, or grow the metadata device and reload the pool table " +
  "(dmsetup reload, suspend, resume)";

/**
 * The problem of `status`'s pool for new devices, or undefined when it can take them. With
 * `min` (`min_free_space`), free space below {@linkcode spaceLimits} is a problem too.
 */
export function poolProblem(
  status: PoolStatus,
  poolName: string,
  min?: FreeSpace,
): PoolProblem | undefined {
  const pool = `pool "${poolName}"`;
  const limits = min ? spaceLimits(status, min) : { dataBlocks: 0, metadataBlocks: 0 };
  const freeData = status.totalDataBlocks - status.usedDataBlocks;
  const freeMeta = status.totalMetadataBlocks - status.usedMetadataBlocks;
  const outOfData = status.mode === "out_of_data_space";
  const dataLow = !status.failed && (outOfData || freeData < limits.dataBlocks);
  const metadataLow = !status.failed && freeMeta < limits.metadataBlocks;
  const base = { dataLow, metadataLow };
  const metadata =
    `metadata ${status.usedMetadataBlocks}/${status.totalMetadataBlocks} blocks used`;
  if (status.failed || status.mode === "fail") {
    return {
      ...base,
      state: "failed",
      canDelete: false,
      message: `${pool} has failed (status "Fail"): deactivate it, check and repair its ` +
        `metadata (thin_check, thin_repair), then start again`,
    };
  }
  if (status.mode === "ro") {
    return {
      ...base,
      state: "read_only",
      canDelete: false,
      message: `${pool} is read-only (${metadata}): the kernel accepts no change to it; if its ` +
        `metadata is full, extend the metadata device (lvextend --poolmetadatasize, or grow ` +
        `the device and reload the pool table with dmsetup), otherwise deactivate the pool and ` +
        `repair it (thin_check, thin_repair)${status.needsCheck ? " (needs_check is set)" : ""}`,
    };
  }
  if (status.needsCheck) {
    return {
      ...base,
      state: "needs_check",
      canDelete: true,
      message: `${pool} needs a metadata check (needs_check flag set): deactivate it and run ` +
        `thin_check (thin_repair if it finds errors)`,
    };
  }
  if (outOfData) {
    return {
      ...base,
      state: "out_of_data_space",
      canDelete: true,
      message: `${pool} is out of data space (${status.usedDataBlocks}/` +
        `${status.totalDataBlocks} data blocks used; writes to its devices ${
          status.errorIfNoSpace ? "fail" : "wait"
        }): ${FREE_DATA}`,
    };
  }
  if (!dataLow && !metadataLow) return undefined;
  const setting = `min_free_space "${formatFreeSpace(min!)}"`;
  const dataText = () => {
    const blockBytes = status.length * 512 / status.totalDataBlocks;
    return `data ${status.usedDataBlocks}/${status.totalDataBlocks} blocks used, ` +
      `${percent(freeData, status.totalDataBlocks)} free (${aboutSize(freeData * blockBytes)}), ` +
      `${setting} keeps ${limits.dataBlocks} blocks ` +
      `(${percent(limits.dataBlocks, status.totalDataBlocks)}) free`;
  };
  const metadataText = () =>
    `${metadata}, ${percent(freeMeta, status.totalMetadataBlocks)} free, metadata keeps ` +
    `${limits.metadataBlocks} blocks (${
      percent(limits.metadataBlocks, status.totalMetadataBlocks)
    }) ` +
    `free (twice ${setting}, at least the kernel's low-water mark)`;
  let message: string;
  if (dataLow && metadataLow) {
    message = `${pool} is low on data and metadata space: ${dataText()}; ${metadataText()}: ` +
      `${FREE_DATA}; and extend its metadata the same way (lvextend --poolmetadatasize)`;
  } else if (dataLow) {
    message = `${pool} is low on data space: ${dataText()}: ${FREE_DATA}`;
  } else {
    message = `${pool} is low on metadata space: ${metadataText()}: ${FREE_METADATA}`;
  }
  return { ...base, state: "low_space", canDelete: true, message };
}

/**
 * The error refusing a new device because of `problem`, its message `<what>: <problem>`:
 * {@linkcode ResourceExhaustedError} for space, {@linkcode UnavailableError} otherwise.
 */
export function creationError(
  problem: PoolProblem,
  what?: string,
  options?: ErrorOptions,
): SnapshotterError {
  const message = what ? `${what}: ${problem.message}` : problem.message;
  return problem.state === "out_of_data_space" || problem.state === "low_space"
    ? new ResourceExhaustedError(message, options)
    : new UnavailableError(message, options);
}

/** The error refusing a deletion on a pool that cannot change: {@linkcode FailedPreconditionError}. */
export function deletionError(
  problem: PoolProblem,
  what: string,
  options?: ErrorOptions,
): FailedPreconditionError {
  return new FailedPreconditionError(`${what}: ${problem.message}`, options);
}

/**
 * Throws when the pool cannot take new devices: {@linkcode UnavailableError} when it failed, is
 * flagged `needs_check` or is read-only; {@linkcode ResourceExhaustedError} when it is out of
 * data space or, with `min` (`min_free_space`), below the free space the guard keeps. Returns
 * normally for a healthy read-write pool.
 */
export function checkPoolHealth(status: PoolStatus, poolName: string, min?: FreeSpace): void {
  const problem = poolProblem(status, poolName, min);
  if (problem) throw creationError(problem);
}

/** What {@linkcode openPool} found. */
export interface OpenedPool {
  info: DeviceInfo;
  /** The pool's status; judge it with {@linkcode poolProblem}. */
  status: PoolStatus;
}

/**
 * Checks that `name` is an active thin-pool (2 spawns with `dmsetup`); its health is the
 * caller's to judge (a full or read-only pool opens). Errors: missing device or no live table
 * or suspended → {@linkcode UnavailableError} (`Cannot open pool "x": no such device`), another
 * target → {@linkcode InvalidArgumentError} (`Cannot open pool "x": not a thin-pool (target
 * "linear")`).
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
  return { info, status: lines[0] as PoolStatus };
}
