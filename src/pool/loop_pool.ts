/**
 * Loop-file-backed thin-pools for dev and test hosts (the `pool` helper): create one from two
 * sparse files, report its space, destroy it. Production pools are made by the operator
 * (e.g. LVM); the snapshotter itself never creates or removes a pool.
 *
 * @module
 */
import { join } from "node:path";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "../util/errors.ts";
import { pathExists } from "../util/fs.ts";
import { validateDeviceName } from "../dm/names.ts";
import { commandError, DmError, isErrno } from "../dm/errors.ts";
import { attachLoop, detachLoops, listLoops } from "../dm/losetup.ts";
import { parsePrefixedLines, parseTable, type TableLine } from "../dm/parse.ts";
import type { CommandRunner } from "../dm/runner.ts";
import { type DeviceMapper, devicePath, type PoolStatus } from "../dm/types.ts";

/** Bytes per thin-pool metadata block (fixed by dm-thin). */
export const METADATA_BLOCK_BYTES = 4096;
/** Smallest and largest pool data block, in 512-byte sectors (64 KiB .. 1 GiB). */
export const MIN_BLOCK_SECTORS = 128;
/** Largest pool data block in sectors. */
export const MAX_BLOCK_SECTORS = 2097152;
/** Smallest metadata file accepted. */
export const MIN_META_SIZE = 2 * 1024 * 1024;
/** Largest useful metadata device (dm-thin ignores space past ~15.9 GiB). */
export const MAX_META_SIZE = 16 * 1024 ** 3;
/** Low water mark (data blocks) used for loop pools, as in upstream's docs and tests. */
export const LOW_WATER_MARK = 32768;

/** Paths of a loop pool's backing files in `dir`. */
export function loopPoolFiles(name: string, dir: string): { dataFile: string; metaFile: string } {
  return { dataFile: join(dir, `${name}-data.img`), metaFile: join(dir, `${name}-meta.img`) };
}

/** Options for {@linkcode poolTable}. */
export interface PoolTableOptions {
  dataSectors: number;
  metaDevice: string;
  dataDevice: string;
  blockSectors: number;
  /** Add feature `error_if_no_space` (writes fail at once instead of queueing for 60 s). */
  errorIfNoSpace?: boolean;
}

/** The pool's table line: `0 <sectors> thin-pool <meta> <data> <block> 32768 1 skip_block_zeroing`. */
export function poolTable(o: PoolTableOptions): string {
  const features = o.errorIfNoSpace
    ? "2 skip_block_zeroing error_if_no_space"
    : "1 skip_block_zeroing";
  return `0 ${o.dataSectors} thin-pool ${o.metaDevice} ${o.dataDevice} ${o.blockSectors} ${LOW_WATER_MARK} ${features}`;
}

/** Options for {@linkcode createLoopPool}. */
export interface CreateLoopPoolOptions {
  /** dm name of the pool. */
  name: string;
  /** Directory for the backing files (created if missing). */
  dir: string;
  /** Data size in bytes; rounded down to whole pool blocks. */
  dataSize: number;
  /** Metadata size in bytes. */
  metaSize: number;
  /** Pool block size in 512-byte sectors (default 128 = 64 KiB). */
  blockSectors?: number;
  /** See {@linkcode PoolTableOptions.errorIfNoSpace}. */
  errorIfNoSpace?: boolean;
  dm: DeviceMapper;
  runner: CommandRunner;
}

/** A created loop pool. */
export interface LoopPool {
  name: string;
  dataFile: string;
  metaFile: string;
  dataLoop: string;
  metaLoop: string;
  /** The table the pool was created with. */
  table: string;
}

/**
 * Throws {@linkcode InvalidArgumentError} (message after `prefix`) unless `block` is a pool
 * block size dm-thin takes: a multiple of 128 sectors in
 * {@linkcode MIN_BLOCK_SECTORS}..{@linkcode MAX_BLOCK_SECTORS}.
 */
export function validateBlockSectors(block: number, prefix: string): void {
  if (
    !Number.isInteger(block) || block < MIN_BLOCK_SECTORS || block > MAX_BLOCK_SECTORS ||
    block % 128 !== 0
  ) {
    throw new InvalidArgumentError(
      `${prefix}: block size ${block} sectors must be a multiple of 128 in ${MIN_BLOCK_SECTORS}..${MAX_BLOCK_SECTORS}`,
    );
  }
}

function validateCreate(o: CreateLoopPoolOptions): number {
  const block = o.blockSectors ?? 128;
  const prefix = `Cannot create pool "${o.name}"`;
  validateBlockSectors(block, prefix);
  const blockBytes = block * 512;
  if (!Number.isSafeInteger(o.dataSize) || o.dataSize < blockBytes) {
    throw new InvalidArgumentError(
      `${prefix}: data size ${o.dataSize} must be at least one block (${blockBytes} bytes)`,
    );
  }
  if (
    !Number.isSafeInteger(o.metaSize) || o.metaSize < MIN_META_SIZE || o.metaSize > MAX_META_SIZE
  ) {
    throw new InvalidArgumentError(
      `${prefix}: metadata size ${o.metaSize} must be between ${MIN_META_SIZE} and ${MAX_META_SIZE} bytes`,
    );
  }
  if (o.dir === "") throw new InvalidArgumentError(`${prefix}: directory is empty`);
  return block;
}

async function createSparse(path: string, size: number): Promise<void> {
  using file = await Deno.open(path, { createNew: true, write: true, mode: 0o600 });
  await file.truncate(size);
}

/**
 * Creates a thin-pool from two new sparse files attached to loop devices. Refuses (and changes
 * nothing) when the dm name or either file already exists; on any later failure it undoes
 * what it did (detaches the loops, deletes the files).
 */
export async function createLoopPool(o: CreateLoopPoolOptions): Promise<LoopPool> {
  validateDeviceName(o.name);
  const block = validateCreate(o);
  const prefix = `Cannot create pool "${o.name}"`;
  const { dataFile, metaFile } = loopPoolFiles(o.name, o.dir);
  if (await o.dm.info(o.name)) {
    throw new AlreadyExistsError(`${prefix}: a device-mapper device with that name exists`);
  }
  for (const f of [dataFile, metaFile]) {
    if (await pathExists(f, { noFollow: true })) {
      throw new AlreadyExistsError(`${prefix}: "${f}" already exists`);
    }
  }
  const blockBytes = block * 512;
  const dataSize = Math.floor(o.dataSize / blockBytes) * blockBytes;
  await Deno.mkdir(o.dir, { recursive: true });
  const files: string[] = [];
  const loops: string[] = [];
  try {
    await createSparse(dataFile, dataSize);
    files.push(dataFile);
    await createSparse(metaFile, o.metaSize);
    files.push(metaFile);
    const dataLoop = await attachLoop(o.runner, dataFile);
    loops.push(dataLoop);
    const metaLoop = await attachLoop(o.runner, metaFile);
    loops.push(metaLoop);
    const table = poolTable({
      dataSectors: dataSize / 512,
      metaDevice: metaLoop,
      dataDevice: dataLoop,
      blockSectors: block,
      errorIfNoSpace: o.errorIfNoSpace,
    });
    await o.dm.create(o.name, table);
    return { name: o.name, dataFile, metaFile, dataLoop, metaLoop, table };
  } catch (err) {
    await detachLoops(o.runner, loops).catch(() => {});
    for (const f of files) await Deno.remove(f).catch(() => {});
    throw err;
  }
}

/** Space and state of a pool, in bytes. */
export interface PoolSpace {
  dataUsedBytes: number;
  dataTotalBytes: number;
  metadataUsedBytes: number;
  metadataTotalBytes: number;
  /** Pool data block size in sectors. */
  blockSectors: number;
  blockBytes: number;
  mode: PoolStatus["mode"];
  needsCheck: boolean;
  failed: boolean;
  transactionId: number;
  /** The raw status. */
  status: PoolStatus;
}

/** Status of pool `name` in bytes (2 spawns: status, table). NotFoundError when missing. */
export async function poolStatus(dm: DeviceMapper, name: string): Promise<PoolSpace> {
  let lines;
  let table;
  try {
    lines = await dm.status(name);
    table = parseTable(await dm.table(name));
  } catch (err) {
    if (isErrno(err, "ENXIO")) {
      throw new NotFoundError(`Cannot open pool "${name}": no such device`, { cause: err });
    }
    throw err;
  }
  const status = lines[0];
  if (lines.length !== 1 || status.target !== "thin-pool" || table[0]?.target !== "thin-pool") {
    throw new InvalidArgumentError(
      `Cannot open pool "${name}": not a thin-pool (target ${
        JSON.stringify(status?.target ?? "none")
      })`,
    );
  }
  const pool = status as PoolStatus;
  const blockSectors = Number(table[0].args[2]);
  const blockBytes = blockSectors * 512;
  return {
    dataUsedBytes: pool.usedDataBlocks * blockBytes,
    dataTotalBytes: pool.totalDataBlocks * blockBytes,
    metadataUsedBytes: pool.usedMetadataBlocks * METADATA_BLOCK_BYTES,
    metadataTotalBytes: pool.totalMetadataBlocks * METADATA_BLOCK_BYTES,
    blockSectors,
    blockBytes,
    mode: pool.mode,
    needsCheck: pool.needsCheck,
    failed: pool.failed,
    transactionId: pool.transactionId,
    status: pool,
  };
}

/**
 * Names of the active thin devices whose table points at pool `name` (by `major:minor` or
 * `/dev/mapper/<name>`), from one `dmsetup table` spawn.
 */
export async function thinDevicesOfPool(
  runner: CommandRunner,
  pool: { name: string; major: number; minor: number },
): Promise<string[]> {
  const result = await runner.run("dmsetup", ["table"]);
  if (result.code !== 0) throw commandError("dmsetup", ["table"], result);
  const tables = parsePrefixedLines<TableLine>(result.stdout, (rest) => parseTable(rest)[0]);
  const refs = new Set([`${pool.major}:${pool.minor}`, devicePath(pool.name)]);
  const names: string[] = [];
  for (const [dev, lines] of tables) {
    if (lines.some((l) => l.target === "thin" && refs.has(l.args[0]))) names.push(dev);
  }
  return names;
}

/** Options for {@linkcode deactivateThinDevices}. */
export interface DeactivateThinDevicesOptions {
  dm: DeviceMapper;
  runner: CommandRunner;
  /** Deactivate them; without it, any active thin device is refused. */
  force?: boolean;
  /** Start of every error message, e.g. `Cannot destroy pool "p"`. */
  prefix: string;
}

/**
 * Deactivates the thin devices active on `pool` (plain remove, never `--force`) and returns
 * their names. Refuses with {@linkcode FailedPreconditionError}, before changing anything,
 * when there are any and `force` is not set, or when one of them is in use (mounted or open);
 * a device found busy on its remove is a FailedPreconditionError too, one already gone is
 * counted as removed.
 */
export async function deactivateThinDevices(
  pool: { name: string; major: number; minor: number },
  o: DeactivateThinDevicesOptions,
): Promise<string[]> {
  const thins = await thinDevicesOfPool(o.runner, pool);
  if (thins.length > 0 && !o.force) {
    throw new FailedPreconditionError(
      `${o.prefix}: thin devices still active on it: ${
        thins.join(", ")
      } (use force to deactivate them)`,
    );
  }
  if (thins.length > 0) {
    // refuse before changing anything when one of them is in use
    const infos = await o.dm.infoAll();
    const busy = thins.find((dev) => (infos.get(dev)?.openCount ?? 0) > 0);
    if (busy) {
      throw new FailedPreconditionError(
        `${o.prefix}: thin device "${busy}" is in use (mounted or open)`,
      );
    }
  }
  const removed: string[] = [];
  for (const dev of thins) {
    try {
      await o.dm.remove(dev);
    } catch (err) {
      if (isErrno(err, "EBUSY")) {
        throw new FailedPreconditionError(
          `${o.prefix}: thin device "${dev}" is in use (mounted or open)`,
          { cause: err },
        );
      }
      if (!isErrno(err, "ENXIO")) throw err;
    }
    removed.push(dev);
  }
  return removed;
}

/** Options for {@linkcode destroyLoopPool}. */
export interface DestroyLoopPoolOptions {
  name: string;
  /** Directory holding the backing files. */
  dir: string;
  dm: DeviceMapper;
  runner: CommandRunner;
  /** Also deactivate the pool's thin devices (plain `dmsetup remove`, never `--force`). */
  force?: boolean;
}

/** What {@linkcode destroyLoopPool} did. */
export interface DestroyedLoopPool {
  /** Thin devices deactivated (only with `force`). */
  removedDevices: string[];
  /** Whether the pool device existed and was removed. */
  removedPool: boolean;
  detachedLoops: string[];
  deletedFiles: string[];
}

/**
 * Removes pool `name`, detaches its loop devices and deletes its files. Refuses with
 * {@linkcode FailedPreconditionError} while thin devices are active on it, unless `force`.
 * A busy thin device (mounted, open) is never torn down: that is a FailedPreconditionError too.
 * Works on leftovers (files or loops without a pool); NotFoundError when nothing exists.
 */
export async function destroyLoopPool(o: DestroyLoopPoolOptions): Promise<DestroyedLoopPool> {
  validateDeviceName(o.name);
  const prefix = `Cannot destroy pool "${o.name}"`;
  const { dataFile, metaFile } = loopPoolFiles(o.name, o.dir);
  const result: DestroyedLoopPool = {
    removedDevices: [],
    removedPool: false,
    detachedLoops: [],
    deletedFiles: [],
  };
  const info = await o.dm.info(o.name);
  if (info) {
    result.removedDevices = await deactivateThinDevices(info, { ...o, prefix });
    try {
      await o.dm.remove(o.name);
    } catch (err) {
      if (isErrno(err, "EBUSY")) {
        throw new FailedPreconditionError(`${prefix}: pool device is in use`, { cause: err });
      }
      throw err;
    }
    result.removedPool = true;
  }
  const files: string[] = [];
  for (const f of [dataFile, metaFile]) {
    if (await pathExists(f, { noFollow: true })) files.push(await Deno.realPath(f));
  }
  if (!info && files.length === 0) {
    throw new NotFoundError(`${prefix}: no pool device and no backing files in "${o.dir}"`);
  }
  const backing = new Set(files);
  const loops = (await listLoops(o.runner))
    .filter((l) => backing.has(l.backFile.replace(/ \(deleted\)$/, "")))
    .map((l) => l.name);
  if (loops.length > 0) {
    try {
      await detachLoops(o.runner, loops);
    } catch (err) {
      throw err instanceof DmError
        ? new FailedPreconditionError(
          `${prefix}: cannot detach ${loops.join(", ")}: ${err.message}`,
          {
            cause: err,
          },
        )
        : err;
    }
  }
  result.detachedLoops = loops;
  for (const f of files) {
    await Deno.remove(f);
    result.deletedFiles.push(f);
  }
  return result;
}
