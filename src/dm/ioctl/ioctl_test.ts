import assert from "node:assert/strict";
import { DmIoctl, DmIoctlUnavailableError } from "./ioctl.ts";
import {
  align8,
  decodeHeader,
  decodeKernelDev,
  decodeNameList,
  decodeTargets,
  DM_IOCTL_SIZE,
  DM_TARGET_SPEC_SIZE,
  DmAbiError,
  DmCommand,
  DmFlag,
  encodeRequest,
  encodeTargetMessage,
  encodeTargets,
  errnoName,
  formatTarget,
  ioctlRequest,
  makedev,
  parseTableText,
  readCString,
  replyPayload,
  splitDevT,
} from "./abi.ts";

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("ioctl abi: request numbers are _IOWR(0xfd, nr, struct dm_ioctl)", () => {
  assert.equal(ioctlRequest(DmCommand.VERSION), 0xc138fd00n);
  assert.equal(ioctlRequest(DmCommand.DEV_CREATE), 0xc138fd03n);
  assert.equal(ioctlRequest(DmCommand.DEV_SUSPEND), 0xc138fd06n);
  assert.equal(ioctlRequest(DmCommand.TABLE_LOAD), 0xc138fd09n);
  assert.equal(ioctlRequest(DmCommand.TARGET_MSG), 0xc138fd0en);
  assert.equal(DmFlag.DEFERRED_REMOVE, 0x20000);
  assert.equal(DmFlag.DATA_OUT, 0x10000);
  assert.equal(DmFlag.BUFFER_FULL, 0x100);
});

Deno.test("ioctl abi: encodeRequest lays out the 312-byte header and the payload", () => {
  const payload = Uint8Array.of(1, 2, 3);
  const buf = encodeRequest({
    name: "pool-1",
    flags: DmFlag.SUSPEND | DmFlag.SKIP_LOCKFS,
    targetCount: 2,
    eventNr: 9,
    dev: 0xfd05n,
    payload,
    bufferSize: 1024,
  });
  assert.equal(buf.length, 1024);
  const v = new DataView(buf.buffer);
  assert.deepEqual([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)], [4, 0, 0]);
  assert.equal(v.getUint32(12, true), 1024, "data_size = whole buffer");
  assert.equal(v.getUint32(16, true), DM_IOCTL_SIZE, "data_start");
  assert.equal(v.getUint32(20, true), 2);
  assert.equal(v.getUint32(28, true), 0x402);
  assert.equal(v.getUint32(32, true), 9);
  assert.equal(v.getBigUint64(40, true), 0xfd05n);
  assert.equal(readCString(buf, 48, 128), "pool-1");
  assert.equal(buf[48 + 6], 0);
  assert.deepEqual([...buf.subarray(312, 316)], [1, 2, 3, 0]);
  // without bufferSize: exactly header + payload
  assert.equal(encodeRequest({ payload }).length, DM_IOCTL_SIZE + 3);
  assert.equal(encodeRequest().length, DM_IOCTL_SIZE);
});

Deno.test("ioctl abi: names that do not fit or hold NUL are refused", () => {
  assert.throws(() => encodeRequest({ name: "x".repeat(128) }), DmAbiError);
  assert.doesNotThrow(() => encodeRequest({ name: "x".repeat(127) }));
  assert.throws(() => encodeRequest({ name: "a\u0000b" }), /contains NUL/);
  // multi-byte UTF-8 counts bytes
  assert.throws(() => encodeRequest({ name: "é".repeat(64) }), /longer than 127 bytes/);
});

Deno.test("ioctl abi: decodeHeader reads back a reply; open_count is signed", () => {
  const buf = encodeRequest({ name: "thin-7", dev: 0x1234n, bufferSize: 400 });
  const v = new DataView(buf.buffer);
  v.setUint32(0, 4, true);
  v.setUint32(4, 47, true);
  v.setUint32(8, 0, true);
  v.setInt32(24, -1, true);
  v.setUint32(28, DmFlag.ACTIVE_PRESENT | DmFlag.READONLY, true);
  buf.set(text("uuid-x"), 48 + 128);
  const h = decodeHeader(buf);
  assert.deepEqual(h, {
    version: [4, 47, 0],
    dataSize: 400,
    dataStart: 312,
    targetCount: 0,
    openCount: -1,
    flags: DmFlag.ACTIVE_PRESENT | DmFlag.READONLY,
    eventNr: 0,
    dev: 0x1234n,
    name: "thin-7",
    uuid: "uuid-x",
  });
  assert.throws(() => decodeHeader(new Uint8Array(100)), /shorter than the header/);
});

Deno.test("ioctl abi: replyPayload is empty for data-less replies and bounds-checked", () => {
  const buf = encodeRequest({ bufferSize: 512 });
  const v = new DataView(buf.buffer);
  v.setUint32(12, 305, true); // the kernel's "no data": offsetof(struct dm_ioctl, data)
  assert.equal(replyPayload(buf).length, 0);
  v.setUint32(12, 320, true);
  assert.equal(replyPayload(buf).length, 8);
  v.setUint32(12, 4096, true);
  assert.throws(() => replyPayload(buf), /bad dm_ioctl reply/);
});

Deno.test("ioctl abi: encodeTargets writes aligned specs chained by relative next", () => {
  const targets = [
    { start: 0, length: 2048, type: "thin", params: "/dev/mapper/pool 7" },
    { start: 2048, length: 8, type: "zero", params: "" },
  ];
  const buf = encodeTargets(targets);
  const v = new DataView(buf.buffer);
  const first = align8(DM_TARGET_SPEC_SIZE + "/dev/mapper/pool 7".length + 1);
  assert.equal(first, 64);
  assert.equal(buf.length, first + align8(DM_TARGET_SPEC_SIZE + 1));
  assert.equal(v.getBigUint64(0, true), 0n);
  assert.equal(v.getBigUint64(8, true), 2048n);
  assert.equal(v.getInt32(16, true), 0);
  assert.equal(v.getUint32(20, true), first, "next = offset from this spec");
  assert.equal(readCString(buf, 24, 16), "thin");
  assert.equal(readCString(buf, 40), "/dev/mapper/pool 7");
  assert.equal(v.getBigUint64(first, true), 2048n);
  assert.equal(readCString(buf, first + 24, 16), "zero");
  assert.equal(buf[first + 40], 0, "empty params is a NUL");
  assert.throws(() => encodeTargets([{ start: 0, length: 8, type: "x".repeat(16), params: "" }]));
  assert.throws(() => encodeTargets([{ start: -1, length: 8, type: "zero", params: "" }]));
  assert.throws(() => encodeTargets([{ start: 0, length: 8, type: "zero", params: "a\u0000" }]));
});

/** A TABLE_STATUS reply payload as the kernel writes it: `next` is relative to the payload start. */
function statusReply(specs: { start: number; length: number; type: string; params: string }[]) {
  const buf = new Uint8Array(1024);
  const v = new DataView(buf.buffer);
  let at = 0;
  for (const s of specs) {
    v.setBigUint64(at, BigInt(s.start), true);
    v.setBigUint64(at + 8, BigInt(s.length), true);
    buf.set(text(s.type), at + 24);
    buf.set(text(s.params), at + 40);
    const next = align8(at + 40 + s.params.length + 1);
    v.setUint32(at + 20, next, true);
    at = next;
  }
  return buf.subarray(0, at);
}

Deno.test("ioctl abi: decodeTargets follows the kernel's payload-relative next", () => {
  const specs = [
    { start: 0, length: 100, type: "linear", params: "7:0 0" },
    { start: 100, length: 50, type: "thin", params: "0 -" },
    { start: 150, length: 8, type: "thin-pool", params: "0 10/4096 0/1024 - rw discard_passdown" },
  ];
  assert.deepEqual(decodeTargets(statusReply(specs), 3), specs);
  assert.deepEqual(decodeTargets(new Uint8Array(0), 0), []);
  assert.throws(() => decodeTargets(statusReply(specs.slice(0, 1)), 2), /runs past/);
  assert.equal(formatTarget(specs[1]), "100 50 thin 0 -");
  assert.equal(formatTarget({ start: 0, length: 8, type: "zero", params: "" }), "0 8 zero");
  assert.equal(formatTarget({ start: 0, length: 8, type: "x", params: "a b " }), "0 8 x a b");
});

Deno.test("ioctl abi: decodeNameList walks entries and skips event_nr/flags after names", () => {
  const buf = new Uint8Array(256);
  const v = new DataView(buf.buffer);
  // entry 1 at 0: dev, next, name, then (newer kernels) u32 event_nr + u32 flags, aligned
  v.setBigUint64(0, 0xfd00n, true);
  buf.set(text("pool"), 12);
  v.setUint32(align8(17), 3, true);
  const second = align8(align8(17) + 8);
  v.setUint32(8, second, true);
  v.setBigUint64(second, 0xfd01n, true);
  buf.set(text("pool-thin-1"), second + 12);
  v.setUint32(second + 8, 0, true);
  assert.deepEqual(decodeNameList(buf.subarray(0, second + 40)), [
    { dev: 0xfd00n, name: "pool" },
    { dev: 0xfd01n, name: "pool-thin-1" },
  ]);
  assert.deepEqual(decodeNameList(new Uint8Array(16)), [], "dev 0 first: no devices");
  assert.deepEqual(decodeNameList(new Uint8Array(0)), []);
  v.setUint32(8, 250, true);
  assert.throws(() => decodeNameList(buf), /runs past/);
});

Deno.test("ioctl abi: TARGET_MSG payload is u64 sector + NUL-terminated message", () => {
  const buf = encodeTargetMessage(5, "create_thin 7");
  assert.equal(buf.length, align8(8 + 13 + 1));
  assert.equal(new DataView(buf.buffer).getBigUint64(0, true), 5n);
  assert.equal(readCString(buf, 8), "create_thin 7");
  assert.throws(() => encodeTargetMessage(-1, "x"), DmAbiError);
  assert.throws(() => encodeTargetMessage(0, "a\u0000b"), /NUL/);
});

Deno.test("ioctl abi: device numbers — kernel new_encode_dev and glibc dev_t", () => {
  assert.deepEqual(decodeKernelDev(0xfd05n), { major: 253, minor: 5 });
  // minor 300 = 0x12c: low byte 0x2c, high bits shifted by 12
  assert.deepEqual(decodeKernelDev((0x1n << 20n) | (253n << 8n) | 0x2cn), {
    major: 253,
    minor: 300,
  });
  assert.equal(makedev(253, 5), 0xfd05n);
  assert.equal(makedev(8, 0x12345), 0x12300845n);
  for (const [ma, mi] of [[0, 0], [253, 5], [254, 70000], [4095, 0xfffff], [5000, 0xffffffff]]) {
    assert.deepEqual(splitDevT(makedev(ma, mi)), { major: ma, minor: mi }, `${ma}:${mi}`);
  }
  assert.deepEqual(splitDevT(Number(makedev(254, 1))), { major: 254, minor: 1 });
});

Deno.test("ioctl abi: parseTableText splits lines into targets", () => {
  assert.deepEqual(parseTableText("0 2048 thin /dev/mapper/p 3\n"), [
    { start: 0, length: 2048, type: "thin", params: "/dev/mapper/p 3" },
  ]);
  assert.deepEqual(parseTableText("0 8 zero\n8 8  linear   7:0 0  "), [
    { start: 0, length: 8, type: "zero", params: "" },
    { start: 8, length: 8, type: "linear", params: "7:0 0" },
  ]);
  for (const bad of ["", "\n", "zero 8", "0 x zero", "0 8", "0 99999999999999999999 zero"]) {
    assert.throws(() => parseTableText(bad), DmAbiError, JSON.stringify(bad));
  }
  assert.throws(() => parseTableText(`0 8 ${"t".repeat(16)}`), /target type too long/);
});

Deno.test("ioctl abi: errnoName maps Linux errno numbers", () => {
  assert.equal(errnoName(16), "EBUSY");
  assert.equal(errnoName(6), "ENXIO");
  assert.equal(errnoName(61), "ENODATA");
  assert.equal(errnoName(17), "EEXIST");
  assert.equal(errnoName(19), "ENODEV");
  assert.equal(errnoName(25), undefined, "ENOTTY is not classified");
});

Deno.test("ioctl: DmIoctl refuses a node that is not the dm control device, or a missing libc", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dmioctl-" });
  try {
    await Deno.writeTextFile(`${dir}/control`, "");
    assert.throws(
      () => new DmIoctl({ controlPath: `${dir}/control`, udev: false }),
      (e: unknown) =>
        e instanceof DmIoctlUnavailableError &&
        /^Cannot talk to device-mapper: DM_VERSION failed: ioctl DM_VERSION failed: /.test(
          e.message,
        ),
    );
    assert.throws(
      () => new DmIoctl({ libcPath: `${dir}/no-libc.so`, udev: false }),
      (e: unknown) => e instanceof DmIoctlUnavailableError && /^Cannot load/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ioctl abi: a request carries the UUID DEV_CREATE gives the device", () => {
  assert.equal(
    decodeHeader(encodeRequest({ name: "t", uuid: "DMSNAP-0123-7" })).uuid,
    "DMSNAP-0123-7",
  );
  assert.equal(decodeHeader(encodeRequest({ name: "t" })).uuid, "");
  assert.throws(() => encodeRequest({ name: "t", uuid: "u".repeat(129) }), /longer than 128 bytes/);
});
