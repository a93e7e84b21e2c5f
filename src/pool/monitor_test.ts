import assert from "node:assert/strict";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import { createLogger } from "../util/log.ts";
import {
  FailedPreconditionError,
  ResourceExhaustedError,
  UnavailableError,
} from "../util/errors.ts";
import type { PoolStatus } from "../dm/types.ts";
import { PoolMonitor, STATUS_CACHE_MS } from "./monitor.ts";

const POOL = "mpool";
/** 100 data blocks of 64 KiB, 64 metadata blocks. */
const DATA_BLOCKS = 100;

/** A pool with thin device `fill` (id 1) active on it, and a monitor guarding 10%. */
async function setup(logs: string[] = [], clock = { ms: 0 }) {
  const dm = new MemoryDeviceMapper();
  dm.createPool(POOL, { dataBlocks: DATA_BLOCKS, metadataBlocks: 64 });
  await dm.createThin(POOL, 1);
  await dm.create("fill", `0 ${DATA_BLOCKS * 2 * 128} thin /dev/mapper/${POOL} 1`);
  const status = (await dm.status(POOL))[0] as PoolStatus;
  const monitor = new PoolMonitor({
    dm,
    poolName: POOL,
    status,
    minFreeSpace: { percent: 10 },
    logger: createLogger({ level: "info", write: (l) => logs.push(l) }),
    now: () => clock.ms,
  });
  /** Maps blocks [from, to) of `fill`. */
  const write = (from: number, to: number) => {
    for (let b = from; b < to; b++) dm.write("fill", b, `block ${b}`);
  };
  return { dm, monitor, write };
}

Deno.test("monitor: a healthy status is trusted for a second, then read again (once)", async () => {
  const clock = { ms: 0 };
  const { dm, monitor, write } = await setup([], clock);
  const statusReads = () => dm.calls.filter((c) => c.op === "statusAll").length;
  clock.ms = STATUS_CACHE_MS;
  await monitor.checkHealth("cannot create");
  await monitor.checkHealth("cannot create");
  assert.equal(statusReads(), 0, "the status read at open is still fresh");
  write(0, DATA_BLOCKS); // the pool fills while nobody asks
  clock.ms = STATUS_CACHE_MS + 1;
  const checks = [monitor.checkHealth("a"), monitor.checkHealth("b"), monitor.checkHealth("c")];
  for (const check of checks) await assert.rejects(check, /out of data space/);
  assert.equal(statusReads(), 1, "one read, shared by concurrent checks, refuses them all");
});

Deno.test("monitor: the guard refuses below min_free_space and lifts as soon as space is back", async () => {
  const { dm, monitor, write } = await setup();
  write(0, 91); // 9 blocks free < 10
  await monitor.checkHealth("a healthy status up to a second old is trusted");
  await monitor.poolStatus(); // what the background refresh would read
  await assert.rejects(monitor.checkHealth('cannot create view "v"'), (e: unknown) => {
    assert.ok(e instanceof ResourceExhaustedError, String(e));
    assert.match(
      e.message,
      /^cannot create view "v": pool "mpool" is low on data space: data 91\/100/,
    );
    return true;
  });
  // the refusal was read fresh and is now cached; freeing space lifts it on the next call,
  // without waiting for the cache to expire
  dm.discardAll("fill");
  await monitor.checkHealth("cannot create");
  // the same for a pool that ran out of space
  write(0, DATA_BLOCKS);
  assert.equal((await monitor.poolStatus()).mode, "out_of_data_space");
  await assert.rejects(monitor.checkHealth("x"), /pool "mpool" is out of data space/);
  dm.discardAll("fill");
  await monitor.checkHealth("x");
  // extending the pool lifts it too
  write(0, 95);
  await monitor.poolStatus();
  await assert.rejects(monitor.checkHealth("x"), ResourceExhaustedError);
  await dm.reload(POOL, `0 ${200 * 128} thin-pool mem-meta-${POOL} mem-data-${POOL} 128 0`);
  await dm.suspend(POOL);
  await dm.resume(POOL);
  await monitor.checkHealth("x");
  await monitor.settle();
});

Deno.test("monitor: deletions are refused only on a pool that cannot change, read again first", async () => {
  const { dm, monitor, write } = await setup();
  write(0, DATA_BLOCKS);
  await monitor.poolStatus();
  await monitor.checkDeletable("cannot remove"); // a full pool still deletes
  dm.setPoolMode(POOL, "ro");
  await monitor.poolStatus();
  await assert.rejects(monitor.checkDeletable('cannot remove snapshot "k"'), (e: unknown) => {
    assert.ok(e instanceof FailedPreconditionError, String(e));
    assert.match(e.message, /^cannot remove snapshot "k": pool "mpool" is read-only \(metadata/);
    return true;
  });
  await assert.rejects(monitor.checkHealth("cannot create"), UnavailableError);
  dm.setPoolMode(POOL, undefined); // repaired: the cached "ro" is read again, not trusted
  await monitor.checkDeletable("cannot remove");
  await monitor.settle();
});

Deno.test("monitor: each change of the pool's state is logged once, at its level", async () => {
  const logs: string[] = [];
  const { dm, monitor, write } = await setup(logs);
  const read = async () => {
    await monitor.poolStatus();
    await monitor.poolStatus(); // a second read of the same state logs nothing
  };
  await read();
  write(0, 95);
  await read();
  write(95, DATA_BLOCKS);
  await read();
  dm.setPoolMode(POOL, "ro");
  await read();
  dm.setPoolMode(POOL, undefined);
  dm.discardAll("fill");
  await read();
  const lines = logs.map((l) => l.replace(/^time=\S+ /, ""));
  assert.equal(lines.length, 4, lines.join("\n"));
  assert.match(
    lines[0],
    /^level=warn msg="pool is low on data space: new snapshots are refused \(min_free_space\)" pool=mpool from=healthy to=low_space\(low:data\) mode=rw data=95\/100 /,
  );
  assert.match(
    lines[1],
    /^level=warn msg="pool is out of data space: serving reads and removals only" .*to=out_of_data_space\(low:data\) mode=out_of_data_space data=100\/100/,
  );
  assert.match(
    lines[2],
    /^level=error msg="pool is read-only: serving reads only; new snapshots and removals are refused" .*mode=ro /,
  );
  assert.match(
    lines[3],
    /^level=info msg="pool is healthy again: new snapshots are allowed" pool=mpool from=read_only\(low:data\) to=healthy mode=rw data=0\/100/,
  );
  await monitor.settle();
});
