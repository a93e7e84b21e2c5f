import assert from "node:assert/strict";
import {
  encodeFrame,
  encodeGoaway,
  encodeRstStream,
  encodeSettings,
  encodeWindowUpdate,
  ErrorCode,
  Flag,
  type Frame,
  FrameReader,
  FrameType,
  H2ConnectionError,
  PREFACE,
} from "./frames.ts";

/** Frames as bytes, written out by hand (independent of the encoders under test). */
function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values);
}

function drain(reader: FrameReader): Frame[] {
  const out: Frame[] = [];
  for (let f = reader.next(); f; f = reader.next()) out.push(f);
  return out;
}

Deno.test("frames: encoders produce the RFC 9113 layouts", () => {
  assert.deepEqual(
    encodeFrame(FrameType.DATA, Flag.END_STREAM, 3, bytes(0xaa, 0xbb)),
    bytes(0, 0, 2, 0, 1, 0, 0, 0, 3, 0xaa, 0xbb),
  );
  // the reserved bit of the stream id is never sent
  assert.deepEqual(
    encodeFrame(FrameType.HEADERS, 0x24, 0xffffffff),
    bytes(0, 0, 0, 1, 0x24, 0x7f, 0xff, 0xff, 0xff),
  );
  assert.deepEqual(
    encodeSettings([[0x3, 100], [0x4, 0x10000]]),
    bytes(0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0),
  );
  assert.deepEqual(encodeSettings([[0x3, 1]], true), bytes(0, 0, 0, 4, 1, 0, 0, 0, 0));
  assert.deepEqual(
    encodeWindowUpdate(5, 0x12345678),
    bytes(0, 0, 4, 8, 0, 0, 0, 0, 5, 0x12, 0x34, 0x56, 0x78),
  );
  assert.deepEqual(
    encodeRstStream(7, ErrorCode.CANCEL),
    bytes(0, 0, 4, 3, 0, 0, 0, 0, 7, 0, 0, 0, 8),
  );
  assert.deepEqual(
    encodeGoaway(9, ErrorCode.PROTOCOL_ERROR, "x"),
    bytes(0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1, 0x78),
  );
  assert.equal(new TextDecoder().decode(PREFACE), "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
});

Deno.test("FrameReader: a frame split across pushes byte by byte", () => {
  const frame = encodeFrame(FrameType.HEADERS, Flag.END_HEADERS, 1, bytes(1, 2, 3, 4, 5));
  const reader = new FrameReader();
  for (let i = 0; i < frame.length - 1; i++) {
    reader.push(frame.subarray(i, i + 1));
    assert.equal(reader.next(), undefined, `after ${i + 1} bytes`);
  }
  reader.push(frame.subarray(frame.length - 1));
  assert.deepEqual(reader.next(), {
    type: FrameType.HEADERS,
    flags: Flag.END_HEADERS,
    streamId: 1,
    payload: bytes(1, 2, 3, 4, 5),
  });
  assert.equal(reader.next(), undefined);
  assert.equal(reader.buffered, 0);
});

Deno.test("FrameReader: many frames in one push, the last one partial", () => {
  const frames = [];
  for (let i = 0; i < 500; i++) {
    frames.push(encodeFrame(FrameType.DATA, 0, 2 * i + 1, bytes(i & 0xff)));
  }
  const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0) + 4);
  let offset = 0;
  for (const f of frames) {
    all.set(f, offset);
    offset += f.length;
  }
  all.set(bytes(0, 0, 2, 0), offset); // the start of a 501st frame
  const reader = new FrameReader();
  reader.push(all);
  const got = drain(reader);
  assert.equal(got.length, 500);
  got.forEach((f, i) => {
    assert.equal(f.streamId, 2 * i + 1);
    assert.deepEqual(f.payload, bytes(i & 0xff));
  });
  assert.equal(reader.buffered, 4);
  reader.push(bytes(0, 0, 0, 0, 9, 7, 8));
  assert.deepEqual(reader.next(), { type: 0, flags: 0, streamId: 9, payload: bytes(7, 8) });
});

Deno.test("FrameReader: payloads are copies, unaffected by later pushes into the buffer", () => {
  const reader = new FrameReader();
  reader.push(encodeFrame(FrameType.DATA, 0, 1, bytes(1, 2, 3)));
  const first = reader.next()!;
  // many pushes that reuse and grow the internal buffer
  for (let i = 0; i < 20; i++) {
    reader.push(encodeFrame(FrameType.DATA, 0, 1, new Uint8Array(16_384).fill(i)));
    reader.next();
  }
  assert.deepEqual(first.payload, bytes(1, 2, 3));
});

Deno.test("FrameReader: data larger than its buffer across pushes (growth and compaction)", () => {
  const reader = new FrameReader(16_384);
  const payloads: Uint8Array[] = [];
  const stream: Uint8Array[] = [];
  for (let i = 0; i < 40; i++) {
    const p = new Uint8Array(i * 400 + 1).map((_, j) => (i * 31 + j) & 0xff);
    payloads.push(p);
    stream.push(encodeFrame(FrameType.DATA, 0, 1, p));
  }
  const all = new Uint8Array(stream.reduce((n, f) => n + f.length, 0));
  let offset = 0;
  for (const f of stream) {
    all.set(f, offset);
    offset += f.length;
  }
  // odd chunk sizes so frames straddle pushes; read as we go, and also let bytes pile up
  const got: Frame[] = [];
  for (let i = 0, k = 0; i < all.length; k++) {
    const n = [7, 70_001, 333, 12_345][k % 4];
    reader.push(all.subarray(i, i + n));
    i += n;
    if (k % 3 !== 1) got.push(...drain(reader));
  }
  got.push(...drain(reader));
  assert.equal(got.length, 40);
  got.forEach((f, i) => assert.deepEqual(f.payload, payloads[i], `frame ${i}`));
});

Deno.test("FrameReader: a frame over SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR", () => {
  const reader = new FrameReader(16_384);
  // exactly the limit is fine
  reader.push(encodeFrame(FrameType.DATA, 0, 1, new Uint8Array(16_384)));
  assert.equal(reader.next()?.payload.length, 16_384);
  // one byte more fails as soon as the header is in, before the payload arrives
  reader.push(bytes(0, 0x40, 0x01, 0, 0, 0, 0, 0, 1));
  assert.throws(
    () => reader.next(),
    (err: unknown) =>
      err instanceof H2ConnectionError && err.code === ErrorCode.FRAME_SIZE_ERROR &&
      /16385/.test(err.message),
  );
  const big = new FrameReader(16_384);
  big.push(bytes(0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1));
  assert.throws(() => big.next(), H2ConnectionError);
});

Deno.test("FrameReader: the reserved bit of a stream id is ignored", () => {
  const reader = new FrameReader();
  reader.push(bytes(0, 0, 0, 4, 0, 0x80, 0, 0, 0));
  assert.equal(reader.next()?.streamId, 0);
  reader.push(bytes(0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff));
  assert.equal(reader.next()?.streamId, 0x7fffffff);
});

Deno.test("FrameReader: take() reads raw bytes (the preface) before frames", () => {
  const reader = new FrameReader();
  reader.push(PREFACE.subarray(0, 10));
  assert.equal(reader.take(PREFACE.length), undefined);
  reader.push(PREFACE.subarray(10));
  reader.push(encodeSettings([]));
  assert.deepEqual(reader.take(PREFACE.length), PREFACE);
  assert.deepEqual(reader.next(), {
    type: FrameType.SETTINGS,
    flags: 0,
    streamId: 0,
    payload: bytes(),
  });
});
