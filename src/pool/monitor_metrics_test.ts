import assert from "node:assert/strict";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import type { PoolStatus } from "../dm/types.ts";
import { poolMode, PoolMonitor } from "./monitor.ts";

const POOL = "mpool";
const DATA_BLOCKS = 100;
const BLOCK_BYTES = 128 * 512;

/** A pool with thin device `fill` active on it, and a monitor guarding 10%. */
async function setup() {
  const dm = new MemoryDeviceMapper();
  dm.createPool(POOL, { dataBlocks: DATA_BLOCKS, metadataBlocks: 64 });
  await dm.createThin(POOL, 1);
  await dm.create("fill", `0 ${DATA_BLOCKS * 2 * 128} thin /dev/mapper/${POOL} 1`);
  const status = (await dm.status(POOL))[0] as PoolStatus;
  const monitor = new PoolMonitor({ dm, poolName: POOL, status, minFreeSpace: { percent: 10 } });
  const write = (from: number, to: number) => {
    for (let b = from; b < to; b++) dm.write("fill", b, `block ${b}`);
  };
  return { dm, monitor, write };
}

Deno.test("monitor figures: the last status read, in bytes; one young enough is not read again", async () => {
  const { dm, monitor, write } = await setup();
  const before = Date.now();
  const reads = () => dm.calls.filter((c) => c.op === "statusAll" || c.op === "status").length;
  const calls = reads();
  let f = (await monitor.figures())!;
  assert.equal(f.dataSizeBytes, DATA_BLOCKS * BLOCK_BYTES);
  assert.equal(f.dataUsedBytes, 0);
  assert.equal(f.metadataSizeBytes, 64 * 4096);
  assert.equal(f.mode, "read_write");
  write(0, 30);
  assert.equal((await monitor.figures())!.dataUsedBytes, 0, "as last read: reads nothing");
  assert.equal((await monitor.figures(60_000))!.dataUsedBytes, 0, "young enough: reads nothing");
  assert.equal(reads(), calls);
  await monitor.poolStatus(); // any status read (a Usage, a check before Prepare)
  f = (await monitor.figures())!;
  assert.equal(f.dataUsedBytes, 30 * BLOCK_BYTES);
  assert.ok(f.readAtMs >= before - 1 && f.readAtMs <= Date.now() + 1, `${f.readAtMs} ${before}`);
  assert.equal(reads(), calls + 1);
});

Deno.test("monitor figures: a status older than the age allowed is read first, once for concurrent scrapes", async () => {
  const clock = { ms: 0 };
  const dm = new MemoryDeviceMapper();
  dm.createPool(POOL, { dataBlocks: DATA_BLOCKS, metadataBlocks: 64 });
  await dm.createThin(POOL, 1);
  await dm.create("fill", `0 ${DATA_BLOCKS * 2 * 128} thin /dev/mapper/${POOL} 1`);
  const status = (await dm.status(POOL))[0] as PoolStatus;
  const monitor = new PoolMonitor({ dm, poolName: POOL, status, now: () => clock.ms });
  const reads = () => dm.calls.filter((c) => c.op === "statusAll").length;
  for (let b = 0; b < 7; b++) dm.write("fill", b, "x"); // a container writes
  clock.ms = 4999;
  assert.equal((await monitor.figures(5000))!.dataUsedBytes, 0);
  assert.equal(reads(), 0);
  clock.ms = 5001;
  const [a, b] = await Promise.all([monitor.figures(5000), monitor.figures(5000)]);
  assert.equal(a!.dataUsedBytes, 7 * BLOCK_BYTES);
  assert.equal(b!.dataUsedBytes, 7 * BLOCK_BYTES);
  assert.equal(reads(), 1);
});

Deno.test("monitor figures: a fall below the low-water mark counts once per crossing", async () => {
  const { dm, monitor, write } = await setup();
  assert.deepEqual((await monitor.figures())!.lowWaterCrossings, { data: 0, metadata: 0 });
  write(0, 95); // 5 of 100 blocks free < 10%
  await monitor.poolStatus();
  await monitor.poolStatus();
  let f = (await monitor.figures())!;
  assert.deepEqual(f.belowLowWater, { data: true, metadata: false });
  assert.deepEqual(f.lowWaterCrossings, { data: 1, metadata: 0 });
  dm.discardAll("fill"); // space back
  await monitor.poolStatus();
  f = (await monitor.figures())!;
  assert.deepEqual(f.belowLowWater, { data: false, metadata: false });
  write(0, 100); // full: below the mark again, and out of data space
  await monitor.poolStatus();
  f = (await monitor.figures())!;
  assert.deepEqual(f.lowWaterCrossings, { data: 2, metadata: 0 });
  assert.equal(f.mode, "out_of_data_space");
});

Deno.test("monitor figures: the pool's mode, the most serious condition first", () => {
  const base = { mode: "rw", failed: false, needsCheck: false } as PoolStatus;
  assert.equal(poolMode(base), "read_write");
  assert.equal(poolMode({ ...base, mode: "out_of_data_space" }), "out_of_data_space");
  assert.equal(poolMode({ ...base, mode: "ro" }), "read_only");
  assert.equal(poolMode({ ...base, mode: "ro", needsCheck: true }), "needs_check");
  assert.equal(poolMode({ ...base, mode: "fail", failed: true }), "failed");
});
