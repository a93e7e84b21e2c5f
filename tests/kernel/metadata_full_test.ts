/**
 * The metadata database on a full filesystem, for real: `root_path` is a small tmpfs filled up
 * with a ballast file. Prepare, Commit, Update and Remove answer ResourceExhausted naming the
 * database, its filesystem and SQLITE_FULL, and change nothing; a Prepare whose last write (and
 * the write of its undo) finds the filesystem full deletes its device at once and leaves rows
 * no call sees; once the ballast is gone every call works, and nothing is left half-made (no
 * `creating` rows, the pool's thin ids are exactly the device rows).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type DevmapperSnapshotter, openSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import type { DeviceMapper } from "../../src/dm/types.ts";
import { errorKind, NotFoundError } from "../../src/util/errors.ts";
import { createTestPool, requireKernel, sh, type TestPool } from "./fixtures.ts";
import { realStack, testSettings } from "./snapshot_fixtures.ts";

/** Fills the filesystem holding `path` with the file `path`, to the last byte. */
function fill(path: string): void {
  using file = Deno.openSync(path, { write: true, create: true });
  for (const size of [1 << 20, 4096, 1]) {
    const chunk = new Uint8Array(size).fill(0xaa);
    try {
      for (;;) file.writeSync(chunk);
    } catch (err) {
      if (!(err instanceof Error) || !/No space left/.test(err.message)) throw err;
    }
  }
}

/** No row `creating`, and the pool's thin ids are exactly the device rows. */
async function assertNothingHalfMade(s: DevmapperSnapshotter, pool: TestPool): Promise<void> {
  const store = s.pool.store;
  assert.deepEqual(store.listSnapshots("creating").map((r) => r.key), [], "creating snapshots");
  const rows = store.listDevices().filter((d) => d.state !== "foreign");
  assert.deepEqual(rows.filter((d) => d.state !== "ready"), [], "device rows not ready");
  assert.deepEqual(await pool.thinIds(), rows.map((d) => d.thinId), "pool = device rows");
}

/** `dm` calling `hook` once right after the next successful `create` (an activation). */
function hookedDm(dm: DeviceMapper): { dm: DeviceMapper; afterNextCreate(hook: () => void): void } {
  let next: (() => void) | undefined;
  const hooked = new Proxy(dm, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop === "create") {
        return async (...args: Parameters<DeviceMapper["create"]>) => {
          await target.create(...args);
          const hook = next;
          next = undefined;
          hook?.();
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { dm: hooked, afterNextCreate: (hook) => next = hook };
}

Deno.test("metadata db full: Prepare, Commit, Update and Remove say so and change nothing; all work once space is back", async () => {
  requireKernel();
  await using pool = await createTestPool({ dataMb: 256 });
  const root = join(pool.dir, "root");
  await Deno.mkdir(root);
  await sh("mount", "-t", "tmpfs", "-o", "size=2m,mode=0750", "tmpfs", root);
  const ballast = join(root, "ballast");
  const db = join(root, "metadata.db");
  const stack = realStack();
  const { dm, afterNextCreate } = hookedDm(stack.dm);
  let s: DevmapperSnapshotter | undefined;
  try {
    s = await openSnapshotter({ ...testSettings(pool, { rootPath: root }), ...stack, dm });
    await s.prepare("base-tmp", "");
    await s.commit("base", "base-tmp");
    await s.prepare("work", "base", { a: "1" });
    const workDevice = s.pool.deviceName(s.pool.store.getSnapshot("work")!.thinId);
    const before = await s.list();

    fill(ballast);
    const full = (what: string) => (err: unknown) => {
      assert.equal(
        (err as Error).message,
        `${what}: the metadata database ${db} cannot be written: its filesystem is full ` +
          `(SQLITE_FULL): free space on ${root}`,
      );
      assert.equal(errorKind(err), "resource_exhausted");
      return true;
    };
    await assert.rejects(s.prepare("k", "base"), full(`cannot create active snapshot "k"`));
    await assert.rejects(s.commit("layer", "work"), full(`cannot commit snapshot "work"`));
    await assert.rejects(
      s.update({ name: "work", labels: { a: "2" } }, ["labels.a"]),
      full(`cannot update snapshot "work"`),
    );
    await assert.rejects(s.remove("work"), full(`cannot remove snapshot "work"`));
    await assert.rejects(s.stat("k"), NotFoundError);
    await assert.rejects(s.stat("layer"), NotFoundError);
    assert.deepEqual(await s.list(), before, "nothing changed");
    assert.match(await sh("dmsetup", "info", workDevice), /State:\s+ACTIVE/);
    await assertNothingHalfMade(s, pool);

    await Deno.remove(ballast);
    await s.update({ name: "work", labels: { a: "2" } }, ["labels.a"]);
    await s.commit("layer", "work");
    await s.prepare("k", "layer");
    await s.remove("k");
    await s.remove("layer");
    assert.deepEqual((await s.list()).map((i) => i.name), ["base"]);
    await assertNothingHalfMade(s, pool);

    // the filesystem fills between the new device's activation and its rows turning ready:
    // the Prepare and the write of its undo fail; the device is deleted at once
    const idsBefore = await pool.thinIds();
    afterNextCreate(() => fill(ballast));
    await assert.rejects(s.prepare("k2", "base"), full(`cannot create active snapshot "k2"`));
    assert.deepEqual(await pool.thinIds(), idsBefore, "the new device is gone from the pool");
    assert.equal(s.pool.store.getSnapshot("k2")?.state, "creating", "its rows could not go");
    await assert.rejects(s.stat("k2"), NotFoundError);
    await assert.rejects(s.prepare("k2", "base"), full(`cannot create active snapshot "k2"`));
    await Deno.remove(ballast);
    await s.prepare("k2", "base"); // undoes the leftover rows first
    assert.equal((await s.stat("k2")).kind, "active");
    await assertNothingHalfMade(s, pool);
  } finally {
    await s?.close();
    await sh("umount", root);
  }
});
