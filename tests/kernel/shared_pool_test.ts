/**
 * Two snapshotter instances (two roots, two databases) on one thin-pool, as two containerd
 * hosts' worth of snapshotters might share an LVM pool: thin ids one instance holds are found
 * taken by the other (`create_thin`/`create_snap` EEXIST) and skipped, and neither instance's
 * start touches the other's devices.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DmIoctl } from "../../src/dm/ioctl/ioctl.ts";
import { type DevmapperSnapshotter, openSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { createTestPool, dmNames, requireKernel } from "./fixtures.ts";
import { mountAll, realStack, testSettings, unmount, withMount } from "./snapshot_fixtures.ts";

Deno.test("shared pool: two instances keep to their own thin ids and devices, across restarts", async () => {
  requireKernel();
  await using pool = await createTestPool({ dataMb: 512 });
  const stack = realStack();
  const open = (root: string) =>
    openSnapshotter({
      ...testSettings(pool, { rootPath: join(pool.rootDir, root) }),
      ...stack,
      dm: new DmIoctl(), // closed with the snapshotter
    });
  const write = (s: DevmapperSnapshotter, key: string, text: string) =>
    s.prepare(key, "").then((m) => withMount(m, (d) => Deno.writeTextFile(`${d}/who`, text)));
  const read = (s: DevmapperSnapshotter, key: string, parent: string) =>
    s.view(key, parent).then((m) => withMount(m, (d) => Deno.readTextFile(`${d}/who`)));
  const own = (s: DevmapperSnapshotter) =>
    s.pool.store.listDevices().filter((d) => d.state !== "foreign").map((d) => d.thinId);

  let a = await open("a");
  let b = await open("b");
  let aDir: string | undefined;
  try {
    await write(a, "a-base-tmp", "a");
    await a.commit("a-base", "a-base-tmp");
    aDir = await mountAll(await a.prepare("a-active", "a-base"));
    const aActive = a.pool.deviceName(a.pool.store.getSnapshot("a-active")!.thinId);

    // b's counter starts where a's did: each id a holds is found taken and skipped
    await write(b, "b-base-tmp", "b");
    await b.commit("b-base", "b-base-tmp");
    assert.ok(b.pool.store.listDevices("foreign").length >= 2, "b recorded a's ids as taken");
    assert.deepEqual(own(a).filter((id) => own(b).includes(id)), [], "no id in both");

    // b restarts: its reconciliation leaves a's active device (in use) alone
    await b.close();
    b = await open("b");
    assert.ok(b.lastReconcile!.foreign.includes(aActive), JSON.stringify(b.lastReconcile));
    assert.deepEqual(b.lastReconcile!.deactivated, []);
    assert.ok((await dmNames()).includes(aActive));
    await Deno.writeTextFile(`${aDir}/after`, "still writable");
    assert.equal(await Deno.readTextFile(`${aDir}/after`), "still writable");

    // and a restarts with b's devices around
    await a.close();
    a = await open("a");
    assert.equal(a.lastReconcile!.missing.length, 0, JSON.stringify(a.lastReconcile));

    // each sees its own snapshots with its own content
    assert.deepEqual((await a.list()).map((i) => i.name).sort(), ["a-active", "a-base"]);
    assert.deepEqual((await b.list()).map((i) => i.name).sort(), ["b-base"]);
    assert.equal(await read(a, "a-view", "a-base"), "a");
    assert.equal(await read(b, "b-view", "b-base"), "b");

    await unmount(aDir);
    aDir = undefined;
    for (const key of ["a-view", "a-active", "a-base"]) await a.remove(key);
    for (const key of ["b-view", "b-base"]) await b.remove(key);
    await a.cleanup();
    await b.cleanup();
  } finally {
    if (aDir) await unmount(aDir);
    await a.close();
    await b.close();
  }
});
