/**
 * The write-log reader and replayer on logs built here, in the kernel target's layout: marks,
 * writes, discards and flushes are read back in order, a prefix replays exactly its entries,
 * and a log that does not add up is refused.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  findMark,
  isDurablePoint,
  LOG_DISCARD,
  LOG_FLUSH,
  LOG_FUA,
  LOG_MARK,
  LogReplayer,
  readWriteLog,
  WriteLogError,
} from "./write_log.ts";

const SECTOR = 512;

type Spec =
  | { mark: string }
  | { write: number; fill: number; sectors?: number; flags?: number }
  | { discard: number; sectors: number }
  | { flush: true };

/** Builds a log in the kernel's layout; `count` overrides the superblock's entry count. */
function buildLog(specs: Spec[], count = specs.length): Uint8Array {
  const parts: Uint8Array[] = [];
  const superBlock = new Uint8Array(SECTOR);
  const sv = new DataView(superBlock.buffer);
  sv.setBigUint64(0, 0x6a736677736872n, true);
  sv.setBigUint64(8, 1n, true);
  sv.setBigUint64(16, BigInt(count), true);
  sv.setUint32(24, SECTOR, true);
  parts.push(superBlock);
  for (const spec of specs) {
    const header = new Uint8Array(SECTOR);
    const v = new DataView(header.buffer);
    let data: Uint8Array | undefined;
    if ("mark" in spec) {
      const text = new TextEncoder().encode(spec.mark);
      v.setBigUint64(16, BigInt(LOG_MARK), true);
      v.setBigUint64(24, BigInt(text.length + 1), true);
      header.set(text, 32);
    } else if ("write" in spec) {
      const sectors = spec.sectors ?? 1;
      v.setBigUint64(0, BigInt(spec.write), true);
      v.setBigUint64(8, BigInt(sectors), true);
      v.setBigUint64(16, BigInt(spec.flags ?? 0), true);
      data = new Uint8Array(sectors * SECTOR).fill(spec.fill);
    } else if ("discard" in spec) {
      v.setBigUint64(0, BigInt(spec.discard), true);
      v.setBigUint64(8, BigInt(spec.sectors), true);
      v.setBigUint64(16, BigInt(LOG_DISCARD), true);
    } else {
      v.setBigUint64(16, BigInt(LOG_FLUSH), true);
    }
    parts.push(header);
    if (data) parts.push(data);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const SPECS: Spec[] = [
  { mark: "setup" },
  { write: 0, fill: 0xaa, sectors: 2 },
  { write: 4, fill: 0xbb },
  { flush: true },
  { write: 1, fill: 0xcc, flags: LOG_FUA },
  { mark: "ev 1" },
  { discard: 0, sectors: 1 },
];

Deno.test("write log: entries come back in order with marks, flags and data offsets", async () => {
  const dir = await Deno.makeTempDir({ prefix: "write-log-" });
  try {
    const path = join(dir, "log");
    await Deno.writeFile(path, buildLog(SPECS));
    const log = readWriteLog(path);
    assert.equal(log.sectorSize, SECTOR);
    assert.deepEqual(log.entries.map((e) => e.mark ?? e.flags), [
      "setup",
      0,
      0,
      LOG_FLUSH,
      LOG_FUA,
      "ev 1",
      LOG_DISCARD,
    ]);
    assert.deepEqual(log.entries.map((e) => e.index), [0, 1, 2, 3, 4, 5, 6]);
    assert.deepEqual(log.entries.map(isDurablePoint), [
      false,
      false,
      false,
      true,
      true,
      false,
      false,
    ]);
    assert.equal(findMark(log, "ev 1"), 5);
    assert.equal(findMark(log, "ev 2"), -1);
    // header sectors: super, mark, write(+2), write(+1), flush, fua(+1): its data follows
    assert.equal(log.entries[4].dataOffset, SECTOR * (1 + 1 + 3 + 2 + 1 + 1));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("write log: a replayed prefix holds exactly the writes of that prefix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "write-log-" });
  try {
    const path = join(dir, "log");
    const target = join(dir, "disk");
    await Deno.writeFile(path, buildLog(SPECS));
    await Deno.writeFile(target, new Uint8Array(8 * SECTOR));
    const log = readWriteLog(path);
    const sector = async (n: number) => (await Deno.readFile(target))[n * SECTOR];
    using replay = new LogReplayer(log, path, target);
    replay.replayTo(2);
    assert.deepEqual([await sector(0), await sector(1), await sector(4)], [0xaa, 0xaa, 0]);
    replay.replayTo(4);
    assert.deepEqual([await sector(0), await sector(1), await sector(4)], [0xaa, 0xaa, 0xbb]);
    replay.replayTo(5);
    assert.deepEqual([await sector(0), await sector(1)], [0xaa, 0xcc]);
    replay.replayTo(7);
    assert.deepEqual([await sector(0), await sector(1), await sector(4)], [0, 0xcc, 0xbb]);
    assert.equal(replay.applied, 7);
    assert.equal(replay.bytesWritten, 5 * SECTOR);
    assert.throws(() => replay.replayTo(3), WriteLogError);
    assert.throws(() => replay.replayTo(8), WriteLogError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("write log: a log with a bad magic or fewer entries than it claims is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "write-log-" });
  try {
    const path = join(dir, "log");
    await Deno.writeFile(path, buildLog(SPECS, SPECS.length + 1));
    assert.throws(() => readWriteLog(path), /entry 7 of 8 lies past its end/);
    const truncated = buildLog(SPECS.slice(0, 2));
    await Deno.writeFile(path, truncated.subarray(0, truncated.length - SECTOR));
    assert.throws(() => readWriteLog(path), /data is cut off/);
    const bad = buildLog(SPECS);
    bad[0] ^= 0xff;
    await Deno.writeFile(path, bad);
    assert.throws(() => readWriteLog(path), /bad magic/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
