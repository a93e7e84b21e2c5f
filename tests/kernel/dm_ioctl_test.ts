/**
 * The ioctl backend against the real kernel: the same behaviour as the dmsetup backend
 * (tests/kernel/dm_dmsetup_test.ts), cross-checked with `dmsetup`, with zero spawns; and a
 * printed timing comparison of the two backends.
 */
import assert from "node:assert/strict";
import { Dmsetup } from "../../src/dm/dmsetup/dmsetup.ts";
import { INFO_COLUMNS, parseInfoLine } from "../../src/dm/parse.ts";
import { DmIoctl, DmIoctlUnavailableError } from "../../src/dm/ioctl/ioctl.ts";
import { mkfs } from "../../src/dm/mkfs.ts";
import { mount, umount } from "../../src/dm/mount.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import {
  type DeviceInfo,
  type DeviceMapper,
  devicePath,
  type PoolStatus,
  type ThinStatus,
  thinTable,
} from "../../src/dm/types.ts";
import { createSnapDiverges, MiB, rejectsErrno, thinMessageErrors } from "./dm_backend_cases.ts";
import { createTestPool, dmNames, requireKernel, sh, shTry } from "./fixtures.ts";

function driver(): DmIoctl {
  requireKernel();
  return new DmIoctl({ busyAttempts: 3, busyBackoffMs: 20 });
}

/** `dmsetup info -c` of one device, parsed by the dmsetup backend's parser. */
async function dmsetupInfo(name: string): Promise<DeviceInfo> {
  return parseInfoLine(
    await sh("dmsetup", "info", "-c", "--noheadings", "-o", INFO_COLUMNS, "--separator", " ", name),
  );
}

Deno.test("dm ioctl: version reports the kernel driver version; no spawns", async () => {
  using dm = driver();
  const v = await dm.version();
  assert.equal(v.library, "4.0.0-ioctl");
  assert.match(v.driver, /^4\.\d+\.\d+$/);
  const fromDmsetup = (await sh("dmsetup", "version")).match(/Driver version:\s*(\S+)/)?.[1];
  assert.equal(v.driver, fromDmsetup);
  assert.equal(dm.spawns, 0);
});

Deno.test("dm ioctl: unusable control node → DmIoctlUnavailableError; missing node is made from sysfs", async () => {
  requireKernel();
  const dir = await Deno.makeTempDir({ prefix: "dmioctl-ctl-" });
  try {
    await Deno.writeTextFile(`${dir}/file`, "not a control node");
    assert.throws(
      () => new DmIoctl({ controlPath: `${dir}/file` }),
      (e: unknown) => e instanceof DmIoctlUnavailableError && /DM_VERSION failed/.test(e.message),
    );
    using dm = new DmIoctl({ controlPath: `${dir}/control` });
    assert.ok((await Deno.stat(`${dir}/control`)).isCharDevice);
    assert.match((await dm.version()).driver, /^4\./);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dm ioctl: info, infoAll, list, status and table agree with dmsetup", async () => {
  using dm = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  const info = await dm.info(pool.name);
  assert.ok(info);
  assert.equal(info.name, pool.name);
  assert.ok(info.live && !info.inactive && !info.suspended && !info.readOnly);
  assert.equal(info.segments, 1);
  assert.equal(info.blkdevname, `dm-${info.minor}`);
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
  const all = await dm.infoAll();
  for (const n of [pool.name, ...names]) {
    assert.ok(all.get(n)?.live, n);
    assert.deepEqual(all.get(n), await dmsetupInfo(n), `${n} matches dmsetup info`);
  }
  assert.equal(all.get(pool.name)?.openCount, 4, "each active thin holds the pool open");
  assert.deepEqual((await dm.list()).sort(), (await dmNames()).sort(), "list matches dmsetup ls");
  for (const n of [pool.name, ...names]) assert.ok((await dm.list()).includes(n), n);

  const st = await dm.statusAll("thin");
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
  assert.equal(st.has(pool.name), false, "target filter drops the pool");
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
  assert.equal(dm.spawns, 0);
});

Deno.test("dm ioctl: create_thin twice → EEXIST, delete twice → ENODATA", async () => {
  using dm = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  await thinMessageErrors(dm, pool, `ioctl DM_TARGET_MSG ${pool.name}`);
  // bad ids and sectors are refused before any ioctl
  await rejectsErrno(dm.createThin(pool.name, -1), "EINVAL", /Invalid thin device id/);
  await rejectsErrno(dm.createThin(pool.name, 0x1000000), "EINVAL");
  await rejectsErrno(dm.message(pool.name, -1, "create_thin 9"), "EINVAL");
  await rejectsErrno(dm.message(pool.name, 0, "create_thin\u00009"), "EINVAL");
  assert.deepEqual(await pool.thinIds(), []);
  // a message the pool answers: a metadata snapshot round trip
  assert.equal(await dm.message(pool.name, 0, "reserve_metadata_snap"), "");
  assert.notEqual((await dm.status(pool.name) as PoolStatus[])[0].heldMetadataRoot, null);
  await dm.message(pool.name, 0, "release_metadata_snap");
  assert.equal((await dm.status(pool.name) as PoolStatus[])[0].heldMetadataRoot, null);
});

Deno.test("dm ioctl: create of an existing name → EBUSY; fresh thin status; node; bad table rolled back", async () => {
  using dm = driver();
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
    /^ioctl DM_DEV_CREATE .* failed: Device or resource busy$/,
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
  await rejectsErrno(dm.status(`${pool.name}-nope`), "ENXIO");
  await rejectsErrno(dm.table(`${pool.name}-nope`), "ENXIO");
  await rejectsErrno(
    dm.create(`${pool.name}-bad`, "0 100 thin /dev/mapper/nonexistent-pool 1"),
    "ENODEV",
    /"0 100 thin \/dev\/mapper\/nonexistent-pool 1" failed: No such device$/,
  );
  assert.equal(await dm.info(`${pool.name}-bad`), undefined, "half-made device removed");
  await assert.rejects(Deno.stat(devicePath(`${pool.name}-bad`)), Deno.errors.NotFound);
  // unparsable table text: refused before any ioctl
  await rejectsErrno(
    dm.create(`${pool.name}-bad`, "zero 8"),
    "EINVAL",
    /Invalid device-mapper table/,
  );
  await rejectsErrno(dm.create(`${pool.name}-bad`, ""), "EINVAL");
  assert.equal(await dm.info(`${pool.name}-bad`), undefined);
  // delete of an active thin → EBUSY
  await rejectsErrno(dm.deleteThin(pool.name, 5), "EBUSY");
  await dm.remove(name);
  assert.equal(await dm.info(name), undefined);
  await assert.rejects(Deno.stat(devicePath(name)), Deno.errors.NotFound);
  assert.equal(dm.spawns, 0);
});

Deno.test("dm ioctl: read-only create, reload, suspend twice and resume twice", async () => {
  using dm = driver();
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

Deno.test("dm ioctl: remove of a missing device → ENXIO", async () => {
  using dm = driver();
  await rejectsErrno(
    dm.remove(`dmioctl-missing-${crypto.randomUUID().slice(0, 8)}`),
    "ENXIO",
    /^ioctl DM_DEV_REMOVE dmioctl-missing-\w+ failed: No such device or address$/,
  );
});

Deno.test("dm ioctl: remove of a mounted device → EBUSY after bounded retries; fs works; deferred remove", async () => {
  using dm = driver();
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
    await rejectsErrno(dm.remove(name), "EBUSY", /failed: Device or resource busy$/);
    const took = performance.now() - t0;
    assert.ok(took >= 60 && took < 5000, `bounded retries (20 + 40 ms backoff), took ${took}`);
    await Deno.writeTextFile(`${mnt}/hello`, "still here");
    await sh("sync");
    assert.equal(await Deno.readTextFile(`${mnt}/hello`), "still here");
    assert.ok((await dm.info(name))?.live);
    assert.doesNotMatch(await dm.table(name), /error/);
    await rejectsErrno(dm.remove(pool.name), "EBUSY");
    await dm.remove(name, { deferred: true });
    assert.ok(await dm.info(name), "still there while mounted");
    assert.ok((await Deno.stat(devicePath(name))).isBlockDevice, "node kept while pending");
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

Deno.test("dm ioctl: create_snap of a thin shares data and diverges", async () => {
  using dm = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  await createSnapDiverges(dm, pool);
});

Deno.test("dm ioctl: /dev/mapper node is made, replaces a stale one, and takes mkfs + mount", async () => {
  using dm = driver();
  const runner = new DenoCommandRunner();
  await using pool = await createTestPool({ dataMb: 64 });
  await dm.createThin(pool.name, 1);
  const name = `${pool.name}-t1`;
  // a stale regular file where the node goes
  await Deno.writeTextFile(devicePath(name), "stale");
  await dm.create(name, thinTable(pool.name, 1, 16 * MiB));
  assert.ok((await Deno.stat(devicePath(name))).isBlockDevice, "stale file replaced by a node");
  await mkfs(runner, { fsType: "ext4", device: devicePath(name) });
  const mnt = `${pool.dir}/mnt`;
  await Deno.mkdir(mnt);
  await mount(runner, { device: devicePath(name), target: mnt, fsType: "ext4" });
  try {
    await Deno.writeTextFile(`${mnt}/f`, "data");
    assert.equal(await Deno.readTextFile(`${mnt}/f`), "data");
    assert.match(await sh("findmnt", "-n", "-o", "SOURCE", mnt), new RegExp(name));
  } finally {
    await umount(runner, mnt);
  }
  await dm.remove(name);
  await assert.rejects(Deno.stat(devicePath(name)), Deno.errors.NotFound);
  // dmsetup sees the device made by ioctls the same way, and vice versa
  await dm.create(name, thinTable(pool.name, 1, 16 * MiB));
  assert.equal(
    (await shTry("dmsetup", "info", "-c", "--noheadings", "-o", "name", name)).stdout,
    name,
  );
  await sh("dmsetup", "remove", name);
  assert.equal(await dm.info(name), undefined);
});

Deno.test("dm ioctl: invalid names are refused before any ioctl", async () => {
  using dm = driver();
  for (const n of ["", "-rf", "a/b", "with space", "x".repeat(128)]) {
    await rejectsErrno(dm.create(n, "0 8 zero"), "EINVAL", /Invalid device-mapper name/);
    await rejectsErrno(dm.remove(n), "EINVAL");
    await rejectsErrno(dm.info(n), "EINVAL");
  }
  assert.equal(dm.spawns, 0);
});

async function timeCycle(dm: DeviceMapper, pool: string, rounds: number) {
  const t = { createThin: 0, create: 0, remove: 0, deleteThin: 0 };
  for (let i = 0; i < rounds; i++) {
    const id = 100 + i;
    const name = `${pool}-time${i}`;
    let t0 = performance.now();
    await dm.createThin(pool, id);
    t.createThin += performance.now() - t0;
    t0 = performance.now();
    await dm.create(name, thinTable(pool, id, 4 * MiB));
    t.create += performance.now() - t0;
    t0 = performance.now();
    await dm.remove(name);
    t.remove += performance.now() - t0;
    t0 = performance.now();
    await dm.deleteThin(pool, id);
    t.deleteThin += performance.now() - t0;
  }
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, +(v / rounds).toFixed(2)]));
}

Deno.test("dm ioctl: timing of createThin/create/remove/deleteThin vs dmsetup (printed)", async () => {
  using dm = driver();
  const runner = new DenoCommandRunner();
  const dmsetup = new Dmsetup({ runner });
  await using pool = await createTestPool({ dataMb: 64 });
  const rounds = 20;
  const ioctl = await timeCycle(dm, pool.name, rounds);
  const spawned = await timeCycle(dmsetup, pool.name, rounds);
  console.log(`dm ioctl timing, ms per op over ${rounds} rounds: ioctl ${JSON.stringify(ioctl)}`);
  console.log(
    `dm ioctl timing, ms per op over ${rounds} rounds: dmsetup ${JSON.stringify(spawned)}`,
  );
  assert.equal(dm.spawns, 0);
  assert.equal(runner.spawns, rounds * 4);
  assert.deepEqual(await pool.thinIds(), []);
});

Deno.test("dm ioctl: a suspend that waits for in-flight I/O does not stop the event loop", async () => {
  await using pool = await createTestPool();
  using dm = driver();
  // upper (linear) → lower (a thin device): with lower suspended, a write to upper stays in
  // flight, and suspending upper waits for it until lower is resumed
  const lower = `${pool.name}-lower`;
  const upper = `${pool.name}-upper`;
  await dm.createThin(pool.name, 1);
  await dm.create(lower, thinTable(pool.name, 1, 4 * MiB));
  await dm.create(upper, `0 ${(4 * MiB) / 512} linear /dev/mapper/${lower} 0`);
  try {
    await dm.suspend(lower);
    const write = new Deno.Command("dd", {
      args: ["if=/dev/zero", `of=/dev/mapper/${upper}`, "bs=4k", "count=1", "oflag=direct"],
      stderr: "null",
    }).output();
    await waitInFlight(upper); // the write has reached lower and waits there
    const suspending = dm.suspend(upper).then(() => "suspended");
    const first = await Promise.race([
      suspending,
      new Promise((r) => setTimeout(() => r("timer fired"), 300)),
    ]);
    assert.equal(first, "timer fired", "timers run while the suspend waits in the kernel");
    await dm.resume(lower); // only possible because this thread was not stuck in the ioctl
    assert.equal(await suspending, "suspended");
    await dm.resume(upper);
    assert.equal((await write).code, 0);
  } finally {
    await shTry("dmsetup", "resume", lower);
    await shTry("dmsetup", "resume", upper);
    await shTry("dmsetup", "remove", upper);
    await shTry("dmsetup", "remove", lower);
  }
});

/** Waits until the dm device `name` has a write in flight (`/sys/block/dm-N/inflight`). */
async function waitInFlight(name: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    for await (const entry of Deno.readDir("/sys/block")) {
      if (!entry.name.startsWith("dm-")) continue;
      const dmName = await Deno.readTextFile(`/sys/block/${entry.name}/dm/name`);
      if (dmName.trim() !== name) continue;
      const [, writes] = (await Deno.readTextFile(`/sys/block/${entry.name}/inflight`))
        .trim().split(/\s+/).map(Number);
      if (writes > 0) return;
    }
    if (Date.now() > deadline) throw new Error(`no write in flight on ${name}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
