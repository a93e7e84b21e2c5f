/**
 * Reconciliation at start against the real kernel, for states only a crash leaves behind.
 */
import assert from "node:assert/strict";
import { requireKernel, sh } from "./fixtures.ts";
import { createTestSnapshotter, mountAll, unmount } from "./snapshot_fixtures.ts";

/** The `State:` line of `dmsetup info` for `name`: ACTIVE or SUSPENDED. */
async function state(name: string): Promise<string> {
  return /^State:\s+(\S+)/m.exec(await sh("dmsetup", "info", name))?.[1] ?? "?";
}

Deno.test("reconcile: a device of ours left suspended by a crash is resumed; another owner's is not", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  const s = t.snapshotter;
  const dir = await mountAll(await s.prepare("work", ""));
  const foreign = `${t.pool.name}-dms-999`;
  try {
    await Deno.writeTextFile(`${dir}/file`, "before");
    // committed while mounted: the device stays active until unmounted (deferred removal),
    // and a child of it is snapshotted between a suspend and a resume of it
    await s.commit("base", "work");
    const origin = s.pool.deviceName(s.pool.store.getSnapshot("base")!.thinId);
    // another instance's device on the same pool, suspended in the middle of its own snapshot
    await sh("dmsetup", "message", t.pool.name, "0", "create_thin 999");
    await sh("dmsetup", "create", foreign, "--table", `0 8192 thin /dev/mapper/${t.pool.name} 999`);

    // the process dies between the suspend and the resume of a snapshot of "base"
    await s.close();
    await sh("dmsetup", "suspend", origin);
    await sh("dmsetup", "suspend", foreign);
    assert.equal(await state(origin), "SUSPENDED");

    const again = await t.reopen();
    assert.deepEqual(again.lastReconcile!.resumed, [origin]);
    assert.ok(again.lastReconcile!.foreign.includes(foreign), JSON.stringify(again.lastReconcile));
    assert.equal(await state(origin), "ACTIVE", "our origin is resumed");
    assert.equal(await state(foreign), "SUSPENDED", "another owner's device is left alone");

    // the mounted filesystem works again, and a child of it sees its content
    await Deno.writeTextFile(`${dir}/file2`, "after");
    const child = await mountAll(await again.prepare("child", "base"));
    try {
      assert.equal(await Deno.readTextFile(`${child}/file`), "before");
    } finally {
      await unmount(child);
    }
  } finally {
    await unmount(dir);
    await sh("dmsetup", "resume", foreign).catch(() => {});
    await sh("dmsetup", "remove", foreign).catch(() => {});
    await sh("dmsetup", "message", t.pool.name, "0", "delete 999").catch(() => {});
  }
});
