/**
 * Failures in the middle of device creation leave no thin device behind, and an unhealthy
 * pool gives a clear error. Faults are injected around the real `dmsetup` driver; the
 * pool, the kernel and the checks (`dmsetup ls`, the pool's thin ids) are real.
 */
import assert from "node:assert/strict";
import { createTestPool, dmNames, requireKernel, sh, shTry } from "./fixtures.ts";
import { realStack, testSettings, thinDevicesOn } from "./snapshot_fixtures.ts";
import { openSnapshotter } from "../../src/snapshotter.ts";
import type { DeviceMapper } from "../../src/dm/types.ts";
import type { Formatter } from "../../src/pool/thin_pool.ts";
import { errorKind } from "../../src/errors.ts";

/** The real driver, with `create` (activation) failing while `failCreate` is set. */
function failingActivation(dm: DeviceMapper, state: { failCreate: boolean }): DeviceMapper {
  return new Proxy(dm, {
    get(target, prop) {
      if (prop === "create" && state.failCreate) {
        return () => Promise.reject(new Error("injected: activation failed"));
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("pool failure: activation failing after create_snap leaves no thin device", async () => {
  requireKernel();
  await using pool = await createTestPool();
  const stack = realStack();
  const state = { failCreate: false };
  const s = await openSnapshotter({
    ...testSettings(pool),
    ...stack,
    dm: failingActivation(stack.dm, state),
  });
  try {
    await s.prepare("base-tmp", "");
    await s.commit("base", "base-tmp");
    const idsBefore = await pool.thinIds();
    const namesBefore = await dmNames();
    state.failCreate = true;
    await assert.rejects(s.prepare("child", "base"), /activation failed/);
    await assert.rejects(s.view("view", "base"), /activation failed/);
    state.failCreate = false;
    assert.deepEqual(await pool.thinIds(), idsBefore, "no thin id left behind");
    assert.deepEqual(await dmNames(), namesBefore, "no dm device left behind");
    assert.equal(s.pool.store.listDevices("creating").length, 0);
    // the keys are free again and the next attempt works
    await s.prepare("child", "base");
    assert.deepEqual((await s.list([])).map((i) => i.name).sort(), ["base", "child"]);
  } finally {
    await s.close();
  }
});

Deno.test("pool failure: mkfs failing while building the template leaves no thin device", async () => {
  requireKernel();
  await using pool = await createTestPool();
  const stack = realStack();
  const broken: Formatter = {
    ...stack.formatter,
    mkfs: () => Promise.reject(new Error("injected: mkfs failed")),
  };
  const s = await openSnapshotter({ ...testSettings(pool), ...stack, formatter: broken });
  try {
    const err = await s.prepare("a", "").then(() => undefined, (e) => e);
    assert.match(String(err), /mkfs failed/);
    assert.deepEqual(await pool.thinIds(), []);
    assert.deepEqual(await thinDevicesOn(pool.name), []);
    assert.deepEqual(s.pool.store.listDevices(), []);
    await assert.rejects(s.stat("a"), /does not exist/);
  } finally {
    await s.close();
  }
});

Deno.test("pool failure: a pool that runs out of space gives a clear Unavailable error", async () => {
  requireKernel();
  // 16 MiB of data: the template (a few MiB of ext4 metadata) fits, 32 MiB of writes do not.
  await using pool = await createTestPool({ dataMb: 16, errorIfNoSpace: true });
  const s = await openSnapshotter({ ...testSettings(pool), ...realStack() });
  try {
    const mounts = await s.prepare("a", "");
    const fill = await shTry(
      "dd",
      "if=/dev/zero",
      `of=${mounts[0].source}`,
      "bs=1M",
      "count=32",
      "oflag=direct",
    );
    assert.notEqual(fill.code, 0, "writing past the pool's size fails");
    assert.match(await sh("dmsetup", "status", pool.name), / out_of_data_space /);
    // the health check uses the last status read (no spawn on Prepare's path); read it now
    assert.equal((await s.poolStatus()).mode, "out_of_data_space");
    const err = await s.prepare("b", "").then(() => undefined, (e) => e);
    assert.ok(err, "prepare on a full pool fails");
    assert.equal(errorKind(err), "unavailable", String(err));
    assert.match(String(err), /out of data space/);
    // freeing space makes the pool usable again
    await s.remove("a");
    await s.prepare("b", "");
  } finally {
    await s.close();
  }
});
