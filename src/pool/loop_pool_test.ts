import assert from "node:assert/strict";
import { InvalidArgumentError } from "../util/errors.ts";
import { Dmsetup } from "../dm/dmsetup/dmsetup.ts";
import { FakeRunner } from "../../testing/fake_runner.ts";
import { createLoopPool, loopPoolFiles, poolTable, thinDevicesOfPool } from "./loop_pool.ts";

Deno.test("loop pool unit: table and file names", () => {
  assert.equal(
    poolTable({
      dataSectors: 131072,
      metaDevice: "/dev/loop1",
      dataDevice: "/dev/loop0",
      blockSectors: 128,
    }),
    "0 131072 thin-pool /dev/loop1 /dev/loop0 128 32768 1 skip_block_zeroing",
  );
  assert.equal(
    poolTable({
      dataSectors: 8,
      metaDevice: "m",
      dataDevice: "d",
      blockSectors: 256,
      errorIfNoSpace: true,
    }),
    "0 8 thin-pool m d 256 32768 2 skip_block_zeroing error_if_no_space",
  );
  assert.deepEqual(loopPoolFiles("p", "/var/x"), {
    dataFile: "/var/x/p-data.img",
    metaFile: "/var/x/p-meta.img",
  });
});

Deno.test("loop pool unit: bad sizes are refused before anything runs", async () => {
  const runner = new FakeRunner();
  const dm = new Dmsetup({ runner });
  const base = {
    name: "p",
    dir: "/nonexistent-dir",
    dataSize: 64 << 20,
    metaSize: 8 << 20,
    dm,
    runner,
  };
  const bad: Array<[Partial<typeof base> & { blockSectors?: number }, RegExp]> = [
    [{ blockSectors: 100 }, /block size 100 sectors must be a multiple of 128/],
    [{ blockSectors: 64 }, /block size 64/],
    [{ blockSectors: 2097152 * 2 }, /block size/],
    [{ dataSize: 1000 }, /data size 1000 must be at least one block \(65536 bytes\)/],
    [{ metaSize: 1 << 20 }, /metadata size 1048576 must be between/],
    [{ metaSize: 17 * 1024 ** 3 }, /metadata size/],
    [{ dir: "" }, /directory is empty/],
  ];
  for (const [patch, re] of bad) {
    await assert.rejects(createLoopPool({ ...base, ...patch }), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError, String(e));
      assert.match(e.message, /^Cannot create pool "p": /);
      assert.match(e.message, re);
      return true;
    });
  }
  assert.equal(runner.calls.length, 0);
});

Deno.test("loop pool unit: thin devices of a pool are found by major:minor or path", async () => {
  const runner = new FakeRunner().on(["dmsetup", "table"], {
    stdout: [
      "other: 0 8192 thin 254:7 1",
      "p: 0 131072 thin-pool 7:1 7:0 128 32768 1 skip_block_zeroing ",
      "p-a: 0 8192 thin 254:0 1",
      "p-b: 0 8192 thin /dev/mapper/p 2",
      "lin: 0 100 linear 254:0 0",
      "empty: ",
      "",
    ].join("\n"),
  });
  assert.deepEqual(await thinDevicesOfPool(runner, { name: "p", major: 254, minor: 0 }), [
    "p-a",
    "p-b",
  ]);
  assert.equal(runner.spawns, 1);
});
