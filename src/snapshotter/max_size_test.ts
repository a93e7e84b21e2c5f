/**
 * Host tests of the `containerd.io/snapshot/max-size` label on Prepare, on the in-memory device
 * mapper and formatter: the device's table, the row and the filesystem get the size; commits
 * keep it, children inherit it, Update cannot change it, every activation honours it; refused
 * values create nothing; absent (or equal to what the snapshot gets anyway) nothing changes.
 * The crash and failure steps of a grow are in `crash_test.ts`, the kernel versions (`df` in a
 * container, SIGKILL during a grow) in `tests/kernel/max_size_test.ts` and `tests/e2e/`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type DevmapperSnapshotter, openSnapshotter } from "./snapshotter.ts";
import { MAX_SIZE_LABEL } from "./size_label.ts";
import { MemoryDeviceMapper, nameOfPath } from "../../testing/memory_dm.ts";
import {
  createMemoryFormatter,
  FIRST_DATA_BLOCK,
  readFilesystem,
} from "../../testing/memory_formatter.ts";
import {
  MEMORY_BASE_IMAGE_SIZE,
  memorySnapshotterOptions,
} from "../../testing/memory_snapshotter_options.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import type { FsType } from "../pool/thin_pool.ts";

const POOL = "sizepool";
const MiB = 1024 * 1024;
/** The memory pool's data space: 1024 blocks of 64 KiB. */
const POOL_BYTES = 1024 * 64 * 1024;

class World implements AsyncDisposable {
  readonly dm = new MemoryDeviceMapper();
  readonly formatter = createMemoryFormatter(this.dm);
  s!: DevmapperSnapshotter;
  readonly root: string;
  readonly fsType: FsType;

  private constructor(root: string, fsType: FsType) {
    this.root = root;
    this.fsType = fsType;
    this.dm.createPool(POOL, { dataBlocks: 1024 });
  }

  static async create(fsType: FsType = "ext4"): Promise<World> {
    const w = new World(await Deno.makeTempDir({ prefix: "max_size_test_" }), fsType);
    await w.open();
    return w;
  }

  async open(): Promise<DevmapperSnapshotter> {
    this.s = await openSnapshotter(memorySnapshotterOptions({
      rootPath: join(this.root, "root"),
      poolName: POOL,
      fsType: this.fsType,
      dm: this.dm,
      formatter: this.formatter,
    }));
    return this.s;
  }

  async restart(): Promise<void> {
    await this.s.close();
    await this.open();
  }

  /** dm name of the device of snapshot `key`. */
  device(key: string): string {
    const row = this.s.pool.store.getSnapshot(key)!;
    return this.s.pool.store.getDevice(row.thinId)!.name;
  }

  /** What the device of `key` is: table size, row sizes, the filesystem's grown size. */
  sizes(key: string) {
    const row = this.s.pool.store.getSnapshot(key)!;
    const device = this.s.pool.store.getDevice(row.thinId)!;
    return {
      row: row.sizeBytes,
      device: device.sizeBytes,
      table: this.dm.deviceBytes(device.name),
      fs: this.dm.hasDevice(device.name)
        ? readFilesystem(this.dm, device.name).sizeBytes
        : undefined,
    };
  }

  /** What nothing-created looks like: thin ids, rows and devices. */
  state() {
    return {
      thinIds: this.dm.thinIds(POOL),
      devices: this.s.pool.store.listDevices().map((d) => `${d.name} ${d.state}`),
      snapshots: this.s.pool.store.listSnapshots("ready").map((s) => s.key),
      creating: this.s.pool.store.listSnapshots("creating").map((s) => s.key),
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.s.close();
    await Deno.remove(this.root, { recursive: true });
  }
}

const label = (bytes: number | string) => ({ [MAX_SIZE_LABEL]: String(bytes) });

Deno.test("max-size: a parentless Prepare gets a device of that size, its filesystem grown", async () => {
  await using w = await World.create();
  const mounts = await w.s.prepare("a", "", label(24 * MiB));
  assert.equal(nameOfPath(mounts[0].source), w.device("a"));
  assert.deepEqual(w.sizes("a"), {
    row: 24 * MiB,
    device: 24 * MiB,
    table: 24 * MiB,
    fs: 24 * MiB,
  });
  // the template keeps the base size: the next parentless Prepare without the label is as before
  await w.s.prepare("b", "");
  assert.deepEqual(w.sizes("b"), {
    row: MEMORY_BASE_IMAGE_SIZE,
    device: MEMORY_BASE_IMAGE_SIZE,
    table: MEMORY_BASE_IMAGE_SIZE,
    fs: undefined,
  });
  assert.equal((await w.s.stat("a")).labels[MAX_SIZE_LABEL], String(24 * MiB));
});

Deno.test("max-size: commits keep the size, children inherit it, a bigger label grows a child", async () => {
  await using w = await World.create();
  await w.s.prepare("a", "", label(16 * MiB));
  w.dm.write(w.device("a"), FIRST_DATA_BLOCK, "a file");
  await w.s.commit("A", "a");
  assert.equal(w.s.pool.store.getSnapshot("A")!.sizeBytes, 16 * MiB);
  await w.s.prepare("child", "A");
  assert.deepEqual(w.sizes("child"), {
    row: 16 * MiB,
    device: 16 * MiB,
    table: 16 * MiB,
    fs: 16 * MiB,
  });
  assert.equal(w.dm.readText(w.device("child"), FIRST_DATA_BLOCK), "a file");
  await w.s.prepare("bigger", "A", label(32 * MiB));
  assert.deepEqual(w.sizes("bigger"), {
    row: 32 * MiB,
    device: 32 * MiB,
    table: 32 * MiB,
    fs: 32 * MiB,
  });
  assert.equal(w.dm.readText(w.device("bigger"), FIRST_DATA_BLOCK), "a file");
  // a child of a committed snapshot made without the label grows too
  await w.s.prepare("plain", "");
  await w.s.commit("P", "plain");
  await w.s.prepare("grown-child", "P", label(20 * MiB));
  assert.deepEqual(w.sizes("grown-child"), {
    row: 20 * MiB,
    device: 20 * MiB,
    table: 20 * MiB,
    fs: 20 * MiB,
  });
});

Deno.test("max-size: every activation honours the size (restart, reconcile)", async () => {
  await using w = await World.create();
  await w.s.prepare("a", "", label(24 * MiB));
  const name = w.device("a");
  await w.s.close();
  await w.dm.remove(name); // the host rebooted: nothing active
  await w.open();
  assert.deepEqual(w.s.lastReconcile?.activated, [w.device("a")]);
  assert.equal(w.sizes("a").table, 24 * MiB);
  const mounts = await w.s.mounts("a");
  assert.equal(nameOfPath(mounts[0].source), w.device("a"));
});

Deno.test("max-size: Update of labels cannot change the size", async () => {
  await using w = await World.create();
  await w.s.prepare("a", "", label(16 * MiB));
  const info = await w.s.update({ name: "a", labels: label(64 * MiB) }, ["labels"]);
  assert.equal(info.labels[MAX_SIZE_LABEL], String(64 * MiB)); // a label like any other
  await w.s.update({ name: "a", labels: {} }, ["labels"]);
  await w.restart();
  assert.deepEqual(w.sizes("a"), {
    row: 16 * MiB,
    device: 16 * MiB,
    table: 16 * MiB,
    fs: 16 * MiB,
  });
  await w.s.commit("A", "a", label(64 * MiB));
  assert.equal(w.s.pool.store.getSnapshot("A")!.sizeBytes, 16 * MiB);
});

Deno.test("max-size: refused values name the label and create nothing", async () => {
  await using w = await World.create();
  await w.s.prepare("base", "", label(16 * MiB));
  await w.s.commit("BASE", "base");
  const before = w.state();
  const cases: [string, string, RegExp][] = [
    ["", "12abc", /not a size in bytes/],
    ["", "1.5e9", /not a size in bytes/],
    ["", " 1024", /not a size in bytes/],
    ["", "0x100000", /not a size in bytes/],
    ["", "0", /greater than zero/],
    ["", "-16777216", /greater than zero/],
    ["", "9223372036854775808", /beyond int64/],
    ["", String(POOL_BYTES + 1), /beyond what the pool can ever hold \(67108864 bytes/],
    ["", "9223372036854775807", /beyond what the pool can ever hold/],
    ["", String(4 * MiB), /smaller than the 8388608 bytes .* never shrunk/],
    ["BASE", String(12 * MiB), /smaller than the 16777216 bytes .* never shrunk/],
    ["BASE", "100", /smaller than/], // rounds down to 0 sectors
  ];
  for (const [parent, value, reason] of cases) {
    await assert.rejects(w.s.prepare("x", parent, label(value)), (err: Error) => {
      assert.ok(err instanceof InvalidArgumentError, `${value}: ${err}`);
      assert.ok(
        err.message.includes(`label ${MAX_SIZE_LABEL}=${JSON.stringify(value)}`),
        err.message,
      );
      assert.ok(err.message.includes(`snapshot "x"`), err.message);
      assert.match(err.message, reason);
      return true;
    });
    assert.deepEqual(w.state(), before, `${value}: nothing created`);
  }
});

Deno.test("max-size: absent, empty or the size the snapshot gets anyway: nothing is grown", async () => {
  await using w = await World.create();
  await w.s.prepare("warm", ""); // builds the template
  const callsOf = async (key: string, labels: Record<string, string>) => {
    const mark = w.dm.calls.length;
    await w.s.prepare(key, "", labels);
    return w.dm.calls.slice(mark).map((c) => c.op);
  };
  const plain = await callsOf("plain", {});
  assert.ok(!plain.includes("grow"));
  assert.deepEqual(await callsOf("empty", { [MAX_SIZE_LABEL]: "" }), plain);
  assert.deepEqual(await callsOf("same", label(MEMORY_BASE_IMAGE_SIZE)), plain);
  // not a whole sector: rounded down to the base size, so nothing to grow either
  assert.deepEqual(await callsOf("same-ish", label(MEMORY_BASE_IMAGE_SIZE + 511)), plain);
  assert.equal(w.sizes("same-ish").row, MEMORY_BASE_IMAGE_SIZE);
  const grown = await callsOf("grown", label(MEMORY_BASE_IMAGE_SIZE + 512));
  assert.deepEqual(grown, [...plain, "grow"]);
  assert.equal(w.sizes("grown").table, MEMORY_BASE_IMAGE_SIZE + 512);
});

Deno.test("max-size: a View ignores the label (read-only: nothing to grow)", async () => {
  await using w = await World.create();
  await w.s.prepare("a", "");
  await w.s.commit("A", "a");
  await w.s.view("v", "A", label(32 * MiB));
  assert.equal(w.s.pool.store.getSnapshot("v")!.sizeBytes, MEMORY_BASE_IMAGE_SIZE);
  assert.ok(!w.dm.calls.some((c) => c.op === "grow"));
});

Deno.test("max-size: Usage of a grown snapshot counts what it wrote, as any other", async () => {
  await using w = await World.create();
  await w.s.prepare("a", "");
  w.dm.write(w.device("a"), FIRST_DATA_BLOCK, "layer");
  await w.s.commit("A", "a");
  // a grown child and a plain one write two blocks each: the same usage (the grow rewrote
  // only a block the parent had mapped already)
  await w.s.prepare("grown", "A", label(32 * MiB));
  await w.s.prepare("plain", "A");
  const block = w.dm.blockBytes(POOL);
  w.dm.write(w.device("grown"), 300, "far past the parent's end"); // 300 × 64 KiB > 8 MiB
  w.dm.write(w.device("grown"), 301, "and another");
  w.dm.write(w.device("plain"), 3, "in the parent's range");
  w.dm.write(w.device("plain"), 4, "and another");
  assert.equal((await w.s.usage("grown")).size, 2 * block);
  assert.equal((await w.s.usage("plain")).size, 2 * block);
  await w.s.commit("G", "grown");
  assert.equal((await w.s.usage("G")).size, 2 * block);
});

Deno.test("max-size: xfs grows while mounted on a private directory, released after a crash", async () => {
  await using w = await World.create("xfs");
  const mark = w.dm.calls.length;
  await w.s.prepare("a", "", label(16 * MiB));
  const ops = w.dm.calls.slice(mark).map((c) => c.op);
  assert.deepEqual(ops.slice(-3), ["mount", "grow", "umount"]);
  assert.equal(w.sizes("a").fs, 16 * MiB);
  assert.equal(w.dm.openCount(w.device("a")), 0, "unmounted");
  const growDir = join(w.root, "root", "grow");
  assert.deepEqual([...Deno.readDirSync(growDir)], [], "mount point removed");
  // a crash right after the mount: the device stays open, the mount point stays
  w.dm.onCrash(() => w.s.pool.store.close());
  w.dm.injectFault({ op: "grow", crash: "before" });
  await assert.rejects(w.s.prepare("b", "", label(16 * MiB)));
  const left = [...Deno.readDirSync(growDir)].map((e) => e.name);
  assert.equal(left.length, 1);
  assert.equal(w.dm.openCount(left[0]), 1, "still mounted");
  w.dm.restart();
  await w.open();
  assert.deepEqual(w.s.lastReconcile?.released, [join(growDir, left[0])]);
  assert.deepEqual(w.s.lastReconcile?.undone, ["b"]);
  assert.ok(w.s.lastReconcile?.deleted.includes(Number(left[0].split("-").at(-1))));
  assert.deepEqual([...Deno.readDirSync(growDir)], []);
  assert.deepEqual(w.state().snapshots, ["a"]);
  assert.deepEqual(w.dm.thinIds(POOL).length, 2, "the template and a's device");
});
