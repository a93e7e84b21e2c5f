import assert from "node:assert/strict";
import { join } from "node:path";
import {
  LIST_ENTRIES_SQL,
  LIST_MESSAGE_SQL,
  LIST_PAGE_SQL,
  listedInfo,
  MetadataError,
  MetadataStore,
  mountPointOf,
  NoMetadataError,
  openStore,
} from "./store.ts";
import { DatabaseSync } from "node:sqlite";
import { errorKind } from "../util/errors.ts";
import { loadSnapshotsProto, type WireListResponse } from "../server/proto.ts";
import { parseStraceSummary, straceAvailable } from "../../bench/syscall_count.ts";
import { infoFromWire } from "../server/convert.ts";

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

// ------------------------------------------------------------- failures of the database itself

/** Deterministic pseudo-random bytes (a 32-bit LCG): damage that is the same on every run. */
function garbage(n: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

/** A store over a connection the test holds too (to set pragmas the store never sets). */
function storeWithHandle(): { store: MetadataStore; db: DatabaseSync; path: string } {
  const path = tempDb();
  openStore(path).close(); // created and migrated
  const db = new DatabaseSync(path);
  db.exec("PRAGMA foreign_keys = ON");
  return { store: new MetadataStore(db, path), db, path };
}

const DEVICE = {
  role: "snapshot" as const,
  state: "creating" as const,
  originId: null,
  sizeBytes: 1 << 20,
  fsType: "ext4",
  templateKey: null,
};

Deno.test("store: a transaction SQLite rolled back itself (database full) throws the cause, named, and leaves nothing", () => {
  const { store, db, path } = storeWithHandle();
  const pages = Number(
    (db.prepare("PRAGMA page_count").get() as { page_count: number }).page_count,
  );
  db.exec(`PRAGMA max_page_count = ${pages}`); // no page more: SQLITE_FULL, as on a full disk
  const write = () =>
    store.transaction(() => {
      const thinId = store.allocateThinId();
      store.insertDevice({ ...DEVICE, thinId, name: `p-dms-${thinId}` });
      store.insertSnapshot({
        key: "k",
        kind: "active",
        state: "creating",
        parentId: null,
        thinId,
        fsType: "ext4",
        sizeBytes: 1 << 20,
        created: T1,
        labels: { big: "x".repeat(20_000) }, // overflow pages: the database must grow
      });
    });
  assert.throws(write, (err: unknown) => {
    assert.ok(err instanceof MetadataError, String(err));
    assert.equal(
      err.message,
      `the metadata database ${path} cannot be written: its filesystem is full (SQLITE_FULL): ` +
        `free space on ${mountPointOf(path)}`,
    );
    assert.equal(err.kind, "resource_exhausted");
    assert.equal(errorKind(err), "resource_exhausted");
    assert.equal(err.sqlite, "SQLITE_FULL");
    return true;
  });
  assert.equal(db.isTransaction, false);
  assert.equal(store.nextThinId(), 1, "the allocation went with the transaction");
  assert.deepEqual(store.listDevices(), []);
  assert.equal(store.getSnapshot("k"), undefined);
  db.exec("PRAGMA max_page_count = 1000000"); // space is back
  write();
  assert.equal(store.getSnapshot("k")?.labels.big.length, 20_000);
  store.close();
});

Deno.test("store: a COMMIT that fails with the transaction still open is rolled back and its cause thrown", () => {
  const { store, db } = storeWithHandle();
  assert.throws(
    () =>
      store.transaction(() => {
        db.exec("PRAGMA defer_foreign_keys = ON"); // the missing device is found at COMMIT
        store.insertSnapshot({
          key: "orphan",
          kind: "active",
          state: "ready",
          parentId: null,
          thinId: 99,
          fsType: "ext4",
          sizeBytes: 1,
          created: T1,
          labels: {},
        });
      }),
    /FOREIGN KEY constraint failed/,
  );
  assert.equal(db.isTransaction, false);
  assert.equal(store.getSnapshot("orphan"), undefined);
  assert.equal(store.allocateThinId(), 1, "the store works on");
  store.close();
});

Deno.test("store: a database made read-only refuses writes with its reason; reads go on", () => {
  const { store, db, path } = storeWithHandle();
  store.insertDevice({ ...DEVICE, state: "ready", thinId: 1, name: "p-dms-1" });
  db.exec("PRAGMA query_only = ON");
  assert.throws(() => store.setDeviceState(1, "deleting"), (err: unknown) => {
    assert.ok(err instanceof MetadataError);
    assert.equal(
      err.message,
      `the metadata database ${path} cannot be written: it is read-only (SQLITE_READONLY: ` +
        `attempt to write a readonly database): make ${
          mountPointOf(path)
        } writable (the kernel remounts a filesystem read-only after an I/O error: see dmesg) ` +
        `and the file writable by the snapshotter`,
    );
    assert.equal(err.kind, "unavailable");
    return true;
  });
  assert.equal(store.getDevice(1)?.state, "ready");
  store.close();
});

Deno.test("store: deleting a device takes the creating snapshot rows that use it, in one write", () => {
  const { store } = storeWithHandle();
  store.insertDevice({ ...DEVICE, thinId: 1, name: "p-dms-1" });
  store.insertSnapshot({
    key: "k",
    kind: "active",
    state: "creating",
    parentId: null,
    thinId: 1,
    fsType: "ext4",
    sizeBytes: 1,
    created: T1,
    labels: { a: "1" },
  });
  store.deleteDevice(1);
  assert.equal(store.getSnapshot("k"), undefined);
  assert.equal(store.getDevice(1), undefined);
  store.close();
});

Deno.test("store: the mount point of a path is the longest mount point holding it", () => {
  assert.equal(mountPointOf("/proc/self/status"), "/proc");
  assert.equal(mountPointOf("/metadata.db"), "/");
});

/** A database with some content (deterministic, so its damage is too), closed. */
function populatedDb(): { path: string; bytes: Uint8Array } {
  const path = tempDb();
  const store = openStore(path);
  store.transaction(() => {
    for (let i = 1; i <= 200; i++) {
      store.insertDevice({ ...DEVICE, state: "ready", thinId: i, name: `pool-dms-${i}` });
      store.insertSnapshot({
        key: `k8s.io/${i}/sha256:${String(i).padStart(64, "0")}`,
        kind: "committed",
        state: "ready",
        parentId: null,
        thinId: i,
        fsType: "ext4",
        sizeBytes: 10 << 30,
        created: T1,
        labels: { "containerd.io/snapshot.ref": `sha256:${String(i).padStart(64, "f")}` },
      });
    }
  });
  store.close();
  return { path, bytes: Deno.readFileSync(path) };
}

/** `openStore(path)`'s error message. */
function openError(path: string, options?: { create?: boolean }): MetadataError {
  try {
    openStore(path, options).close();
  } catch (err) {
    assert.ok(err instanceof MetadataError, String(err));
    return err;
  }
  assert.fail(`opened ${path}`);
}

const HELP = `restore it from a backup, or see "Damaged metadata database" in the README`;

Deno.test("store: a truncated database is damaged, and says it is truncated", () => {
  const { path, bytes } = populatedDb();
  assert.ok(bytes.length >= 16 * 4096, `${bytes.length} bytes`);
  const kept = 8 * 4096;
  Deno.writeFileSync(path, bytes.subarray(0, kept));
  const err = openError(path);
  assert.equal(
    err.message,
    `Cannot open metadata database "${path}": it is damaged (SQLITE_CORRUPT: database disk ` +
      `image is malformed): the file is truncated: it has ${kept} bytes, its header records ` +
      `${bytes.length / 4096} pages of 4096 bytes (${bytes.length} bytes); ${HELP}`,
  );
  assert.equal(err.sqlite, "SQLITE_CORRUPT");
});

Deno.test("store: a garbled header or random bytes are not a database (not 'in use')", () => {
  const { path, bytes } = populatedDb();
  const notADatabase = `Cannot open metadata database "${path}": it is not a SQLite database ` +
    `(SQLITE_NOTADB: file is not a database): its header is garbled or it is another kind of ` +
    `file; ${HELP}`;
  const header = bytes.slice();
  header.set(garbage(16, 1), 0);
  Deno.writeFileSync(path, header);
  assert.equal(openError(path).message, notADatabase);
  Deno.writeFileSync(path, garbage(bytes.length, 2));
  assert.equal(openError(path).message, notADatabase);
  assert.equal(openError(path).kind, "unavailable");
});

Deno.test("store: 16 garbled bytes in every page are found at open (quick_check, or the schema)", () => {
  const { path, bytes } = populatedDb();
  // the first page holds the schema: garbled there, the database does not even parse
  const schemaHit = bytes.slice();
  schemaHit.set(garbage(16, 10), 2000);
  Deno.writeFileSync(path, schemaHit);
  assert.match(
    openError(path).message,
    /^Cannot open metadata database ".*": it is damaged \(SQLITE_CORRUPT: malformed database schema/,
  );
  // every other page: quick_check finds it
  const damaged = bytes.slice();
  for (let page = 1; page < damaged.length / 4096; page++) {
    damaged.set(garbage(16, page + 10), page * 4096 + 2000);
  }
  Deno.writeFileSync(path, damaged);
  // what quick_check itself says, through a connection of its own
  const raw = new DatabaseSync(path, { readOnly: true });
  const found = (raw.prepare("PRAGMA quick_check").all() as { quick_check: string }[])
    .flatMap((r) => r.quick_check.split("\n"))
    .filter((l) => l !== "" && !l.startsWith("***"));
  raw.close();
  assert.ok(found.length > 3, found.join("\n"));
  assert.equal(
    openError(path).message,
    `Cannot open metadata database "${path}": it is damaged: PRAGMA quick_check found: ${
      found.slice(0, 3).join("; ")
    }; and more; ${HELP}`,
  );
});

Deno.test("store: a missing or empty database is created, or refused untouched with create: false", () => {
  const path = tempDb();
  const missing = openError(path, { create: false });
  assert.ok(missing instanceof NoMetadataError);
  assert.equal(missing.reason, "missing");
  assert.equal(missing.message, `Cannot open metadata database "${path}": it is missing`);
  assert.throws(() => Deno.statSync(path), Deno.errors.NotFound, "nothing was created");

  Deno.writeFileSync(path, new Uint8Array(0));
  const empty = openError(path, { create: false });
  assert.ok(empty instanceof NoMetadataError);
  assert.equal(empty.reason, "empty");
  assert.equal(empty.message, `Cannot open metadata database "${path}": it is empty`);
  assert.equal(Deno.statSync(path).size, 0, "nothing was written");

  const store = openStore(path); // create: true (the default)
  assert.equal(store.allocateThinId(), 1);
  store.close();
  openStore(path, { create: false }).close(); // now it exists
});

Deno.test("store: a database that is no regular file is unreadable", () => {
  const path = tempDb();
  Deno.mkdirSync(path);
  assert.equal(
    openError(path).message,
    `Cannot open metadata database "${path}": it is unreadable (SQLITE_CANTOPEN: unable to ` +
      `open database file: ${path}): it must be a regular file the snapshotter can read and ` +
      `write, in a directory it can write`,
  );
});

Deno.test("store: pages of snapshots cover every ready one once, in key order, with its labels", () => {
  const { path } = populatedDb();
  const store = openStore(path);
  try {
    const all = store.listSnapshots().map(({ key, parentKey, kind, created, updated, labels }) => ({
      key,
      parentKey,
      kind,
      created,
      updated,
      labels,
    }));
    const paged: typeof all = [];
    for (let after = "";;) {
      const page = store.listSnapshotsPage(after, 7);
      if (page.length === 0) break;
      assert.ok(page.length <= 7);
      paged.push(...page);
      after = page[page.length - 1].key;
    }
    assert.equal(paged.length, 200);
    assert.deepEqual(paged, all);
  } finally {
    store.close();
  }
});

Deno.test("store: a page of List reads on the key index and sorts nothing", () => {
  const { path } = populatedDb();
  openStore(path).close(); // the current schema, with its indexes
  const db = new DatabaseSync(path);
  try {
    for (const sql of [LIST_PAGE_SQL, LIST_MESSAGE_SQL, LIST_ENTRIES_SQL]) {
      const plan = (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all("", 500) as {
        detail: string;
      }[]).map((row) => row.detail);
      assert.ok(
        plan.some((d) => /^SEARCH s USING INDEX sqlite_autoindex_snapshots_1 \(key>\?\)/.test(d)),
        plan.join("; "),
      );
      // (the page's own ≤ limit rows may be sorted again for group_concat's ORDER BY)
      assert.ok(!plan.some((d) => /TEMP B-TREE FOR ORDER BY/.test(d)), plan.join("; "));
    }
  } finally {
    db.close();
  }
});

/** Every ready snapshot's Info as List's object path reads it, and as its kept encoded form. */
function bothListings(store: MetadataStore): { slow: unknown[]; encoded: unknown[] } {
  const listCodec = loadSnapshotsProto().codec<WireListResponse>("ListSnapshotsResponse");
  const slow: unknown[] = [];
  const encoded: unknown[] = [];
  for (let after = "";;) {
    const page = store.listSnapshotsPage(after, 3);
    if (page.length === 0) break;
    slow.push(...page.map(listedInfo));
    after = page[page.length - 1].key;
  }
  // whole pages as SQLite joins them, and the same pages entry by entry (bounds too small)
  const whole = { limit: 3, maxBytes: 16 << 20, maxEntryBytes: 16 << 20 };
  for (let after = "";;) {
    const page = store.listEncodedPage(after, whole);
    if (page === undefined) break;
    assert.ok("message" in page);
    const infos = listCodec.decode(page.message).info.map(infoFromWire);
    assert.equal(infos.length, page.rows);
    assert.equal(infos[infos.length - 1].name, page.lastKey);
    encoded.push(...infos);
    const apart = store.listEncodedPage(after, { ...whole, maxBytes: 1 });
    assert.ok(apart && "entries" in apart);
    assert.deepEqual(
      apart.entries.flatMap((e) => listCodec.decode(e.entry).info.map(infoFromWire)),
      infos,
    );
    assert.deepEqual(apart.entries.map((e) => e.key), infos.map((i) => i.name));
    after = page.lastKey;
  }
  return { slow, encoded };
}

Deno.test("store: the kept encoded Info follows every change of a snapshot (insert, commit, labels)", () => {
  const store = openStore(tempDb());
  try {
    const T2 = { seconds: 1_700_000_100, nanos: 7 };
    store.insertDevice({ ...DEVICE, state: "ready", thinId: 1, name: "pool-dms-1" });
    store.insertDevice({ ...DEVICE, state: "ready", thinId: 2, name: "pool-dms-2" });
    const base = { state: "ready" as const, fsType: "ext4", sizeBytes: 1 << 20, created: T1 };
    const parent = store.insertSnapshot({
      ...base,
      key: "ns/1/base",
      kind: "active",
      parentId: null,
      thinId: 1,
      labels: { a: "1" },
    });
    store.commitSnapshot(parent, {
      name: "ns/1/layer",
      labels: { b: "2" },
      time: T2,
      usageBytes: 1,
    });
    const child = store.insertSnapshot({
      ...base,
      key: "ns/2/child",
      kind: "active",
      parentId: parent,
      thinId: 2,
      labels: { c: "3", gone: "x" },
    });
    store.updateLabels(child, { c: "4", gone: "", "ünï": "😀" }, T2);
    const { slow, encoded } = bothListings(store);
    assert.equal(encoded.length, 2);
    assert.deepEqual(encoded, slow);
    assert.deepEqual((encoded[0] as { labels: unknown }).labels, { b: "2" });
    assert.deepEqual(encoded[1], {
      name: "ns/2/child",
      parent: "ns/1/layer",
      kind: "active",
      created: T1,
      updated: T2,
      labels: { c: "4", "ünï": "😀" },
    });
  } finally {
    store.close();
  }
});

Deno.test("store: a schema 2 database gets every row's encoded Info when it is opened", () => {
  const { path } = populatedDb();
  const db = new DatabaseSync(path);
  db.exec("DROP INDEX snapshots_thin; ALTER TABLE snapshots DROP COLUMN list_entry");
  db.exec("PRAGMA user_version = 2");
  db.close();
  const store = openStore(path);
  try {
    const { slow, encoded } = bothListings(store);
    assert.equal(encoded.length, 200);
    assert.deepEqual(encoded, slow);
  } finally {
    store.close();
  }
});

Deno.test({
  name: "store: a transaction that is not durable commits without an fsync; later ones are durable",
  ignore: !(await straceAvailable()),
  fn: async () => {
    const fsyncs = async (mode: "durable" | "lazy" | "lazy-then-durable") => {
      const dir = Deno.makeTempDirSync();
      const out = `${dir}/strace.txt`;
      const script = new URL("../../testing/store_deletes.ts", import.meta.url).pathname;
      const run = await new Deno.Command("strace", {
        args: ["-f", "-c", "-o", out, "-e", "trace=fsync,fdatasync", Deno.execPath(), "run"]
          .concat(["-A", "--no-check", script, `${dir}/metadata.db`, mode, "20"]),
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
      const counts = parseStraceSummary(await Deno.readTextFile(out));
      Deno.removeSync(dir, { recursive: true });
      return (counts.fsync ?? 0) + (counts.fdatasync ?? 0);
    };
    const durable = await fsyncs("durable");
    const lazy = await fsyncs("lazy");
    const after = await fsyncs("lazy-then-durable");
    assert.ok(durable - lazy >= 20, `20 deletes: ${durable} fsyncs durable, ${lazy} not`);
    assert.ok(after - lazy >= 20, `20 inserts after them: ${after} fsyncs, against ${lazy}`);
  },
});

Deno.test("store: pages joined by SQLite keep every byte (NULs, high bytes, long varints)", () => {
  const store = openStore(tempDb());
  try {
    const chars = ["\u0000", "a", "é", "\u00ff", "☃", "😀", "\u0080", "\x7f"];
    const text = (n: number) =>
      Array.from({ length: n }, (_, i) => chars[(i * 7 + n) % chars.length]).join("");
    store.transaction(() => {
      for (let i = 1; i <= 40; i++) {
        store.insertDevice({ ...DEVICE, state: "ready", thinId: i, name: `pool-dms-${i}` });
        store.insertSnapshot({
          key: `ns/${i}/${text(i).replaceAll("\u0000", "0")}`, // keys hold no NUL (labels.ts)
          kind: "active",
          state: "ready",
          parentId: null,
          thinId: i,
          fsType: "ext4",
          sizeBytes: 1 << 20,
          created: { seconds: i * 1_000_003, nanos: i },
          labels: { [text(i + 1)]: text(i * 97) }, // up to ~4,000 characters: 2-byte lengths
        });
      }
    });
    const { slow, encoded } = bothListings(store);
    assert.equal(encoded.length, 40);
    assert.deepEqual(encoded, slow);
  } finally {
    store.close();
  }
});

Deno.test("store: deleting a device row finds its snapshots (the foreign key) on an index", () => {
  const { path } = populatedDb();
  openStore(path).close();
  const db = new DatabaseSync(path);
  try {
    // the lookup SQLite makes for snapshots.thin_id REFERENCES devices when a device row goes
    const plan = (db.prepare("EXPLAIN QUERY PLAN SELECT 1 FROM snapshots WHERE thin_id = ?")
      .all(1) as { detail: string }[]).map((row) => row.detail);
    assert.ok(plan.some((d) => /USING (COVERING )?INDEX snapshots_thin/.test(d)), plan.join("; "));
  } finally {
    db.close();
  }
});
