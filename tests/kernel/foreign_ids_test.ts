/**
 * Another owner's thin devices on a shared pool are never deleted: not by the undo of a create
 * that failed with EEXIST, and not by the reconciliation of a create a crash interrupted, whose
 * id another owner holds. The other owner here is the pool's raw interface (`dmsetup message`),
 * as any other user of an LVM pool would be.
 */
import assert from "node:assert/strict";
import { errorKind } from "../../src/util/errors.ts";
import { requireKernel, sh } from "./fixtures.ts";
import { createTestSnapshotter } from "./snapshot_fixtures.ts";

/** The thin ids in the pool, from its metadata (`thin_ls` on a metadata snapshot). */
async function poolIds(pool: { thinIds(): Promise<number[]> }): Promise<number[]> {
  return (await pool.thinIds()).sort((a, b) => a - b);
}

Deno.test("foreign ids: a create that keeps failing with EEXIST deletes none of the ids it found taken", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  await t.snapshotter.close();
  // another owner holds ids 1..70: more than the 64 attempts a create makes before giving up
  for (let id = 1; id <= 70; id++) {
    await sh("dmsetup", "message", t.pool.name, "0", `create_thin ${id}`);
  }
  const s = await t.reopen();
  const err = await s.prepare("k", "").then(() => undefined, (e) => e);
  assert.ok(err, "the Prepare fails: every id it tries is taken");
  assert.notEqual(errorKind(err), "already_exists", String(err));
  assert.deepEqual(
    (await poolIds(t.pool)).slice(0, 70),
    Array.from({ length: 70 }, (_, i) => i + 1),
    "every id of the other owner is still in the pool",
  );
  assert.equal((await s.stat("k").catch((e) => e)).name, "NotFoundError");
  // the ids found taken are never tried again: the next Prepare works past them
  for (let id = 71; id <= 80; id++) {
    await sh("dmsetup", "message", t.pool.name, "0", `create_thin ${id}`);
  }
  await s.prepare("k", "");
  assert.ok((await poolIds(t.pool)).slice(0, 80).every((id, i) => id === i + 1));
});

Deno.test("foreign ids: an interrupted create whose id another owner holds is left alone at start", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  const s = t.snapshotter;
  await s.prepare("mine", "");
  const store = s.pool.store;
  const next = store.nextThinId();
  // the state a crash leaves: a row `creating` for an id reserved, whose create_thin never
  // went through because another owner took that id at the same moment
  store.transaction(() => {
    const device = s.pool.reserve({
      origin: { kind: "empty" },
      sizeBytes: 8 << 20,
      fsType: "ext4",
    });
    assert.equal(device.thinId, next);
  });
  await s.close();
  await sh("dmsetup", "message", t.pool.name, "0", `create_thin ${next}`);
  const other = `${t.pool.name}-other`;
  await sh(
    "dmsetup",
    "create",
    other,
    "--table",
    `0 16384 thin /dev/mapper/${t.pool.name} ${next}`,
  );
  try {
    await sh(
      "dd",
      "if=/dev/urandom",
      `of=/dev/mapper/${other}`,
      "bs=4096",
      "count=16",
      "oflag=direct",
    );
    const before = await sh("sha256sum", `/dev/mapper/${other}`);

    const again = await t.reopen();
    assert.ok((await poolIds(t.pool)).includes(next), "the other owner's id is still there");
    assert.equal(await sh("sha256sum", `/dev/mapper/${other}`), before, "with its data");
    assert.deepEqual(again.lastReconcile!.unproven, [next]);
    assert.equal(again.pool.store.getDevice(next)?.state, "foreign", "never reused");
    await again.prepare("after", "");
    assert.notEqual(again.pool.store.getSnapshot("after")!.thinId, next);
  } finally {
    await sh("dmsetup", "remove", other).catch(() => {});
  }
});
