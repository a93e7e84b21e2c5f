/**
 * A {@linkcode Formatter} test double on the devices of a {@linkcode MemoryDeviceMapper}: a
 * "filesystem" is a superblock in block {@linkcode SUPERBLOCK} and a root directory in block
 * {@linkcode ROOT_BLOCK}; tests put file contents from {@linkcode FIRST_DATA_BLOCK} on.
 *
 * Each step runs through {@linkcode MemoryDeviceMapper.perform} as operation `mkfs`,
 * `emptyRoot`, `discard` or `grow` (named by the device), so it is recorded with the dm calls and
 * faults and crashes can be injected there too. A grow records the device's size in the
 * superblock (` size=<bytes>` after the options; no size: as mkfs made it). An xfs grow runs,
 * like the real one, inside a mount: steps `mount` (creates the mount point directory and opens
 * the device), `grow`, `umount` (closes it, removes the directory), so a crash between them
 * leaves the device open and the directory there, as a real crash leaves the mount;
 * `releaseMount` undoes that (`umount`). `needsRecovery` (a read, operation `needsRecovery`) is
 * true for a superblock text that ends in {@linkcode NEEDS_RECOVERY}, which a test writes to
 * leave a filesystem as a host crash while mounted would. Like the real commands, a step fails with
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

/** Block holding the superblock: `fs=<type> options=<fs options>[ size=<bytes>]`. */
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
  /** Bytes the filesystem was grown to; undefined when never grown (the size mkfs gave it). */
  sizeBytes: number | undefined;
}

/** Ends the superblock text of a filesystem whose journal needs replaying (see `needsRecovery`). */
export const NEEDS_RECOVERY = " needs_recovery";

/** The superblock text of a filesystem (`sizeBytes`: grown to that size). */
export function superblockText(fsType: string, fsOptions: string, sizeBytes?: number): string {
  return `fs=${fsType} options=${fsOptions}${sizeBytes === undefined ? "" : ` size=${sizeBytes}`}`;
}

/** Reads the superblock and root of active device `name`. */
export function readFilesystem(dm: MemoryDeviceMapper, name: string): MemoryFilesystem {
  const m = /^fs=(\S+) options=(.*?)(?: size=(\d+))?$/.exec(dm.readText(name, SUPERBLOCK) ?? "");
  return {
    fsType: m?.[1],
    fsOptions: m?.[2],
    root: dm.readText(name, ROOT_BLOCK),
    sizeBytes: m?.[3] === undefined ? undefined : Number(m[3]),
  };
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
  /** Mount point → device name of the mounts of xfs grows (like the kernel's, they outlive a crash). */
  const mounts = new Map<string, string>();
  const unmount = (mountPoint: string): Promise<void> => {
    const name = mounts.get(mountPoint);
    const command = ["umount", mountPoint];
    return dm.perform({ op: "umount", name, args: [mountPoint] }, command, () => {
      if (name !== undefined) {
        dm.closeDevice(name);
        mounts.delete(mountPoint);
      }
      try {
        Deno.removeSync(mountPoint);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    });
  };
  return {
    mkfs(device: string, fsType: FsType, fsOptions: string): Promise<void> {
      const command = mkfsArgv(fsType, device, fsOptions);
      return dm.perform({ op: "mkfs", name: nameOfPath(device), args: [device] }, command, () => {
        const name = deviceOf(device, command, true);
        dm.write(name, SUPERBLOCK, superblockText(fsType, fsOptions));
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
    async grow(device: string, fsType: FsType, mountPoint: string): Promise<void> {
      const resize = (exclusive: boolean) => {
        const command = fsType === "xfs" ? ["xfs_growfs", "-d", mountPoint] : ["resize2fs", device];
        return dm.perform({ op: "grow", name: nameOfPath(device), args: [device] }, command, () => {
          const name = deviceOf(device, command, exclusive);
          const fs = readFilesystem(dm, name);
          if (fs.fsType !== fsType) {
            throw fail(command, "EINVAL", `${device}: no ${fsType} filesystem (${fs.fsType})`);
          }
          const bytes = dm.deviceBytes(name)!;
          if (fs.sizeBytes !== undefined && fs.sizeBytes > bytes) {
            throw fail(command, "EINVAL", `${device}: cannot shrink ${fs.sizeBytes} to ${bytes}`);
          }
          dm.write(name, SUPERBLOCK, superblockText(fsType, fs.fsOptions ?? "", bytes));
        });
      };
      if (fsType !== "xfs") return await resize(true);
      const command = ["mount", "-t", fsType, "-o", "nouuid", device, mountPoint];
      await dm.perform({ op: "mount", name: nameOfPath(device), args: [device] }, command, () => {
        const name = deviceOf(device, command, true);
        Deno.mkdirSync(mountPoint, { recursive: true });
        dm.openDevice(name);
        mounts.set(mountPoint, name);
      });
      let failure: unknown;
      await resize(false).catch((err) => (failure = err));
      await unmount(mountPoint);
      if (failure) throw failure;
    },
    releaseMount: unmount,
    needsRecovery(device: string, fsType: FsType): Promise<boolean> {
      const command = ["needsRecovery", device];
      return dm.perform(
        { op: "needsRecovery", name: nameOfPath(device), args: [device, fsType] },
        command,
        () => {
          const name = deviceOf(device, command, false);
          const superblock = dm.readText(name, SUPERBLOCK) ?? "";
          return fsType === "ext4" && superblock.endsWith(NEEDS_RECOVERY);
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
