/**
 * The loop-pool helper against the real kernel: create, status, refuse/force destroy,
 * leftovers, and rollback on failure.
 */
import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
} from "../../src/util/errors.ts";
import { Dmsetup } from "../../src/dm/dmsetup/dmsetup.ts";
import { listLoops } from "../../src/dm/losetup.ts";
import { mkfs } from "../../src/dm/mkfs.ts";
import { mount, umount } from "../../src/dm/mount.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import { devicePath, thinTable } from "../../src/dm/types.ts";
import {
  createLoopPool,
  destroyLoopPool,
  loopPoolFiles,
  poolStatus,
} from "../../src/pool/loop_pool.ts";
import { parseSize } from "../../src/util/size.ts";
import { dmNames, requireKernel, sh } from "./fixtures.ts";

const MiB = 1024 * 1024;

async function setup(): Promise<
  { dm: Dmsetup; runner: DenoCommandRunner; name: string; dir: string } & AsyncDisposable
> {
  requireKernel();
  const runner = new DenoCommandRunner();
  const dm = new Dmsetup({ runner, busyAttempts: 3, busyBackoffMs: 20 });
  const name = `lpool-${crypto.randomUUID().slice(0, 8)}`;
  const dir = await Deno.makeTempDir({ prefix: `${name}-` });
  return {
    dm,
    runner,
    name,
    dir,
    async [Symbol.asyncDispose]() {
      await destroyLoopPool({ name, dir, dm, runner, force: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

async function loopsBackedBy(runner: DenoCommandRunner, dir: string): Promise<string[]> {
  return (await listLoops(runner)).filter((l) => l.backFile.startsWith(dir)).map((l) => l.name);
}

Deno.test("loop pool: create, status, destroy", async () => {
  await using t = await setup();
  const { dm, runner, name, dir } = t;
  const pool = await createLoopPool({
    name,
    dir,
    dataSize: parseSize("64MB"),
    metaSize: parseSize("8m"),
    blockSectors: 256,
    dm,
    runner,
  });
  assert.equal(
    pool.table,
    `0 131072 thin-pool ${pool.metaLoop} ${pool.dataLoop} 256 32768 1 skip_block_zeroing`,
  );
  const files = loopPoolFiles(name, dir);
  assert.equal(pool.dataFile, files.dataFile);
  // sparse files of the requested sizes
  const data = await Deno.stat(files.dataFile);
  assert.equal(data.size, 64 * MiB);
  assert.ok((data.blocks ?? 0) * 512 < MiB, "data file is sparse");
  assert.equal((await Deno.stat(files.metaFile)).size, 8 * MiB);
  assert.ok((await Deno.stat(devicePath(name))).isBlockDevice);
  assert.match(
    await dm.table(name),
    /^0 131072 thin-pool 7:\d+ 7:\d+ 256 32768 1 skip_block_zeroing$/,
  );

  const fresh = await poolStatus(dm, name);
  assert.equal(fresh.dataTotalBytes, 64 * MiB);
  assert.equal(fresh.dataUsedBytes, 0);
  assert.equal(fresh.blockSectors, 256);
  assert.equal(fresh.blockBytes, 128 * 1024);
  assert.equal(fresh.mode, "rw");
  assert.equal(fresh.needsCheck, false);
  assert.equal(fresh.transactionId, 0);
  assert.ok(fresh.metadataUsedBytes > 0 && fresh.metadataUsedBytes < fresh.metadataTotalBytes);
  assert.ok(fresh.metadataTotalBytes <= 8 * MiB);

  await dm.createThin(name, 1);
  await dm.create(`${name}-t1`, thinTable(name, 1, 16 * MiB));
  await sh(
    "dd",
    "if=/dev/zero",
    `of=${devicePath(`${name}-t1`)}`,
    "bs=1M",
    "count=2",
    "oflag=direct",
  );
  const used = await poolStatus(dm, name);
  assert.equal(used.dataUsedBytes, 2 * MiB);
  await dm.remove(`${name}-t1`);

  const done = await destroyLoopPool({ name, dir, dm, runner });
  assert.equal(done.removedPool, true);
  assert.deepEqual(done.removedDevices, []);
  assert.deepEqual(done.detachedLoops.sort(), [pool.dataLoop, pool.metaLoop].sort());
  assert.equal(done.deletedFiles.length, 2);
  assert.equal(await dm.info(name), undefined);
  assert.deepEqual(await loopsBackedBy(runner, dir), []);
  await assert.rejects(Deno.stat(files.dataFile), Deno.errors.NotFound);
  // nothing left → NotFound
  await assert.rejects(
    destroyLoopPool({ name, dir, dm, runner }),
    (e: unknown) =>
      e instanceof NotFoundError && e.message.startsWith(`Cannot destroy pool "${name}"`),
  );
  await assert.rejects(poolStatus(dm, name), NotFoundError);
});

Deno.test("loop pool: destroy refuses with active thin devices unless forced; never tears down a mounted one", async () => {
  await using t = await setup();
  const { dm, runner, name, dir } = t;
  await createLoopPool({ name, dir, dataSize: 64 * MiB, metaSize: 4 * MiB, dm, runner });
  for (const id of [1, 2]) {
    await dm.createThin(name, id);
    await dm.create(`${name}-t${id}`, thinTable(name, id, 8 * MiB));
  }
  await assert.rejects(
    destroyLoopPool({ name, dir, dm, runner }),
    (e: unknown) =>
      e instanceof FailedPreconditionError &&
      e.message ===
        `Cannot destroy pool "${name}": thin devices still active on it: ${name}-t1, ${name}-t2 (use force to deactivate them)`,
  );
  assert.ok(await dm.info(name), "refusal changed nothing");
  assert.ok(await dm.info(`${name}-t1`));

  // a mounted thin device blocks even a forced destroy, and stays intact
  await mkfs(runner, { fsType: "ext4", device: devicePath(`${name}-t2`) });
  const mnt = `${dir}/mnt`;
  await Deno.mkdir(mnt);
  await mount(runner, { device: devicePath(`${name}-t2`), target: mnt, fsType: "ext4" });
  try {
    await assert.rejects(
      destroyLoopPool({ name, dir, dm, runner, force: true }),
      (e: unknown) =>
        e instanceof FailedPreconditionError &&
        e.message ===
          `Cannot destroy pool "${name}": thin device "${name}-t2" is in use (mounted or open)`,
    );
    assert.ok(await dm.info(`${name}-t1`), "refusal removed nothing");
    await Deno.writeTextFile(`${mnt}/ok`, "ok");
    assert.equal(await Deno.readTextFile(`${mnt}/ok`), "ok");
  } finally {
    await umount(runner, mnt);
  }
  const done = await destroyLoopPool({ name, dir, dm, runner, force: true });
  assert.deepEqual(done.removedDevices, [`${name}-t1`, `${name}-t2`]);
  const names = await dmNames();
  assert.ok(!names.some((n) => n.startsWith(name)), names.join(","));
  assert.deepEqual(await loopsBackedBy(runner, dir), []);
});

Deno.test("loop pool: create refuses existing names/files and rolls back on failure", async () => {
  await using t = await setup();
  const { dm, runner, name, dir } = t;
  await createLoopPool({ name, dir, dataSize: 16 * MiB, metaSize: 4 * MiB, dm, runner });
  await assert.rejects(
    createLoopPool({
      name,
      dir: `${dir}/other`,
      dataSize: 16 * MiB,
      metaSize: 4 * MiB,
      dm,
      runner,
    }),
    (e: unknown) =>
      e instanceof AlreadyExistsError &&
      e.message === `Cannot create pool "${name}": a device-mapper device with that name exists`,
  );
  await destroyLoopPool({ name, dir, dm, runner });
  // leftover file → refused, nothing attached
  const { dataFile } = loopPoolFiles(name, dir);
  await Deno.writeTextFile(dataFile, "");
  await assert.rejects(
    createLoopPool({ name, dir, dataSize: 16 * MiB, metaSize: 4 * MiB, dm, runner }),
    (e: unknown) =>
      e instanceof AlreadyExistsError && e.message.includes(`"${dataFile}" already exists`),
  );
  assert.deepEqual(await loopsBackedBy(runner, dir), []);
  await Deno.remove(dataFile);

  // the dm name taken by another device → refused before any file is touched
  await dm.create(name, "0 8 error");
  try {
    await assert.rejects(
      createLoopPool({ name, dir, dataSize: 16 * MiB, metaSize: 4 * MiB, dm, runner }),
      AlreadyExistsError,
    );
  } finally {
    await dm.remove(name);
  }
  // `dmsetup create` failing after the loops are attached → everything undone
  const failing = new Proxy(dm, {
    get(target, prop, receiver) {
      if (prop === "create") {
        return () => Promise.reject(new Error("injected create failure"));
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  await assert.rejects(
    createLoopPool({ name, dir, dataSize: 16 * MiB, metaSize: 4 * MiB, dm: failing, runner }),
    /injected create failure/,
  );
  assert.deepEqual(await loopsBackedBy(runner, dir), [], "loops detached on rollback");
  const left = [];
  for await (const e of Deno.readDir(dir)) left.push(e.name);
  assert.deepEqual(left, [], "files deleted on rollback");
});

Deno.test("loop pool: destroy cleans up leftovers of a pool whose device is gone", async () => {
  await using t = await setup();
  const { dm, runner, name, dir } = t;
  const pool = await createLoopPool({
    name,
    dir,
    dataSize: 16 * MiB,
    metaSize: 4 * MiB,
    dm,
    runner,
  });
  await dm.remove(name); // e.g. removed by hand
  const done = await destroyLoopPool({ name, dir, dm, runner });
  assert.equal(done.removedPool, false);
  assert.deepEqual(done.detachedLoops.sort(), [pool.dataLoop, pool.metaLoop].sort());
  assert.equal(done.deletedFiles.length, 2);
  assert.deepEqual(await loopsBackedBy(runner, dir), []);
});
