import assert from "node:assert/strict";
import {
  bytesToLatin1,
  EOS,
  HpackError,
  HUFFMAN,
  huffmanDecode,
  huffmanEncode,
  huffmanEncodedLength,
} from "./huffman.ts";
import { hex } from "../../../../testing/hex.ts";

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Every byte value once, as a latin1 string. */
const ALL_BYTES = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));

/** Huffman-coded string literals of RFC 7541 Appendix C.4 and C.6. */
const RFC_STRINGS: readonly [string, string][] = [
  ["www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"],
  ["no-cache", "a8eb10649cbf"],
  ["custom-key", "25a849e95ba97d7f"],
  ["custom-value", "25a849e95bb8e8b4bf"],
  ["302", "6402"],
  ["307", "640eff"],
  ["private", "aec3771a4b"],
  ["Mon, 21 Oct 2013 20:13:21 GMT", "d07abe941054d444a8200595040b8166e082a62d1bff"],
  ["Mon, 21 Oct 2013 20:13:22 GMT", "d07abe941054d444a8200595040b8166e084a62d1bff"],
  ["https://www.example.com", "9d29ad171863c78f0b97c8e9ae82ae43d3"],
  ["gzip", "9bd9ab"],
  [
    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    "94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
  ],
];

Deno.test("huffman: generated canonical codes match rows of the RFC 7541 Appendix B table", () => {
  // [symbol, code as hex, length] copied from the RFC table.
  const rows: [number, number, number][] = [
    [0, 0x1ff8, 13],
    [1, 0x7fffd8, 23],
    [9, 0xffffea, 24],
    [10, 0x3ffffffc, 30],
    [22, 0x3ffffffe, 30],
    [32, 0x14, 6], // ' '
    [37, 0x15, 6], // '%'
    [47, 0x18, 6], // '/'
    [48, 0x0, 5], // '0'
    [58, 0x5c, 7], // ':'
    [65, 0x21, 6], // 'A'
    [97, 0x3, 5], // 'a'
    [101, 0x5, 5], // 'e'
    [255, 0x3ffffee, 26],
    [EOS, 0x3fffffff, 30],
  ];
  for (const [sym, code, length] of rows) {
    assert.equal(HUFFMAN.lengths[sym], length, `length of symbol ${sym}`);
    assert.equal(HUFFMAN.codes[sym], code, `code of symbol ${sym}`);
  }
});

Deno.test("huffman: the code is complete and prefix-free", () => {
  assert.equal(HUFFMAN.codes.length, 257);
  // Kraft sum of a complete code is exactly 1 (2^-len summed; scaled by 2^30 stays exact).
  let kraft = 0;
  for (let sym = 0; sym <= EOS; sym++) kraft += 2 ** (30 - HUFFMAN.lengths[sym]);
  assert.equal(kraft, 2 ** 30);
  const seen = new Set<string>();
  for (let sym = 0; sym <= EOS; sym++) {
    const bits = HUFFMAN.codes[sym].toString(2).padStart(HUFFMAN.lengths[sym], "0");
    assert.equal(bits.length, HUFFMAN.lengths[sym], `code of ${sym} fits its length`);
    seen.add(bits);
  }
  assert.equal(seen.size, 257);
  for (const a of seen) {
    for (const b of seen) {
      if (a !== b) assert.ok(!b.startsWith(a), `${a} is a prefix of ${b}`);
    }
  }
});

Deno.test("huffman: encodes and decodes the RFC 7541 Appendix C strings", () => {
  for (const [text, coded] of RFC_STRINGS) {
    assert.equal(toHex(huffmanEncode(text)), coded, `encode ${text}`);
    assert.equal(huffmanEncodedLength(text), coded.length / 2, `length of ${text}`);
    assert.equal(huffmanDecode(hex(coded)), text, `decode ${coded}`);
  }
});

Deno.test("huffman: every byte value round-trips, alone and in one string", () => {
  for (let c = 0; c < 256; c++) {
    const text = String.fromCharCode(c);
    assert.equal(huffmanDecode(huffmanEncode(text)), text, `byte ${c}`);
    // Followed by a short symbol so two codes share octets at varying bit offsets.
    assert.equal(huffmanDecode(huffmanEncode(`a${text}0${text}`)), `a${text}0${text}`);
  }
  assert.equal(huffmanDecode(huffmanEncode(ALL_BYTES)), ALL_BYTES);
  const reversed = [...ALL_BYTES].reverse().join("").repeat(40); // > 8192 chars of output
  assert.equal(huffmanDecode(huffmanEncode(reversed)), reversed);
});

Deno.test("huffman: the empty string is zero octets", () => {
  assert.equal(huffmanEncode("").length, 0);
  assert.equal(huffmanDecode(new Uint8Array(0)), "");
});

Deno.test("huffman: padding of exactly 7 one-bits is accepted", () => {
  // Five '0' (5 bits each) = 25 bits, so the 4th octet holds 1 code bit + 7 padding bits.
  const coded = huffmanEncode("00000");
  assert.deepEqual([...coded], [0x00, 0x00, 0x00, 0x7f]);
  assert.equal(huffmanDecode(coded), "00000");
});

Deno.test("huffman: rejects EOS in the data", () => {
  // 32 one-bits: the first 30 are EOS.
  assert.throws(() => huffmanDecode(hex("ffffffff")), {
    name: "HpackError",
    message: /EOS/,
  });
  // 'a' (00011) then EOS then padding: EOS mid-string.
  const bits = "00011" + "1".repeat(30) + "1";
  const bytes = new Uint8Array(bits.length / 8);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(bits.slice(i * 8, i * 8 + 8), 2);
  assert.throws(() => huffmanDecode(bytes), HpackError);
});

Deno.test("huffman: rejects padding longer than 7 bits or not all ones", () => {
  // '0' + 3 one-bits, then a whole octet of one-bits: 11 bits of padding.
  assert.throws(() => huffmanDecode(hex("07ff")), { name: "HpackError", message: /padding/ });
  // A lone octet of one-bits: 8 bits of padding.
  assert.throws(() => huffmanDecode(hex("ff")), { name: "HpackError", message: /padding/ });
  // '0' then 000: padding not made of one-bits.
  assert.throws(() => huffmanDecode(hex("00")), { name: "HpackError", message: /padding/ });
  // '0' then 011: not a prefix of EOS either.
  assert.throws(() => huffmanDecode(hex("03")), { name: "HpackError", message: /padding/ });
  // Sanity: the same first bits with proper padding decode.
  assert.equal(huffmanDecode(hex("07")), "0");
});

Deno.test("huffman: encode refuses chars above U+00FF", () => {
  assert.throws(() => huffmanEncode("caf\u00e9\u20ac"), { name: "HpackError", message: /U\+20ac/ });
  assert.equal(huffmanDecode(huffmanEncode("caf\u00e9")), "caf\u00e9");
});

Deno.test("bytesToLatin1: maps bytes 1:1, including 0x80..0x9f, for short and long input", () => {
  const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.equal(bytesToLatin1(bytes), ALL_BYTES);
  assert.equal(bytesToLatin1(bytes, 0x80, 0xa0).charCodeAt(0), 0x80);
  const long = new Uint8Array(20000).map((_, i) => i & 0xff);
  const text = bytesToLatin1(long, 5, 19999);
  assert.equal(text.length, 19994);
  assert.equal(text.charCodeAt(0), 5);
  assert.equal(text.charCodeAt(19993), 19998 & 0xff);
});
