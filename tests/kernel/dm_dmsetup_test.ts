/**
 * The dmsetup backend against the real kernel: every DeviceMapper operation and its error
 * paths, with spawn counts.
 */
import assert from "node:assert/strict";
import { Dmsetup } from "../../src/dm/dmsetup/dmsetup.ts";
import { mkfs } from "../../src/dm/mkfs.ts";
import { mount, umount } from "../../src/dm/mount.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import { devicePath, type PoolStatus, type ThinStatus, thinTable } from "../../src/dm/types.ts";
import { createSnapDiverges, MiB, rejectsErrno, thinMessageErrors } from "./dm_backend_cases.ts";
import { createTestPool, requireKernel, sh, shTry } from "./fixtures.ts";

function driver(): { dm: Dmsetup; runner: DenoCommandRunner } {
  requireKernel();
  const runner = new DenoCommandRunner();
  return { dm: new Dmsetup({ runner, busyAttempts: 3, busyBackoffMs: 20 }), runner };
}

Deno.test("dm driver: version reports library and driver", async () => {
  const { dm } = driver();
  const v = await dm.version();
  assert.match(v.library, /^\d+\.\d+\.\d+/);
  assert.match(v.driver, /^4\.\d+\.\d+$/);
  assert.equal(dm.spawns, 1);
});

Deno.test("dm driver: runner sets LC_ALL=C and DM_DISABLE_UDEV without udev", async () => {
  const runner = new DenoCommandRunner();
  const out = await runner.run("sh", [
    "-c",
    'echo "$LC_ALL $DM_DISABLE_UDEV" "$#"',
    "x",
    "a b",
    "",
  ]);
  assert.equal(out.stdout, "C 1 2\n");
  const missing = await runner.run("no-such-program-xyz", []);
  assert.equal(missing.code, 127);
  assert.equal(runner.spawns, 1);
});

Deno.test("dm driver: info, infoAll, list and status of a pool and thin devices", async () => {
  const { dm } = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  const info = await dm.info(pool.name);
  assert.ok(info);
  assert.equal(info.name, pool.name);
  assert.ok(info.live && !info.suspended && !info.readOnly);
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
  const before = dm.spawns;
  const all = await dm.infoAll();
  assert.equal(dm.spawns - before, 1, "infoAll of all devices costs one spawn");
  for (const n of [pool.name, ...names]) assert.ok(all.get(n)?.live, n);
  assert.equal(all.get(pool.name)?.openCount, 4, "each active thin holds the pool open");

  const listed = await dm.list();
  for (const n of [pool.name, ...names]) assert.ok(listed.includes(n), n);

  const st = await dm.statusAll("thin");
  assert.equal(dm.spawns - before, 3, "statusAll costs one spawn");
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
  assert.equal(st.has(pool.name), false, "--target thin filters the pool out");
  const poolStatus = await dm.status(pool.name);
  assert.equal(poolStatus.length, 1);
  const ps = poolStatus[0] as PoolStatus;
  assert.equal(ps.target, "thin-pool");
  assert.equal(ps.mode, "rw");
  assert.equal(ps.totalDataBlocks, 64 * MiB / (64 * 1024));
  assert.equal(ps.usedDataBlocks, 0);
  assert.match(
    await dm.table(pool.name),
    /^0 131072 thin-pool \d+:\d+ \d+:\d+ 128 32768 1 skip_block_zeroing$/,
  );
  for (const n of names) await dm.remove(n);
  assert.deepEqual(await pool.thinIds(), [1, 2, 3, 4]);
});

Deno.test("dm driver: create_thin twice → EEXIST, delete twice → ENODATA", async () => {
  const { dm } = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  await thinMessageErrors(dm, pool, `dmsetup message ${pool.name}`);
});

Deno.test("dm driver: create of an existing name → EBUSY; fresh thin status; node exists", async () => {
  const { dm } = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  await dm.createThin(pool.name, 5);
  const name = `${pool.name}-t5`;
  await dm.create(name, thinTable(pool.name, 5, 1 * MiB));
  const stat = await Deno.stat(devicePath(name));
  assert.ok(stat.isBlockDevice);
  await rejectsErrno(
    dm.create(name, thinTable(pool.name, 5, 1 * MiB)),
    "EBUSY",
    /^dmsetup create .* failed: Device or resource busy$/,
  );
  const [status] = await dm.status(name);
  assert.deepEqual(status, {
    target: "thin",
    start: 0,
    length: 2048,
    mappedSectors: 0,
    highestMappedSector: null,
    failed: false,
  });
  // status of a missing device
  await rejectsErrno(dm.status(`${pool.name}-nope`), "ENXIO");
  await rejectsErrno(dm.table(`${pool.name}-nope`), "ENXIO");
  // a bad table is refused by the kernel and leaves no device behind
  await rejectsErrno(
    dm.create(`${pool.name}-bad`, "0 100 thin /dev/mapper/nonexistent-pool 1"),
    "ENODEV",
    /--table "0 100 thin \/dev\/mapper\/nonexistent-pool 1" failed: No such device$/,
  );
  assert.equal(await dm.info(`${pool.name}-bad`), undefined);
  // delete of an active thin → EBUSY, not retried
  const before = dm.spawns;
  await rejectsErrno(dm.deleteThin(pool.name, 5), "EBUSY");
  assert.equal(dm.spawns - before, 1);
  await dm.remove(name);
  assert.equal(await dm.info(name), undefined);
  await assert.rejects(Deno.stat(devicePath(name)), Deno.errors.NotFound);
});

Deno.test("dm driver: read-only create, reload, suspend twice and resume twice", async () => {
  const { dm } = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  await dm.createThin(pool.name, 1);
  const ro = `${pool.name}-ro`;
  await dm.create(ro, thinTable(pool.name, 1, 1 * MiB), { readOnly: true });
  assert.equal((await dm.info(ro))?.readOnly, true);
  await dm.remove(ro);

  const name = `${pool.name}-t1`;
  await dm.create(name, thinTable(pool.name, 1, 1 * MiB));
  await dm.suspend(name);
  await dm.suspend(name);
  assert.equal((await dm.info(name))?.suspended, true);
  await dm.resume(name);
  await dm.resume(name);
  assert.equal((await dm.info(name))?.suspended, false);
  await dm.suspend(name, { noLockfs: true });
  await dm.resume(name);
  // reload a bigger table: inactive until resume
  await dm.reload(name, thinTable(pool.name, 1, 2 * MiB));
  const loaded = await dm.info(name);
  assert.ok(loaded?.inactive && loaded.live);
  await dm.suspend(name);
  await dm.resume(name);
  assert.equal(((await dm.status(name))[0] as ThinStatus).length, 4096);
  assert.equal((await dm.info(name))?.inactive, false);
  await dm.remove(name, { retry: true });
  assert.equal(await dm.info(name), undefined);
});

Deno.test("dm driver: remove of a missing device → ENXIO", async () => {
  const { dm } = driver();
  await rejectsErrno(
    dm.remove(`dmdrv-missing-${crypto.randomUUID().slice(0, 8)}`),
    "ENXIO",
    /failed: No such device or address$/,
  );
  assert.equal(dm.spawns, 1, "ENXIO is not retried");
});

Deno.test("dm driver: remove of a mounted device → EBUSY after bounded retries; fs still works", async () => {
  const { dm, runner } = driver();
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
    const before = dm.spawns;
    const t0 = performance.now();
    await rejectsErrno(dm.remove(name), "EBUSY", /failed: Device or resource busy$/);
    assert.equal(dm.spawns - before, 3, "3 attempts (busyAttempts)");
    assert.ok(performance.now() - t0 < 5000, "bounded");
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
  } finally {
    await umount(runner, mnt);
  }
  assert.equal(await dm.info(name), undefined, "deferred remove completed at umount");
});

Deno.test("dm driver: create_snap of a thin shares data and diverges", async () => {
  const { dm } = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  await createSnapDiverges(dm, pool);
});

Deno.test("dm driver: create makes /dev/mapper node even if it was deleted (mknodes fallback)", async () => {
  const { dm } = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  await dm.createThin(pool.name, 1);
  // simulate a host where nothing creates nodes: check via nodeExists that lies once
  const runner = new DenoCommandRunner();
  let checks = 0;
  const lying = new Dmsetup({
    runner,
    nodeExists: async (p) => {
      checks++;
      if (checks === 1) {
        await Deno.remove(p); // the node really is missing now
        return false;
      }
      try {
        await Deno.stat(p);
        return true;
      } catch {
        return false;
      }
    },
  });
  const name = `${pool.name}-t1`;
  await lying.create(name, thinTable(pool.name, 1, 1 * MiB));
  assert.equal(checks, 2);
  assert.ok((await Deno.stat(devicePath(name))).isBlockDevice, "mknodes recreated the node");
  assert.deepEqual(
    (await shTry("dmsetup", "info", "-c", "--noheadings", "-o", "name", name)).stdout,
    name,
  );
  assert.equal(runner.spawns, 2, "create + mknodes");
  await dm.remove(name);
});

Deno.test("dm driver: invalid names are refused before dmsetup runs", async () => {
  const { dm } = driver();
  for (const n of ["", "-rf", "a/b", "with space"]) {
    await rejectsErrno(dm.create(n, "0 8 zero"), "EINVAL", /Invalid device-mapper name/);
  }
  assert.equal(dm.spawns, 0);
});
