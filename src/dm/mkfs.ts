/**
 * Filesystem and block-device commands: mkfs (ext4, ext2, xfs), lost+found removal without
 * mounting, blkdiscard, and block-device size.
 *
 * @module
 */
import { commandError, DmError } from "./errors.ts";
import type { CommandRunner } from "./runner.ts";

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
