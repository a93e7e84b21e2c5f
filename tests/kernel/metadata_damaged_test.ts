/**
 * A lost metadata database with real devices, through both device-mapper backends: every device
 * the snapshotter activates carries the dm UUID of its root_path; a missing or empty
 * `metadata.db` is refused while a device with that UUID is active (nothing is created or
 * written), another instance on the same pool (another root_path) starts with a new database
 * next to it, and `allowNewMetadata` starts empty and leaves the device alone.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Dmsetup } from "../../src/dm/dmsetup/dmsetup.ts";
import { DmIoctl } from "../../src/dm/ioctl/ioctl.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import type { DeviceMapper } from "../../src/dm/types.ts";
import { deviceUuidPrefix } from "../../src/snapshotter/open_metadata.ts";
import { openSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { errorKind } from "../../src/util/errors.ts";
import { createTestPool, requireKernel, sh } from "./fixtures.ts";
import { realStack, testSettings } from "./snapshot_fixtures.ts";

const BACKENDS: Record<string, () => DeviceMapper> = {
  dmsetup: () => new Dmsetup({ runner: new DenoCommandRunner() }),
  ioctl: () => new DmIoctl(),
};

for (const [backend, makeDm] of Object.entries(BACKENDS)) {
  Deno.test(`metadata db lost (${backend}): refused while this root's devices are active; another root and the flag start`, async () => {
    requireKernel();
    await using pool = await createTestPool({ dataMb: 256 });
    const open = (root: string, allowNewMetadata = false) =>
      openSnapshotter({
        ...testSettings(pool, { rootPath: join(pool.rootDir, root), allowNewMetadata }),
        ...realStack(),
        dm: makeDm(), // closed with the snapshotter
      });

    const a = await open("a");
    await a.prepare("x", "");
    const thinId = a.pool.store.getSnapshot("x")!.thinId;
    const device = a.pool.deviceName(thinId);
    const uuid = `${deviceUuidPrefix(join(pool.rootDir, "a"), pool.name)}${thinId}`;
    assert.equal(
      (await sh("dmsetup", "info", "-c", "--noheadings", "-o", "uuid", device)).trim(),
      uuid,
      "the kernel holds the device's UUID",
    );
    assert.equal((await a.pool.dm.infoAll()).get(device)?.uuid, uuid, "the backend reports it");
    await a.close();

    const path = join(pool.rootDir, "a", "metadata.db");
    const refused = (reason: string) => (err: unknown) => {
      assert.equal(
        (err as Error).message,
        `Cannot open metadata database "${path}": it is ${reason}, but pool "${pool.name}" ` +
          `has 1 active device of this root_path (${device}): starting empty would hide their ` +
          `snapshots from containerd. Restore metadata.db from a backup, or start empty ` +
          `anyway with --allow-new-metadata (allow_new_metadata = true): those devices are ` +
          `then left alone`,
      );
      assert.equal(errorKind(err), "failed_precondition");
      return true;
    };
    await Deno.remove(path);
    await assert.rejects(open("a"), refused("missing"));
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound, "nothing was created");
    await Deno.writeFile(path, new Uint8Array(0));
    await assert.rejects(open("a"), refused("empty"));
    assert.equal((await Deno.stat(path)).size, 0, "nothing was written");

    // a second instance on the pool starts with its new database next to a's device
    const b = await open("b");
    assert.ok(b.lastReconcile!.foreign.includes(device), JSON.stringify(b.lastReconcile));
    await b.prepare("y", "");
    await b.close();

    // the operator says so: a starts empty, its old device stays as it is
    const a2 = await open("a", true);
    assert.deepEqual(await a2.list(), []);
    assert.ok(a2.lastReconcile!.foreign.includes(device), JSON.stringify(a2.lastReconcile));
    assert.match(await sh("dmsetup", "info", device), /State:\s+ACTIVE/);
    await a2.prepare("z", "");
    await a2.close();
  });
}
