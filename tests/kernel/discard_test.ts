/**
 * `online_discard`: active snapshots are mounted with `-o discard`, so a file deleted inside a
 * running container unmaps its blocks in the pool at once.
 *
 * `discard_blocks`: removing a snapshot discards its blocks before the thin id is deleted, so
 * the pool passes the discards down and the blocks of a loop-file pool go back to the host's
 * filesystem (the backing file's allocation shrinks). Without it, deleting the thin id frees
 * the blocks inside the pool only.
 */
import assert from "node:assert/strict";
import { openSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { createTestPool, requireKernel, sh } from "./fixtures.ts";
import { realStack, testSettings, withMount } from "./snapshot_fixtures.ts";
import { poll, timedOut } from "../../testing/poll.ts";

const MiB = 1024 * 1024;

/** Bytes the file `path` has allocated on its filesystem. */
async function allocated(path: string): Promise<number> {
  return ((await Deno.stat(path)).blocks ?? 0) * 512;
}

Deno.test("discard_blocks: removing an active or a committed snapshot gives its blocks back to the pool's data file", async () => {
  requireKernel();
  for (const discardBlocks of [true, false]) {
    await using pool = await createTestPool({ dataMb: 256 });
    const dataFile = `${pool.dir}/data`;
    const s = await openSnapshotter({
      ...testSettings(pool, { discardBlocks }),
      ...realStack(),
    });
    try {
      // an active snapshot and a committed one, 16 MiB written to each (not through a mount:
      // what matters is the pool's mapped blocks)
      const fill = async (key: string) => {
        const mounts = await s.prepare(key, "");
        await sh(
          "dd",
          "if=/dev/urandom",
          `of=${mounts[0].source}`,
          "bs=1M",
          "count=16",
          "oflag=direct",
        );
      };
      await fill("active");
      await fill("layer-tmp");
      await s.commit("layer", "layer-tmp");
      for (const key of ["active", "layer"]) {
        const before = await allocated(dataFile);
        await s.remove(key);
        const freed = before - await allocated(dataFile);
        const what = `discard_blocks=${discardBlocks}, removing ${key}: ${freed / MiB} MiB freed`;
        if (discardBlocks) assert.ok(freed >= 15 * MiB, what);
        else assert.ok(freed < 1 * MiB, what);
      }
      assert.deepEqual(s.pool.store.listDevices("deleting"), []);
    } finally {
      await s.close();
    }
  }
});

Deno.test("online_discard: a file deleted in a mounted active snapshot gives its blocks back to the pool at once", async () => {
  requireKernel();
  for (const fsType of ["ext4", "xfs"] as const) {
    for (const onlineDiscard of [true, false]) {
      await using pool = await createTestPool({ dataMb: 1024 });
      const s = await openSnapshotter({
        ...testSettings(pool, {
          fsType,
          baseImageSize: (fsType === "xfs" ? 320 : 64) * MiB,
          onlineDiscard,
        }),
        ...realStack(),
      });
      const what = `${fsType}, online_discard=${onlineDiscard}`;
      try {
        const mounts = await s.prepare("a", "");
        assert.equal(mounts[0].options.includes("discard"), onlineDiscard, what);
        assert.ok(!(await s.view("v", "")).at(0)!.options.includes("discard"), "never on a view");
        const device = { name: mounts[0].source.replace("/dev/mapper/", "") };
        await withMount(mounts, async (dir) => {
          await sh("dd", "if=/dev/urandom", `of=${dir}/big`, "bs=1M", "count=16", "conv=fsync");
          const written = await s.pool.mappedBytes(device);
          await Deno.remove(`${dir}/big`);
          await sh("sync", "-f", dir);
          // xfs issues its discards in the background: watch for up to 5 s either way (without
          // online discard, that the blocks stay mapped that long; it ends early if they do not)
          let freed = 0;
          await poll(
            async () => {
              freed = written - await s.pool.mappedBytes(device);
              return freed >= (onlineDiscard ? 14 : 1) * MiB;
            },
            `${what}: the deleted file's blocks to be unmapped`,
            {
              timeoutMs: 5000,
              intervalMs: 100,
            },
          ).catch(timedOut);
          const text = `${what}: ${(freed / MiB).toFixed(1)} MiB unmapped`;
          if (onlineDiscard) assert.ok(freed >= 14 * MiB, text);
          else assert.ok(freed < 1 * MiB, text);
        });
      } finally {
        await s.close();
      }
    }
  }
});
