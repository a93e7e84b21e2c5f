/**
 * Pool health against the real kernel: a tiny pool that runs out of data space, a missing
 * pool, and a device that is not a thin-pool.
 */
import assert from "node:assert/strict";
import {
  InvalidArgumentError,
  ResourceExhaustedError,
  UnavailableError,
} from "../../src/util/errors.ts";
import { Dmsetup } from "../../src/dm/dmsetup/dmsetup.ts";
import { checkPoolHealth, openPool } from "../../src/pool/health.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import { devicePath, type PoolStatus, thinTable } from "../../src/dm/types.ts";
import { createLoopPool, destroyLoopPool, poolStatus } from "../../src/pool/loop_pool.ts";
import { requireKernel, shTry } from "./fixtures.ts";

const MiB = 1024 * 1024;

function driver(): { dm: Dmsetup; runner: DenoCommandRunner } {
  requireKernel();
  const runner = new DenoCommandRunner();
  return { dm: new Dmsetup({ runner, busyAttempts: 3, busyBackoffMs: 20 }), runner };
}

Deno.test("dm driver: tiny pool runs out of data space; health check says so", async () => {
  const { dm, runner } = driver();
  const name = `dmdrv-tiny-${crypto.randomUUID().slice(0, 8)}`;
  const dir = await Deno.makeTempDir({ prefix: `${name}-` });
  await createLoopPool({
    name,
    dir,
    dataSize: 8 * MiB,
    metaSize: 4 * MiB,
    errorIfNoSpace: true,
    dm,
    runner,
  });
  try {
    const opened = await openPool(dm, name);
    assert.equal(opened.status.mode, "rw");
    assert.equal(opened.status.errorIfNoSpace, true);
    await dm.createThin(name, 1);
    const thin = `${name}-t1`;
    await dm.create(thin, thinTable(name, 1, 32 * MiB));
    // write more than the pool holds: the write fails with ENOSPC (error_if_no_space)
    const dd = await shTry(
      "dd",
      "if=/dev/zero",
      `of=${devicePath(thin)}`,
      "bs=1M",
      "count=16",
      "oflag=direct",
    );
    assert.notEqual(dd.code, 0);
    assert.match(dd.stderr, /No space left on device/);
    const [status] = await dm.status(name) as PoolStatus[];
    assert.equal(status.mode, "out_of_data_space");
    assert.equal(status.usedDataBlocks, status.totalDataBlocks);
    assert.throws(
      () => checkPoolHealth(status, name),
      (e: unknown) =>
        e instanceof ResourceExhaustedError &&
        e.message.startsWith(
          `pool "${name}" is out of data space (128/128 data blocks used; writes to its devices fail): remove unused images and snapshots`,
        ),
    );
    // a full pool opens (the snapshotter starts degraded); its status says why
    assert.equal((await openPool(dm, name)).status.mode, "out_of_data_space");
    const space = await poolStatus(dm, name);
    assert.equal(space.mode, "out_of_data_space");
    assert.equal(space.dataUsedBytes, 8 * MiB);
    assert.equal(space.dataTotalBytes, 8 * MiB);
    // freeing space makes the pool healthy again
    await dm.remove(thin);
    await dm.deleteThin(name, 1);
    const [freed] = await dm.status(name) as PoolStatus[];
    assert.equal(freed.usedDataBlocks, 0);
    // deleting the thin device frees its blocks and dm-thin switches back to rw
    assert.equal(freed.mode, "rw");
    checkPoolHealth(freed, name);
    assert.equal((await openPool(dm, name)).status.mode, "rw");
  } finally {
    await destroyLoopPool({ name, dir, dm, runner, force: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dm driver: openPool on a missing device and on a non-pool device", async () => {
  const { dm } = driver();
  const missing = `dmdrv-nopool-${crypto.randomUUID().slice(0, 8)}`;
  await assert.rejects(
    openPool(dm, missing),
    (e: unknown) =>
      e instanceof UnavailableError &&
      e.message === `Cannot open pool "${missing}": no such device`,
  );
  const errDev = `dmdrv-err-${crypto.randomUUID().slice(0, 8)}`;
  await dm.create(errDev, "0 2048 error");
  try {
    await assert.rejects(
      openPool(dm, errDev),
      (e: unknown) =>
        e instanceof InvalidArgumentError &&
        e.message === `Cannot open pool "${errDev}": not a thin-pool (target "error")`,
    );
    await dm.suspend(errDev);
    await assert.rejects(openPool(dm, errDev), /Cannot open pool ".*": device is suspended/);
    await dm.resume(errDev);
  } finally {
    await dm.remove(errDev);
  }
});
