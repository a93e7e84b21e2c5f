/**
 * Kernel test steps both device-mapper backends must pass alike (tests/kernel/dm_dmsetup_test.ts
 * and tests/kernel/dm_ioctl_test.ts run them against their own backend).
 *
 * @module
 */
import assert from "node:assert/strict";
import { DmError } from "../../src/dm/errors.ts";
import { type DeviceMapper, devicePath, type ThinStatus, thinTable } from "../../src/dm/types.ts";
import { sh, type TestPool } from "./fixtures.ts";

/** One mebibyte. */
export const MiB = 1024 * 1024;

/** Asserts `p` rejects with a {@linkcode DmError} of `errno` (and a message matching `re`). */
export async function rejectsErrno(p: Promise<unknown>, errno: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof DmError, `expected DmError, got ${e}`);
    assert.equal(e.errno, errno, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

/**
 * create_thin twice → EEXIST (its message starts with `failedCommand`, e.g.
 * `dmsetup message <pool>`), create_snap twice → EEXIST, of a missing origin → ENODATA,
 * delete twice → ENODATA, an unknown message → EINVAL, a missing pool → ENXIO. Leaves the
 * pool without thin devices.
 */
export async function thinMessageErrors(
  dm: DeviceMapper,
  pool: TestPool,
  failedCommand: string,
): Promise<void> {
  await dm.createThin(pool.name, 1);
  await rejectsErrno(
    dm.createThin(pool.name, 1),
    "EEXIST",
    new RegExp(`^${failedCommand} 0 "create_thin 1" failed: File exists$`),
  );
  await dm.createSnap(pool.name, 2, 1);
  await rejectsErrno(dm.createSnap(pool.name, 2, 1), "EEXIST");
  // snapshot of a missing origin
  await rejectsErrno(dm.createSnap(pool.name, 3, 99), "ENODATA");
  assert.deepEqual(await pool.thinIds(), [1, 2]);
  await dm.deleteThin(pool.name, 1);
  await rejectsErrno(dm.deleteThin(pool.name, 1), "ENODATA", /failed: No data available$/);
  await dm.deleteThin(pool.name, 2);
  assert.deepEqual(await pool.thinIds(), []);
  // a message the pool does not understand
  await rejectsErrno(dm.message(pool.name, 0, "bogus 1"), "EINVAL");
  // messages to a missing device
  await rejectsErrno(dm.createThin(`${pool.name}-nope`, 1), "ENXIO");
}

/**
 * A snapshot of an active thin (origin suspended around create_snap, as the snapshotter does)
 * reads the origin's data and shares its blocks; writes to it leave the origin unchanged.
 */
export async function createSnapDiverges(dm: DeviceMapper, pool: TestPool): Promise<void> {
  await dm.createThin(pool.name, 1);
  const origin = `${pool.name}-t1`;
  await dm.create(origin, thinTable(pool.name, 1, 8 * MiB));
  const data = new Uint8Array(4096).fill(0x5a);
  {
    using f = await Deno.open(devicePath(origin), { write: true });
    await f.write(data);
  }
  await sh("sync");
  await dm.suspend(origin);
  try {
    await dm.createSnap(pool.name, 2, 1);
  } finally {
    await dm.resume(origin);
  }
  const snap = `${pool.name}-t2`;
  await dm.create(snap, thinTable(pool.name, 2, 8 * MiB));
  const read = async (dev: string) => {
    using f = await Deno.open(devicePath(dev), { read: true });
    const buf = new Uint8Array(4096);
    await f.read(buf);
    return buf;
  };
  assert.deepEqual(await read(snap), data);
  const [snapStatus] = await dm.status(snap) as ThinStatus[];
  assert.ok(snapStatus.mappedSectors > 0, "snapshot shares the origin's mapped blocks");
  {
    using f = await Deno.open(devicePath(snap), { write: true });
    await f.write(new Uint8Array(4096).fill(1));
  }
  await sh("sync");
  assert.deepEqual(await read(origin), data, "origin unchanged by snapshot writes");
  assert.deepEqual(await read(snap), new Uint8Array(4096).fill(1));
  await dm.remove(snap);
  await dm.remove(origin);
  assert.deepEqual(await pool.thinIds(), [1, 2]);
}
