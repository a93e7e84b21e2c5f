import assert from "node:assert/strict";
import {
  encodeHeaders,
  type HeaderField,
  HeaderListTooLargeError,
  HpackDecoder,
  HpackError,
} from "./hpack.ts";
import { huffmanEncode } from "./huffman.ts";
import { hex } from "../../../../testing/hex.ts";

function bytes(...parts: (number | string | Uint8Array)[]): Uint8Array {
  const out: number[] = [];
  for (const part of parts) {
    if (typeof part === "number") out.push(part);
    else if (typeof part === "string") { for (const c of part) out.push(c.charCodeAt(0)); }
    else out.push(...part);
  }
  return Uint8Array.from(out);
}

/** An indexed field (§6.1) for `index`, written by hand (7-bit prefix integer). */
function indexed(index: number): number[] {
  if (index < 127) return [0x80 | index];
  const out = [0xff];
  let rest = index - 127;
  while (rest >= 128) {
    out.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A block of indexed fields addressing dynamic entries 62, 63, ... (newest first). */
function dynamic(count: number): Uint8Array {
  return Uint8Array.from(Array.from({ length: count }, (_, i) => indexed(62 + i)).flat());
}

/** A decoder that has decoded `blocks` in order. */
function decoderAfter(blocks: readonly string[], maxTableSize?: number): HpackDecoder {
  const decoder = new HpackDecoder({ maxTableSize });
  for (const block of blocks) decoder.decode(hex(block));
  return decoder;
}

/** Asserts the dynamic table holds exactly `entries`, newest first (probes via indexed fields). */
function assertTable(
  blocks: readonly string[],
  entries: HeaderField[],
  maxTableSize?: number,
): void {
  assert.deepEqual(decoderAfter(blocks, maxTableSize).decode(dynamic(entries.length)), entries);
  const beyond = Uint8Array.from(indexed(62 + entries.length));
  assert.throws(() => decoderAfter(blocks, maxTableSize).decode(beyond), {
    name: "HpackError",
    message: /beyond the table/,
  });
}

// RFC 7541 Appendix C.2: header field representations.

Deno.test("hpack C.2.1: literal with indexing adds to the dynamic table", () => {
  const block = "400a637573746f6d2d6b65790d637573746f6d2d686561646572";
  assert.deepEqual(decoderAfter([]).decode(hex(block)), [["custom-key", "custom-header"]]);
  assertTable([block], [["custom-key", "custom-header"]]); // size 55
});

Deno.test("hpack C.2.2: literal without indexing leaves the table empty", () => {
  const block = "040c2f73616d706c652f70617468";
  assert.deepEqual(decoderAfter([]).decode(hex(block)), [[":path", "/sample/path"]]);
  assertTable([block], []);
});

Deno.test("hpack C.2.3: literal never indexed leaves the table empty", () => {
  const block = "100870617373776f726406736563726574";
  assert.deepEqual(decoderAfter([]).decode(hex(block)), [["password", "secret"]]);
  assertTable([block], []);
});

Deno.test("hpack C.2.4: indexed field from the static table", () => {
  assert.deepEqual(decoderAfter([]).decode(hex("82")), [[":method", "GET"]]);
  assertTable(["82"], []);
});

// RFC 7541 Appendix C.3 / C.4: three requests on one connection.

const REQUEST_1: HeaderField[] = [
  [":method", "GET"],
  [":scheme", "http"],
  [":path", "/"],
  [":authority", "www.example.com"],
];
const REQUEST_2: HeaderField[] = [...REQUEST_1, ["cache-control", "no-cache"]];
const REQUEST_3: HeaderField[] = [
  [":method", "GET"],
  [":scheme", "https"],
  [":path", "/index.html"],
  [":authority", "www.example.com"],
  ["custom-key", "custom-value"],
];

function checkRequests(blocks: readonly string[]): void {
  const decoder = new HpackDecoder();
  assert.deepEqual(decoder.decode(hex(blocks[0])), REQUEST_1);
  assert.deepEqual(decoder.decode(hex(blocks[1])), REQUEST_2); // 0xbe = :authority
  assert.deepEqual(decoder.decode(hex(blocks[2])), REQUEST_3); // 0xbf = :authority
  assertTable(blocks.slice(0, 1), [[":authority", "www.example.com"]]);
  assertTable(blocks.slice(0, 2), [
    ["cache-control", "no-cache"],
    [":authority", "www.example.com"],
  ]);
  assertTable(blocks, [
    ["custom-key", "custom-value"],
    ["cache-control", "no-cache"],
    [":authority", "www.example.com"],
  ]);
}

Deno.test("hpack C.3: requests without Huffman coding share the dynamic table", () => {
  checkRequests([
    "828684410f7777772e6578616d706c652e636f6d",
    "828684be58086e6f2d6361636865",
    "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
  ]);
});

Deno.test("hpack C.4: requests with Huffman coding share the dynamic table", () => {
  checkRequests([
    "828684418cf1e3c2e5f23a6ba0ab90f4ff",
    "828684be5886a8eb10649cbf",
    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
  ]);
});

// RFC 7541 Appendix C.5 / C.6: three responses with a 256-octet table (evictions).

const DATE_1 = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE_2 = "Mon, 21 Oct 2013 20:13:22 GMT";
const COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RESPONSE_1: HeaderField[] = [
  [":status", "302"],
  ["cache-control", "private"],
  ["date", DATE_1],
  ["location", "https://www.example.com"],
];
const RESPONSE_2: HeaderField[] = [[":status", "307"], ...RESPONSE_1.slice(1)];
const RESPONSE_3: HeaderField[] = [
  [":status", "200"],
  ["cache-control", "private"],
  ["date", DATE_2],
  ["location", "https://www.example.com"],
  ["content-encoding", "gzip"],
  ["set-cookie", COOKIE],
];

function checkResponses(blocks: readonly string[]): void {
  const decoder = new HpackDecoder({ maxTableSize: 256 });
  assert.deepEqual(decoder.decode(hex(blocks[0])), RESPONSE_1);
  assert.deepEqual(decoder.decode(hex(blocks[1])), RESPONSE_2);
  assert.deepEqual(decoder.decode(hex(blocks[2])), RESPONSE_3);
  // 222 octets: all four fit.
  assertTable(blocks.slice(0, 1), [
    ["location", "https://www.example.com"],
    ["date", DATE_1],
    ["cache-control", "private"],
    [":status", "302"],
  ], 256);
  // Adding ":status: 307" (42) evicts ":status: 302".
  assertTable(blocks.slice(0, 2), [
    [":status", "307"],
    ["location", "https://www.example.com"],
    ["date", DATE_1],
    ["cache-control", "private"],
  ], 256);
  // The third response evicts all but three entries (215 octets).
  assertTable(blocks, [
    ["set-cookie", COOKIE],
    ["content-encoding", "gzip"],
    ["date", DATE_2],
  ], 256);
}

Deno.test("hpack C.5: responses without Huffman coding evict per §4.4", () => {
  checkResponses([
    "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d54" +
    "6e1768747470733a2f2f7777772e6578616d706c652e636f6d",
    "4803333037c1c0bf",
    "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a697077386" +
    "66f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d33" +
    "3630303b2076657273696f6e3d31",
  ]);
});

Deno.test("hpack C.6: responses with Huffman coding evict per §4.4", () => {
  checkResponses([
    "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f" +
    "0b97c8e9ae82ae43d3",
    "4883640effc1c0bf",
    "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335df" +
    "dfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
  ]);
});

// Dynamic table size updates (§4.2, §6.3).

const C5_1 = "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a" +
  "323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d";

Deno.test("hpack: a smaller table size update evicts the oldest entries", () => {
  // 222 octets → 100: ":status" (42), "cache-control" (52) and "date" (65) go; "location" (63) stays.
  const decoder = decoderAfter([C5_1], 256);
  assert.deepEqual(decoder.decode(bytes(0x3f, 100 - 31, 0xbe)), [
    ["location", "https://www.example.com"],
  ]);
  assert.throws(() => decoder.decode(bytes(0xbf)), HpackError);
});

Deno.test("hpack: table size update 0 clears the table; then it can grow back to the limit", () => {
  const decoder = decoderAfter(["828684410f7777772e6578616d706c652e636f6d"]);
  // Two updates at the block start: 0 (clear), then 4096 (5-bit prefix: 31 + 0x61 + 0x1f·128).
  assert.deepEqual(decoder.decode(bytes(0x20, 0x3f, 0xe1, 0x1f, 0x82)), [[":method", "GET"]]);
  // The old entry is gone; new ones are indexed again.
  assert.deepEqual(decoder.decode(hex("400a637573746f6d2d6b65790d637573746f6d2d686561646572")), [
    ["custom-key", "custom-header"],
  ]);
  assert.deepEqual(decoder.decode(bytes(0xbe)), [["custom-key", "custom-header"]]);
  // Size 0 then an indexed literal: the entry does not fit, nothing is added.
  assert.deepEqual(decoder.decode(bytes(0x20, 0x40, 1, "a", 1, "b")), [["a", "b"]]);
  assert.throws(() => decoder.decode(bytes(0xbe)), { message: /index 62 beyond the table/ });
  // Replayed: after the clear and one insertion, only that one entry is there.
  const replay = decoderAfter(["828684410f7777772e6578616d706c652e636f6d", "203fe11f82"]);
  replay.decode(hex("400a637573746f6d2d6b65790d637573746f6d2d686561646572"));
  assert.throws(() => replay.decode(bytes(0xbf)), { message: /index 63 beyond the table/ });
});

Deno.test("hpack: table size update above the advertised maximum is an error", () => {
  // 4097 = 31 + 0x62 + 0x1f·128
  assert.throws(() => new HpackDecoder().decode(bytes(0x3f, 0xe2, 0x1f)), {
    name: "HpackError",
    message: /table size update to 4097 above the limit 4096/,
  });
  assert.throws(
    () => new HpackDecoder({ maxTableSize: 256 }).decode(bytes(0x3f, 0xe2, 0x01)),
    /above the limit 256/,
  );
  assert.deepEqual(new HpackDecoder({ maxTableSize: 256 }).decode(bytes(0x3f, 0xe1, 0x01)), []);
});

Deno.test("hpack: table size update after a header field is an error", () => {
  assert.throws(() => new HpackDecoder().decode(bytes(0x82, 0x20)), {
    name: "HpackError",
    message: /after a header field/,
  });
});

Deno.test("hpack: an entry larger than the table empties it (§4.4)", () => {
  const decoder = new HpackDecoder({ maxTableSize: 256 });
  decoder.decode(bytes(0x40, 1, "a", 1, "b"));
  assert.deepEqual(decoder.decode(bytes(0xbe)), [["a", "b"]]);
  const big = "v".repeat(300);
  assert.deepEqual(decoder.decode(bytes(0x40, 1, "c", 0x7f, 0xad, 0x01, big)), [[
    "c",
    big,
  ]]);
  assert.throws(() => decoder.decode(bytes(0xbe)), /beyond the table/);
});

Deno.test("hpack: a table of size 0 never holds entries", () => {
  const decoder = new HpackDecoder({ maxTableSize: 0 });
  assert.deepEqual(decoder.decode(bytes(0x40, 1, "a", 1, "b", 0x82)), [["a", "b"], [
    ":method",
    "GET",
  ]]);
  assert.throws(() => decoder.decode(bytes(0xbe)), HpackError);
  assert.throws(
    () => new HpackDecoder({ maxTableSize: 0 }).decode(bytes(0x21)),
    /above the limit 0/,
  );
});

Deno.test("hpack: many insertions wrap the ring buffer and keep order", () => {
  const decoder = new HpackDecoder({ maxTableSize: 4096 });
  // Entries of 32 + 2 + 4 = 38 octets: 107 fit in 4096.
  for (let i = 0; i < 1000; i++) {
    const value = String(i).padStart(4, "0");
    assert.deepEqual(decoder.decode(bytes(0x40, 2, "k1", 4, value)), [["k1", value]]);
  }
  const probe = decoder.decode(dynamic(107));
  assert.equal(probe.length, 107);
  assert.deepEqual(probe[0], ["k1", "0999"]);
  assert.deepEqual(probe[106], ["k1", "0893"]);
  assert.throws(() => decoder.decode(Uint8Array.from(indexed(169))), /index 169 beyond/);
});

Deno.test("hpack: the ring grows while wrapped and keeps the order of entries", () => {
  const decoder = new HpackDecoder({ maxTableSize: 16384 });
  const insert = (i: number) => {
    const value = String(i).padStart(4, "0");
    assert.deepEqual(decoder.decode(bytes(0x40, 2, "k1", 4, value)), [["k1", value]]);
  };
  for (let i = 0; i < 200; i++) insert(i);
  // Shrink to 380 octets = 10 entries (5-bit prefix: 31 + 349 → 3f dd 02).
  assert.deepEqual(decoder.decode(bytes(0x3f, 0xdd, 0x02)), []);
  assert.equal(decoder.decode(dynamic(10)).at(-1)![1], "0190");
  // Back to 16384 (31 + 16353 → 3f e1 7f), then 300 more entries: 310 in all.
  assert.deepEqual(decoder.decode(bytes(0x3f, 0xe1, 0x7f)), []);
  for (let i = 200; i < 500; i++) insert(i);
  const probe = decoder.decode(dynamic(310));
  assert.deepEqual(
    probe.map(([, value]) => Number(value)),
    Array.from({ length: 310 }, (_, i) => 499 - i),
  );
});

// Integers (§5.1).

Deno.test("hpack: multi-byte integers with 4, 5, 6 and 7-bit prefixes (C.1.2: 1337)", () => {
  const value = "x".repeat(1337);
  // 7-bit prefix: string length 1337 = 127 + 1210 → 7f ba 09.
  assert.deepEqual(new HpackDecoder().decode(bytes(0x00, 1, "n", 0x7f, 0xba, 0x09, value)), [
    ["n", value],
  ]);
  // 6-bit prefix (62 < 63 fits in one octet), 4-bit (15 + 47) and never-indexed 4-bit.
  const decoder = new HpackDecoder();
  decoder.decode(bytes(0x40, 1, "a", 1, "b")); // index 62
  assert.deepEqual(decoder.decode(bytes(0x7e, 1, "c")), [["a", "c"]]); // 62 fits 6 bits
  // 4-bit prefix: 15 + 47 = 62.
  assert.deepEqual(decoder.decode(bytes(0x0f, 47, 1, "d")), [["a", "d"]]);
  assert.deepEqual(decoder.decode(bytes(0x1f, 47, 1, "e")), [["a", "e"]]);
  // 5-bit prefix with C.1.2's own bytes: size update 1337 = 1f 9a 0a.
  assert.deepEqual(new HpackDecoder().decode(bytes(0x3f, 0x9a, 0x0a)), []);
  // A redundant zero continuation is still the same number.
  assert.deepEqual(decoder.decode(bytes(0x0f, 0xaf, 0x00, 1, "f")), [["a", "f"]]);
});

Deno.test("hpack: truncated integers are errors", () => {
  for (const block of [bytes(0xff), bytes(0xff, 0x80), bytes(0x3f), bytes(0x0f, 0x81)]) {
    assert.throws(() => new HpackDecoder().decode(block), {
      name: "HpackError",
      message: /truncated integer/,
    });
  }
});

Deno.test("hpack: integers above 2^31-1 or with too many octets are errors", () => {
  assert.throws(() => new HpackDecoder().decode(bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0x0f)), {
    name: "HpackError",
    message: /above 2\^31-1/,
  });
  assert.throws(() => new HpackDecoder().decode(bytes(0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0)), {
    name: "HpackError",
    message: /too long/,
  });
  // 2^31-1 itself parses (and is then out of range as an index).
  let rest = 2 ** 31 - 1 - 127;
  const octets = [0xff];
  while (rest >= 128) {
    octets.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  octets.push(rest);
  assert.throws(() => new HpackDecoder().decode(Uint8Array.from(octets)), {
    message: /index 2147483647 beyond the table/,
  });
});

// Indexes and strings.

Deno.test("hpack: index 0 and indexes beyond the table are errors", () => {
  assert.throws(() => new HpackDecoder().decode(bytes(0x80)), {
    name: "HpackError",
    message: /index 0/,
  });
  assert.throws(() => new HpackDecoder().decode(bytes(0xbe)), /index 62 beyond the table/);
  // Literal with an out-of-range name index (4-bit prefix: 15 + 47 = 62).
  assert.throws(() => new HpackDecoder().decode(bytes(0x0f, 47, 1, "v")), /index 62 beyond/);
  assert.throws(() => new HpackDecoder().decode(bytes(0x7e, 1, "v")), /index 62 beyond/);
  // The last static entry is fine.
  assert.deepEqual(new HpackDecoder().decode(bytes(0xbd)), [["www-authenticate", ""]]);
});

Deno.test("hpack: strings running past the block end are errors", () => {
  const cases = [
    bytes(0x00, 5, "ab"), // name length 5, 2 octets present
    bytes(0x04, 3, "/a"), // value short by one
    bytes(0x40), // no name string at all
    bytes(0x04), // no value string at all
    bytes(0x00, 1, "a"), // no value string after the name
    bytes(0x04, 0x7f, 0x80), // length integer truncated
  ];
  for (const block of cases) {
    assert.throws(() => new HpackDecoder().decode(block), HpackError, `block ${block}`);
  }
  assert.throws(() => new HpackDecoder().decode(bytes(0x00, 5, "ab")), /runs past the block end/);
  assert.throws(() => new HpackDecoder().decode(bytes(0x04)), /truncated string/);
});

Deno.test("hpack: Huffman strings with EOS or bad padding are errors", () => {
  assert.throws(() => new HpackDecoder().decode(bytes(0x04, 0x84, 0xff, 0xff, 0xff, 0xff)), {
    name: "HpackError",
    message: /EOS/,
  });
  assert.throws(() => new HpackDecoder().decode(bytes(0x04, 0x82, 0x07, 0xff)), {
    name: "HpackError",
    message: /padding/,
  });
  assert.throws(() => new HpackDecoder().decode(bytes(0x00, 0x81, 0x00, 0)), /padding/);
  // Huffman-coded names and values decode.
  const name = huffmanEncode("x-trace-id");
  const value = huffmanEncode("abc/123");
  assert.deepEqual(
    new HpackDecoder().decode(bytes(0x10, 0x80 | name.length, name, 0x80 | value.length, value)),
    [["x-trace-id", "abc/123"]],
  );
});

Deno.test("hpack: the header list size limit (name + value + 32 per field)", () => {
  // ":method: GET" = 7 + 3 + 32 = 42; two of them = 84.
  assert.equal(new HpackDecoder({ maxHeaderListSize: 84 }).decode(bytes(0x82, 0x82)).length, 2);
  assert.throws(() => new HpackDecoder({ maxHeaderListSize: 83 }).decode(bytes(0x82, 0x82)), {
    name: "HeaderListTooLargeError",
    message: /header list is 84 octets, above the limit 83/,
  });
  assert.throws(
    () => new HpackDecoder({ maxHeaderListSize: 10 }).decode(bytes(0x82)),
    (e: unknown) => e instanceof HpackError && e instanceof HeaderListTooLargeError,
  );
  // The default is 65536.
  const big = "v".repeat(65536);
  const block = encodeHeaders([["x-big", big]]);
  assert.throws(() => new HpackDecoder().decode(block), HeaderListTooLargeError);
  assert.equal(new HpackDecoder({ maxHeaderListSize: 70000 }).decode(block)[0][1].length, 65536);
});

Deno.test("hpack: past the list limit the block is still applied to the dynamic table", () => {
  const decoder = new HpackDecoder({ maxHeaderListSize: 100 });
  const block = bytes(0x82, 0x82, 0x40, 1, "k", 1, "v"); // 42 + 42 + 34 = 118
  assert.throws(() => decoder.decode(block), HeaderListTooLargeError);
  // The connection can go on: the entry added after the limit was hit is there.
  assert.deepEqual(decoder.decode(bytes(0xbe)), [["k", "v"]]);
});

Deno.test("hpack: an empty block decodes to no fields", () => {
  assert.deepEqual(new HpackDecoder().decode(new Uint8Array(0)), []);
});

Deno.test("hpack: bad decoder options are rejected", () => {
  assert.throws(() => new HpackDecoder({ maxTableSize: -1 }), RangeError);
  assert.throws(() => new HpackDecoder({ maxTableSize: 1.5 }), RangeError);
  assert.throws(() => new HpackDecoder({ maxHeaderListSize: Number.NaN }), RangeError);
});

// Encoder.

Deno.test("encodeHeaders: static full match, static name, literal name; plain strings", () => {
  assert.deepEqual([...encodeHeaders([[":status", "200"]])], [0x88]);
  assert.deepEqual([...encodeHeaders([[":method", "POST"], [":path", "/"]])], [0x83, 0x84]);
  // content-type is static index 31: 4-bit prefix 15 + 16, then the plain value.
  assert.deepEqual(
    encodeHeaders([["content-type", "application/grpc"]]),
    bytes(0x0f, 0x10, 16, "application/grpc"),
  );
  // :status 201: name index 8 from the static table, value literal.
  assert.deepEqual(encodeHeaders([[":status", "201"]]), bytes(0x08, 3, "201"));
  assert.deepEqual(encodeHeaders([["grpc-status", "0"]]), bytes(0x00, 11, "grpc-status", 1, "0"));
  assert.deepEqual(encodeHeaders([]), new Uint8Array(0));
  // Multi-byte length: C.1.2-style 7-bit prefix 1337 = 7f ba 09.
  const long = encodeHeaders([["x-long", "a".repeat(1337)]]);
  assert.deepEqual([...long.subarray(0, 11)], [0, 6, ...bytes("x-long"), 0x7f, 0xba, 0x09]);
  assert.equal(long.length, 11 + 1337);
});

Deno.test("encodeHeaders: gRPC header lists round-trip through the decoder", () => {
  const lists: HeaderField[][] = [
    [[":status", "200"], ["content-type", "application/grpc"]],
    [["grpc-status", "0"]],
    [
      ["grpc-status", "5"],
      ["grpc-message", "snapshot %22k1%22 not found: not found %E2%9C%93 100%25"],
    ],
    [
      [":method", "POST"],
      [":scheme", "http"],
      [":path", "/containerd.services.snapshots.v1.Snapshots/Prepare"],
      [":authority", "localhost"],
      ["content-type", "application/grpc"],
      ["user-agent", "grpc-go/1.59.0"],
      ["te", "trailers"],
      ["grpc-timeout", "9999999u"],
      ["containerd-namespace", "default"],
      ["x-bin-bin", "\u0000\u00ff\u0080\u009f\n"],
      ["accept-encoding", "gzip, deflate"],
      ["accept-encoding", "identity"],
      ["empty", ""],
    ],
  ];
  const shared = new HpackDecoder();
  for (const list of lists) {
    const block = encodeHeaders(list);
    assert.deepEqual(shared.decode(block), list);
    const decoder = new HpackDecoder();
    assert.deepEqual(decoder.decode(block), list);
    // Stateless: the same bytes every time, and nothing entered the peer's dynamic table.
    assert.deepEqual(encodeHeaders(list), block);
    assert.throws(() => decoder.decode(bytes(0xbe)), /beyond the table/);
  }
});

Deno.test("encodeHeaders: chars above U+00FF are refused", () => {
  assert.throws(() => encodeHeaders([["grpc-message", "not \u2713"]]), {
    name: "HpackError",
    message: /grpc-message/,
  });
  assert.throws(() => encodeHeaders([["x-\u0101", "v"]]), HpackError);
});
