import assert from "node:assert/strict";
import { join } from "node:path";
import { MetadataError, openStore } from "./store.ts";
import { DatabaseSync } from "node:sqlite";

function tempDb(): string {
  return join(Deno.makeTempDirSync(), "metadata.db");
}

const T1 = { seconds: 1_700_000_000, nanos: 123_456_789 };

Deno.test("store: committed thin id allocations survive reopen; a rolled-back one is not consumed", () => {
  const path = tempDb();
  const store = openStore(path);
  assert.equal(store.allocateThinId(), 1);
  assert.throws(() =>
    store.transaction(() => {
      store.allocateThinId(); // rolled back with the failing transaction...
      throw new Error("boom");
    })
  );
  // ...so the counter did not move: but nothing used id 2 either, which is fine.
  assert.equal(store.allocateThinId(), 2);
  store.close();
  const again = openStore(path);
  assert.equal(again.allocateThinId(), 3);
  again.close();
});

Deno.test("store: snapshot round-trip keeps nanosecond timestamps and labels", () => {
  const store = openStore(tempDb());
  store.insertDevice({
    thinId: 1,
    name: "p-dms-1",
    role: "snapshot",
    state: "creating",
    originId: null,
    sizeBytes: 1 << 20,
    fsType: "ext4",
    templateKey: null,
  });
  const id = store.insertSnapshot({
    key: "ns/1/base",
    kind: "active",
    state: "creating",
    parentId: null,
    thinId: 1,
    fsType: "ext4",
    sizeBytes: 1 << 20,
    created: T1,
    labels: { a: "1", empty: "" },
  });
  const s = store.getSnapshot("ns/1/base")!;
  assert.equal(s.id, id);
  assert.deepEqual(s.created, T1);
  assert.deepEqual(s.updated, T1);
  assert.deepEqual(s.labels, { a: "1" });
  assert.equal(s.kind, "active");
  assert.equal(s.parentKey, "");
  assert.deepEqual(store.listSnapshots(), []); // still creating
  store.setSnapshotReady(id);
  assert.equal(store.listSnapshots().length, 1);
  const T2 = { seconds: T1.seconds + 1, nanos: 1 };
  store.commitSnapshot(id, { name: "ns/2/layer", labels: { b: "2" }, time: T2, usageBytes: 42 });
  const c = store.getSnapshot("ns/2/layer")!;
  assert.equal(c.kind, "committed");
  assert.deepEqual(c.created, T2);
  assert.deepEqual(c.updated, T2);
  assert.deepEqual(c.labels, { b: "2" });
  assert.equal(c.usageBytes, 42);
  assert.equal(store.getSnapshot("ns/1/base"), undefined);
  store.close();
  store.close(); // idempotent
});

Deno.test("store: keys are unique and parents cannot be deleted under children", () => {
  const store = openStore(tempDb());
  const dev = (thinId: number) =>
    store.insertDevice({
      thinId,
      name: `p-dms-${thinId}`,
      role: "snapshot",
      state: "ready",
      originId: null,
      sizeBytes: 1,
      fsType: "ext4",
      templateKey: null,
    });
  dev(1);
  dev(2);
  const base = {
    kind: "committed" as const,
    state: "ready" as const,
    fsType: "ext4",
    sizeBytes: 1,
    created: T1,
    labels: {},
  };
  const p = store.insertSnapshot({ ...base, key: "p", parentId: null, thinId: 1 });
  assert.throws(() => store.insertSnapshot({ ...base, key: "p", parentId: null, thinId: 2 }));
  const c = store.insertSnapshot({ ...base, key: "c", parentId: p, thinId: 2 });
  assert.equal(store.hasChildren(p), true);
  assert.equal(store.getSnapshot("c")!.parentKey, "p");
  assert.throws(() => store.deleteSnapshot(p));
  store.deleteSnapshot(c);
  store.deleteSnapshot(p);
  assert.deepEqual(store.listSnapshots(), []);
  store.close();
});

Deno.test("store: refuses a database from a newer schema", () => {
  const path = tempDb();
  const db = new DatabaseSync(path);
  db.exec("PRAGMA user_version = 99");
  db.close();
  assert.throws(() => openStore(path), MetadataError);
});

Deno.test("store: a second process cannot open a database in use", async () => {
  const path = tempDb();
  const store = openStore(path);
  const code = `
    import { openStore } from ${JSON.stringify(new URL("./store.ts", import.meta.url).href)};
    try { openStore(${JSON.stringify(path)}); console.log("opened"); }
    catch (e) { console.log(e.name + ": " + e.message); }
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", code],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, /MetadataError: .*in use by another process/);
  store.close();
  const after = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", code],
    stdout: "piped",
  }).output();
  assert.match(new TextDecoder().decode(after.stdout), /opened/);
});
