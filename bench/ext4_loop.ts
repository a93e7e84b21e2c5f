/**
 * An ext4 filesystem on a loop device, mounted, for a benchmark's `root_path`: unlike the
 * guest's tmpfs it has a journal and honours fsync (the loop device passes each flush down to
 * its backing file), as the disk under a real server's metadata would.
 *
 * Invariants: dispose unmounts, detaches the loop device and deletes the backing file, in
 * that order, and only what it created; it runs inside the test kernel only.
 *
 * @module
 */
import { join } from "node:path";
import { requireKernel, sh, shTry } from "../tests/kernel/fixtures.ts";

/** A mounted ext4 filesystem on a loop device. */
export interface Ext4Loop extends AsyncDisposable {
  /** Where it is mounted. */
  mountPoint: string;
  /** The loop device, e.g. `/dev/loop3`. */
  device: string;
}

/** Creates a `sizeMb` MiB sparse file in `dir`, formats it as ext4 and mounts it below `dir`. */
export async function createExt4Loop(dir: string, sizeMb: number): Promise<Ext4Loop> {
  requireKernel();
  const file = join(dir, "ext4.img");
  const mountPoint = join(dir, "ext4");
  await sh("truncate", "-s", `${sizeMb}M`, file);
  const device = await sh("losetup", "--find", "--show", file);
  try {
    await sh("mkfs.ext4", "-q", "-F", device);
    await Deno.mkdir(mountPoint, { recursive: true });
    await sh("mount", "-t", "ext4", device, mountPoint);
  } catch (err) {
    await shTry("losetup", "-d", device);
    await Deno.remove(file).catch(() => {});
    throw err;
  }
  return {
    mountPoint,
    device,
    async [Symbol.asyncDispose]() {
      await shTry("umount", mountPoint);
      await shTry("losetup", "-d", device);
      await Deno.remove(file).catch(() => {});
    },
  };
}
