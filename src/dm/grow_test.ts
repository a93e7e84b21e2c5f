import assert from "node:assert/strict";
import { join } from "node:path";
import { DmError } from "./errors.ts";
import { FakeRunner } from "../../testing/fake_runner.ts";
import { extSuperblockProblem, growFilesystem, mountPoints, releaseMount } from "./mkfs.ts";

/** A 1024-byte ext superblock with `state` and `incompat`. */
function superblock(state: number, incompat = 0, magic = 0xef53): Uint8Array {
  const sb = new Uint8Array(1024);
  const view = new DataView(sb.buffer);
  view.setUint16(0x38, magic, true);
  view.setUint16(0x3a, state, true);
  view.setUint32(0x60, incompat, true);
  return sb;
}

/** A file holding an ext superblock at 1024, as a device would. */
async function imageWith(sb: Uint8Array): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "grow_test_" });
  const bytes = new Uint8Array(4096);
  bytes.set(sb, 1024);
  await Deno.writeFile(path, bytes);
  return path;
}

Deno.test("grow unit: the ext superblock tells a clean filesystem from one not to resize", () => {
  assert.equal(extSuperblockProblem(superblock(1)), undefined);
  assert.equal(extSuperblockProblem(superblock(1, 0x2 | 0x40 | 0x200)), undefined); // other features
  assert.match(extSuperblockProblem(superblock(1, 0x4))!, /journal needs recovery/);
  assert.match(extSuperblockProblem(superblock(0))!, /not clean/);
  assert.match(extSuperblockProblem(superblock(3))!, /recorded errors/);
  assert.match(extSuperblockProblem(superblock(1, 0, 0x1234))!, /bad magic/);
});

Deno.test("grow unit: ext4 is resized offline with one resize2fs; a dirty one is refused unspawned", async () => {
  const clean = await imageWith(superblock(1));
  const dirty = await imageWith(superblock(1, 0x4));
  try {
    const r = new FakeRunner().on(["resize2fs"], {});
    await growFilesystem(r, { fsType: "ext4", device: clean, mountPoint: "/unused" });
    assert.deepEqual(r.argvs(), [["resize2fs", "-f", clean]]);
    await assert.rejects(
      growFilesystem(r, { fsType: "ext4", device: dirty, mountPoint: "/unused" }),
      (err: unknown) => {
        assert.ok(err instanceof DmError);
        assert.equal(
          err.message,
          `Cannot grow the ext4 filesystem on "${dirty}": its journal needs recovery (it was ` +
            "not cleanly unmounted or frozen)",
        );
        return true;
      },
    );
    assert.equal(r.spawns, 1, "nothing spawned for the dirty one");
    const failing = new FakeRunner().on(["resize2fs"], { code: 1, stderr: "resize2fs: No space" });
    await assert.rejects(
      growFilesystem(failing, { fsType: "ext2", device: clean, mountPoint: "/unused" }),
      new RegExp(`^DmError: Cannot grow the ext2 filesystem on "${clean}": .*No space`),
    );
  } finally {
    await Deno.remove(clean);
    await Deno.remove(dirty);
  }
});

Deno.test("grow unit: xfs is grown on a private mount point, unmounted and removed even on failure", async () => {
  const dir = await Deno.makeTempDir({ prefix: "grow_test_" });
  const mountPoint = join(dir, "grow", "pool-dms-7");
  try {
    const seen: boolean[] = [];
    const r = new FakeRunner()
      .on(["mount"], () => {
        seen.push(Deno.statSync(mountPoint).isDirectory);
        return {};
      })
      .on(["xfs_growfs"], {}, 1)
      .on(["xfs_growfs"], { code: 1, stderr: "xfs_growfs: XFS_IOC_FSGROWFSDATA failed" })
      .on(["umount"], {});
    await growFilesystem(r, { fsType: "xfs", device: "/dev/mapper/d", mountPoint });
    assert.deepEqual(r.argvs(), [
      ["mount", "-t", "xfs", "-o", "nouuid", "/dev/mapper/d", mountPoint],
      ["xfs_growfs", "-d", mountPoint],
      ["umount", mountPoint],
    ]);
    assert.deepEqual(seen, [true], "the mount point exists when mounted on");
    await assert.rejects(Deno.stat(mountPoint), Deno.errors.NotFound);
    await assert.rejects(
      growFilesystem(r, { fsType: "xfs", device: "/dev/mapper/d", mountPoint }),
      /^DmError: Cannot grow the xfs filesystem on "\/dev\/mapper\/d": .*FSGROWFSDATA failed/,
    );
    assert.deepEqual(r.argvs().at(-1), ["umount", mountPoint], "unmounted after the failure");
    await assert.rejects(Deno.stat(mountPoint), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("grow unit: releaseMount removes a mount point that is not mounted, spawning nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "grow_test_" });
  try {
    const r = new FakeRunner();
    await releaseMount(r, join(dir, "left"));
    await Deno.mkdir(join(dir, "left"));
    await releaseMount(r, join(dir, "left"));
    await assert.rejects(Deno.stat(join(dir, "left")), Deno.errors.NotFound);
    assert.equal(r.spawns, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("grow unit: mount points of a mountinfo text, escapes decoded", () => {
  const text = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" +
    "40 22 253:3 / /var/lib/dm\\040snap/grow/p-dms-4 rw - xfs /dev/mapper/p-dms-4 rw\n";
  assert.deepEqual(mountPoints(text), ["/", "/var/lib/dm snap/grow/p-dms-4"]);
});
