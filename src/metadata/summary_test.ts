import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { MetadataError, type MetadataStore, NoMetadataError, openStore } from "./store.ts";
import { readMetadataSummary } from "./summary.ts";
import { SCHEMA_VERSION } from "./schema.ts";

const T = { seconds: 1_700_000_000, nanos: 0 };

/** Fills `store` with a template, 2 committed, 1 active, 1 view, 1 creating, 1 deleting device. */
function fill(store: MetadataStore): void {
  const device = (thinId: number, role: "snapshot" | "template", state = "ready" as const) =>
    store.insertDevice({
      thinId,
      name: `p-dms-${thinId}`,
      role,
      state,
      originId: null,
      sizeBytes: 1 << 20,
      fsType: "ext4",
      templateKey: role === "template" ? `ext4||${1 << 20}` : null,
    });
  device(1, "template");
  for (let id = 2; id <= 6; id++) device(id, "snapshot");
  store.setDeviceState(6, "deleting");
  const snap = (key: string, kind: "committed" | "active" | "view", thinId: number) =>
    store.insertSnapshot({
      key,
      kind,
      state: key === "new" ? "creating" : "ready",
      parentId: null,
      thinId,
      fsType: "ext4",
      sizeBytes: 1 << 20,
      created: T,
      labels: { k: "v" },
    });
  snap("c1", "committed", 2);
  snap("c2", "committed", 3);
  snap("a", "active", 4);
  snap("v", "view", 2);
  snap("new", "active", 5);
  store.markDeviceForeign(9);
}

const FILLED = {
  snapshots: { committed: 2, active: 1, view: 1 },
  creatingSnapshots: 1,
  thinDevices: 6,
  templates: 1,
  deletingDevices: 1,
  schemaVersion: SCHEMA_VERSION,
};

async function files(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const e of Deno.readDir(dir)) {
    const bytes = await Deno.readFile(join(dir, e.name));
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    out.set(e.name, new Uint8Array(digest).toString());
  }
  return out;
}

Deno.test("summary: counts a cleanly closed database without writing or creating any file", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "metadata.db");
  const store = openStore(path);
  fill(store);
  store.close();
  const before = await files(dir);
  assert.deepEqual([...before.keys()], ["metadata.db"]);
  assert.deepEqual(readMetadataSummary(path), FILLED);
  assert.deepEqual(await files(dir), before, "same files, same bytes");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("summary: a missing or empty database is NoMetadataError, and stays missing or empty", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "metadata.db");
  assert.throws(
    () => readMetadataSummary(path),
    (e) => e instanceof NoMetadataError && e.reason === "missing" && e.path === path,
  );
  assert.deepEqual([...(await files(dir)).keys()], [], "nothing created");
  await Deno.writeFile(path, new Uint8Array());
  assert.throws(
    () => readMetadataSummary(path),
    (e) => e instanceof NoMetadataError && e.reason === "empty",
  );
  assert.equal((await Deno.stat(path)).size, 0, "not initialised");
  assert.deepEqual([...(await files(dir)).keys()], ["metadata.db"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("summary: a database a server holds is refused at once (SQLITE_BUSY), not waited for", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "metadata.db");
  const store = openStore(path); // as the server holds it
  fill(store);
  const start = performance.now();
  assert.throws(
    () => readMetadataSummary(path),
    (e) =>
      e instanceof MetadataError && e.sqlite === "SQLITE_BUSY" &&
      /in use: a running devmapper-snapshotter holds it/.test(e.message),
  );
  assert.ok(performance.now() - start < 2000, "no long wait");
  assert.deepEqual([...(await files(dir)).keys()].sort(), ["metadata.db", "metadata.db-wal"]);
  assert.equal(store.listSnapshots().length, 4, "the holder is undisturbed");
  store.close();
  assert.deepEqual(readMetadataSummary(path), FILLED, "readable once released");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("summary: after a crash, reads what the WAL holds; the database and the WAL are unchanged", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "metadata.db");
  const script = `
    import { openStore } from ${JSON.stringify(new URL("./store.ts", import.meta.url).href)};
    const store = openStore(${JSON.stringify(path)});
    store.allocateThinId();
    store.insertDevice({ thinId: 1, name: "p-dms-1", role: "snapshot", state: "ready",
      originId: null, sizeBytes: 1024, fsType: "ext4", templateKey: null });
    store.insertSnapshot({ key: "a", kind: "active", state: "ready", parentId: null, thinId: 1,
      fsType: "ext4", sizeBytes: 1024, created: { seconds: 1, nanos: 0 }, labels: {} });
    Deno.exit(0); // dies holding it: no checkpoint, the WAL stays
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", script],
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const before = await files(dir);
  assert.deepEqual([...before.keys()].sort(), ["metadata.db", "metadata.db-wal"]);
  const summary = readMetadataSummary(path);
  assert.deepEqual(summary.snapshots, { committed: 0, active: 1, view: 0 });
  assert.equal(summary.thinDevices, 1);
  const after = await files(dir);
  for (const name of before.keys()) assert.equal(after.get(name), before.get(name), name);
  // the server opens it afterwards as usual
  const store = openStore(path);
  assert.equal(store.getSnapshot("a")?.kind, "active");
  store.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("summary: not a database, or a newer schema: MetadataError naming the file", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "metadata.db");
  await Deno.writeTextFile(
    path,
    "this is not a database, just some text that is long enough".repeat(20),
  );
  assert.throws(
    () => readMetadataSummary(path),
    (e) =>
      e instanceof MetadataError &&
      e.message.startsWith(`Cannot read metadata database "${path}"`) &&
      /not a SQLite database/.test(e.message),
  );
  await Deno.remove(path);
  openStore(path).close();
  const db = new DatabaseSync(path);
  db.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
  db.close();
  assert.throws(
    () => readMetadataSummary(path),
    new RegExp(`schema version ${SCHEMA_VERSION + 1} is newer than ${SCHEMA_VERSION}`),
  );
  await Deno.remove(dir, { recursive: true });
});
