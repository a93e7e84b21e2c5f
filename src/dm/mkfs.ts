/**
 * Filesystem and block-device commands: mkfs (ext4, ext2, xfs), lost+found removal without
 * mounting, growing a filesystem to fill its device, blkdiscard, and block-device size.
 *
 * @module
 */
import { commandError, DmError } from "./errors.ts";
import type { CommandRunner } from "./runner.ts";
import { mount, umount } from "./mount.ts";

/** Filesystems the snapshotter can create. */
export type FsType = "ext4" | "ext2" | "xfs";

/** Supported filesystem types. */
export const FS_TYPES: readonly FsType[] = ["ext4", "ext2", "xfs"];

/** True when `value` is a supported filesystem type. */
export function isFsType(value: string): value is FsType {
  return (FS_TYPES as readonly string[]).includes(value);
}

/** Smallest device mkfs.xfs (xfsprogs ≥ 5.19) accepts, bytes. */
export const MIN_XFS_SIZE = 300 * 1024 * 1024;

/** ext4 `-E` options used when `fs_options` is empty (spec §3.6.9). */
export const DEFAULT_EXT4_OPTIONS = "nodiscard,lazy_itable_init=0,lazy_journal_init=0";

/**
 * argv of the mkfs command for `fsType` (program first, device path last):
 * - ext4: `mkfs.ext4 -q -E <fsOptions || defaults> <dev>`
 * - ext2: `mkfs.ext2 -q [-E <fsOptions>] <dev>`
 * - xfs: `mkfs.xfs -q <dev>` (`fsOptions` ignored)
 */
export function mkfsArgv(fsType: FsType, device: string, fsOptions = ""): string[] {
  switch (fsType) {
    case "ext4":
      return ["mkfs.ext4", "-q", "-E", fsOptions || DEFAULT_EXT4_OPTIONS, device];
    case "ext2":
      return fsOptions ? ["mkfs.ext2", "-q", "-E", fsOptions, device] : ["mkfs.ext2", "-q", device];
    case "xfs":
      return ["mkfs.xfs", "-q", device];
  }
}

/** Options for {@linkcode mkfs}. */
export interface MkfsOptions {
  fsType: FsType;
  /** Block device path. */
  device: string;
  /** ext4/ext2 extended options (`-E`); replaces the ext4 defaults. Ignored for xfs. */
  fsOptions?: string;
  /** Kill mkfs after this long (default: no limit). */
  timeoutMs?: number;
}

/**
 * Creates a filesystem. Fails with `<mkfs> couldn't initialize "<device>": <output>`
 * (a {@linkcode DmError}).
 */
export async function mkfs(runner: CommandRunner, options: MkfsOptions): Promise<void> {
  const argv = mkfsArgv(options.fsType, options.device, options.fsOptions);
  const [cmd, ...args] = argv;
  const fail = (exitCode: number, output: string, errno?: DmError["errno"]) =>
    new DmError({
      command: argv,
      exitCode,
      stderr: output,
      errno,
      message: `${cmd} couldn't initialize ${JSON.stringify(options.device)}: ${output}`,
    });
  if (options.device === "") throw fail(-1, "device path is empty", "EINVAL");
  const result = await runner.run(cmd, args, { timeoutMs: options.timeoutMs });
  if (result.code !== 0) {
    const output = [result.stderr.trim(), result.stdout.trim()].filter(Boolean).join("\n") ||
      `exit code ${result.code}`;
    throw fail(result.code, output, commandError(cmd, args, result).errno);
  }
}

/**
 * Removes `lost+found` from the root of a freshly made, UNMOUNTED ext2/ext4 filesystem with
 * `debugfs -w -R "rmdir lost+found"` (no mount needed). No-op for xfs, which has none.
 * debugfs exits 0 even when its request fails, so its error output is checked.
 */
export async function removeLostFound(
  runner: CommandRunner,
  device: string,
  fsType: FsType,
): Promise<void> {
  if (fsType === "xfs") return;
  const args = ["-w", "-R", "rmdir lost+found", device];
  const result = await runner.run("debugfs", args);
  // debugfs prints its version banner on stderr; anything else is a failure report
  const problems = result.stderr.split("\n").map((l) => l.trim())
    .filter((l) => l && !/^debugfs \d/.test(l));
  if (result.code !== 0 || problems.length > 0) {
    throw new DmError({
      command: ["debugfs", ...args],
      exitCode: result.code,
      stderr: problems.join("\n"),
      message: `Cannot remove lost+found from "${device}": ${
        problems.join("; ") || `debugfs exit code ${result.code}`
      }`,
    });
  }
}

/** Options for {@linkcode growFilesystem}. */
export interface GrowOptions {
  fsType: FsType;
  /** Block device path; the device must not be in use (mounted) elsewhere. */
  device: string;
  /**
   * xfs only (it grows only while mounted): an absent directory, created, mounted on for the
   * grow (`nouuid`: snapshots share their origin's UUID), unmounted and removed. A crash leaves
   * it mounted: {@linkcode releaseMount} finishes it.
   */
  mountPoint: string;
}

/**
 * Grows the filesystem on `device` to fill the device.
 * - ext4/ext2: offline, `resize2fs -f <dev>` (one spawn, no mount). `-f` skips resize2fs' "run
 *   e2fsck -f first" check, which every filesystem that was ever mounted fails (its last check
 *   predates its last mount); instead the superblock is read first and a filesystem that is not
 *   clean (not cleanly unmounted or frozen, errors recorded, or a journal to replay) is refused.
 * - xfs: `mount -o nouuid`, `xfs_growfs -d`, `umount` on `mountPoint` (three spawns).
 *
 * Fails with a {@linkcode DmError} naming the device.
 */
export async function growFilesystem(runner: CommandRunner, options: GrowOptions): Promise<void> {
  const { device, fsType } = options;
  if (fsType !== "xfs") {
    const problem = await extProblem(device);
    if (problem) {
      throw new DmError({
        command: ["resize2fs", "-f", device],
        exitCode: -1,
        stderr: problem,
        errno: "EINVAL",
        message: `Cannot grow the ${fsType} filesystem on "${device}": ${problem}`,
      });
    }
    const result = await runner.run("resize2fs", ["-f", device]);
    if (result.code !== 0) {
      throw growError(commandError("resize2fs", ["-f", device], result), options);
    }
    return;
  }
  await Deno.mkdir(options.mountPoint, { recursive: true, mode: 0o700 });
  try {
    await mount(runner, {
      device,
      target: options.mountPoint,
      fsType,
      options: ["nouuid"],
    });
  } catch (err) {
    await Deno.remove(options.mountPoint).catch(() => {});
    throw growError(err, options);
  }
  let failure: unknown;
  const result = await runner.run("xfs_growfs", ["-d", options.mountPoint]);
  if (result.code !== 0) failure = commandError("xfs_growfs", ["-d", options.mountPoint], result);
  try {
    await umount(runner, options.mountPoint);
    await Deno.remove(options.mountPoint);
  } catch (err) {
    failure ??= err; // left for releaseMount at the next start
  }
  if (failure) throw growError(failure, options);
}

/** The error of a failed grow: names the device, keeps the command's details. */
function growError(err: unknown, options: GrowOptions): DmError {
  const reason = err instanceof Error ? err.message : String(err);
  const message = `Cannot grow the ${options.fsType} filesystem on "${options.device}": ${reason}`;
  if (err instanceof DmError) {
    return new DmError({
      command: err.command,
      exitCode: err.exitCode,
      stderr: err.stderr,
      errno: err.errno,
      message,
    }, { cause: err });
  }
  return new DmError({ command: [], exitCode: -1, stderr: reason, message }, { cause: err });
}

/**
 * Unmounts `mountPoint` (lazily: a process still using it, such as an `xfs_growfs` that outlived
 * a crash, keeps the device open until it exits) and removes the directory. A directory that
 * is not mounted is only removed; one that is gone is fine.
 */
export async function releaseMount(runner: CommandRunner, mountPoint: string): Promise<void> {
  if (await isMountPoint(mountPoint)) await umount(runner, mountPoint, { lazy: true });
  await Deno.remove(mountPoint).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
}

/** True when `path` is a mount point (in `/proc/self/mountinfo`, which lists real paths). */
async function isMountPoint(path: string): Promise<boolean> {
  const real = await Deno.realPath(path).catch(() => path);
  const text = await Deno.readTextFile("/proc/self/mountinfo").catch(() => "");
  return mountPoints(text).includes(real);
}

/** The mount points listed in a `/proc/self/mountinfo` text (octal escapes decoded). */
export function mountPoints(mountinfo: string): string[] {
  return mountinfo.split("\n").map((line) => line.split(" ")[4]).filter((f) => f !== undefined)
    .map((f) => f.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8))));
}

/** ext2/3/4 superblock: offset on the device, and the fields read. */
const EXT_SUPERBLOCK = 1024;
const EXT_MAGIC = 0xef53;
const EXT_VALID_FS = 0x1;
const EXT_ERROR_FS = 0x2;
const EXT_INCOMPAT_RECOVER = 0x4;

/**
 * Why the ext filesystem on `device` must not be resized offline, from its superblock (read
 * directly, no spawn); undefined when it is clean. The superblock says: `s_magic` (0x38),
 * `s_state` (0x3A: valid, errors), `s_feature_incompat` (0x60: `needs_recovery`).
 */
export async function extProblem(device: string): Promise<string | undefined> {
  const sb = new Uint8Array(1024);
  {
    using file = await Deno.open(device, { read: true });
    await file.seek(EXT_SUPERBLOCK, Deno.SeekMode.Start);
    let got = 0;
    while (got < sb.length) {
      const n = await file.read(sb.subarray(got));
      if (n === null) break;
      got += n;
    }
    if (got < sb.length) return "no ext superblock (the device is too small)";
  }
  return extSuperblockProblem(sb);
}

/** {@linkcode extProblem} of the 1024 bytes of a superblock. */
export function extSuperblockProblem(sb: Uint8Array): string | undefined {
  const view = new DataView(sb.buffer, sb.byteOffset, sb.byteLength);
  if (view.getUint16(0x38, true) !== EXT_MAGIC) return "no ext superblock (bad magic number)";
  const state = view.getUint16(0x3a, true);
  if (view.getUint32(0x60, true) & EXT_INCOMPAT_RECOVER) {
    return "its journal needs recovery (it was not cleanly unmounted or frozen)";
  }
  if (state & EXT_ERROR_FS) return "it has recorded errors (run e2fsck)";
  if (!(state & EXT_VALID_FS)) return "it is not clean (not cleanly unmounted: run e2fsck)";
  return undefined;
}

/** Discards every block of a device (`blkdiscard <dev>`), returning its space to the pool. */
export async function blkdiscard(runner: CommandRunner, device: string): Promise<void> {
  const result = await runner.run("blkdiscard", [device]);
  if (result.code !== 0) throw commandError("blkdiscard", [device], result);
}

/** Size of a block device (or file) in bytes, by seeking to its end; no spawn. */
export async function blockDeviceSize(path: string): Promise<number> {
  using file = await Deno.open(path, { read: true });
  return await file.seek(0, Deno.SeekMode.End);
}
