/**
 * The HPACK Huffman code (RFC 7541 §5.2, Appendix B): encode and decode string literals.
 *
 * The code is canonical, so only the 257 code lengths are stored (Appendix B, symbols 0..255
 * plus EOS = 256); the codes are assigned in order of (length, symbol) at module load.
 * Decoding walks a table-driven automaton four bits at a time: its states are the 256
 * internal nodes of the code tree, and one table entry per (state, nibble) gives the next
 * state and the symbol completed on the way, if any (the shortest code is 5 bits, so a nibble
 * completes at most one).
 *
 * This module also defines {@link HpackError} (re-exported by hpack.ts) so that the two
 * modules do not import each other.
 *
 * @module
 */

/** A malformed header block, table-size violation or over-long list: a connection error COMPRESSION_ERROR. */
export class HpackError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HpackError";
  }
}

/** The end-of-string symbol; it must never appear in encoded data. */
export const EOS = 256;

/** Code length in bits of each symbol 0..256 (RFC 7541 Appendix B). */
// deno-fmt-ignore
const CODE_LENGTHS: readonly number[] = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..15
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..31
   6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6, // 32..47  ' ' ! " # $ % & ' ( ) * + , - . /
   5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10, // 48..63  0-9 : ; < = > ?
  13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7, // 64..79  @ A-O
   7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6, // 80..95  P-Z [ \ ] ^ _
  15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5, // 96..111  ` a-o
   6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28, // 112..127  p-z { | } ~ DEL
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..143
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..159
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..175
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..191
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..207
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..223
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..239
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..255
  30, // 256 EOS
];

/** The code of each symbol and its length, generated from {@link CODE_LENGTHS}. */
export interface HuffmanCode {
  /** Code bits, right-aligned (the first bit sent is bit `length - 1`). */
  readonly codes: Uint32Array;
  /** Code length in bits. */
  readonly lengths: Uint8Array;
}

/** Assigns canonical codes: symbols sorted by (length, symbol) get consecutive codes. */
function canonicalCodes(lengths: readonly number[]): HuffmanCode {
  const order = lengths.map((_, sym) => sym).sort((a, b) => lengths[a] - lengths[b] || a - b);
  const codes = new Uint32Array(lengths.length);
  let code = 0;
  let length = lengths[order[0]];
  for (let i = 0; i < order.length; i++) {
    const sym = order[i];
    if (i > 0) code = (code + 1) * 2 ** (lengths[sym] - length);
    length = lengths[sym];
    codes[sym] = code;
  }
  return { codes, lengths: Uint8Array.from(lengths) };
}

/** The Huffman code of RFC 7541 Appendix B. */
export const HUFFMAN: HuffmanCode = canonicalCodes(CODE_LENGTHS);

// Decoder automaton entry layout (one Uint32 per state × nibble).
const NEXT_MASK = 0xff; // bits 0..7: next state (internal node id)
const EMIT = 0x100; // a symbol was completed; it is in bits 16..23
const FAIL = 0x200; // EOS was completed: the input is invalid
const SYM_SHIFT = 16;

/** The nibble automaton and which of its states may end a string. */
interface DecodeTable {
  /** `transitions[state * 16 + nibble]`, laid out as above. */
  readonly transitions: Uint32Array;
  /** 1 when ending in this state is valid: root, or 1..7 one-bits (a prefix of EOS). */
  readonly accepting: Uint8Array;
}

/** Builds the code tree, then the nibble automaton over its internal nodes. */
function buildDecodeTable(code: HuffmanCode): DecodeTable {
  // Internal nodes: children[node * 2 + bit] = child; child >= 0 is an internal node,
  // child < 0 is the leaf of symbol (-child - 1). Node 0 is the root.
  const children = new Int32Array(256 * 2);
  const depth = new Uint8Array(256);
  const allOnes = new Uint8Array(256);
  allOnes[0] = 1;
  let nodes = 1;
  for (let sym = 0; sym <= EOS; sym++) {
    const len = code.lengths[sym];
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const bit = (code.codes[sym] >>> i) & 1;
      const slot = node * 2 + bit;
      if (i === 0) {
        children[slot] = -sym - 1;
        break;
      }
      if (children[slot] === 0) {
        const child = nodes++;
        children[slot] = child;
        depth[child] = depth[node] + 1;
        allOnes[child] = allOnes[node] & bit;
      }
      node = children[slot];
    }
  }
  if (nodes !== 256) throw new Error(`Cannot build the Huffman tree: ${nodes} internal nodes`);

  const transitions = new Uint32Array(256 * 16);
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state;
      let entry = 0;
      for (let i = 3; i >= 0; i--) {
        const child = children[node * 2 + ((nibble >> i) & 1)];
        if (child >= 0) {
          node = child;
          continue;
        }
        const sym = -child - 1;
        entry |= sym === EOS ? FAIL : EMIT | (sym << SYM_SHIFT);
        node = 0;
      }
      transitions[state * 16 + nibble] = entry | node;
    }
  }
  const accepting = new Uint8Array(256);
  for (let state = 0; state < 256; state++) {
    accepting[state] = allOnes[state] && depth[state] <= 7 ? 1 : 0;
  }
  return { transitions, accepting };
}

const DECODE: DecodeTable = buildDecodeTable(HUFFMAN);

/** Longest run passed to `String.fromCharCode` at once (stays far below the argument limit). */
const CHUNK = 8192;

/**
 * Char codes to a string. Plain arrays, not typed ones: in V8 `fromCharCode.apply` over a
 * typed array, or allocating a small typed array at all, costs far more than this.
 */
function charCodesToString(codes: number[]): string {
  if (codes.length <= CHUNK) return String.fromCharCode.apply(null, codes);
  let out = "";
  for (let i = 0; i < codes.length; i += CHUNK) {
    out += String.fromCharCode.apply(null, codes.slice(i, i + CHUNK));
  }
  return out;
}

/** Maps bytes `[start, end)` 1:1 to chars (latin1; not windows-1252 as TextDecoder would). */
export function bytesToLatin1(bytes: Uint8Array, start = 0, end = bytes.length): string {
  const codes: number[] = new Array(end - start);
  for (let i = start; i < end; i++) codes[i - start] = bytes[i];
  return charCodesToString(codes);
}

/**
 * Decodes a Huffman-coded string literal (RFC 7541 §5.2) of `bytes[start, end)`.
 * Throws {@link HpackError} when EOS appears in the data or the padding is longer than
 * 7 bits or not all one-bits.
 */
export function huffmanDecodeRange(bytes: Uint8Array, start: number, end: number): string {
  const { transitions, accepting } = DECODE;
  // Each symbol takes at least 5 bits.
  const out: number[] = new Array(Math.floor(((end - start) * 8) / 5));
  let n = 0;
  let state = 0;
  for (let i = start; i < end; i++) {
    const byte = bytes[i];
    const high = transitions[(state << 4) | (byte >> 4)];
    const low = transitions[((high & NEXT_MASK) << 4) | (byte & 0x0f)];
    if ((high | low) & FAIL) {
      throw new HpackError("Cannot decode a Huffman string: it contains EOS");
    }
    if (high & EMIT) out[n++] = high >>> SYM_SHIFT;
    if (low & EMIT) out[n++] = low >>> SYM_SHIFT;
    state = low & NEXT_MASK;
  }
  if (!accepting[state]) {
    throw new HpackError(
      "Cannot decode a Huffman string: padding is longer than 7 bits or not all ones",
    );
  }
  out.length = n;
  return charCodesToString(out);
}

/**
 * Decodes a Huffman-coded string literal (RFC 7541 §5.2: padding of up to 7 one-bits; EOS
 * in the data or padding longer than 7 bits / not all ones is an error). Throws
 * {@link HpackError}. Returns a latin1 string (one char per decoded byte).
 */
export function huffmanDecode(bytes: Uint8Array): string {
  return huffmanDecodeRange(bytes, 0, bytes.length);
}

/** Octets {@link huffmanEncode} produces for `text` (chars must be ≤ U+00FF). */
export function huffmanEncodedLength(text: string): number {
  const lengths = HUFFMAN.lengths;
  let bits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) {
      throw new HpackError(`Cannot Huffman-encode char U+${c.toString(16)}: above U+00FF`);
    }
    bits += lengths[c];
  }
  return Math.ceil(bits / 8);
}

/**
 * Huffman-encodes `text` (one byte per char; chars above U+00FF throw {@link HpackError}),
 * padding the last octet with one-bits (the EOS prefix).
 */
export function huffmanEncode(text: string): Uint8Array {
  const out = new Uint8Array(huffmanEncodedLength(text));
  const { codes, lengths } = HUFFMAN;
  let o = 0;
  let cur = 0; // pending bits, right-aligned
  let pending = 0; // how many (0..7)
  for (let i = 0; i < text.length; i++) {
    const sym = text.charCodeAt(i);
    const code = codes[sym];
    let len = lengths[sym];
    while (len > 0) {
      const room = 8 - pending;
      if (len >= room) {
        len -= room;
        out[o++] = (cur << room) | ((code >>> len) & ((1 << room) - 1));
        cur = 0;
        pending = 0;
      } else {
        cur = (cur << len) | (code & ((1 << len) - 1));
        pending += len;
        len = 0;
      }
    }
  }
  if (pending > 0) out[o] = (cur << (8 - pending)) | ((1 << (8 - pending)) - 1);
  return out;
}
