/**
 * What a filesystem's superblock says about its journal, read without mounting it: whether
 * a mount must replay a journal first (ext4's `needs_recovery`, set while it is mounted
 * read-write and cleared by a clean unmount or a freeze). A device that is shared read-only
 * cannot replay one, so a filesystem left needing recovery (its host crashed while it was
 * mounted) is not shared.
 *
 * Only ext4 keeps that state in its superblock; ext2 has no journal; an xfs log's state needs
 * the log itself read (`false`: not known).
 *
 * @module
 */
import type { FsType } from "./mkfs.ts";

/** Byte offset of an ext2/3/4 superblock. */
const EXT_SUPERBLOCK = 1024;
/** `s_magic` (u16) in the superblock. */
const EXT_MAGIC_AT = 0x38;
const EXT_MAGIC = 0xef53;
/** `s_feature_incompat` (u32) in the superblock. */
const EXT_INCOMPAT_AT = 0x60;
/** `EXT4_FEATURE_INCOMPAT_RECOVER`: the journal needs replaying. */
const EXT_INCOMPAT_RECOVER = 0x4;

/**
 * True when the ext4 superblock `bytes` (1024 bytes read at offset 1024) says its journal
 * needs replaying; false for anything else (another magic, a clean journal).
 */
export function ext4NeedsRecovery(bytes: Uint8Array): boolean {
  if (bytes.length < EXT_INCOMPAT_AT + 4) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(EXT_MAGIC_AT, true) !== EXT_MAGIC) return false;
  return (view.getUint32(EXT_INCOMPAT_AT, true) & EXT_INCOMPAT_RECOVER) !== 0;
}

/**
 * True when a mount of the `fsType` filesystem on `device` (a path) would have to replay its
 * journal: ext4's superblock read (one read of 1 KiB); false for ext2 and xfs (not known).
 */
export async function needsRecovery(device: string, fsType: FsType): Promise<boolean> {
  if (fsType !== "ext4") return false;
  using file = await Deno.open(device, { read: true });
  await file.seek(EXT_SUPERBLOCK, Deno.SeekMode.Start);
  const bytes = new Uint8Array(1024);
  let filled = 0;
  while (filled < bytes.length) {
    const n = await file.read(bytes.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return ext4NeedsRecovery(bytes.subarray(0, filled));
}
