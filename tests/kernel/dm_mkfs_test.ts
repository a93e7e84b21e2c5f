/**
 * mkfs (ext4, ext2, xfs), lost+found removal without mounting, mount/umount, blkdiscard
 * and losetup against the real kernel.
 */
import assert from "node:assert/strict";
import { Dmsetup } from "../../src/dm/dmsetup/dmsetup.ts";
import { DmError } from "../../src/dm/errors.ts";
import { attachLoop, detachLoops, listLoops, loopsOf } from "../../src/dm/losetup.ts";
import {
  blkdiscard,
  blockDeviceSize,
  type FsType,
  mkfs,
  removeLostFound,
} from "../../src/dm/mkfs.ts";
import { mount, umount } from "../../src/dm/mount.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import { devicePath, type ThinStatus, thinTable } from "../../src/dm/types.ts";
import { createTestPool, requireKernel, sh, shTry, type TestPool } from "./fixtures.ts";

const MiB = 1024 * 1024;

function driver(): { dm: Dmsetup; runner: DenoCommandRunner } {
  requireKernel();
  const runner = new DenoCommandRunner();
  return { dm: new Dmsetup({ runner, busyAttempts: 3, busyBackoffMs: 20 }), runner };
}

/** Creates thin device 1 of `pool` and activates it with `sizeMb` MiB; returns its name. */
async function activeThin(dm: Dmsetup, pool: TestPool, sizeMb: number): Promise<string> {
  await dm.createThin(pool.name, 1);
  const name = `${pool.name}-t1`;
  await dm.create(name, thinTable(pool.name, 1, sizeMb * MiB));
  return name;
}

async function fsRoundTrip(fsType: FsType, sizeMb: number): Promise<void> {
  const { dm, runner } = driver();
  await using pool = await createTestPool({ dataMb: 256 });
  const name = await activeThin(dm, pool, sizeMb);
  const dev = devicePath(name);
  assert.equal(await blockDeviceSize(dev), sizeMb * MiB);
  await mkfs(runner, { fsType, device: dev });
  assert.equal(await sh("blkid", "-o", "value", "-s", "TYPE", dev), fsType);
  await removeLostFound(runner, dev, fsType);
  if (fsType !== "xfs") {
    // the filesystem is consistent after debugfs' rmdir
    const fsck = await shTry("e2fsck", "-fn", dev);
    assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
    // removing it again reports the failure (debugfs itself exits 0)
    await assert.rejects(
      removeLostFound(runner, dev, fsType),
      (e: unknown) =>
        e instanceof DmError && /^Cannot remove lost\+found from ".*": .+/.test(e.message),
    );
  }
  const mnt = `${pool.dir}/mnt`;
  await Deno.mkdir(mnt);
  const options = fsType === "xfs" ? ["nouuid"] : [];
  await mount(runner, { device: dev, target: mnt, fsType, options });
  try {
    const entries = [];
    for await (const e of Deno.readDir(mnt)) entries.push(e.name);
    assert.deepEqual(entries, [], "fresh root is empty (no lost+found)");
    assert.equal((await Deno.stat(mnt)).mode! & 0o7777, 0o755);
    await Deno.writeTextFile(`${mnt}/f`, "data");
    assert.equal(await Deno.readTextFile(`${mnt}/f`), "data");
  } finally {
    await umount(runner, mnt);
  }
  const [st] = await dm.status(name) as ThinStatus[];
  assert.ok(st.mappedSectors > 0);
  await dm.remove(name);
}

Deno.test("dm driver: mkfs ext4 + debugfs lost+found removal + mount", async () => {
  await fsRoundTrip("ext4", 64);
});

Deno.test("dm driver: mkfs ext2 + debugfs lost+found removal + mount", async () => {
  await fsRoundTrip("ext2", 32);
});

Deno.test("dm driver: mkfs xfs (300 MiB minimum) + mount nouuid, no lost+found", async () => {
  await fsRoundTrip("xfs", 300);
});

Deno.test("dm driver: mkfs ext4 fs_options replace the defaults", async () => {
  const { dm, runner } = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  const name = await activeThin(dm, pool, 32);
  await mkfs(runner, { fsType: "ext4", device: devicePath(name), fsOptions: "stride=4" });
  const dump = await sh("dumpe2fs", "-h", devicePath(name));
  assert.match(dump, /RAID stride:\s+4/);
  // bad options are reported with mkfs' own words
  await assert.rejects(
    mkfs(runner, { fsType: "ext4", device: devicePath(name), fsOptions: "nonsense_opt" }),
    (e: unknown) =>
      e instanceof DmError &&
      e.message.startsWith(`mkfs.ext4 couldn't initialize "${devicePath(name)}": `) &&
      /nonsense_opt/.test(e.message),
  );
  await dm.remove(name);
});

Deno.test("dm driver: mkfs error texts for empty and missing paths", async () => {
  const { runner } = driver();
  await assert.rejects(
    mkfs(runner, { fsType: "ext4", device: "" }),
    (e: unknown) =>
      e instanceof DmError && e.errno === "EINVAL" &&
      e.message === `mkfs.ext4 couldn't initialize "": device path is empty`,
  );
  assert.equal(runner.spawns, 0);
  for (const fsType of ["ext4", "ext2", "xfs"] as const) {
    const missing = `/dev/mapper/dmdrv-missing-${crypto.randomUUID().slice(0, 8)}`;
    await assert.rejects(
      mkfs(runner, { fsType, device: missing }),
      (e: unknown) => {
        assert.ok(e instanceof DmError);
        assert.ok(
          e.message.startsWith(`mkfs.${fsType} couldn't initialize "${missing}": `),
          e.message,
        );
        assert.notEqual(e.exitCode, 0);
        return true;
      },
    );
  }
});

Deno.test("dm driver: blkdiscard returns mapped blocks to the pool", async () => {
  const { dm, runner } = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  const name = await activeThin(dm, pool, 16);
  await sh("dd", "if=/dev/zero", `of=${devicePath(name)}`, "bs=1M", "count=4", "oflag=direct");
  const [before] = await dm.status(name) as ThinStatus[];
  assert.equal(before.mappedSectors, 4 * 2048);
  await blkdiscard(runner, devicePath(name));
  const [after] = await dm.status(name) as ThinStatus[];
  assert.equal(after.mappedSectors, 0);
  await assert.rejects(blkdiscard(runner, `${pool.dir}/nope`), DmError);
  await dm.remove(name);
});

Deno.test("dm driver: losetup attach, list, detach", async () => {
  const { runner } = driver();
  const dir = await Deno.makeTempDir({ prefix: "dmdrv-loop-" });
  try {
    const file = `${dir}/backing`;
    await Deno.writeFile(file, new Uint8Array(0));
    await Deno.truncate(file, 4 * MiB);
    const dev = await attachLoop(runner, file);
    assert.match(dev, /^\/dev\/loop\d+$/);
    assert.deepEqual(await loopsOf(runner, file), [dev]);
    assert.equal(await blockDeviceSize(dev), 4 * MiB);
    const all = await listLoops(runner);
    assert.ok(all.some((l) => l.name === dev && l.backFile === file), JSON.stringify(all));
    const ro = await attachLoop(runner, file, { readOnly: true });
    assert.deepEqual((await loopsOf(runner, file)).sort(), [dev, ro].sort());
    assert.equal(await sh("blockdev", "--getro", ro), "1");
    const before = runner.spawns;
    await detachLoops(runner, [dev, ro]);
    assert.equal(runner.spawns - before, 1, "detaching several loops costs one spawn");
    assert.deepEqual(await loopsOf(runner, file), []);
    await assert.rejects(attachLoop(runner, `${dir}/missing`), DmError);
    await assert.rejects(detachLoops(runner, [dev]), DmError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dm driver: mount/umount errors are DmErrors with the command's words", async () => {
  const { runner } = driver();
  const dir = await Deno.makeTempDir({ prefix: "dmdrv-mnt-" });
  try {
    await assert.rejects(
      mount(runner, { device: `${dir}/nodev`, target: dir, fsType: "ext4" }),
      (e: unknown) => e instanceof DmError && /^mount -t ext4 /.test(e.message),
    );
    await assert.rejects(
      umount(runner, dir),
      (e: unknown) => e instanceof DmError && /not mounted/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
