/**
 * Views without a thin device each, on a real thin-pool: views of a committed snapshot share
 * its device, activated read-only (a read-only dm table) by the first view and deactivated by
 * the last Remove; the pool's thin ids are counted through a metadata snapshot (`thin_ls`).
 * The host versions of each rule are in `src/snapshotter/views_test.ts`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { requireKernel, sh, shTry } from "./fixtures.ts";
import {
  createTestSnapshotter,
  mountAll,
  readTree,
  type TestSnapshotter,
  thinDevicesOn,
  unmount,
  withMount,
} from "./snapshot_fixtures.ts";
import { errorKind } from "../../src/util/errors.ts";

/** dm name of the device behind a snapshot's row. */
function deviceOf(t: TestSnapshotter, key: string): string {
  const s = t.snapshotter;
  return s.pool.deviceName(s.pool.store.getSnapshot(key)!.thinId);
}

/** True when dm device `name` is active with a read-only table. */
async function readOnly(name: string): Promise<boolean> {
  const attr = await sh("dmsetup", "info", "-c", "--noheadings", "-o", "attr", name);
  return attr.trim()[3] === "r"; // L--r: live, read-only (L--w: writable)
}

for (const fsType of ["ext4", "xfs"] as const) {
  Deno.test(`views (${fsType}): 10 views of a committed snapshot leave the pool's thin device count unchanged, each reads its content`, async () => {
    requireKernel();
    if (fsType === "xfs") assert.equal((await shTry("mkfs.xfs", "-V")).code, 0, "mkfs.xfs");
    await using t = await createTestSnapshotter({
      dataMb: 1024,
      settings: fsType === "xfs" ? { fsType, baseImageSize: 320 * 1024 * 1024 } : {},
    });
    const s = t.snapshotter;
    await withMount(await s.prepare("work", ""), async (dir) => {
      await Deno.writeTextFile(join(dir, "layer"), "layer content\n");
      await Deno.mkdir(join(dir, "sub"));
      await Deno.writeTextFile(join(dir, "sub", "f"), "nested\n");
    });
    await s.commit("layer", "work");
    const expected = { "layer": "layer content\n", "sub/": "<dir>", "sub/f": "nested\n" };
    const ids = await t.pool.thinIds();
    const device = deviceOf(t, "layer");
    assert.deepEqual(await thinDevicesOn(t.pool.name), []);
    const spawns = s.pool.dm.spawns;
    const started = performance.now();
    const views = [];
    for (let i = 0; i < 10; i++) views.push(await s.view(`v${i}`, "layer"));
    const ms = performance.now() - started;
    console.log(
      `10 views: ${(ms / 10).toFixed(1)} ms and ${(s.pool.dm.spawns - spawns) / 10} spawns each`,
    );
    assert.deepEqual(await t.pool.thinIds(), ids, "no thin device per view");
    assert.deepEqual(await thinDevicesOn(t.pool.name), [device], "one shared activation");
    assert.ok(await readOnly(device), "a read-only table");
    const dirs: string[] = [];
    try {
      for (const [i, m] of views.entries()) {
        assert.equal(m[0].source, `/dev/mapper/${device}`);
        assert.deepEqual(
          m[0].options,
          fsType === "xfs" ? ["nouuid", "ro", "norecovery"] : ["ro", "noload"],
        );
        dirs.push(await mountAll(m)); // all ten mounted at once
        assert.deepEqual(await readTree(dirs[i]), expected, `view ${i}`);
        assert.deepEqual(await s.usage(`v${i}`), { size: 0, inodes: 0 });
      }
      const write = await shTry("sh", "-c", `echo x > ${dirs[0]}/new`);
      assert.match(write.stderr, /Read-only file system/);
      // a child of the shared snapshot: its origin is active read-only (suspended around the
      // snapshot); the views keep reading the same content while the child is written
      await withMount(await s.prepare("child", "layer"), async (dir) => {
        assert.deepEqual(await readTree(dir), expected);
        await Deno.writeTextFile(join(dir, "layer"), "changed in the child\n");
        await Deno.writeTextFile(join(dir, "child"), "child\n");
        await sh("sync");
      });
      for (const dir of dirs) assert.deepEqual(await readTree(dir), expected);
      await s.remove("child");
      // Remove of the shared snapshot refused (it has children), Commit of a view too
      await assert.rejects(s.remove("layer"), (e) => errorKind(e) === "failed_precondition");
      await assert.rejects(s.commit("c", "v0"), (e) => errorKind(e) === "failed_precondition");
      // every Remove but the last leaves the device alone; the last, still mounted, is refused
      for (let i = 1; i < 10; i++) {
        await unmount(dirs.pop()!);
        await s.remove(`v${i}`);
      }
      assert.deepEqual(await thinDevicesOn(t.pool.name), [device]);
      await assert.rejects(s.remove("v0"), (e) => errorKind(e) === "failed_precondition");
      assert.deepEqual(await readTree(dirs[0]), expected);
    } finally {
      for (const dir of dirs) await unmount(dir);
    }
    await s.remove("v0");
    assert.deepEqual(await thinDevicesOn(t.pool.name), [], "the last Remove deactivates it");
    assert.deepEqual(await t.pool.thinIds(), ids);
    // a view of nothing shares the template
    const e1 = await s.view("e1", "");
    const e2 = await s.view("e2", "");
    assert.equal(e1[0].source, e2[0].source);
    await withMount(e1, async (dir) => assert.deepEqual(await readTree(dir), {}));
    assert.deepEqual(await t.pool.thinIds(), ids);
    await s.remove("e1");
    await s.remove("e2");
    assert.deepEqual(await thinDevicesOn(t.pool.name), []);
    await s.remove("layer");
  });
}

Deno.test("views: a committed snapshot still mounted read-write is not shared: its view gets a device of its own", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  const s = t.snapshotter;
  const dir = await mountAll(await s.prepare("busy", ""));
  let mounted = true;
  try {
    await Deno.writeTextFile(join(dir, "data"), "written before commit\n");
    await s.commit("layer", "busy"); // containerd 1.6 does this; the device stays until unmounted
    const device = deviceOf(t, "layer");
    const ids = (await t.pool.thinIds()).length;
    const [own] = await s.view("v1", "layer");
    assert.notEqual(own.source, `/dev/mapper/${device}`, "not the device writes can reach");
    assert.deepEqual(own.options, ["ro"]);
    assert.equal((await t.pool.thinIds()).length, ids + 1, "a thin snapshot of its own");
    await withMount([own], async (v) => {
      assert.equal(await Deno.readTextFile(join(v, "data")), "written before commit\n");
    });
    await unmount(dir); // the deferred removal of the committed device happens now
    mounted = false;
    assert.ok(!(await thinDevicesOn(t.pool.name)).includes(device));
    const [shared] = await s.view("v2", "layer");
    assert.equal(shared.source, `/dev/mapper/${device}`, "shared once nothing writes to it");
    await withMount([shared], async (v) => {
      assert.equal(await Deno.readTextFile(join(v, "data")), "written before commit\n");
    });
    await s.remove("v1");
    await s.remove("v2");
    assert.equal((await t.pool.thinIds()).length, ids);
    assert.deepEqual(await thinDevicesOn(t.pool.name), []);
  } finally {
    if (mounted) await unmount(dir);
  }
});

Deno.test("views: a restart activates the shared device read-only from the rows alone", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  await withMount(
    await t.snapshotter.prepare("work", ""),
    (d) => Deno.writeTextFile(join(d, "f"), "kept\n"),
  );
  await t.snapshotter.commit("layer", "work");
  await t.snapshotter.view("v", "layer");
  const device = deviceOf(t, "layer");
  await sh("dmsetup", "remove", device); // a reboot
  const s = await t.reopen();
  assert.deepEqual(s.lastReconcile?.activated, [device]);
  assert.ok(await readOnly(device));
  await withMount(await s.mounts("v"), async (d) => {
    assert.equal(await Deno.readTextFile(join(d, "f")), "kept\n");
  });
  await s.remove("v");
  assert.deepEqual(await thinDevicesOn(t.pool.name), []);
});

Deno.test("views: an ext4 left needing journal recovery (its host crashed while mounted) is not shared: its view replays on a device of its own", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  const s = t.snapshotter;
  const dir = await mountAll(await s.prepare("work", ""));
  try {
    await Deno.writeTextFile(join(dir, "f"), "written before the crash\n");
    await sh("sync");
    // the filesystem stops as at a crash of its host: needs_recovery stays set on disk
    await sh("xfs_io", "-x", "-c", "shutdown -f", dir);
  } finally {
    await unmount(dir);
  }
  await s.commit("layer", "work");
  const device = deviceOf(t, "layer");
  const ids = (await t.pool.thinIds()).length;
  const [own] = await s.view("v", "layer");
  assert.notEqual(own.source, `/dev/mapper/${device}`, "not shared");
  assert.deepEqual(own.options, ["ro"]);
  assert.equal((await t.pool.thinIds()).length, ids + 1);
  assert.ok(!(await thinDevicesOn(t.pool.name)).includes(device), "read-only activation undone");
  const features = await sh("dumpe2fs", "-h", own.source);
  assert.match(features, /^Filesystem features:.*needs_recovery/m, "the journal needs replaying");
  await withMount([own], async (v) => {
    assert.equal(await Deno.readTextFile(join(v, "f")), "written before the crash\n");
  });
  await s.remove("v");
});
