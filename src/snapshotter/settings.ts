/**
 * The snapshotter's settings: the config file's keys that shape snapshots, once the cli has
 * checked them (`src/config/` parses the file and knows nothing of this module).
 *
 * @module
 */
import type { FsType } from "../dm/mkfs.ts";
import type { FreeSpace } from "../util/free_space.ts";

/** Settings of a snapshotter (the config file's keys, parsed). */
export interface SnapshotterSettings {
  /** Directory for the metadata database. */
  rootPath: string;
  /** dm name of an existing thin-pool. */
  poolName: string;
  /** Virtual size of new parentless devices, bytes. */
  baseImageSize: number;
  fsType: FsType;
  /** mkfs extended options (ext4/ext2); "" for the defaults. */
  fsOptions: string;
  /** Remove only marks devices; Cleanup deletes them. */
  asyncRemove: boolean;
  /** Discard a device's blocks before deleting it. */
  discardBlocks: boolean;
  /** Mount active ext4/xfs snapshots with `discard` (online discard). */
  onlineDiscard?: boolean;
  /**
   * `allow_new_metadata`: start with a new, empty database when `metadata.db` is missing or
   * empty even though active devices of this `root_path` are in the pool (see
   * `open_metadata.ts`).
   */
  allowNewMetadata?: boolean;
  /**
   * `min_free_space`: Prepare and View are refused while the pool's free data or metadata space
   * is below it (see `src/pool/health.ts`). Absent: no guard (the config's default is 10%).
   */
  minFreeSpace?: FreeSpace;
}
