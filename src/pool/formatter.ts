/**
 * The {@linkcode Formatter} the pool manager uses, on the `src/dm/mkfs.ts` commands.
 *
 * @module
 */
import type { CommandRunner } from "../dm/runner.ts";
import { blkdiscard, growFilesystem, mkfs, releaseMount, removeLostFound } from "../dm/mkfs.ts";
import { needsRecovery } from "../dm/fs_state.ts";
import type { Formatter } from "./thin_pool.ts";

/** A formatter that spawns mkfs, debugfs, resize2fs, xfs_growfs and blkdiscard through `runner`. */
export function createFormatter(runner: CommandRunner): Formatter {
  return {
    mkfs: (device, fsType, fsOptions) => mkfs(runner, { fsType, device, fsOptions }),
    emptyRoot: (device, fsType) => removeLostFound(runner, device, fsType),
    discard: (device) => blkdiscard(runner, device),
    grow: (device, fsType, mountPoint) => growFilesystem(runner, { device, fsType, mountPoint }),
    releaseMount: (mountPoint) => releaseMount(runner, mountPoint),
    needsRecovery: (device, fsType) => needsRecovery(device, fsType),
  };
}
