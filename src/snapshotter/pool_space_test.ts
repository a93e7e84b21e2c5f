/**
 * Host tests of the snapshotter on a pool short of space or unable to change, on the in-memory
 * device mapper: the `min_free_space` guard (data and metadata), removals and Cleanup on a
 * read-only pool, and the degraded start on a full or read-only pool. The kernel versions (a
 * pool really filled, really read-only, through the server) are in
 * `tests/kernel/pool_space_test.ts`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type DevmapperSnapshotter,
  openSnapshotter,
  type SnapshotterOptions,
} from "./snapshotter.ts";
import { MemoryDeviceMapper, nameOfPath } from "../../testing/memory_dm.ts";
import { createMemoryFormatter, FIRST_DATA_BLOCK } from "../../testing/memory_formatter.ts";
import { memorySnapshotterOptions } from "../../testing/memory_snapshotter_options.ts";
import { createLogger } from "../util/log.ts";
import {
  errorKind,
  FailedPreconditionError,
  InvalidArgumentError,
  ResourceExhaustedError,
  UnavailableError,
} from "../util/errors.ts";
import { poolProblem } from "../pool/health.ts";
import type { Mount } from "../snapshots/types.ts";

const POOL = "spool";
const MiB = 1024 * 1024;

/** A memory pool, a root directory and a way to open snapshotters on them. */
class World implements AsyncDisposable {
  readonly dm = new MemoryDeviceMapper();
  readonly formatter = createMemoryFormatter(this.dm);
  readonly logs: string[] = [];
  s!: DevmapperSnapshotter;
  readonly #root: string;
  readonly #options: Partial<SnapshotterOptions>;

  private constructor(root: string, options: Partial<SnapshotterOptions>) {
    this.#root = root;
    this.#options = options;
  }

  /** 400 data blocks of 64 KiB (25 MiB), `metadataBlocks` (default 1024) metadata blocks. */
  static async create(
    options: Partial<SnapshotterOptions> & { metadataBlocks?: number } = {},
  ): Promise<World> {
    const root = await Deno.makeTempDir({ prefix: "pool_space_test_" });
    const w = new World(root, { minFreeSpace: { percent: 10 }, ...options });
    w.dm.createPool(POOL, { dataBlocks: 400, metadataBlocks: options.metadataBlocks ?? 1024 });
    await w.open();
    return w;
  }

  async open(): Promise<DevmapperSnapshotter> {
    this.s = await openSnapshotter(memorySnapshotterOptions({
      rootPath: join(this.#root, "root"),
      poolName: POOL,
      baseImageSize: 32 * MiB, // larger than the pool
      formatter: this.formatter,
      logger: createLogger({ level: "info", write: (l) => this.logs.push(l) }),
      ...this.#options,
      dm: this.dm,
    }));
    return this.s;
  }

  async restart(): Promise<DevmapperSnapshotter> {
    await this.s.close();
    this.logs.length = 0;
    return await this.open();
  }

  /** Commits snapshot `base` (prepared as `base-tmp`), empty. */
  async base(): Promise<void> {
    await this.s.prepare("base-tmp", "");
    await this.s.commit("base", "base-tmp");
  }

  /**
   * `base` with active children `a` and `b`, `b` removed with a failing delete: its device is
   * left `deleting` for Cleanup. Returns the names of the pending devices (one).
   */
  async pendingDeletion(): Promise<string[]> {
    await this.base();
    await this.s.prepare("a", "base");
    await this.s.prepare("b", "base");
    this.dm.injectFault({ op: "deleteThin", errno: "EIO" });
    await this.s.remove("b");
    const pending = this.s.pool.store.listDevices("deleting").map((d) => d.name);
    assert.equal(pending.length, 1);
    return pending;
  }

  /** Maps `blocks` blocks of the device of `mounts` with data. */
  fill(mounts: Mount[], blocks: number): void {
    const name = nameOfPath(mounts[0].source)!;
    for (let b = 0; b < blocks; b++) this.dm.write(name, FIRST_DATA_BLOCK + b, `data ${b}`);
  }

  /** Log lines at `level` (without their time). */
  logged(level: string): string[] {
    return this.logs.filter((l) => l.includes(` level=${level} `)).map((l) =>
      l.replace(/^time=\S+ /, "")
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.s.close();
    await Deno.remove(this.#root, { recursive: true });
  }
}

Deno.test("space guard: Prepare and View are refused below min_free_space, everything else works", async () => {
  await using w = await World.create();
  await w.base();
  const big = await w.s.prepare("big", "base");
  await w.s.prepare("small", "base");
  w.fill(big, 365); // 400 blocks: template and base share 2, leaving fewer than 40 (10%) free
  const status = await w.s.poolStatus();
  assert.equal(status.mode, "rw");
  assert.equal(poolProblem(status, POOL), undefined, "the pool itself is fine");
  for (const create of [() => w.s.prepare("new", "base"), () => w.s.view("v", "base")]) {
    await assert.rejects(create(), (e: unknown) => {
      assert.ok(e instanceof ResourceExhaustedError, String(e));
      assert.match(
        e.message,
        new RegExp(
          `^cannot create (active|view) snapshot "(new|v)": pool "${POOL}" is low on data space: ` +
            `data 367/400 blocks used, 8.3% free \\(2.1MiB\\), min_free_space "10%" keeps 40 ` +
            "blocks \\(10%\\) free: remove unused images and snapshots .* or extend the pool: " +
            "lvextend its data, or grow the data device and reload the pool table",
        ),
      );
      return true;
    });
  }
  assert.deepEqual((await w.s.list()).map((i) => i.name).sort(), ["base", "big", "small"]);
  assert.equal((await w.s.stat("big")).kind, "active");
  assert.ok((await w.s.usage("big")).size >= 365 * 64 * 1024);
  await w.s.commit("small-c", "small");
  await w.s.remove("small-c");
  await w.s.cleanup();
  // removing what holds the space lifts the guard at once (the refusing status is read again)
  await w.s.remove("big");
  await w.s.prepare("new", "base");
  await w.s.view("v", "base");
});

Deno.test("space guard: metadata is guarded more strictly, and the refusal names it", async () => {
  // 64 metadata blocks: 10% doubled is 13, the kernel's low-water mark (a quarter) 16
  await using w = await World.create({ metadataBlocks: 64 });
  await w.base();
  let refused: unknown;
  const made: string[] = [];
  for (let i = 0; i < 64 && refused === undefined; i++) {
    await w.s.poolStatus(); // as the background refresh would, so each Prepare sees the last one
    await w.s.prepare(`s${i}`, "base").then(() => made.push(`s${i}`), (e) => (refused = e));
  }
  assert.ok(refused instanceof ResourceExhaustedError, String(refused));
  const usage = w.dm.poolUsage(POOL);
  assert.equal(usage.totalMetadataBlocks - usage.usedMetadataBlocks, 15, "refused below 16 free");
  assert.match(
    refused.message,
    new RegExp(
      `^cannot create active snapshot "s\\d+": pool "${POOL}" is low on metadata space: metadata ` +
        "49/64 blocks used, 23.4% free, metadata keeps 16 blocks \\(25%\\) free \\(twice " +
        'min_free_space "10%", at least the kernel\'s low-water mark\\): remove unused images and ' +
        "snapshots, or extend the pool's metadata: lvextend --poolmetadatasize",
    ),
  );
  assert.ok(made.length > 40, `${made.length} snapshots fit`);
  await w.s.remove(made.pop()!);
  await w.s.prepare("again", "base");
});

Deno.test("read-only pool: Remove and Cleanup say why and keep everything; reads work", async () => {
  await using w = await World.create();
  // a removal whose delete failed leaves a device for Cleanup
  const pending = await w.pendingDeletion();
  const thinIds = w.dm.thinIds(POOL);
  w.dm.setPoolMode(POOL, "ro");
  await w.s.poolStatus();
  await assert.rejects(w.s.remove("a"), (e: unknown) => {
    assert.ok(e instanceof FailedPreconditionError, String(e));
    assert.match(
      e.message,
      new RegExp(
        `^cannot remove snapshot "a", it is kept: pool "${POOL}" is read-only \\(metadata \\d+/1024 ` +
          "blocks used\\): the kernel accepts no change to it; if its metadata is full, extend " +
          "the metadata device",
      ),
    );
    return true;
  });
  await assert.rejects(w.s.cleanup(), (e: unknown) => {
    assert.ok(e instanceof FailedPreconditionError, String(e));
    assert.match(
      e.message,
      new RegExp(
        "^cleanup cannot delete 1 device\\(s\\) of removed snapshots; they stay recorded for a " +
          `later Cleanup or the next start: pool "${POOL}" is read-only`,
      ),
    );
    return true;
  });
  await assert.rejects(w.s.prepare("c", "base"), UnavailableError);
  assert.equal((await w.s.stat("a")).kind, "active");
  assert.deepEqual((await w.s.list()).map((i) => i.name).sort(), ["a", "base"]);
  assert.deepEqual(w.dm.thinIds(POOL), thinIds, "nothing was deleted");
  assert.deepEqual(w.s.pool.store.listDevices("deleting").map((d) => d.name), pending);
  // the pool repaired: the same calls work, without waiting for the status cache
  w.dm.setPoolMode(POOL, undefined);
  await w.s.remove("a");
  await w.s.cleanup();
  assert.deepEqual(w.s.pool.store.listDevices("deleting"), []);
});

Deno.test("read-only pool: async Remove only marks (works); Cleanup then says why", async () => {
  await using w = await World.create({ asyncRemove: true });
  await w.s.prepare("a", "");
  w.dm.setPoolMode(POOL, "ro");
  await w.s.poolStatus();
  await w.s.remove("a");
  await assert.rejects(w.s.cleanup(), /^FailedPreconditionError: cleanup cannot delete 1 device/);
  w.dm.setPoolMode(POOL, undefined);
  await w.s.cleanup();
});

Deno.test("degraded start: a full pool serves reads and removals, refuses creations, says so", async () => {
  await using w = await World.create({ minFreeSpace: { percent: 0 } });
  await w.base();
  const a = await w.s.prepare("a", "base");
  await w.s.prepare("b", "base");
  assert.throws(() => w.fill(a, 400), /No space left on device/);
  await w.restart();
  assert.equal(w.dm.poolUsage(POOL).usedDataBlocks, 400);
  const [start] = w.logged("error");
  assert.match(
    start,
    new RegExp(
      '^level=error msg="pool is out of data space: serving reads and removals only" ' +
        `pool=${POOL} mode=out_of_data_space problem="pool \\\\"${POOL}\\\\" is out of data space`,
    ),
  );
  await assert.rejects(w.s.prepare("c", "base"), (e: unknown) => {
    assert.equal(errorKind(e), "resource_exhausted");
    assert.match(String(e), /cannot create active snapshot "c": pool "spool" is out of data space/);
    return true;
  });
  assert.deepEqual((await w.s.list()).map((i) => i.name).sort(), ["a", "b", "base"]);
  await w.s.usage("a");
  await w.s.remove("b");
  await w.s.remove("a"); // frees the blocks: the pool is rw again
  await w.s.prepare("c", "base");
});

Deno.test("degraded start: a read-only pool starts; pending deletions wait, their rows stay", async () => {
  await using w = await World.create();
  const pending = await w.pendingDeletion();
  w.dm.setPoolMode(POOL, "ro");
  const s = await w.restart(); // the delete of the pending device would fail: start goes on
  assert.deepEqual(s.lastReconcile!.postponed, pending);
  assert.deepEqual(s.lastReconcile!.deleted, []);
  assert.deepEqual(s.pool.store.listDevices("deleting").map((d) => d.name), pending);
  assert.match(
    w.logged("error")[0],
    /^level=error msg="pool is read-only: serving reads only; new snapshots and removals are refused" pool=spool mode=ro /,
  );
  assert.match(
    w.logged("warn")[0],
    /^level=warn msg="devices of removed or unfinished snapshots left in the pool until it can change"/,
  );
  assert.equal((await s.stat("a")).kind, "active");
  assert.ok(w.dm.hasDevice(s.pool.deviceName(s.pool.store.getSnapshot("a")!.thinId)), "activated");
  await assert.rejects(s.prepare("c", "base"), UnavailableError);
  await assert.rejects(s.remove("a"), FailedPreconditionError);
  // repaired: the next start finishes the deletion
  w.dm.setPoolMode(POOL, undefined);
  const again = await w.restart();
  assert.equal(again.lastReconcile!.deleted.length, 1);
  assert.deepEqual(again.pool.store.listDevices("deleting"), []);
  assert.deepEqual(w.logged("error"), []);
});

Deno.test("start: only a missing pool or a device that is not a thin-pool refuses to start", async () => {
  await using w = await World.create();
  const root = await Deno.makeTempDir();
  try {
    const options = (poolName: string) =>
      memorySnapshotterOptions({
        rootPath: root,
        poolName,
        baseImageSize: 16 * MiB,
        dm: w.dm,
        formatter: w.formatter,
      });
    await assert.rejects(
      openSnapshotter(options("nopool")),
      (e: unknown) => e instanceof UnavailableError && /no such device/.test(e.message),
    );
    await w.dm.create("linear0", "0 2048 linear /dev/loop0 0");
    await assert.rejects(
      openSnapshotter(options("linear0")),
      (e: unknown) => e instanceof InvalidArgumentError && /not a thin-pool/.test(e.message),
    );
    w.dm.setPoolMode(POOL, "fail");
    const failed = await openSnapshotter(options(POOL));
    await assert.rejects(failed.prepare("x", ""), /pool "spool" has failed/);
    await failed.close();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
