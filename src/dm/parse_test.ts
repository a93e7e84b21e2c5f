/**
 * Parser tests on output collected from the test kernel (dmsetup 1.02.185, driver 4.47.0,
 * LC_ALL=C), plus older-kernel and failure variants.
 */
import assert from "node:assert/strict";
import {
  DmParseError,
  parseInfoAll,
  parseInfoLine,
  parseLs,
  parsePoolParams,
  parseStatus,
  parseStatusAll,
  parseStatusLine,
  parseTable,
  parseVersion,
} from "./parse.ts";
import type { PoolStatus, ThinStatus } from "./types.ts";

Deno.test("dm parse: info line with and without blkdevname", () => {
  assert.deepEqual(parseInfoLine("colpool L--w 254 0 1 1 0"), {
    name: "colpool",
    blkdevname: "dm-0",
    major: 254,
    minor: 0,
    live: true,
    inactive: false,
    suspended: false,
    readOnly: false,
    openCount: 1,
    segments: 1,
    events: 0,
  });
  const withBlk = parseInfoLine("pool-snap-3 dm-5 L--w 253 5 0 1 0", true);
  assert.equal(withBlk.name, "pool-snap-3");
  assert.equal(withBlk.blkdevname, "dm-5");
  assert.equal(withBlk.minor, 5);
  const suspended = parseInfoLine("colthin L-sw 254 1 0 1 0");
  assert.equal(suspended.suspended, true);
  assert.equal(suspended.live, true);
  const notable = parseInfoLine("colnotable ---w 254 1 0 0 0");
  assert.equal(notable.live, false);
  assert.equal(notable.segments, 0);
  const inactiveRo = parseInfoLine("x LIsr 253 9 2 1 7");
  assert.deepEqual(
    [inactiveRo.inactive, inactiveRo.readOnly, inactiveRo.openCount, inactiveRo.events],
    [true, true, 2, 7],
  );
  // a trailing newline or spaces do not matter
  assert.equal(parseInfoLine("a L--w 254 3 0 1 0\n").minor, 3);
});

Deno.test("dm parse: info line errors are DmParseError", () => {
  for (
    const bad of ["", "colpool", "colpool L--w 254 0 1 1", "a L--w x 0 1 1 0", "a ?? 254 0 1 1 0"]
  ) {
    assert.throws(() => parseInfoLine(bad), DmParseError, bad);
  }
});

Deno.test("dm parse: info of all devices", () => {
  const text = "colnotable ---w 254 1 0 0 0\ncolpool L--w 254 0 1 1 0\ncolthin L--w 254 2 0 1 0\n";
  const all = parseInfoAll(text);
  assert.deepEqual([...all.keys()], ["colnotable", "colpool", "colthin"]);
  assert.equal(all.get("colpool")?.openCount, 1);
  assert.equal(parseInfoAll("No devices found\n").size, 0);
  assert.equal(parseInfoAll("").size, 0);
});

Deno.test("dm parse: thin status lines", () => {
  const fresh = parseStatusLine("0 8192 thin 0 -") as ThinStatus;
  assert.deepEqual(fresh, {
    target: "thin",
    start: 0,
    length: 8192,
    mappedSectors: 0,
    highestMappedSector: null,
    failed: false,
  });
  const used = parseStatusLine("0 65536 thin 16384 16383 ") as ThinStatus;
  assert.equal(used.mappedSectors, 16384);
  assert.equal(used.highestMappedSector, 16383);
  const failed = parseStatusLine("0 8192 thin Fail") as ThinStatus;
  assert.equal(failed.failed, true);
  assert.equal(failed.mappedSectors, 0);
  assert.throws(() => parseStatusLine("0 8192 thin 12"), DmParseError);
  assert.throws(() => parseStatusLine("0 8192 thin x -"), DmParseError);
});

Deno.test("dm parse: thin-pool status, current kernel", () => {
  const s = parseStatusLine(
    "0 131072 thin-pool 0 213/2048 0/1024 - rw discard_passdown queue_if_no_space - 512 ",
  ) as PoolStatus;
  assert.deepEqual(s, {
    target: "thin-pool",
    start: 0,
    length: 131072,
    transactionId: 0,
    usedMetadataBlocks: 213,
    totalMetadataBlocks: 2048,
    usedDataBlocks: 0,
    totalDataBlocks: 1024,
    heldMetadataRoot: null,
    mode: "rw",
    discardPassdown: true,
    errorIfNoSpace: false,
    needsCheck: false,
    failed: false,
  });
  const full = parseStatusLine(
    "0 16384 thin-pool 5 112/1024 128/128 - out_of_data_space discard_passdown error_if_no_space - 256",
  ) as PoolStatus;
  assert.equal(full.mode, "out_of_data_space");
  assert.equal(full.errorIfNoSpace, true);
  assert.equal(full.transactionId, 5);
  assert.equal(full.usedDataBlocks, full.totalDataBlocks);
  const ro = parsePoolParams(
    0,
    100,
    "3 10/20 30/40 17 ro no_discard_passdown queue_if_no_space needs_check 256",
  );
  assert.equal(ro.mode, "ro");
  assert.equal(ro.needsCheck, true);
  assert.equal(ro.discardPassdown, false);
  assert.equal(ro.heldMetadataRoot, "17");
});

Deno.test("dm parse: thin-pool status, older kernels and Fail", () => {
  // 3.x kernels: no discard/no_space/needs_check fields
  const old = parsePoolParams(0, 100, "0 9/4096 0/1638400 - rw discard_passdown");
  assert.equal(old.mode, "rw");
  assert.equal(old.needsCheck, false);
  assert.equal(old.totalDataBlocks, 1638400);
  const oldest = parsePoolParams(0, 100, "0 9/4096 0/1638400 -");
  assert.equal(oldest.mode, "rw");
  const minimal = parsePoolParams(0, 100, "0 9/4096 0/1638400");
  assert.equal(minimal.heldMetadataRoot, null);
  const fail = parseStatusLine("0 131072 thin-pool Fail") as PoolStatus;
  assert.equal(fail.failed, true);
  assert.equal(fail.mode, "fail");
  assert.throws(() => parsePoolParams(0, 1, "0 9/4096"), DmParseError);
  assert.throws(() => parsePoolParams(0, 1, "0 9-4096 1/2"), DmParseError);
  assert.throws(() => parsePoolParams(0, 1, "x 9/4096 1/2"), DmParseError);
});

Deno.test("dm parse: other targets keep raw params; multi-line status", () => {
  assert.deepEqual(parseStatus("0 100 linear \n100 100 linear \n"), [
    { target: "linear", start: 0, length: 100, params: "" },
    { target: "linear", start: 100, length: 100, params: "" },
  ]);
  assert.deepEqual(parseStatusLine("0 8 error"), {
    target: "error",
    start: 0,
    length: 8,
    params: "",
  });
  assert.throws(() => parseStatusLine("nonsense"), DmParseError);
});

Deno.test("dm parse: status of all devices (name-prefixed)", () => {
  const text = [
    "collin: 0 100 linear ",
    "collin: 100 100 linear ",
    "colnotable: ",
    "colpool: 0 131072 thin-pool 0 214/2048 0/1024 - rw discard_passdown queue_if_no_space - 512 ",
    "colthin: 0 8192 thin 0 -",
    "odd: name: 0 8 thin 8 7",
    "",
  ].join("\n");
  const all = parseStatusAll(text);
  assert.deepEqual([...all.keys()], ["collin", "colnotable", "colpool", "colthin", "odd: name"]);
  assert.equal(all.get("collin")?.length, 2);
  assert.deepEqual(all.get("colnotable"), []);
  assert.equal(all.get("colpool")?.[0].target, "thin-pool");
  assert.equal((all.get("colthin")?.[0] as ThinStatus).highestMappedSector, null);
  assert.equal((all.get("odd: name")?.[0] as ThinStatus).mappedSectors, 8);
  assert.equal(parseStatusAll("No devices found\n").size, 0);
  assert.throws(() => parseStatusAll("garbage line"), DmParseError);
});

Deno.test("dm parse: table, version, ls", () => {
  assert.deepEqual(parseTable("0 131072 thin-pool 7:1 7:0 128 32768 1 skip_block_zeroing \n"), [
    {
      start: 0,
      length: 131072,
      target: "thin-pool",
      args: ["7:1", "7:0", "128", "32768", "1", "skip_block_zeroing"],
    },
  ]);
  assert.deepEqual(parseTable("0 8192 thin 254:0 1"), [
    { start: 0, length: 8192, target: "thin", args: ["254:0", "1"] },
  ]);
  assert.throws(() => parseTable("x y z"), DmParseError);
  assert.deepEqual(
    parseVersion("Library version:   1.02.185 (2022-05-18)\nDriver version:    4.47.0\n"),
    { library: "1.02.185 (2022-05-18)", driver: "4.47.0" },
  );
  assert.throws(() => parseVersion("Library version: 1"), DmParseError);
  assert.deepEqual(parseLs("colnotable\t(254:1)\ncolpool\t(254:0)\n"), ["colnotable", "colpool"]);
  assert.deepEqual(parseLs("No devices found\n"), []);
  assert.throws(() => parseLs("what"), DmParseError);
});
