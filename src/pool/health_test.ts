import assert from "node:assert/strict";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  ResourceExhaustedError,
  UnavailableError,
} from "../util/errors.ts";
import { Dmsetup } from "../dm/dmsetup/dmsetup.ts";
import { FakeRunner } from "../../testing/fake_runner.ts";
import { parsePoolParams } from "../dm/parse.ts";
import type { PoolStatus } from "../dm/types.ts";
import {
  checkPoolHealth,
  creationError,
  deletionError,
  openPool,
  poolProblem,
  spaceLimits,
} from "./health.ts";

const HEALTHY = "0 213/2048 0/1024 - rw discard_passdown queue_if_no_space - 512";
/** 1024 data blocks of 64 KiB. */
const LENGTH = 131072;

/** A healthy rw pool of `LENGTH` sectors with the given usage. */
function pool(
  usedMeta: number,
  totalMeta: number,
  usedData: number,
  totalData: number,
  mode = "rw",
): PoolStatus {
  return parsePoolParams(
    0,
    LENGTH,
    `0 ${usedMeta}/${totalMeta} ${usedData}/${totalData} - ${mode} discard_passdown ` +
      "queue_if_no_space - 512",
  );
}

Deno.test("pool health: healthy pool passes; each bad state has its class and the fix", () => {
  checkPoolHealth(parsePoolParams(0, LENGTH, HEALTHY), "p");
  checkPoolHealth(parsePoolParams(0, LENGTH, HEALTHY), "p", { percent: 10 });
  const bad: Array<[string, typeof UnavailableError, RegExp]> = [
    ["Fail", UnavailableError, /^pool "p" has failed \(status "Fail"\): .*thin_repair/],
    [
      "0 1/2 3/4 - rw discard_passdown queue_if_no_space needs_check 512",
      UnavailableError,
      /^pool "p" needs a metadata check \(needs_check flag set\): .*thin_check/,
    ],
    [
      "0 2048/2048 3/4 - ro discard_passdown queue_if_no_space - 512",
      UnavailableError,
      /^pool "p" is read-only \(metadata 2048\/2048 blocks used\): .*lvextend --poolmetadatasize/,
    ],
    [
      "0 112/1024 128/128 - out_of_data_space discard_passdown error_if_no_space - 256",
      ResourceExhaustedError,
      /^pool "p" is out of data space \(128\/128 data blocks used; writes to its devices fail\): remove unused images and snapshots .*lvextend/,
    ],
    [
      "0 112/1024 128/128 - out_of_data_space discard_passdown queue_if_no_space - 256",
      ResourceExhaustedError,
      /writes to its devices wait\)/,
    ],
  ];
  for (const [params, kind, re] of bad) {
    assert.throws(() => checkPoolHealth(parsePoolParams(0, 8, params), "p"), (e: unknown) => {
      assert.ok(e instanceof kind, `${params}: ${e}`);
      assert.match((e as Error).message, re);
      return true;
    });
  }
});

Deno.test("space limits: data keeps min_free_space, metadata twice that and the kernel's low-water mark", () => {
  // 10% of 1000 data blocks; metadata 2048 blocks: 20% = 410 < min(1024, 2048/4) = 512
  assert.deepEqual(spaceLimits(pool(0, 2048, 0, 1000), { percent: 10 }), {
    dataBlocks: 100,
    metadataBlocks: 512,
  });
  // a big metadata device: twice the data fraction wins over the 4 MiB low-water mark
  assert.deepEqual(spaceLimits(pool(0, 262144, 0, 1024), { percent: 10 }), {
    dataBlocks: 103,
    metadataBlocks: 52429,
  });
  // at most half the metadata device
  assert.equal(spaceLimits(pool(0, 262144, 0, 1024), { percent: 30 }).metadataBlocks, 131072);
  // a size is counted in data blocks (64 KiB here) and read as a fraction for metadata
  assert.deepEqual(spaceLimits(pool(0, 262144, 0, 1024), { bytes: 8 * 1024 * 1024 }), {
    dataBlocks: 128,
    metadataBlocks: 65536,
  });
  assert.equal(spaceLimits(pool(0, 2048, 0, 1024), { bytes: 1 }).dataBlocks, 1);
  // no floating-point dust: 7% of 100 blocks is 7
  assert.equal(spaceLimits(pool(0, 2048, 0, 100), { percent: 7 }).dataBlocks, 7);
  // zero turns the guard off, metadata included
  for (const off of [{ percent: 0 }, { bytes: 0 }]) {
    assert.deepEqual(spaceLimits(pool(0, 2048, 0, 1024), off), {
      dataBlocks: 0,
      metadataBlocks: 0,
    });
    assert.equal(poolProblem(pool(2047, 2048, 1023, 1024), "p", off), undefined);
  }
});

Deno.test("space guard: refuses below the limit, not at it; the message says what and how to fix", () => {
  const min = { percent: 10 };
  // data: 1024 blocks, the guard keeps 103 free
  assert.equal(poolProblem(pool(300, 2048, 921, 1024), "p", min), undefined, "103 free is enough");
  const data = poolProblem(pool(300, 2048, 922, 1024), "p", min)!;
  assert.equal(data.state, "low_space");
  assert.deepEqual([data.dataLow, data.metadataLow, data.canDelete], [true, false, true]);
  assert.equal(
    data.message,
    'pool "p" is low on data space: data 922/1024 blocks used, 10% free (6.4MiB), ' +
      'min_free_space "10%" keeps 103 blocks (10.1%) free: remove unused images and snapshots ' +
      "(with discard_blocks their blocks go back to the pool at once), or extend the pool: " +
      "lvextend its data, or grow the data device and reload the pool table with the new length " +
      "(dmsetup reload, suspend, resume)",
  );
  const refused = creationError(data, 'cannot create active snapshot "k"');
  assert.ok(refused instanceof ResourceExhaustedError);
  assert.match(refused.message, /^cannot create active snapshot "k": pool "p" is low on data/);
  // metadata: 2048 blocks, keeps 512 free
  assert.equal(poolProblem(pool(1536, 2048, 0, 1024), "p", min), undefined);
  const meta = poolProblem(pool(1537, 2048, 0, 1024), "p", min)!;
  assert.deepEqual([meta.state, meta.dataLow, meta.metadataLow], ["low_space", false, true]);
  assert.equal(
    meta.message,
    'pool "p" is low on metadata space: metadata 1537/2048 blocks used, 25% free, metadata ' +
      'keeps 512 blocks (25%) free (twice min_free_space "10%", at least the kernel\'s ' +
      "low-water mark): remove unused images and snapshots, or extend the pool's metadata: " +
      "lvextend --poolmetadatasize, or grow the metadata device and reload the pool table " +
      "(dmsetup reload, suspend, resume)",
  );
  const both = poolProblem(pool(2000, 2048, 1000, 1024), "p", min)!;
  assert.match(
    both.message,
    /^pool "p" is low on data and metadata space: data 1000\/1024 .*; metadata 2000\/2048/,
  );
  // without a guard only the pool's own state counts
  assert.equal(poolProblem(pool(2000, 2048, 1000, 1024), "p"), undefined);
});

Deno.test("deletions: refused only where the pool cannot change, with FailedPrecondition", () => {
  const ro = poolProblem(pool(2048, 2048, 3, 1024, "ro"), "p")!;
  assert.equal(ro.canDelete, false);
  const err = deletionError(ro, 'cannot remove snapshot "k", it is kept');
  assert.ok(err instanceof FailedPreconditionError);
  assert.match(err.message, /^cannot remove snapshot "k", it is kept: pool "p" is read-only/);
  assert.equal(poolProblem(parsePoolParams(0, 8, "Fail"), "p")!.canDelete, false);
  assert.equal(poolProblem(pool(1, 2, 1024, 1024, "out_of_data_space"), "p")!.canDelete, true);
  assert.equal(poolProblem(pool(1, 2048, 1000, 1024), "p", { percent: 10 })!.canDelete, true);
});

function fakeDm(info: string | null, status: string): Dmsetup {
  const runner = new FakeRunner()
    .on(
      ["dmsetup", "info"],
      info === null
        ? { code: 1, stderr: "Device does not exist.\nCommand failed." }
        : { stdout: info + "\n" },
    )
    .on(["dmsetup", "status"], { stdout: status + "\n" });
  return new Dmsetup({ runner });
}

Deno.test("pool health: openPool errors", async () => {
  await assert.rejects(
    openPool(fakeDm(null, ""), "x"),
    (e: unknown) =>
      e instanceof UnavailableError && e.message === 'Cannot open pool "x": no such device',
  );
  await assert.rejects(
    openPool(fakeDm("x ---w 254 1 0 0 0", ""), "x"),
    /Cannot open pool "x": device has no live table/,
  );
  await assert.rejects(
    openPool(fakeDm("x L-sw 254 1 0 1 0", "0 8 thin-pool " + HEALTHY), "x"),
    /Cannot open pool "x": device is suspended/,
  );
  await assert.rejects(
    openPool(fakeDm("x L--w 254 1 0 1 0", "0 100 linear "), "x"),
    (e: unknown) =>
      e instanceof InvalidArgumentError &&
      e.message === 'Cannot open pool "x": not a thin-pool (target "linear")',
  );
  const ok = await openPool(fakeDm("x L--w 254 1 0 1 0", "0 8 thin-pool " + HEALTHY), "x");
  assert.equal(ok.status.totalDataBlocks, 1024);
  assert.equal(ok.info.minor, 1);
});

Deno.test("pool health: openPool opens a full or read-only pool (its health is the caller's)", async () => {
  for (
    const params of [
      "0 2048/2048 3/4 - ro discard_passdown queue_if_no_space - 512",
      "0 112/1024 128/128 - out_of_data_space discard_passdown error_if_no_space - 256",
      "Fail",
    ]
  ) {
    const opened = await openPool(fakeDm("x L--w 254 1 0 1 0", "0 8 thin-pool " + params), "x");
    assert.ok(poolProblem(opened.status, "x"), params);
  }
});
