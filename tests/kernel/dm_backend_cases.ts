/**
 * Kernel tests both device-mapper backends must pass alike: tests/kernel/dm_dmsetup_test.ts and
 * tests/kernel/dm_ioctl_test.ts each describe their backend as a {@linkcode BackendUnderTest}
 * and register these cases with {@linkcode registerBackendCases}; what only one backend does
 * (mknodes fallback, the control node, timing) stays in its own file.
 *
 * Where the backends differ only in the name of the failed command or in how many processes a
 * command costs, the description says so; every other assertion is the same for both, and
 * results are cross-checked with the `dmsetup` tool (through the fixtures, never through the
 * backend).
 *
 * @module
 */
import assert from "node:assert/strict";
import { DmError } from "../../src/dm/errors.ts";
import { mkfs } from "../../src/dm/mkfs.ts";
import { mount, umount } from "../../src/dm/mount.ts";
import { INFO_COLUMNS, parseInfoLine } from "../../src/dm/parse.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import {
  type DeviceInfo,
  type DeviceMapper,
  devicePath,
  type PoolStatus,
  type ThinStatus,
  thinTable,
} from "../../src/dm/types.ts";
import { createTestPool, dmNames, requireKernel, sh, type TestPool } from "./fixtures.ts";

/** One mebibyte. */
export const MiB = 1024 * 1024;

/** A device-mapper backend as the shared cases need to know it. */
export interface BackendUnderTest {
  /** Prefix of the test names, e.g. `dm ioctl`. */
  label: string;
  /**
   * A fresh backend that tries EBUSY 3 times, 20 ms apart and doubling; disposed after each
   * test when it is disposable.
   */
  open(): DeviceMapper & Partial<Disposable>;
  /** Processes one device-mapper command costs: 1 for dmsetup, 0 for ioctls. */
  spawnsPerCommand: 0 | 1;
  /** How a failed command's message starts, e.g. `dmsetup create` or `ioctl DM_DEV_CREATE`. */
  failed: { create: string; remove: string; message: string };
  /** What `version().library` looks like. */
  library: RegExp;
  /**
   * Whether `/dev/mapper/<name>` stays while a deferred removal is pending (the ioctl backend
   * keeps it; dmsetup, without udev, deletes it at once, the device staying until closed).
   */
  nodeKeptWhileRemovalPending: boolean;
}

/** Asserts `p` rejects with a {@linkcode DmError} of `errno` (and a message matching `re`). */
export async function rejectsErrno(p: Promise<unknown>, errno: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof DmError, `expected DmError, got ${e}`);
    assert.equal(e.errno, errno, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

/** `dmsetup info -c` of one device, parsed by the dmsetup backend's parser. */
export async function dmsetupInfo(name: string): Promise<DeviceInfo> {
  return parseInfoLine(
    await sh("dmsetup", "info", "-c", "--noheadings", "-o", INFO_COLUMNS, "--separator", " ", name),
  );
}

/** Escapes `text` for use inside a RegExp. */
function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Registers the cases every backend must pass, named `<label>: …`. */
export function registerBackendCases(b: BackendUnderTest): void {
  const test = (name: string, fn: (dm: DeviceMapper) => Promise<void>) =>
    Deno.test(`${b.label}: ${name}`, async () => {
      requireKernel();
      const dm = b.open();
      try {
        await fn(dm);
      } finally {
        dm[Symbol.dispose]?.();
      }
    });
  /** Asserts that `op` cost `commands` device-mapper commands' worth of spawns. */
  const costs = async <T>(
    dm: DeviceMapper,
    commands: number,
    what: string,
    op: () => Promise<T>,
  ) => {
    const before = dm.spawns;
    const result = await op();
    assert.equal(dm.spawns - before, commands * b.spawnsPerCommand, what);
    return result;
  };

  test("version reports the library and the kernel's driver version", async (dm) => {
    const v = await costs(dm, 1, "one command", () => dm.version());
    assert.match(v.library, b.library);
    assert.match(v.driver, /^4\.\d+\.\d+$/);
    const fromDmsetup = (await sh("dmsetup", "version")).match(/Driver version:\s*(\S+)/)?.[1];
    assert.equal(v.driver, fromDmsetup);
  });

  test("info, infoAll, list, status and table agree with dmsetup", async (dm) => {
    await using pool = await createTestPool({ dataMb: 64 });
    const info = await dm.info(pool.name);
    assert.ok(info);
    assert.equal(info.name, pool.name);
    assert.ok(info.live && !info.inactive && !info.suspended && !info.readOnly);
    assert.equal(info.segments, 1);
    assert.equal(info.blkdevname, `dm-${info.minor}`);
    // the real block device name matches
    const sysName = (await Deno.readTextFile(`/sys/block/${info.blkdevname}/dm/name`)).trim();
    assert.equal(sysName, pool.name);
    assert.equal(await dm.info(`${pool.name}-missing`), undefined);

    const names: string[] = [];
    for (let id = 1; id <= 4; id++) {
      await dm.createThin(pool.name, id);
      const name = `${pool.name}-t${id}`;
      await dm.create(name, thinTable(pool.name, id, 4 * MiB));
      names.push(name);
    }
    const all = await costs(dm, 1, "infoAll of all devices costs one command", () => dm.infoAll());
    for (const n of [pool.name, ...names]) {
      assert.ok(all.get(n)?.live, n);
      assert.deepEqual(all.get(n), await dmsetupInfo(n), `${n} matches dmsetup info`);
    }
    assert.equal(all.get(pool.name)?.openCount, 4, "each active thin holds the pool open");
    const listed = await costs(dm, 1, "list costs one command", () => dm.list());
    assert.deepEqual(listed.sort(), (await dmNames()).sort(), "list matches dmsetup ls");
    for (const n of [pool.name, ...names]) assert.ok(listed.includes(n), n);

    const st = await costs(dm, 1, "statusAll costs one command", () => dm.statusAll("thin"));
    for (const n of names) {
      assert.deepEqual(st.get(n), [{
        target: "thin",
        start: 0,
        length: 8192,
        mappedSectors: 0,
        highestMappedSector: null,
        failed: false,
      }]);
    }
    assert.equal(st.has(pool.name), false, "the target filter drops the pool");
    const everything = await dm.statusAll();
    assert.equal((everything.get(pool.name)?.[0] as PoolStatus).target, "thin-pool");
    const poolStatus = await dm.status(pool.name);
    assert.equal(poolStatus.length, 1);
    const ps = poolStatus[0] as PoolStatus;
    assert.equal(ps.target, "thin-pool");
    assert.equal(ps.mode, "rw");
    assert.equal(ps.totalDataBlocks, 64 * MiB / (64 * 1024));
    assert.equal(ps.usedDataBlocks, 0);
    const table = await dm.table(pool.name);
    assert.match(table, /^0 131072 thin-pool \d+:\d+ \d+:\d+ 128 32768 1 skip_block_zeroing$/);
    assert.equal(table, await sh("dmsetup", "table", pool.name), "table matches dmsetup table");
    assert.equal(await dm.table(names[0]), await sh("dmsetup", "table", names[0]));
    for (const n of names) await dm.remove(n);
    assert.deepEqual(await pool.thinIds(), [1, 2, 3, 4]);
    if (b.spawnsPerCommand === 0) assert.equal(dm.spawns, 0);
  });

  test("create_thin twice → EEXIST, delete twice → ENODATA; bad ids refused; metadata snapshot", async (dm) => {
    await using pool = await createTestPool({ dataMb: 64 });
    await thinMessageErrors(dm, pool, `${b.failed.message} ${pool.name}`);
    // bad ids and sectors are refused before any command
    await costs(dm, 0, "refused before any command", async () => {
      await rejectsErrno(dm.createThin(pool.name, -1), "EINVAL", /Invalid thin device id/);
      await rejectsErrno(dm.createThin(pool.name, 0x1000000), "EINVAL");
      await rejectsErrno(dm.message(pool.name, -1, "create_thin 9"), "EINVAL");
    });
    assert.deepEqual(await pool.thinIds(), []);
    // a message the pool answers: a metadata snapshot round trip
    assert.equal(await dm.message(pool.name, 0, "reserve_metadata_snap"), "");
    assert.notEqual((await dm.status(pool.name) as PoolStatus[])[0].heldMetadataRoot, null);
    await dm.message(pool.name, 0, "release_metadata_snap");
    assert.equal((await dm.status(pool.name) as PoolStatus[])[0].heldMetadataRoot, null);
  });

  test("create of an existing name → EBUSY; fresh thin status; node; bad table rolled back", async (dm) => {
    await using pool = await createTestPool({ dataMb: 64 });
    await dm.createThin(pool.name, 5);
    const name = `${pool.name}-t5`;
    await dm.create(name, thinTable(pool.name, 5, 1 * MiB));
    const stat = await Deno.stat(devicePath(name));
    assert.ok(stat.isBlockDevice);
    const info = await dm.info(name);
    assert.equal(stat.rdev, (info!.major << 8) | (info!.minor & 0xff) | ((info!.minor >> 8) << 20));
    await rejectsErrno(
      dm.create(name, thinTable(pool.name, 5, 1 * MiB)),
      "EBUSY",
      new RegExp(`^${literal(b.failed.create)} .* failed: Device or resource busy$`),
    );
    assert.ok((await dm.info(name))?.live, "the existing device is untouched");
    const [status] = await dm.status(name);
    assert.deepEqual(status, {
      target: "thin",
      start: 0,
      length: 2048,
      mappedSectors: 0,
      highestMappedSector: null,
      failed: false,
    });
    assert.equal(await sh("dmsetup", "status", name), "0 2048 thin 0 -");
    // status and table of a missing device
    await rejectsErrno(dm.status(`${pool.name}-nope`), "ENXIO");
    await rejectsErrno(dm.table(`${pool.name}-nope`), "ENXIO");
    // a bad table is refused by the kernel and leaves no device (nor node) behind
    await rejectsErrno(
      dm.create(`${pool.name}-bad`, "0 100 thin /dev/mapper/nonexistent-pool 1"),
      "ENODEV",
      /"0 100 thin \/dev\/mapper\/nonexistent-pool 1" failed: No such device$/,
    );
    assert.equal(await dm.info(`${pool.name}-bad`), undefined, "half-made device removed");
    await assert.rejects(Deno.stat(devicePath(`${pool.name}-bad`)), Deno.errors.NotFound);
    // delete of an active thin → EBUSY, not retried
    await costs(dm, 1, "EBUSY of a message is not retried", async () => {
      await rejectsErrno(dm.deleteThin(pool.name, 5), "EBUSY");
    });
    await dm.remove(name);
    assert.equal(await dm.info(name), undefined);
    await assert.rejects(Deno.stat(devicePath(name)), Deno.errors.NotFound);
  });

  test("read-only create, reload, suspend twice and resume twice", async (dm) => {
    await using pool = await createTestPool({ dataMb: 64 });
    await dm.createThin(pool.name, 1);
    const ro = `${pool.name}-ro`;
    await dm.create(ro, thinTable(pool.name, 1, 1 * MiB), { readOnly: true });
    assert.equal((await dm.info(ro))?.readOnly, true);
    assert.deepEqual(await dm.info(ro), await dmsetupInfo(ro));
    await assert.rejects(async () => {
      using f = await Deno.open(devicePath(ro), { write: true });
      await f.write(new Uint8Array(512));
      await f.syncData();
    }, "writes to a read-only device fail");
    await dm.remove(ro);

    const name = `${pool.name}-t1`;
    await dm.create(name, thinTable(pool.name, 1, 1 * MiB));
    await dm.suspend(name);
    await dm.suspend(name);
    assert.equal((await dm.info(name))?.suspended, true);
    assert.deepEqual(await dm.info(name), await dmsetupInfo(name));
    await dm.resume(name);
    await dm.resume(name);
    assert.equal((await dm.info(name))?.suspended, false);
    await dm.suspend(name, { noLockfs: true });
    await dm.resume(name);
    // reload a bigger table: inactive until resume
    await dm.reload(name, thinTable(pool.name, 1, 2 * MiB));
    const loaded = await dm.info(name);
    assert.ok(loaded?.inactive && loaded.live);
    assert.equal(((await dm.status(name))[0] as ThinStatus).length, 2048, "old table still live");
    await dm.suspend(name);
    await dm.resume(name);
    assert.equal(((await dm.status(name))[0] as ThinStatus).length, 4096);
    assert.equal((await dm.info(name))?.inactive, false);
    await rejectsErrno(dm.reload(name, "0 8 no-such-target"), "EINVAL");
    assert.equal((await dm.info(name))?.inactive, false, "failed reload leaves no inactive table");
    await dm.remove(name, { retry: true });
    assert.equal(await dm.info(name), undefined);
  });

  test("remove of a missing device → ENXIO, not retried", async (dm) => {
    await costs(dm, 1, "ENXIO is not retried", async () => {
      await rejectsErrno(
        dm.remove(`dm-missing-${crypto.randomUUID().slice(0, 8)}`),
        "ENXIO",
        new RegExp(
          `^${literal(b.failed.remove)} dm-missing-\\w+ failed: No such device or address$`,
        ),
      );
    });
  });

  test("remove of a mounted device → EBUSY after bounded retries; fs works; deferred remove", async (dm) => {
    const runner = new DenoCommandRunner();
    await using pool = await createTestPool({ dataMb: 64 });
    await dm.createThin(pool.name, 1);
    const name = `${pool.name}-t1`;
    await dm.create(name, thinTable(pool.name, 1, 32 * MiB));
    await mkfs(runner, { fsType: "ext4", device: devicePath(name) });
    const [st] = await dm.status(name) as ThinStatus[];
    assert.ok(st.mappedSectors > 0, "mkfs mapped blocks");
    assert.ok(st.highestMappedSector !== null);
    const mnt = `${pool.dir}/mnt`;
    await Deno.mkdir(mnt);
    await mount(runner, { device: devicePath(name), target: mnt, fsType: "ext4" });
    try {
      assert.equal((await dm.info(name))?.openCount, 1);
      const t0 = performance.now();
      await costs(dm, 3, "3 attempts (busyAttempts)", async () => {
        await rejectsErrno(dm.remove(name), "EBUSY", /failed: Device or resource busy$/);
      });
      const took = performance.now() - t0;
      assert.ok(took >= 60 && took < 5000, `bounded retries (20 + 40 ms backoff), took ${took}`);
      // no --force: the filesystem still works
      await Deno.writeTextFile(`${mnt}/hello`, "still here");
      await sh("sync");
      assert.equal(await Deno.readTextFile(`${mnt}/hello`), "still here");
      assert.ok((await dm.info(name))?.live);
      assert.doesNotMatch(await dm.table(name), /error/);
      // the pool cannot be removed while a thin device is active on it
      await rejectsErrno(dm.remove(pool.name), "EBUSY");
      // deferred removal of an open device succeeds and completes at close
      await dm.remove(name, { deferred: true });
      assert.ok(await dm.info(name), "still there while mounted");
      assert.equal(
        await Deno.stat(devicePath(name)).then((st) => st.isBlockDevice, () => false),
        b.nodeKeptWhileRemovalPending,
        "the node while the removal is pending",
      );
      assert.equal(await Deno.readTextFile(`${mnt}/hello`), "still here");
    } finally {
      await umount(runner, mnt);
    }
    assert.equal(await dm.info(name), undefined, "deferred remove completed at umount");
    // a deferred remove of a closed device removes it at once (and its node)
    await dm.create(name, thinTable(pool.name, 1, 32 * MiB));
    await dm.remove(name, { deferred: true });
    assert.equal(await dm.info(name), undefined);
    await assert.rejects(Deno.stat(devicePath(name)), Deno.errors.NotFound);
  });

  test("create_snap of a thin shares data and diverges", async (dm) => {
    await using pool = await createTestPool({ dataMb: 64 });
    await createSnapDiverges(dm, pool);
  });

  test("invalid names are refused before any command", async (dm) => {
    for (const n of ["", "-rf", "a/b", "with space", "x".repeat(128)]) {
      await rejectsErrno(dm.create(n, "0 8 zero"), "EINVAL", /Invalid device-mapper name/);
      await rejectsErrno(dm.remove(n), "EINVAL");
      await rejectsErrno(dm.info(n), "EINVAL");
    }
    assert.equal(dm.spawns, 0);
  });
}

/**
 * create_thin twice → EEXIST (its message starts with `failedCommand`, e.g.
 * `dmsetup message <pool>`), create_snap twice → EEXIST, of a missing origin → ENODATA,
 * delete twice → ENODATA, an unknown message → EINVAL, a missing pool → ENXIO. Leaves the
 * pool without thin devices.
 */
async function thinMessageErrors(
  dm: DeviceMapper,
  pool: TestPool,
  failedCommand: string,
): Promise<void> {
  await dm.createThin(pool.name, 1);
  await rejectsErrno(
    dm.createThin(pool.name, 1),
    "EEXIST",
    new RegExp(`^${literal(failedCommand)} 0 "create_thin 1" failed: File exists$`),
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
async function createSnapDiverges(dm: DeviceMapper, pool: TestPool): Promise<void> {
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
