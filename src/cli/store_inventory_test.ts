import assert from "node:assert/strict";
import { join } from "node:path";
import { DEVICE_COUNT_SLICE, storeInventory } from "./snapshotter_factory.ts";
import { openStore } from "../metadata/store.ts";

Deno.test("store inventory: device rows counted a slice at a time, calls served in between", async () => {
  const store = openStore(join(Deno.makeTempDirSync(), "metadata.db"));
  try {
    const n = 2 * DEVICE_COUNT_SLICE + 10;
    store.transaction(() => {
      for (let id = 1; id <= n; id++) {
        store.allocateThinId();
        store.insertDevice({
          thinId: id,
          name: `p-${id}`,
          role: "snapshot",
          state: id % 100 === 0 ? "deleting" : "ready",
          originId: null,
          sizeBytes: 1,
          fsType: "ext4",
          templateKey: null,
        });
      }
    });
    let counted = false;
    const counting = storeInventory(store).finally(() => (counted = true));
    // what another call would do meanwhile: it gets its turn before the count ends
    const countedAtOtherCall = await new Promise((resolve) => setTimeout(() => resolve(counted)));
    const inventory = await counting;
    assert.equal(countedAtOtherCall, false);
    const deleting = Math.floor(n / 100);
    assert.deepEqual(inventory.thinDevices, {
      creating: 0,
      ready: n - deleting,
      deleting,
      foreign: 0,
    });
    assert.equal(inventory.thinIdsAllocated, n);
    assert.deepEqual(inventory.snapshots, { active: 0, view: 0, committed: 0 });
  } finally {
    store.close();
  }
});
