import assert from "node:assert/strict";
import { DmError, isErrno } from "../src/dm/errors.ts";
import { openPool } from "../src/pool/health.ts";
import { thinTable } from "../src/dm/types.ts";
import { parsePoolParams, parseThinParams } from "../src/dm/parse.ts";
import type { Errno, PoolStatus, ThinStatus } from "../src/dm/types.ts";
import { MemoryDeviceMapper, SimulatedCrash } from "./memory_dm.ts";
import {
  createMemoryFormatter,
  FIRST_DATA_BLOCK,
  readFilesystem,
  ROOT_AFTER_MKFS,
  ROOT_EMPTY,
} from "./memory_formatter.ts";

const MiB = 1024 * 1024;

function setup(options: { dataBlocks?: number; metadataBlocks?: number } = {}) {
  const dm = new MemoryDeviceMapper();
  dm.createPool("pool", options);
  return dm;
}

async function rejectsErrno(promise: Promise<unknown>, errno: Errno): Promise<DmError> {
  const err = await promise.then(
    () => assert.fail(`expected ${errno}, got success`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof DmError, `expected a DmError, got ${err}`);
  assert.equal(err.errno, errno, err.message);
  return err;
}

async function activeThin(dm: MemoryDeviceMapper, id: number, name = `thin-${id}`) {
  await dm.createThin("pool", id);
  await dm.create(name, thinTable("pool", id, 4 * MiB));
  return name;
}

Deno.test("memory dm: thin ids — EEXIST when taken, ENODATA when missing, EBUSY while active", async () => {
  const dm = setup();
  await dm.createThin("pool", 1);
  await rejectsErrno(dm.createThin("pool", 1), "EEXIST");
  await rejectsErrno(dm.createSnap("pool", 1, 1), "EEXIST");
  await rejectsErrno(dm.createSnap("pool", 2, 9), "ENODATA");
  await rejectsErrno(dm.deleteThin("pool", 9), "ENODATA");
  await rejectsErrno(dm.createThin("pool", -1), "EINVAL");
  await dm.createSnap("pool", 2, 1);
  assert.deepEqual(dm.thinIds("pool"), [1, 2]);
  await dm.create("t1", thinTable("pool", 1, MiB));
  await rejectsErrno(dm.deleteThin("pool", 1), "EBUSY");
  await dm.remove("t1");
  await dm.deleteThin("pool", 1);
  assert.deepEqual(dm.thinIds("pool"), [2]);
  await rejectsErrno(dm.createThin("nopool", 3), "ENXIO");
  await rejectsErrno(dm.createThin("t-none", 3), "ENXIO");
  assert.equal(dm.spawns, 0);
});

Deno.test("memory dm: pool messages as text, and messages to a thin device are refused", async () => {
  const dm = setup();
  assert.equal(await dm.message("pool", 0, "create_thin 5"), "");
  await dm.message("pool", 0, "create_snap 6 5");
  await rejectsErrno(dm.message("pool", 0, "create_thin 5"), "EEXIST");
  await dm.message("pool", 0, "delete 6");
  assert.deepEqual(dm.thinIds("pool"), [5]);
  await rejectsErrno(dm.message("pool", 0, "frobnicate 1"), "EINVAL");
  await rejectsErrno(dm.message("pool", 0, "delete"), "EINVAL");
  await dm.message("pool", 0, "set_transaction_id 0 7");
  assert.equal(((await dm.status("pool"))[0] as PoolStatus).transactionId, 7);
  await rejectsErrno(dm.message("pool", 0, "set_transaction_id 0 8"), "EINVAL");
  await dm.create("t5", thinTable("pool", 5, MiB));
  await rejectsErrno(dm.message("t5", 0, "create_thin 9"), "EINVAL");
  await rejectsErrno(dm.message("missing", 0, "create_thin 9"), "ENXIO");
});

Deno.test("memory dm: create — EBUSY for a taken name, ENODATA for a missing thin id, nothing left behind", async () => {
  const dm = setup();
  const name = await activeThin(dm, 1);
  await rejectsErrno(dm.create(name, thinTable("pool", 1, MiB)), "EBUSY");
  await rejectsErrno(dm.create("t2", thinTable("pool", 2, MiB)), "ENODATA");
  assert.equal(await dm.info("t2"), undefined);
  await rejectsErrno(dm.create("t3", "0 100 thin /dev/mapper/nopool 1"), "ENODEV");
  await rejectsErrno(dm.create("t3", "garbage"), "EINVAL");
  await rejectsErrno(dm.create("bad name", thinTable("pool", 1, MiB)), "EINVAL");
  assert.deepEqual((await dm.list()).sort(), ["pool", name]);
  assert.equal(await dm.isActive("t3"), false);
  await dm.create("z", "0 100 zero");
  assert.deepEqual(await dm.status("z"), [{ target: "zero", start: 0, length: 100, params: "" }]);
});

Deno.test("memory dm: info, table, status and statusAll in the real backends' shapes", async () => {
  const dm = setup({ dataBlocks: 100 });
  const name = await activeThin(dm, 1);
  const info = (await dm.info(name))!;
  assert.equal(info.blkdevname, `dm-${info.minor}`);
  assert.equal(info.major, 253);
  assert.deepEqual(
    { live: info.live, inactive: info.inactive, suspended: info.suspended, open: info.openCount },
    { live: true, inactive: false, suspended: false, open: 0 },
  );
  assert.equal((await dm.info("pool"))!.openCount, 1, "an active thin device holds its pool");
  const poolMinor = (await dm.info("pool"))!.minor;
  assert.equal(await dm.table(name), `0 8192 thin 253:${poolMinor} 1`);
  const empty = (await dm.status(name))[0] as ThinStatus;
  assert.deepEqual(empty, {
    target: "thin",
    start: 0,
    length: 8192,
    mappedSectors: 0,
    highestMappedSector: null,
    failed: false,
  });
  dm.write(name, 3, "x");
  const written = (await dm.status(name))[0] as ThinStatus;
  assert.equal(written.mappedSectors, 128);
  assert.equal(written.highestMappedSector, 4 * 128 - 1);
  const pool = (await dm.status("pool"))[0] as PoolStatus;
  assert.equal(pool.target, "thin-pool");
  assert.equal(pool.usedDataBlocks, 1);
  assert.equal(pool.totalDataBlocks, 100);
  assert.equal(pool.mode, "rw");
  assert.ok(pool.usedMetadataBlocks > 0 && pool.totalMetadataBlocks === 1024);
  const thins = await dm.statusAll("thin");
  assert.deepEqual([...thins.keys()], [name]);
  assert.deepEqual([...(await dm.statusAll()).keys()].sort(), ["pool", name]);
  assert.deepEqual([...(await dm.infoAll()).keys()].sort(), ["pool", name]);
  await rejectsErrno(dm.status("missing"), "ENXIO");
  await rejectsErrno(dm.table("missing"), "ENXIO");
  assert.equal(await dm.info("missing"), undefined);
  assert.deepEqual(await openPool(dm, "pool").then((p) => p.status.target), "thin-pool");
  // the same fields as the backends' parsers produce
  const parsedPool = parsePoolParams(0, 1, "0 1/2 3/4 - rw discard_passdown queue_if_no_space -");
  assert.deepEqual(Object.keys(pool).sort(), Object.keys(parsedPool).sort());
  assert.deepEqual(
    Object.keys(written).sort(),
    Object.keys(parseThinParams(0, 1, "128 127")).sort(),
  );
});

Deno.test("memory dm: remove — EBUSY while open, deferred waits for the last close, ENXIO when gone", async () => {
  const dm = setup();
  const name = await activeThin(dm, 1);
  dm.openDevice(name);
  await rejectsErrno(dm.remove(name), "EBUSY");
  await rejectsErrno(dm.remove("pool"), "EBUSY");
  await dm.remove(name, { deferred: true });
  assert.equal(await dm.isActive(name), true, "a pending deferred removal is still active");
  assert.ok(dm.deferredRemovePending(name));
  await rejectsErrno(dm.deleteThin("pool", 1), "EBUSY");
  dm.closeDevice(name);
  assert.equal(await dm.isActive(name), false);
  await rejectsErrno(dm.remove(name), "ENXIO");
  await dm.deleteThin("pool", 1);
  const other = await activeThin(dm, 2);
  await dm.remove(other, { deferred: true });
  assert.equal(await dm.isActive(other), false, "deferred on a closed device removes at once");
});

Deno.test("memory dm: suspend and resume are idempotent; reload swaps the table at resume", async () => {
  const dm = setup();
  const name = await activeThin(dm, 1);
  await dm.createThin("pool", 2);
  await dm.suspend(name);
  await dm.suspend(name);
  assert.equal((await dm.info(name))!.suspended, true);
  assert.throws(() => dm.write(name, 0, "x"), (e) => isErrno(e, "EIO"));
  await dm.resume(name);
  await dm.resume(name);
  assert.equal((await dm.info(name))!.suspended, false);
  await dm.reload(name, thinTable("pool", 2, MiB));
  assert.equal((await dm.info(name))!.inactive, true);
  assert.ok((await dm.table(name)).endsWith(" 1"));
  await dm.suspend(name);
  await dm.resume(name);
  assert.ok((await dm.table(name)).endsWith(" 2"));
  assert.equal((await dm.info(name))!.inactive, false);
  await rejectsErrno(dm.suspend("missing"), "ENXIO");
  await rejectsErrno(dm.resume("missing"), "ENXIO");
  await rejectsErrno(dm.reload("missing", thinTable("pool", 2, MiB)), "ENXIO");
});

Deno.test("memory dm: a snapshot carries its origin's data; later writes copy shared blocks", async () => {
  const dm = setup({ dataBlocks: 10 });
  const origin = await activeThin(dm, 1);
  dm.write(origin, 0, "base");
  dm.write(origin, 1, "one");
  await dm.suspend(origin);
  await dm.createSnap("pool", 2, 1);
  await dm.resume(origin);
  assert.deepEqual(dm.unsafeSnapshots, []);
  assert.equal(dm.poolUsage("pool").usedDataBlocks, 2, "shared blocks count once");
  const snap = "snap";
  await dm.create(snap, thinTable("pool", 2, 4 * MiB));
  assert.equal(dm.readText(snap, 0), "base");
  dm.write(origin, 0, "changed");
  dm.write(snap, 1, "mine");
  assert.equal(dm.readText(snap, 0), "base");
  assert.equal(dm.readText(origin, 1), "one");
  assert.equal(dm.readText(snap, 1), "mine");
  assert.equal(dm.readText(snap, 5), undefined);
  assert.equal(dm.readThinText("pool", 1, 0), "changed");
  assert.equal(dm.poolUsage("pool").usedDataBlocks, 4);
  await dm.remove(snap);
  await dm.deleteThin("pool", 2);
  assert.equal(dm.poolUsage("pool").usedDataBlocks, 2);
  // a snapshot of an active origin that was not suspended is noted
  await dm.createSnap("pool", 3, 1);
  assert.deepEqual(dm.unsafeSnapshots, [{ pool: "pool", thinId: 3, originId: 1, origin }]);
});

Deno.test("memory dm: ENOSPC when data or metadata runs out; the pool reports out_of_data_space", async () => {
  const dm = setup({ dataBlocks: 2, metadataBlocks: 4 });
  const name = await activeThin(dm, 1);
  dm.write(name, 0, "a");
  dm.write(name, 1, "b");
  assert.throws(() => dm.write(name, 2, "c"), (e) => isErrno(e, "ENOSPC"));
  dm.write(name, 1, "b2"); // an unshared block is overwritten in place
  assert.equal(((await dm.status("pool"))[0] as PoolStatus).mode, "out_of_data_space");
  await dm.createThin("pool", 2); // 1 + 2 thin ids + 1 block of mappings = 4: full
  await rejectsErrno(dm.createThin("pool", 3), "ENOSPC");
  dm.setPoolMode("pool", "fail");
  assert.equal(((await dm.status("pool"))[0] as PoolStatus).failed, true);
  assert.equal(((await dm.status(name))[0] as ThinStatus).failed, true);
  await assert.rejects(dm.createThin("pool", 4), (e) => e instanceof DmError);
});

Deno.test("memory dm: a fault fails the n-th matching call with its errno, without effect", async () => {
  const dm = setup();
  dm.injectFault({ op: "createThin", thinId: 2, errno: "ENOSPC" });
  dm.injectFault({ nth: 3, errno: "EPERM" });
  await dm.createThin("pool", 1); // call 1 from arming
  const err = await rejectsErrno(dm.createThin("pool", 2), "ENOSPC"); // call 2
  assert.match(err.message, /create_thin 2.*No space left on device/);
  assert.deepEqual(dm.thinIds("pool"), [1]);
  await rejectsErrno(dm.list(), "EPERM"); // call 3
  await dm.createThin("pool", 2);
  assert.deepEqual(dm.pendingFaults, []);
  dm.injectFault({ op: "remove", name: /^t-/, nth: 2, errno: "EBUSY" });
  await activeThin(dm, 3, "t-3");
  await activeThin(dm, 4, "t-4");
  await dm.remove("t-3");
  await rejectsErrno(dm.remove("t-4"), "EBUSY");
  assert.equal(await dm.isActive("t-4"), true);
  const ops = dm.calls.slice(-3).map((c) => `${c.op} ${c.name}`);
  assert.deepEqual(ops, ["remove t-3", "remove t-4", "isActive t-4"]);
  dm.injectFault({ op: "info" });
  dm.clearFaults();
  assert.ok(await dm.info("pool"));
});

Deno.test("memory dm: a crash throws SimulatedCrash, runs the hooks, and kills later calls until restart", async () => {
  for (const crash of ["before", "after"] as const) {
    const dm = setup();
    const seen: number[] = [];
    dm.onCrash((call) => seen.push(call.index));
    dm.injectFault({ op: "createThin", crash });
    const err = await dm.createThin("pool", 1).catch((e) => e);
    assert.ok(err instanceof SimulatedCrash, String(err));
    assert.equal(err.call?.op, "createThin");
    assert.deepEqual(seen, [err.call!.index]);
    assert.deepEqual(dm.thinIds("pool"), crash === "after" ? [1] : []);
    assert.equal(dm.crashed?.index, err.call!.index);
    await assert.rejects(dm.info("pool"), SimulatedCrash);
    const recorded = dm.calls.length;
    dm.restart();
    assert.equal(dm.crashed, undefined);
    assert.ok(await dm.info("pool"));
    assert.equal(dm.calls.length, recorded + 1, "calls of the dead process are not recorded");
  }
});

Deno.test("memory formatter: mkfs, emptyRoot and discard on memory devices, recorded and injectable", async () => {
  const dm = setup();
  const formatter = createMemoryFormatter(dm);
  const name = await activeThin(dm, 1);
  const path = `/dev/mapper/${name}`;
  dm.write(name, FIRST_DATA_BLOCK, "old");
  await formatter.mkfs(path, "ext4", "");
  assert.deepEqual(readFilesystem(dm, name), {
    fsType: "ext4",
    fsOptions: "",
    root: ROOT_AFTER_MKFS,
    sizeBytes: undefined,
  });
  assert.equal(dm.readText(name, FIRST_DATA_BLOCK), "old", "mkfs rewrites only its blocks");
  await formatter.emptyRoot(path, "ext4");
  assert.equal(readFilesystem(dm, name).root, ROOT_EMPTY);
  await rejectsErrno(formatter.emptyRoot(path, "xfs"), "EINVAL");
  dm.openDevice(name);
  await rejectsErrno(formatter.mkfs(path, "ext4", ""), "EBUSY");
  dm.closeDevice(name);
  await rejectsErrno(formatter.mkfs("/dev/mapper/missing", "ext4", ""), "ENOENT");
  dm.injectFault({ op: "discard", name, errno: "EIO" });
  await rejectsErrno(formatter.discard(path), "EIO");
  assert.ok(dm.poolUsage("pool").usedDataBlocks > 0);
  await formatter.discard(path);
  assert.equal(dm.poolUsage("pool").usedDataBlocks, 0);
  assert.deepEqual(
    dm.calls.filter((c) => ["mkfs", "emptyRoot", "discard"].includes(c.op)).map((c) => c.op),
    ["mkfs", "emptyRoot", "emptyRoot", "mkfs", "mkfs", "discard", "discard"],
  );
});

Deno.test("memory formatter: grow records the device's size; xfs grows inside a mount", async () => {
  const dm = setup();
  const formatter = createMemoryFormatter(dm);
  const name = await activeThin(dm, 1);
  const path = `/dev/mapper/${name}`;
  await formatter.mkfs(path, "ext4", "");
  await formatter.grow(path, "ext4", "/unused");
  assert.equal(readFilesystem(dm, name).sizeBytes, dm.deviceBytes(name));
  assert.equal(readFilesystem(dm, name).fsOptions, "");
  dm.openDevice(name);
  await rejectsErrno(formatter.grow(path, "ext4", "/unused"), "EBUSY");
  dm.closeDevice(name);
  await rejectsErrno(formatter.grow(path, "xfs", "/unused"), "EINVAL");
  const dir = await Deno.makeTempDir({ prefix: "memory_dm_test_" });
  try {
    const xfs = await activeThin(dm, 2);
    await formatter.mkfs(`/dev/mapper/${xfs}`, "xfs", "");
    const mountPoint = `${dir}/grow/${xfs}`;
    dm.injectFault({ op: "umount", errno: "EIO" });
    await rejectsErrno(formatter.grow(`/dev/mapper/${xfs}`, "xfs", mountPoint), "EIO");
    assert.equal(dm.openCount(xfs), 1, "left mounted");
    assert.ok(Deno.statSync(mountPoint).isDirectory);
    await formatter.releaseMount(mountPoint);
    assert.equal(dm.openCount(xfs), 0);
    assert.throws(() => Deno.statSync(mountPoint), Deno.errors.NotFound);
    assert.equal(readFilesystem(dm, xfs).sizeBytes, dm.deviceBytes(xfs));
    await formatter.releaseMount(mountPoint); // gone: fine
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.deepEqual(
    dm.calls.filter((c) => ["grow", "mount", "umount"].includes(c.op)).map((c) => c.op),
    // ext4, ext4 (busy), xfs on ext4 (refused, unmounted), xfs (umount failing), release twice
    ["grow", "grow", "mount", "grow", "umount", "mount", "grow", "umount", "umount", "umount"],
  );
});
