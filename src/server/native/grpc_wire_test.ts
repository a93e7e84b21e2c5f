import assert from "node:assert/strict";
import {
  decodeGrpcMessage,
  encodeGrpcMessage,
  GrpcFramingError,
  MESSAGE_PREFIX_BYTES,
  messagePrefix,
  parseTimeout,
  readMessages,
} from "./grpc_wire.ts";

const LIMIT = 1024;

/** `bytes` behind its gRPC prefix, as one buffer. */
function frameMessage(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(MESSAGE_PREFIX_BYTES + bytes.length);
  out.set(messagePrefix(bytes.length));
  out.set(bytes, MESSAGE_PREFIX_BYTES);
  return out;
}

Deno.test("messagePrefix: flag 0 and a big-endian length", () => {
  assert.deepEqual(
    frameMessage(new Uint8Array([7, 8, 9])),
    new Uint8Array([0, 0, 0, 0, 3, 7, 8, 9]),
  );
  assert.deepEqual(frameMessage(new Uint8Array(0)), new Uint8Array(5));
  const big = frameMessage(new Uint8Array(0x01020304 & 0xfffff));
  assert.deepEqual([...big.subarray(0, 5)], [0, 0, 0x02, 0x03, 0x04]);
  assert.equal(MESSAGE_PREFIX_BYTES, 5);
});

Deno.test("readMessages: round trip of several messages, including empty ones", () => {
  const parts = [
    new Uint8Array(0),
    new Uint8Array([1]),
    new Uint8Array(300).fill(9),
    new Uint8Array(0),
  ];
  const body = new Uint8Array(parts.reduce((n, p) => n + 5 + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    body.set(frameMessage(p), offset);
    offset += 5 + p.length;
  }
  const got = readMessages(body, LIMIT);
  assert.deepEqual(got.map((m) => m.bytes), parts);
  assert.ok(got.every((m) => m.compressed === false));
  assert.deepEqual(readMessages(new Uint8Array(0), LIMIT), []);
});

Deno.test("readMessages: compressed flag 1 is reported, flag 2 and above are framing errors", () => {
  assert.deepEqual(readMessages(new Uint8Array([1, 0, 0, 0, 1, 42]), LIMIT), [
    { compressed: true, bytes: new Uint8Array([42]) },
  ]);
  for (const flag of [2, 3, 0x80, 0xff]) {
    assert.throws(
      () => readMessages(new Uint8Array([flag, 0, 0, 0, 1, 42]), LIMIT),
      (err: unknown) => err instanceof GrpcFramingError && err.message.includes(`flag ${flag}`),
    );
  }
});

Deno.test("readMessages: truncated prefixes and payloads are framing errors", () => {
  for (const body of [[0], [0, 0, 0, 0], [0, 0, 0, 0, 2, 1], [0, 0, 0, 0, 0, 0, 0]]) {
    assert.throws(
      () => readMessages(new Uint8Array(body), LIMIT),
      (err: unknown) => err instanceof GrpcFramingError && /truncated/.test(err.message),
      JSON.stringify(body),
    );
  }
  assert.equal(new GrpcFramingError("x").name, "GrpcFramingError");
});

Deno.test("readMessages: a length over the limit fails before looking for the payload", () => {
  const atLimit = frameMessage(new Uint8Array(LIMIT));
  assert.equal(readMessages(atLimit, LIMIT)[0].bytes.length, LIMIT);
  // declared length limit+1, with no payload behind it: the size is what is reported
  assert.throws(
    () => readMessages(new Uint8Array([0, 0, 0, 0x04, 0x01]), LIMIT),
    (err: unknown) =>
      err instanceof GrpcFramingError &&
      /1025 bytes is larger than the limit of 1024/.test(err.message),
  );
  // the largest declared length (4 GiB - 1) is not mistaken for a negative number
  assert.throws(
    () => readMessages(new Uint8Array([0, 0xff, 0xff, 0xff, 0xff]), LIMIT),
    (err: unknown) => err instanceof GrpcFramingError && /4294967295 bytes/.test(err.message),
  );
});

Deno.test("parseTimeout: every unit", () => {
  assert.equal(parseTimeout("2H"), 7_200_000);
  assert.equal(parseTimeout("3M"), 180_000);
  assert.equal(parseTimeout("4S"), 4000);
  assert.equal(parseTimeout("50m"), 50);
  assert.equal(parseTimeout("1500u"), 1.5);
  assert.equal(parseTimeout("2000000n"), 2);
  assert.equal(parseTimeout("0m"), 0);
  assert.equal(parseTimeout("00000001S"), 1000);
  assert.equal(parseTimeout("99999999H"), 99_999_999 * 3_600_000);
});

Deno.test("parseTimeout: absent or malformed values are ignored", () => {
  for (
    const v of [
      undefined,
      "",
      "S",
      "m",
      "1",
      "10",
      "10s",
      "10h",
      "10x",
      "1.5S",
      "-1S",
      "+1S",
      " 1S",
      "1S ",
      "1 S",
      "123456789S", // 9 digits: over the 8 the protocol allows
      "1e3m",
      "0x10S",
      "１S", // a full-width digit
    ]
  ) assert.equal(parseTimeout(v), undefined, JSON.stringify(v));
});

Deno.test("encodeGrpcMessage: printable ASCII stays, everything else is %XX of its UTF-8", () => {
  assert.equal(
    encodeGrpcMessage('snapshot "a" not found: not found'),
    'snapshot "a" not found: not found',
  );
  assert.equal(encodeGrpcMessage("100%"), "100%25");
  assert.equal(encodeGrpcMessage("a\nb\tc\r"), "a%0Ab%09c%0D");
  assert.equal(encodeGrpcMessage("é"), "%C3%A9");
  assert.equal(encodeGrpcMessage("日本"), "%E6%97%A5%E6%9C%AC");
  assert.equal(encodeGrpcMessage("😀"), "%F0%9F%98%80");
  assert.equal(encodeGrpcMessage("\x7f~ "), "%7F~ ");
  assert.equal(encodeGrpcMessage(""), "");
  // the result is always a valid header value: printable ASCII only
  const all = Array.from({ length: 0x250 }, (_, i) => String.fromCharCode(i)).join("");
  assert.match(encodeGrpcMessage(all), /^[\x20-\x7e]*$/);
});

Deno.test("decodeGrpcMessage: reverses encodeGrpcMessage, keeps malformed escapes", () => {
  const samples = [
    "plain",
    "100%",
    "%",
    "%%",
    "a\nb",
    "é日本😀",
    "\x00\x1f\x7f",
    "50% of 日本 %41",
  ];
  for (const s of samples) {
    assert.equal(decodeGrpcMessage(encodeGrpcMessage(s)), s, JSON.stringify(s));
  }
  assert.equal(decodeGrpcMessage("%41%42c"), "ABc");
  assert.equal(decodeGrpcMessage("%c3%a9"), "é"); // lower-case hex is accepted
  assert.equal(decodeGrpcMessage("100%"), "100%");
  assert.equal(decodeGrpcMessage("%4"), "%4");
  assert.equal(decodeGrpcMessage("%zz%41"), "%zzA");
  assert.equal(decodeGrpcMessage("no escapes"), "no escapes");
});
