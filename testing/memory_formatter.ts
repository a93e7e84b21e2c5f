/**
 * A {@linkcode Formatter} test double on the devices of a {@linkcode MemoryDeviceMapper}: a
 * "filesystem" is a superblock in block {@linkcode SUPERBLOCK} and a root directory in block
 * {@linkcode ROOT_BLOCK}; tests put file contents from {@linkcode FIRST_DATA_BLOCK} on.
 *
 * Each step runs through {@linkcode MemoryDeviceMapper.perform} as operation `mkfs`,
 * `emptyRoot` or `discard` (named by the device), so it is recorded with the dm calls and
 * faults and crashes can be injected there too. Like the real commands, a step fails with
 * ENOENT for a path that is no device node, and `mkfs`/`emptyRoot` with EBUSY for an open
 * (mounted) device. Like mkfs with `nodiscard`, `mkfs` rewrites only its own blocks: whatever
 * else the device held stays mapped (and readable), as it does on a real device.
 *
 * @module
 */
import { DmError } from "../src/dm/errors.ts";
import { mkfsArgv } from "../src/dm/mkfs.ts";
import type { Errno } from "../src/dm/types.ts";
import type { Formatter, FsType } from "../src/pool/thin_pool.ts";
import { type MemoryDeviceMapper, nameOfPath } from "./memory_dm.ts";

/** Block holding the superblock: `fs=<type> options=<fs options>`. */
export const SUPERBLOCK = 0;
/** Block holding the root directory: `root: lost+found` after mkfs, `root: empty` after emptyRoot. */
export const ROOT_BLOCK = 1;
/** First block free for test data. */
export const FIRST_DATA_BLOCK = 2;

/** The root directory text right after mkfs. */
export const ROOT_AFTER_MKFS = "root: lost+found";
/** The root directory text after emptyRoot. */
export const ROOT_EMPTY = "root: empty";

/** What a device's filesystem blocks say (undefined fields: not formatted). */
export interface MemoryFilesystem {
  fsType: string | undefined;
  fsOptions: string | undefined;
  root: string | undefined;
}

/** Reads the superblock and root of active device `name`. */
export function readFilesystem(dm: MemoryDeviceMapper, name: string): MemoryFilesystem {
  const m = /^fs=(\S+) options=(.*)$/.exec(dm.readText(name, SUPERBLOCK) ?? "");
  return { fsType: m?.[1], fsOptions: m?.[2], root: dm.readText(name, ROOT_BLOCK) };
}

function fail(command: readonly string[], errno: Errno, reason: string): DmError {
  return new DmError({
    command,
    exitCode: 1,
    stderr: reason,
    errno,
    message: `${command[0]} failed on "${command[command.length - 1]}": ${reason}`,
  });
}

/** Creates the formatter double on `dm`. */
export function createMemoryFormatter(dm: MemoryDeviceMapper): Formatter {
  /** The device behind `path`, checked as the real command would. */
  const deviceOf = (path: string, command: readonly string[], exclusive: boolean): string => {
    const name = nameOfPath(path);
    if (name === undefined || !dm.hasDevice(name)) {
      throw fail(command, "ENOENT", `${path}: No such file or directory`);
    }
    if (exclusive && dm.openCount(name) > 0) {
      throw fail(command, "EBUSY", `${path} is apparently in use by the system`);
    }
    return name;
  };
  return {
    mkfs(device: string, fsType: FsType, fsOptions: string): Promise<void> {
      const command = mkfsArgv(fsType, device, fsOptions);
      return dm.perform({ op: "mkfs", name: nameOfPath(device), args: [device] }, command, () => {
        const name = deviceOf(device, command, true);
        dm.write(name, SUPERBLOCK, `fs=${fsType} options=${fsOptions}`);
        dm.write(name, ROOT_BLOCK, ROOT_AFTER_MKFS);
      });
    },
    emptyRoot(device: string, fsType: FsType): Promise<void> {
      const command = ["debugfs", "-w", device];
      return dm.perform(
        { op: "emptyRoot", name: nameOfPath(device), args: [device] },
        command,
        () => {
          const name = deviceOf(device, command, true);
          const fs = readFilesystem(dm, name);
          if (fs.fsType !== fsType) {
            throw fail(command, "EINVAL", `${device}: no ${fsType} filesystem (${fs.fsType})`);
          }
          dm.write(name, ROOT_BLOCK, ROOT_EMPTY);
        },
      );
    },
    discard(device: string): Promise<void> {
      const command = ["blkdiscard", device];
      return dm.perform(
        { op: "discard", name: nameOfPath(device), args: [device] },
        command,
        () => {
          dm.discardAll(deviceOf(device, command, false));
        },
      );
    },
  };
}
