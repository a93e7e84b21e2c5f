import assert from "node:assert/strict";
import { join } from "node:path";
import { openSnapshotter, type SnapshotterOptions } from "./snapshotter.ts";
import { deviceUuidPrefix } from "./open_metadata.ts";
import { thinTable } from "../dm/types.ts";
import { errorKind } from "../util/errors.ts";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import { memorySnapshotterOptions } from "../../testing/memory_snapshotter_options.ts";

const POOL = "ompool";
const MiB = 1024 * 1024;

/** A pool shared by instances with roots under one directory. */
function sharedPool() {
  const dm = new MemoryDeviceMapper();
  dm.createPool(POOL, { dataBlocks: 4096 });
  const dir = Deno.makeTempDirSync({ prefix: "open_metadata_test_" });
  const options = (root: string, extra: Partial<SnapshotterOptions> = {}): SnapshotterOptions =>
    memorySnapshotterOptions({ rootPath: join(dir, root), poolName: POOL, ...extra, dm });
  return { dm, dir, options };
}

/** The refusal for `root`'s database, `reason`, with `devices` listed. */
function refusal(path: string, reason: string, devices: string): string {
  return `Cannot open metadata database "${path}": it is ${reason}, but pool "${POOL}" has ` +
    `${devices}: starting empty would hide their snapshots from containerd. Restore ` +
    `metadata.db from a backup, or start empty anyway with --allow-new-metadata ` +
    `(allow_new_metadata = true): those devices are then left alone`;
}

Deno.test("new metadata: refused while devices of this root are active (missing or empty file); another root starts; the flag starts empty", async () => {
  const { dm, dir, options } = sharedPool();
  try {
    const a = await openSnapshotter(options("a"));
    await a.prepare("x", "");
    const thinId = a.pool.store.getSnapshot("x")!.thinId;
    const device = a.pool.deviceName(thinId);
    assert.equal(
      (await dm.info(device))?.uuid,
      `${deviceUuidPrefix(join(dir, "a"), POOL)}${thinId}`,
      "activated with this root's UUID",
    );
    await a.close();
    const path = join(dir, "a", "metadata.db");
    assert.deepEqual([...Deno.readDirSync(join(dir, "a"))].map((e) => e.name), ["metadata.db"]);

    // the database is lost: missing, then empty
    Deno.removeSync(path);
    const one = `1 active device of this root_path (${device})`;
    await assert.rejects(openSnapshotter(options("a")), (err: unknown) => {
      assert.equal((err as Error).message, refusal(path, "missing", one));
      assert.equal(errorKind(err), "failed_precondition");
      return true;
    });
    assert.throws(() => Deno.statSync(path), Deno.errors.NotFound, "nothing was created");
    Deno.writeFileSync(path, new Uint8Array(0));
    await assert.rejects(openSnapshotter(options("a")), (err: unknown) => {
      assert.equal((err as Error).message, refusal(path, "empty", one));
      return true;
    });
    assert.equal(Deno.statSync(path).size, 0, "nothing was written");
    assert.ok(dm.hasDevice(device), "the device is untouched");

    // another instance (another root_path) on the same pool starts with a new database
    const b = await openSnapshotter(options("b"));
    assert.ok(b.lastReconcile!.foreign.includes(device), JSON.stringify(b.lastReconcile));
    await b.prepare("y", "");
    await b.close();

    // the operator says so: a starts empty and leaves its old device alone
    const a2 = await openSnapshotter(options("a", { allowNewMetadata: true }));
    assert.deepEqual(await a2.list(), []);
    assert.ok(a2.lastReconcile!.foreign.includes(device), JSON.stringify(a2.lastReconcile));
    assert.ok(dm.hasDevice(device));
    await a2.prepare("z", "");
    await a2.close();
    // from now on the database exists: no flag needed
    await (await openSnapshotter(options("a"))).close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("new metadata: an active device named like ours without a UUID cannot be told apart and counts", async () => {
  const { dm, dir, options } = sharedPool();
  try {
    const legacy = `${POOL}-dms-500`;
    await dm.createThin(POOL, 500);
    await dm.create(legacy, thinTable(POOL, 500, 8 * MiB)); // activated without a UUID
    await dm.createThin(POOL, 501);
    await dm.create(`${POOL}-dms-501`, thinTable(POOL, 501, 8 * MiB), {
      uuid: `${deviceUuidPrefix(join(dir, "other"), POOL)}501`, // another root's
    });
    await assert.rejects(
      openSnapshotter(options("c")),
      (err: unknown) => {
        assert.equal(
          (err as Error).message,
          refusal(
            join(dir, "c", "metadata.db"),
            "missing",
            `1 active device of this root_path (${legacy} (no UUID))`,
          ),
        );
        return true;
      },
    );
    await (await openSnapshotter(options("c", { allowNewMetadata: true }))).close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("device UUID prefix: per absolute root_path and pool, short enough for dm", () => {
  const p = deviceUuidPrefix("/var/lib/devmapper-snapshotter", "pool");
  assert.match(p, /^DMSNAP-[0-9a-f]{16}-$/);
  assert.equal(deviceUuidPrefix("/var/lib/devmapper-snapshotter/", "pool"), p);
  assert.notEqual(deviceUuidPrefix("/var/lib/devmapper-snapshotter", "pool2"), p);
  assert.notEqual(deviceUuidPrefix("/var/lib/other", "pool"), p);
  assert.ok(`${p}${2 ** 24}`.length <= 128);
});
