import assert from "node:assert/strict";
import { DmError } from "./errors.ts";
import { FakeRunner } from "../../testing/fake_runner.ts";
import { DEFAULT_EXT4_OPTIONS, isFsType, mkfs, mkfsArgv, removeLostFound } from "./mkfs.ts";

Deno.test("mkfs unit: argv per filesystem, device last", () => {
  assert.deepEqual(mkfsArgv("ext4", "/dev/mapper/d"), [
    "mkfs.ext4",
    "-q",
    "-E",
    "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
    "/dev/mapper/d",
  ]);
  assert.equal(DEFAULT_EXT4_OPTIONS, "nodiscard,lazy_itable_init=0,lazy_journal_init=0");
  assert.deepEqual(mkfsArgv("ext4", "/d", "stride=4"), ["mkfs.ext4", "-q", "-E", "stride=4", "/d"]);
  assert.deepEqual(mkfsArgv("ext2", "/d"), ["mkfs.ext2", "-q", "/d"]);
  assert.deepEqual(mkfsArgv("ext2", "/d", "stride=2"), ["mkfs.ext2", "-q", "-E", "stride=2", "/d"]);
  assert.deepEqual(mkfsArgv("xfs", "/d", "ignored"), ["mkfs.xfs", "-q", "/d"]);
  assert.ok(isFsType("xfs") && isFsType("ext2") && !isFsType("btrfs") && !isFsType(""));
});

Deno.test("mkfs unit: failure text includes mkfs' output", async () => {
  const r = new FakeRunner().on(["mkfs.ext4"], {
    code: 1,
    stderr: "mke2fs: No such file or directory while trying to determine filesystem size\n",
  });
  await assert.rejects(mkfs(r, { fsType: "ext4", device: "/dev/x" }), (e: unknown) => {
    assert.ok(e instanceof DmError);
    assert.equal(
      e.message,
      'mkfs.ext4 couldn\'t initialize "/dev/x": mke2fs: No such file or directory while trying to determine filesystem size',
    );
    assert.equal(e.exitCode, 1);
    return true;
  });
  const silent = new FakeRunner().on(["mkfs.xfs"], { code: 1 });
  await assert.rejects(
    mkfs(silent, { fsType: "xfs", device: "/dev/y" }),
    /^DmError: mkfs.xfs couldn't initialize "\/dev\/y": exit code 1$/,
  );
});

Deno.test("mkfs unit: debugfs failures are detected from its output", async () => {
  const ok = new FakeRunner().on(["debugfs"], { stderr: "debugfs 1.47.0 (5-Feb-2023)\n" });
  await removeLostFound(ok, "/dev/d", "ext4");
  assert.deepEqual(ok.calls[0].args, ["-w", "-R", "rmdir lost+found", "/dev/d"]);
  const bad = new FakeRunner().on(["debugfs"], {
    stderr: "debugfs 1.47.0 (5-Feb-2023)\nrmdir: File not found by ext2_lookup \n",
  });
  await assert.rejects(
    removeLostFound(bad, "/dev/d", "ext2"),
    /^DmError: Cannot remove lost\+found from "\/dev\/d": rmdir: File not found by ext2_lookup$/,
  );
  const none = new FakeRunner();
  await removeLostFound(none, "/dev/d", "xfs");
  assert.equal(none.calls.length, 0);
});
