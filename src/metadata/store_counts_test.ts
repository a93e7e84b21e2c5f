import assert from "node:assert/strict";
import { join } from "node:path";
import { type DeviceState, type MetadataStore, openStore } from "./store.ts";
import type { Kind } from "../snapshots/types.ts";

const T = { seconds: 1_700_000_000, nanos: 0 };

function device(store: MetadataStore, thinId: number, state: DeviceState, templateKey?: string) {
  store.insertDevice({
    thinId,
    name: `p-${thinId}`,
    role: templateKey ? "template" : "snapshot",
    state,
    originId: null,
    sizeBytes: 1 << 20,
    fsType: "ext4",
    templateKey: templateKey ?? null,
  });
}

function snapshot(store: MetadataStore, key: string, kind: Kind, thinId: number, ready = true) {
  const id = store.insertSnapshot({
    key,
    kind,
    state: "creating",
    parentId: null,
    thinId,
    fsType: "ext4",
    sizeBytes: 1 << 20,
    created: T,
    labels: {},
  });
  if (ready) store.setSnapshotReady(id);
}

Deno.test("store counts: ready snapshots by kind, templates, thin ids; devices by state in ranges", () => {
  const store = openStore(join(Deno.makeTempDirSync(), "metadata.db"));
  try {
    assert.deepEqual(store.counts(), {
      snapshots: { active: 0, view: 0, committed: 0 },
      templates: 0,
      thinIdsAllocated: 0,
      maxThinId: 0,
    });
    assert.deepEqual(store.countDevices(0, 100), {
      creating: 0,
      ready: 0,
      deleting: 0,
      foreign: 0,
    });
    for (let i = 0; i < 6; i++) store.allocateThinId();
    device(store, 1, "ready", "ext4:1048576:");
    device(store, 2, "ready");
    device(store, 3, "ready");
    device(store, 4, "deleting");
    device(store, 5, "creating");
    device(store, 6, "foreign");
    snapshot(store, "a", "active", 2);
    snapshot(store, "v", "view", 3);
    snapshot(store, "c1", "committed", 2);
    snapshot(store, "c2", "committed", 3);
    snapshot(store, "half", "active", 5, false); // a Prepare in progress: not counted
    assert.deepEqual(store.counts(), {
      snapshots: { active: 1, view: 1, committed: 2 },
      templates: 1,
      thinIdsAllocated: 6,
      maxThinId: 6,
    });
    assert.deepEqual(store.countDevices(0, 6), { creating: 1, ready: 3, deleting: 1, foreign: 1 });
    // a range: ids 3 and 4 only
    assert.deepEqual(store.countDevices(2, 4), { creating: 0, ready: 1, deleting: 1, foreign: 0 });
  } finally {
    store.close();
  }
});
