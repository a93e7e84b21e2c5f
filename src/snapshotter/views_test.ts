/**
 * Host tests of views without a thin device each, on the in-memory device mapper: views of a
 * committed snapshot (or, without a parent, of the template) share that device, active
 * read-only under its own name while a view of it exists. The kernel versions (real mounts,
 * the pool's thin ids counted) are in `tests/kernel/views_test.ts`; every step failing or
 * crashing is in `crash_test.ts`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type DevmapperSnapshotter,
  openSnapshotter,
  type SnapshotterOptions,
} from "./snapshotter.ts";
import { MemoryDeviceMapper, nameOfPath } from "../../testing/memory_dm.ts";
import {
  createMemoryFormatter,
  FIRST_DATA_BLOCK,
  NEEDS_RECOVERY,
  ROOT_BLOCK,
  ROOT_EMPTY,
  SUPERBLOCK,
} from "../../testing/memory_formatter.ts";
import { memorySnapshotterOptions } from "../../testing/memory_snapshotter_options.ts";
import { FailedPreconditionError } from "../util/errors.ts";

const POOL = "vpool";

/** Calls that only read. */
const READS = ["info", "infoAll", "isActive", "status", "statusAll", "needsRecovery"];

/** Settings a test changes. */
type Settings = Partial<Omit<SnapshotterOptions, "dm" | "formatter">>;

/** A memory pool, a root directory and a snapshotter on them. */
class World implements AsyncDisposable {
  readonly dm = new MemoryDeviceMapper();
  readonly formatter = createMemoryFormatter(this.dm);
  s!: DevmapperSnapshotter;
  readonly #root: string;
  #options: Settings;

  private constructor(root: string, options: Settings) {
    this.#root = root;
    this.#options = options;
    this.dm.createPool(POOL, { dataBlocks: 4096 });
  }

  static async create(options: Settings = {}): Promise<World> {
    const w = new World(await Deno.makeTempDir({ prefix: "views_test_" }), options);
    await w.open();
    return w;
  }

  async open(options: Settings = {}): Promise<void> {
    this.#options = { ...this.#options, ...options };
    this.s = await openSnapshotter(memorySnapshotterOptions({
      rootPath: join(this.#root, "root"),
      poolName: POOL,
      dm: this.dm,
      formatter: this.formatter,
      ...this.#options,
    }));
  }

  async restart(options: Settings = {}): Promise<void> {
    await this.s.close();
    await this.open(options);
  }

  /** dm name of the device a snapshot's row points at. */
  deviceOf(key: string): string {
    const row = this.s.pool.store.getSnapshot(key);
    assert.ok(row, `snapshot "${key}" has a row`);
    return this.s.pool.deviceName(row.thinId);
  }

  /** Committed `name` holding `text` in its first data block. */
  async layer(name: string, text: string, parent = ""): Promise<void> {
    const m = await this.s.prepare(`${name}-work`, parent);
    this.dm.write(nameOfPath(m[0].source)!, FIRST_DATA_BLOCK, text);
    await this.s.commit(name, `${name}-work`);
  }

  /** Calls to the device mapper that change something, made while `fn` runs. */
  async changes(fn: () => Promise<unknown>): Promise<string[]> {
    const mark = this.dm.calls.length;
    await fn();
    return this.dm.calls.slice(mark)
      .filter((c) => !READS.includes(c.op))
      .map((c) => `${c.op} ${c.name ?? ""}`.trim());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.s.close();
    await Deno.remove(this.#root, { recursive: true });
  }
}

Deno.test("views: ten views of a committed snapshot share its device read-only, no thin id each", async () => {
  await using w = await World.create();
  await w.layer("layer", "layer file");
  const ids = w.dm.thinIds(POOL);
  const device = w.deviceOf("layer");
  assert.ok(!w.dm.hasDevice(device), "a committed snapshot's device is inactive");
  const first = await w.changes(() => w.s.view("v0", "layer"));
  assert.deepEqual(first, [`create ${device}`], "the first view: one activation");
  for (let i = 1; i < 10; i++) {
    assert.deepEqual(await w.changes(() => w.s.view(`v${i}`, "layer")), [], `view ${i}: none`);
  }
  assert.deepEqual(w.dm.thinIds(POOL), ids, "no thin device was created");
  assert.deepEqual(w.dm.thinDevices(POOL), [device]);
  assert.ok((await w.dm.info(device))?.readOnly, "active read-only");
  for (let i = 0; i < 10; i++) {
    const [m] = await w.s.mounts(`v${i}`);
    assert.deepEqual(m, {
      type: "ext4",
      source: `/dev/mapper/${device}`,
      target: "",
      options: [
        "ro",
        "noload",
      ],
    });
    assert.equal((await w.s.stat(`v${i}`)).kind, "view");
    assert.equal((await w.s.stat(`v${i}`)).parent, "layer");
    assert.deepEqual(await w.s.usage(`v${i}`), { size: 0, inodes: 0 });
  }
  assert.equal(w.dm.readText(device, FIRST_DATA_BLOCK), "layer file");
  assert.throws(() => w.dm.write(device, FIRST_DATA_BLOCK, "x"), /not permitted/);
  // every Remove but the last leaves the device; the last deactivates it
  for (let i = 0; i < 9; i++) {
    assert.deepEqual(await w.changes(() => w.s.remove(`v${i}`)), [], `remove ${i}: none`);
  }
  assert.deepEqual(w.dm.thinDevices(POOL), [device]);
  assert.deepEqual(await w.changes(() => w.s.remove("v9")), [`remove ${device}`]);
  assert.deepEqual(w.dm.thinDevices(POOL), []);
  assert.deepEqual(w.dm.thinIds(POOL), ids);
  // the layer is whole and removable
  await w.s.remove("layer");
  assert.equal(w.dm.thinIds(POOL).length, ids.length - 1);
});

Deno.test("views: a view without a parent shares the template read-only", async () => {
  await using w = await World.create();
  await w.s.prepare("warm", ""); // builds the template
  const ids = w.dm.thinIds(POOL);
  const [template] = w.s.pool.store.listTemplates();
  await w.s.view("e1", "");
  assert.deepEqual(await w.changes(() => w.s.view("e2", "")), []);
  assert.deepEqual(w.dm.thinIds(POOL), ids);
  for (const key of ["e1", "e2"]) {
    const [m] = await w.s.mounts(key);
    assert.equal(m.source, `/dev/mapper/${template.name}`);
    assert.deepEqual(m.options, ["ro", "noload"]);
    assert.equal((await w.s.stat(key)).parent, "");
  }
  assert.ok((await w.dm.info(template.name))?.readOnly);
  assert.equal(w.dm.readText(template.name, ROOT_BLOCK), ROOT_EMPTY);
  // a parentless Prepare snapshots the template while views share it (suspended around it)
  await w.s.prepare("p", "");
  assert.deepEqual(w.dm.unsafeSnapshots, []);
  await w.s.remove("e1");
  await w.s.remove("e2");
  assert.ok(!w.dm.hasDevice(template.name), "template deactivated with its last view");
});

Deno.test("views: xfs views mount ro, nouuid and norecovery", async () => {
  await using w = await World.create({ fsType: "xfs" });
  await w.layer("layer", "xfs file");
  const [m] = await w.s.view("v", "layer");
  assert.deepEqual(m.options, ["nouuid", "ro", "norecovery"]);
  const [e] = await w.s.view("e", "");
  assert.deepEqual(e.options, ["nouuid", "ro", "norecovery"]);
});

Deno.test("views: Prepare of a child works while views share its parent, which they keep reading", async () => {
  await using w = await World.create();
  await w.layer("layer", "layer file");
  await w.s.view("v", "layer");
  const device = w.deviceOf("layer");
  w.dm.openDevice(device); // the view is mounted
  const child = await w.s.prepare("child", "layer");
  const childDevice = nameOfPath(child[0].source)!;
  assert.notEqual(childDevice, device);
  assert.deepEqual(w.dm.unsafeSnapshots, [], "the origin was suspended around create_snap");
  assert.equal(w.dm.readText(childDevice, FIRST_DATA_BLOCK), "layer file");
  w.dm.write(childDevice, FIRST_DATA_BLOCK, "child file");
  assert.equal(w.dm.readText(device, FIRST_DATA_BLOCK), "layer file", "the view reads the same");
  assert.ok((await w.dm.info(device))?.readOnly && !(await w.dm.info(device))?.suspended);
  w.dm.closeDevice(device);
});

Deno.test("views: a committed snapshot still open read-write is not shared: its view gets a device of its own", async () => {
  await using w = await World.create();
  const m = await w.s.prepare("busy", "");
  const device = nameOfPath(m[0].source)!;
  w.dm.openDevice(device); // mounted when committed, as containerd 1.6 does
  w.dm.write(device, FIRST_DATA_BLOCK, "written");
  await w.s.commit("layer", "busy");
  assert.ok(w.dm.deferredRemovePending(device));
  const ids = w.dm.thinIds(POOL).length;
  const [v] = await w.s.view("v", "layer");
  const own = nameOfPath(v.source)!;
  assert.notEqual(own, device, "not the committed snapshot's device");
  assert.equal(w.dm.thinIds(POOL).length, ids + 1, "a thin snapshot of its own");
  assert.deepEqual(v.options, ["ro"], "its own device replays its journal itself");
  assert.equal(w.dm.readText(own, FIRST_DATA_BLOCK), "written");
  assert.deepEqual(w.dm.unsafeSnapshots, []);
  // once unmounted (the deferred removal done), the next view shares the device
  w.dm.closeDevice(device);
  assert.ok(!w.dm.hasDevice(device));
  const [v2] = await w.s.view("v2", "layer");
  assert.equal(nameOfPath(v2.source), device);
  assert.equal(w.dm.thinIds(POOL).length, ids + 1);
  // the view with its own device is removed with it; the shared one is not touched
  await w.s.remove("v");
  assert.equal(w.dm.thinIds(POOL).length, ids);
  assert.ok(w.dm.hasDevice(device));
  await w.s.remove("v2");
  assert.ok(!w.dm.hasDevice(device));
});

Deno.test("views: Remove of a shared parent is refused, Commit of a view too; a mounted last view stays", async () => {
  await using w = await World.create();
  await w.layer("layer", "layer file");
  await w.s.view("v", "layer");
  await assert.rejects(w.s.remove("layer"), FailedPreconditionError);
  await assert.rejects(w.s.commit("c", "v"), FailedPreconditionError);
  const device = w.deviceOf("v");
  w.dm.openDevice(device);
  await assert.rejects(w.s.remove("v"), (err: Error) => {
    assert.ok(err instanceof FailedPreconditionError);
    assert.match(err.message, /cannot remove snapshot "v".*busy/);
    return true;
  });
  assert.equal((await w.s.stat("v")).kind, "view");
  w.dm.closeDevice(device);
  await w.s.remove("v");
  await w.s.remove("layer");
});

Deno.test("views: a start activates shared devices read-only from the rows, and deactivates those no view uses", async () => {
  await using w = await World.create();
  await w.layer("a", "a file");
  await w.layer("b", "b file");
  await w.s.view("va1", "a");
  await w.s.view("va2", "a");
  await w.s.view("vb", "b");
  const a = w.deviceOf("a");
  const b = w.deviceOf("b");
  // b's view row is gone while its device stayed (as a crash after a removal's row would leave
  // it), and the host rebooted (a deactivated)
  w.s.pool.store.deleteSnapshot(w.s.pool.store.getSnapshot("vb")!.id);
  await w.s.close();
  await w.dm.remove(a);
  await w.open();
  assert.deepEqual(w.s.lastReconcile?.activated, [a]);
  assert.deepEqual(w.s.lastReconcile?.deactivated, [b]);
  assert.deepEqual(w.dm.thinDevices(POOL), [a]);
  assert.ok((await w.dm.info(a))?.readOnly, "activated read-only");
  assert.equal(w.dm.readText(a, FIRST_DATA_BLOCK), "a file");
});

Deno.test("views: with async_remove the last Remove makes no call, Cleanup deactivates; a View between reuses", async () => {
  await using w = await World.create({ asyncRemove: true });
  await w.layer("layer", "layer file");
  const device = w.deviceOf("layer");
  await w.s.view("v1", "layer");
  assert.deepEqual(await w.changes(() => w.s.remove("v1")), []);
  assert.ok(w.dm.hasDevice(device), "left active for Cleanup");
  await w.s.view("v2", "layer"); // the idle device is reused
  assert.ok((await w.dm.info(device))?.readOnly);
  await w.s.cleanup();
  assert.ok(w.dm.hasDevice(device), "a view uses it again");
  await w.s.remove("v2");
  assert.deepEqual(await w.changes(() => w.s.cleanup()), [`remove ${device}`]);
  assert.ok(!w.dm.hasDevice(device));
});

Deno.test("views: a template that views share outlives a settings change until they are gone", async () => {
  await using w = await World.create();
  await w.s.view("e", "");
  const [old] = w.s.pool.store.listTemplates();
  await w.restart({ baseImageSize: 16 * 1024 * 1024 });
  assert.ok(w.dm.thinIds(POOL).includes(old.thinId), "kept while a view shares it");
  assert.equal((await w.s.mounts("e"))[0].source, `/dev/mapper/${old.name}`);
  await w.s.remove("e");
  await w.restart();
  assert.ok(!w.dm.thinIds(POOL).includes(old.thinId), "dropped at the next start");
});

Deno.test("views: an ext4 left needing journal recovery (a host crash while mounted) is not shared: its view gets a device of its own", async () => {
  await using w = await World.create();
  const m = await w.s.prepare("work", "");
  const device = nameOfPath(m[0].source)!;
  w.dm.write(device, FIRST_DATA_BLOCK, "in the journal");
  // the host crashed while the filesystem was mounted: its superblock says needs_recovery
  w.dm.write(device, SUPERBLOCK, `${w.dm.readText(device, SUPERBLOCK)}${NEEDS_RECOVERY}`);
  await w.s.commit("layer", "work");
  const ids = w.dm.thinIds(POOL).length;
  const [v] = await w.s.view("v", "layer");
  assert.notEqual(nameOfPath(v.source), device, "a device of its own, which can replay");
  assert.deepEqual(v.options, ["ro"]);
  assert.equal(w.dm.thinIds(POOL).length, ids + 1);
  assert.ok(!w.dm.hasDevice(device), "the read-only activation was undone");
  assert.equal(w.dm.readText(nameOfPath(v.source)!, FIRST_DATA_BLOCK), "in the journal");
  // a failing read of the superblock is no reason to fail the View: it falls back the same way
  w.dm.injectFault({ op: "needsRecovery" });
  const [v2] = await w.s.view("v2", "layer");
  assert.notEqual(nameOfPath(v2.source), device);
});
