/**
 * Host tests of the snapshotter when its metadata database cannot be written: real SQLite
 * failures (a page limit for SQLITE_FULL, `query_only` for a database that refuses writes) on
 * the in-memory device mapper. Every failed call names the database and its reason with the
 * right class, leaves the snapshots as they were, leaves nothing half-made once the database can
 * be written again (no `creating` rows, the pool's thin ids are exactly the device rows), and
 * works when retried. The kernel version, with a really full filesystem, is
 * `tests/kernel/metadata_full_test.ts`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { DevmapperSnapshotter } from "./snapshotter.ts";
import { MetadataStore, mountPointOf, openStore } from "../metadata/store.ts";
import { errorKind, NotFoundError } from "../util/errors.ts";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import { createMemoryFormatter } from "../../testing/memory_formatter.ts";
import { memorySnapshotterOptions } from "../../testing/memory_snapshotter_options.ts";
import { toRpcStatus } from "../server/status.ts";
import { Code } from "../server/codes.ts";

const POOL = "mfpool";

/** A snapshotter whose database connection the test holds too, to make it fail. */
class World implements AsyncDisposable {
  readonly dm = new MemoryDeviceMapper();
  readonly root = Deno.makeTempDirSync({ prefix: "metadata_failure_test_" });
  readonly path = join(this.root, "metadata.db");
  readonly db: DatabaseSync;
  readonly s: DevmapperSnapshotter;
  /** Runs once, right after the next device-mapper `create` (an activation) succeeded. */
  afterNextCreate: (() => void) | undefined;

  constructor() {
    this.dm.createPool(POOL, { dataBlocks: 4096 });
    openStore(this.path).close(); // created and migrated
    this.db = new DatabaseSync(this.path);
    this.db.exec("PRAGMA foreign_keys = ON");
    const dm = this.dm;
    const hooked = new Proxy(dm, {
      get: (target, prop) => {
        const value = Reflect.get(target, prop, target);
        if (prop === "create") {
          return async (...args: Parameters<MemoryDeviceMapper["create"]>) => {
            await target.create(...args);
            const hook = this.afterNextCreate;
            this.afterNextCreate = undefined;
            hook?.();
          };
        }
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    this.s = new DevmapperSnapshotter(
      new MetadataStore(this.db, this.path),
      memorySnapshotterOptions({
        rootPath: this.root,
        poolName: POOL,
        dm: hooked,
        formatter: createMemoryFormatter(dm),
      }),
    );
  }

  /** A world after the snapshotter's start (reconciled), with committed snapshot `base`. */
  static async withBase(): Promise<World> {
    const w = new World();
    try {
      await w.s.reconcile();
      await w.s.prepare("base-tmp", "");
      await w.s.commit("base", "base-tmp");
      return w;
    } catch (err) {
      await w[Symbol.asyncDispose]();
      throw err;
    }
  }

  /** Writes to the database are refused from now on (SQLITE_READONLY), or allowed again. */
  readOnly(on: boolean): void {
    this.db.exec(`PRAGMA query_only = ${on ? "ON" : "OFF"}`);
  }

  /** The database cannot grow by one page (SQLITE_FULL, as on a full filesystem), or can. */
  full(on: boolean): void {
    const pages = (this.db.prepare("PRAGMA page_count").get() as { page_count: number })
      .page_count;
    this.db.exec(`PRAGMA max_page_count = ${on ? pages : 1_000_000}`);
  }

  /** No row `creating`, and the pool holds exactly the thin ids of the device rows. */
  assertNothingHalfMade(): void {
    const store = this.s.pool.store;
    assert.deepEqual(store.listSnapshots("creating").map((s) => s.key), [], "creating snapshots");
    const rows = store.listDevices().filter((d) => d.state !== "foreign");
    assert.deepEqual(rows.filter((d) => d.state !== "ready"), [], "device rows not ready");
    assert.deepEqual(this.dm.thinIds(POOL), rows.map((d) => d.thinId), "pool = device rows");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.s.close();
    await Deno.remove(this.root, { recursive: true });
  }
}

/** The first words of every message about this database, after what could not be done. */
function cannotWrite(w: World, reason: "full" | "read-only"): string {
  return reason === "full"
    ? `the metadata database ${w.path} cannot be written: its filesystem is full ` +
      `(SQLITE_FULL): free space on ${mountPointOf(w.path)}`
    : `the metadata database ${w.path} cannot be written: it is read-only (SQLITE_READONLY: ` +
      `attempt to write a readonly database): make ${mountPointOf(w.path)} writable`;
}

/** Asserts `p` rejects with `message` (a prefix of the message when `prefix`) and `kind`. */
async function rejectsWith(
  p: Promise<unknown>,
  expected: { message: string; kind: string; prefix?: boolean },
): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof Error, String(err));
    if (expected.prefix) assert.ok(err.message.startsWith(expected.message), err.message);
    else assert.equal(err.message, expected.message);
    assert.equal(errorKind(err), expected.kind, err.message);
    assert.doesNotMatch(err.message, /no transaction is active/);
    return true;
  });
}

Deno.test("metadata full: Prepare answers ResourceExhausted naming the database, leaves nothing, works once space is back", async () => {
  await using w = await World.withBase();
  const before = await w.s.list();
  const labels = { big: "x".repeat(20_000) }; // the rows need new pages
  w.full(true);
  await rejectsWith(w.s.prepare("k", "base", labels), {
    message: `cannot create active snapshot "k": ${cannotWrite(w, "full")}`,
    kind: "resource_exhausted",
  });
  const status = toRpcStatus(await w.s.prepare("k", "base", labels).catch((err) => err));
  assert.equal(status.code, Code.RESOURCE_EXHAUSTED, status.details);
  await assert.rejects(w.s.stat("k"), NotFoundError);
  assert.deepEqual(await w.s.list(), before);
  w.assertNothingHalfMade();
  w.full(false);
  await w.s.prepare("k", "base", labels);
  assert.equal((await w.s.stat("k")).labels.big.length, 20_000);
  w.assertNothingHalfMade();
});

Deno.test("metadata read-only: Commit, Update and Remove say why and change nothing; all work once it is writable", async () => {
  await using w = await World.withBase();
  await w.s.prepare("work", "base", { a: "1" });
  const before = await w.s.list();
  const device = w.s.pool.deviceName(w.s.pool.store.getSnapshot("work")!.thinId);
  w.readOnly(true);
  const failure = (what: string) => ({
    message: `${what}: ${cannotWrite(w, "read-only")}`,
    kind: "unavailable",
    prefix: true,
  });
  await rejectsWith(w.s.commit("layer", "work"), failure(`cannot commit snapshot "work"`));
  await rejectsWith(
    w.s.update({ name: "work", labels: { a: "2" } }, ["labels.a"]),
    failure(`cannot update snapshot "work"`),
  );
  await rejectsWith(w.s.remove("work"), failure(`cannot remove snapshot "work"`));
  await rejectsWith(w.s.prepare("k", "base"), failure(`cannot create active snapshot "k"`));
  assert.deepEqual(await w.s.list(), before, "nothing changed");
  assert.ok(w.dm.hasDevice(device), "the active snapshot's device is active again");
  w.assertNothingHalfMade();

  w.readOnly(false);
  await w.s.update({ name: "work", labels: { a: "2" } }, ["labels.a"]);
  await w.s.commit("layer", "work");
  await w.s.remove("layer");
  await w.s.prepare("k", "base");
  assert.deepEqual((await w.s.list()).map((i) => i.name), ["base", "k"]);
  w.assertNothingHalfMade();
});

Deno.test("metadata unwritable after the device was made: the device goes at once; the rows a failed undo leaves block nothing", async () => {
  await using w = await World.withBase();
  const before = await w.s.list();
  const inPool = w.dm.thinIds(POOL);

  // the database refuses writes between the device's creation and the row turning ready: the
  // Prepare and its undo's write fail
  w.afterNextCreate = () => w.readOnly(true);
  await rejectsWith(w.s.prepare("k", "base"), {
    message: `cannot create active snapshot "k": ${cannotWrite(w, "read-only")}`,
    kind: "unavailable",
    prefix: true,
  });
  assert.deepEqual(w.dm.thinIds(POOL), inPool, "the new device is deleted from the pool at once");
  assert.equal(w.s.pool.store.getSnapshot("k")?.state, "creating", "its rows could not go");
  await assert.rejects(w.s.stat("k"), NotFoundError);
  assert.deepEqual(await w.s.list(), before);

  // writable again: a retry of the key undoes the leftover first, then creates it
  w.readOnly(false);
  await w.s.prepare("k", "base");
  assert.equal((await w.s.stat("k")).kind, "active");
  w.assertNothingHalfMade();

  // the same, finished by Cleanup instead of a retry
  w.afterNextCreate = () => w.readOnly(true);
  await assert.rejects(w.s.prepare("k2", "base"));
  w.readOnly(false);
  await w.s.cleanup();
  w.assertNothingHalfMade();
  await assert.rejects(w.s.stat("k2"), NotFoundError);
  await w.s.prepare("k2", "base");
  w.assertNothingHalfMade();
});
