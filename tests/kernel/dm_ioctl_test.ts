/**
 * The ioctl backend against the real kernel: the cases both backends share
 * (tests/kernel/dm_backend_cases.ts), with zero spawns, and what only this backend does (its
 * control node, its own device nodes, refusing bad input before any ioctl, a suspend that
 * waits in the kernel off the event loop), with a printed timing comparison of the two.
 */
import assert from "node:assert/strict";
import { Dmsetup } from "../../src/dm/dmsetup/dmsetup.ts";
import { DmIoctl, DmIoctlUnavailableError } from "../../src/dm/ioctl/ioctl.ts";
import { mkfs } from "../../src/dm/mkfs.ts";
import { mount, umount } from "../../src/dm/mount.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import { type DeviceMapper, devicePath, thinTable } from "../../src/dm/types.ts";
import { poll } from "../../testing/poll.ts";
import { MiB, registerBackendCases, rejectsErrno } from "./dm_backend_cases.ts";
import { createTestPool, requireKernel, sh, shTry } from "./fixtures.ts";

function driver(): DmIoctl {
  requireKernel();
  return new DmIoctl({ busyAttempts: 3, busyBackoffMs: 20 });
}

registerBackendCases({
  label: "dm ioctl",
  open: driver,
  spawnsPerCommand: 0,
  failed: {
    create: "ioctl DM_DEV_CREATE",
    remove: "ioctl DM_DEV_REMOVE",
    message: "ioctl DM_TARGET_MSG",
  },
  library: /^4\.0\.0-ioctl$/,
  nodeKeptWhileRemovalPending: true,
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

Deno.test("dm ioctl: a missing node directory is made when a node goes in it, then reused", async () => {
  requireKernel();
  await using pool = await createTestPool({ dataMb: 16 });
  const dir = await Deno.makeTempDir({ prefix: "dmioctl-nodes-" });
  const devDir = `${dir}/a/b`; // missing: made by the first create (mknod answered ENOENT)
  using dm = new DmIoctl({ devDir, controlPath: "/dev/mapper/control" });
  try {
    for (const id of [1, 2]) {
      await dm.createThin(pool.name, id);
      await dm.create(`${pool.name}-n${id}`, thinTable(pool.name, id, 4 * MiB));
      assert.ok((await Deno.stat(`${devDir}/${pool.name}-n${id}`)).isBlockDevice);
    }
  } finally {
    for (const id of [1, 2]) await dm.remove(`${pool.name}-n${id}`).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
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

Deno.test("dm ioctl: a NUL in a message and unparsable tables are refused before any ioctl", async () => {
  using dm = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  await rejectsErrno(dm.message(pool.name, 0, "create_thin\u00009"), "EINVAL");
  await rejectsErrno(
    dm.create(`${pool.name}-bad`, "zero 8"),
    "EINVAL",
    /Invalid device-mapper table/,
  );
  await rejectsErrno(dm.create(`${pool.name}-bad`, ""), "EINVAL");
  assert.equal(await dm.info(`${pool.name}-bad`), undefined);
  assert.deepEqual(await pool.thinIds(), []);
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
  const writesInFlight = async () => {
    for await (const entry of Deno.readDir("/sys/block")) {
      if (!entry.name.startsWith("dm-")) continue;
      const dmName = await Deno.readTextFile(`/sys/block/${entry.name}/dm/name`);
      if (dmName.trim() !== name) continue;
      const [, writes] = (await Deno.readTextFile(`/sys/block/${entry.name}/inflight`))
        .trim().split(/\s+/).map(Number);
      return writes;
    }
    return 0;
  };
  await poll(async () => await writesInFlight() > 0, `a write in flight on ${name}`, {
    timeoutMs: 10_000,
    intervalMs: 20,
  });
}
