/**
 * The device-mapper layer's contract, implemented twice: by spawning `dmsetup`
 * (`src/dm/dmsetup/`) and with DM ioctls on `/dev/mapper/control` (`src/dm/ioctl/`).
 * Everything above this layer (pool manager, snapshotter) depends only on these types.
 *
 * @module
 */

/** errno-like classification of a failed device-mapper or block-device command. */
export type Errno =
  | "EBUSY"
  | "ENXIO"
  | "ENODATA"
  | "EEXIST"
  | "ENOENT"
  | "EINVAL"
  | "ENOSPC"
  | "ENODEV"
  | "EPERM"
  | "EIO";

/** One line of `dmsetup info -c`. */
export interface DeviceInfo {
  name: string;
  /** Kernel block device name, e.g. `dm-5`. */
  blkdevname: string;
  major: number;
  minor: number;
  /** Live table loaded (`L`). */
  live: boolean;
  /** Inactive table loaded (`I`). */
  inactive: boolean;
  /** Suspended (`s`). */
  suspended: boolean;
  /** Read-only (`r`). */
  readOnly: boolean;
  /** Open count. */
  openCount: number;
  segments: number;
  events: number;
  /** dm UUID, set at create; absent when the device has none. */
  uuid?: string;
}

/** Status of a `thin` target. */
export interface ThinStatus {
  target: "thin";
  start: number;
  /** Length in 512-byte sectors. */
  length: number;
  /** Mapped sectors (pool blocks × block size); 0 when failed. */
  mappedSectors: number;
  /** Highest mapped sector, or null (`-`). */
  highestMappedSector: number | null;
  /** The thin device reported `Fail`. */
  failed: boolean;
}

/** Status of a `thin-pool` target. */
export interface PoolStatus {
  target: "thin-pool";
  start: number;
  length: number;
  transactionId: number;
  usedMetadataBlocks: number;
  totalMetadataBlocks: number;
  usedDataBlocks: number;
  totalDataBlocks: number;
  heldMetadataRoot: string | null;
  /** `rw`, `ro` or `out_of_data_space`; `fail` when the pool reported `Fail`. */
  mode: "rw" | "ro" | "out_of_data_space" | "fail";
  discardPassdown: boolean;
  errorIfNoSpace: boolean;
  needsCheck: boolean;
  /** The pool reported `Fail`. */
  failed: boolean;
}

/** Status of any other target: its raw parameters. */
export interface OtherStatus {
  target: string;
  start: number;
  length: number;
  params: string;
}

/** One target line of `dmsetup status`. */
export type TargetStatus = ThinStatus | PoolStatus | OtherStatus;

/** Options for creating a device. */
export interface CreateOptions {
  /** Create it read-only. */
  readOnly?: boolean;
  /** Its dm UUID (at most 128 bytes); none when absent. */
  uuid?: string;
}

/** Options for removing a device. */
export interface RemoveOptions {
  /** Remove when the last opener closes it (`--deferred`). */
  deferred?: boolean;
  /** Let dmsetup retry briefly on EBUSY (`--retry`). Never `--force`. */
  retry?: boolean;
}

/**
 * Device-mapper operations. Names are dm device names (no `/dev/mapper/` prefix).
 * Failures throw `DmError` (see `src/dm/errors.ts`) carrying an {@linkcode Errno}.
 */
export interface DeviceMapper {
  /** Library and driver versions. */
  version(): Promise<{ library: string; driver: string }>;
  /** Info of one device, or `undefined` when it does not exist. */
  info(name: string): Promise<DeviceInfo | undefined>;
  /** Info of every device, in one call. */
  infoAll(): Promise<Map<string, DeviceInfo>>;
  /**
   * True when a device called `name` exists, including one whose deferred removal is pending
   * (its node may be gone already). Cheap: no process is spawned.
   */
  isActive(name: string): Promise<boolean>;
  /** Status lines of one device (a thin or pool device has exactly one). Throws ENXIO if missing. */
  status(name: string): Promise<TargetStatus[]>;
  /** Status of every device of a target type (e.g. `thin`), in one call, keyed by name. */
  statusAll(target?: string): Promise<Map<string, TargetStatus[]>>;
  /** Table of one device, as printed by `dmsetup table`. */
  table(name: string): Promise<string>;
  /** Names of all devices. */
  list(): Promise<string[]>;
  /**
   * Creates and activates a device with a one-line table; makes sure `/dev/mapper/<name>` exists.
   * `uuid` sets its dm UUID (unique among all devices: EBUSY when taken).
   */
  create(name: string, table: string, options?: CreateOptions): Promise<void>;
  /** Loads a new table into the inactive slot. */
  reload(name: string, table: string): Promise<void>;
  suspend(name: string, options?: { noLockfs?: boolean }): Promise<void>;
  resume(name: string): Promise<void>;
  remove(name: string, options?: RemoveOptions): Promise<void>;
  /** Sends a target message, e.g. `create_thin 7` to a pool. */
  message(name: string, sector: number, message: string): Promise<string>;
  /** `create_thin <id>` on the pool. EEXIST when the id is taken. */
  createThin(pool: string, id: number): Promise<void>;
  /** `create_snap <id> <originId>` on the pool. EEXIST when the id is taken. */
  createSnap(pool: string, id: number, originId: number): Promise<void>;
  /** `delete <id>` on the pool. ENODATA when the id does not exist. */
  deleteThin(pool: string, id: number): Promise<void>;
  /** Number of processes this backend has spawned so far (0 forever for an ioctl backend). */
  readonly spawns: number;
  /** Releases what the backend holds open (the ioctl backend's control node). Idempotent. */
  close?(): void;
}

/** Path of a device's node. */
export function devicePath(name: string): string {
  return `/dev/mapper/${name}`;
}

/** Table line of a thin device of `sizeBytes` on `pool` with thin id `id`. */
export function thinTable(pool: string, id: number, sizeBytes: number): string {
  return `0 ${Math.floor(sizeBytes / 512)} thin ${devicePath(pool)} ${id}`;
}
