/**
 * Options of the real snapshotter (`openSnapshotter`, `DevmapperSnapshotter`) on a
 * {@linkcode MemoryDeviceMapper}, for host tests: one place for the settings those tests share
 * (ext4 images of 8 MiB, removals at once, no discards, the memory formatter on the same
 * device mapper), each of which a test may override.
 *
 * @module
 */
import type { SnapshotterOptions } from "../src/snapshotter/snapshotter.ts";
import type { MemoryDeviceMapper } from "./memory_dm.ts";
import { createMemoryFormatter } from "./memory_formatter.ts";

/** Size of the base image unless a test sets `baseImageSize`. */
export const MEMORY_BASE_IMAGE_SIZE = 8 * 1024 * 1024;

/** What a test must give: where, on which pool, and the device mapper. */
export type MemorySnapshotterOptionsInit =
  & Pick<SnapshotterOptions, "rootPath" | "poolName">
  & { dm: MemoryDeviceMapper }
  & Partial<SnapshotterOptions>;

/**
 * Snapshotter options on `o.dm`: `baseImageSize` {@linkcode MEMORY_BASE_IMAGE_SIZE}, ext4 without
 * options, `asyncRemove` and `discardBlocks` off, a memory formatter on `o.dm`; anything in `o`
 * wins.
 */
export function memorySnapshotterOptions(o: MemorySnapshotterOptionsInit): SnapshotterOptions {
  return {
    baseImageSize: MEMORY_BASE_IMAGE_SIZE,
    fsType: "ext4",
    fsOptions: "",
    asyncRemove: false,
    discardBlocks: false,
    formatter: createMemoryFormatter(o.dm),
    ...o,
  };
}
