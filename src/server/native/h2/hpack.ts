/**
 * HPACK (RFC 7541): the header decoder (static + dynamic table, Huffman strings) and a
 * stateless encoder for what this server sends.
 *
 * Strings are latin1: each octet is one char (U+0000..U+00FF), so `string.length` is the
 * octet count used by the table size rules (§4.1).
 *
 * @module
 */
import { bytesToLatin1, HpackError, huffmanDecodeRange } from "./huffman.ts";

export { HpackError };

/** One header field; names are lower-case; values are bytes mapped 1:1 to chars (latin1). */
export type HeaderField = [name: string, value: string];

/**
 * The header list grew past `maxHeaderListSize`. The whole block was still decoded, so the
 * dynamic table is in step with the peer's encoder: the caller may answer with a stream error
 * (e.g. HTTP 431 / RST_STREAM) and keep the connection, or treat it as any HpackError.
 */
export class HeaderListTooLargeError extends HpackError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HeaderListTooLargeError";
  }
}

/** Options of {@link HpackDecoder}. */
export interface HpackDecoderOptions {
  /** SETTINGS_HEADER_TABLE_SIZE we advertise, default 4096 */
  maxTableSize?: number;
  /** reject when the sum of (name.length + value.length + 32) exceeds this; default 65536 */
  maxHeaderListSize?: number;
}

/** The static table (RFC 7541 Appendix A); entry `i` has index `i + 1`. */
const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/** Number of static table entries; dynamic indexes start after it. */
const STATIC_COUNT = STATIC_TABLE.length;

/** Per name in the static table: its lowest index, and the index of each (name, value) pair. */
interface StaticName {
  readonly index: number;
  readonly values: ReadonlyMap<string, number>;
}

function buildStaticIndex(): ReadonlyMap<string, StaticName> {
  const byName = new Map<string, { index: number; values: Map<string, number> }>();
  STATIC_TABLE.forEach(([name, value], i) => {
    let entry = byName.get(name);
    if (!entry) {
      entry = { index: i + 1, values: new Map() };
      byName.set(name, entry);
    }
    if (!entry.values.has(value)) entry.values.set(value, i + 1);
  });
  return byName;
}

/** Static table lookup for the encoder (built once, never changed). */
const STATIC_INDEX: ReadonlyMap<string, StaticName> = buildStaticIndex();

/** Largest integer the decoder accepts (indexes, lengths, table sizes). */
const MAX_INT = 0x7fffffff;
/** Per-entry overhead in the table size accounting (§4.1). */
const ENTRY_OVERHEAD = 32;
/** Placeholder for "no block" (never written to). */
const EMPTY = new Uint8Array(0);
/** Placeholder for an evicted ring slot. */
const EVICTED: readonly [string, string] = ["", ""];

/**
 * Decodes header blocks of one connection (the dynamic table is per connection and
 * direction). After an {@link HpackError} other than {@link HeaderListTooLargeError} the
 * table may be out of step with the peer: the connection must be closed with
 * COMPRESSION_ERROR (RFC 9113 §4.3).
 */
export class HpackDecoder {
  /** SETTINGS_HEADER_TABLE_SIZE we advertise: the ceiling of any size update. */
  readonly #limit: number;
  readonly #maxListSize: number;
  /** Current maximum table size (set by dynamic table size updates). */
  #maxSize: number;
  /** Current table size in octets (§4.1). */
  #size = 0;
  /** Ring buffer of entries, oldest at `#start`; grows (doubling) when full. */
  #ring: (readonly [string, string])[];
  #start = 0;
  #count = 0;
  /** The block being decoded and the read position in it (valid during `decode` only). */
  #block: Uint8Array = EMPTY;
  #pos = 0;

  /** Creates a decoder with an empty dynamic table. */
  constructor(options: HpackDecoderOptions = {}) {
    const maxTableSize = options.maxTableSize ?? 4096;
    const maxHeaderListSize = options.maxHeaderListSize ?? 65536;
    if (!Number.isSafeInteger(maxTableSize) || maxTableSize < 0 || maxTableSize > MAX_INT) {
      throw new RangeError(`Cannot create an HPACK decoder: bad maxTableSize ${maxTableSize}`);
    }
    if (!(maxHeaderListSize >= 0)) {
      throw new RangeError(
        `Cannot create an HPACK decoder: bad maxHeaderListSize ${maxHeaderListSize}`,
      );
    }
    this.#limit = maxTableSize;
    this.#maxSize = maxTableSize;
    this.#maxListSize = maxHeaderListSize;
    // Every entry is at least 32 octets: a 4096-octet table holds at most 128.
    this.#ring = new Array(Math.min(128, Math.max(1, Math.floor(maxTableSize / ENTRY_OVERHEAD))));
  }

  /**
   * Decodes one complete header block (HEADERS + CONTINUATION payloads concatenated),
   * updating the dynamic table. Throws {@link HpackError}; past `maxHeaderListSize` throws
   * its subclass {@link HeaderListTooLargeError} after applying the whole block.
   */
  decode(block: Uint8Array): HeaderField[] {
    const fields: HeaderField[] = [];
    const end = block.length;
    this.#block = block;
    this.#pos = 0;
    let listSize = 0;
    let sawField = false;
    try {
      while (this.#pos < end) {
        const first = block[this.#pos];
        let name: string;
        let value: string;
        if (first & 0x80) {
          // Indexed header field (§6.1).
          const field = this.#field(this.#readInt(7));
          name = field[0];
          value = field[1];
        } else if ((first & 0xe0) === 0x20) {
          // Dynamic table size update (§6.3): only before the first field of the block (§4.2).
          if (sawField) {
            throw new HpackError("Cannot decode headers: a table size update after a header field");
          }
          const size = this.#readInt(5);
          if (size > this.#limit) {
            throw new HpackError(
              `Cannot decode headers: table size update to ${size} above the limit ${this.#limit}`,
            );
          }
          this.#maxSize = size;
          this.#evictTo(size);
          continue;
        } else {
          // Literal (§6.2): with incremental indexing 01, never indexed 0001, without 0000.
          const indexing = (first & 0xc0) === 0x40;
          const index = this.#readInt(indexing ? 6 : 4);
          name = index === 0 ? this.#readString() : this.#field(index)[0];
          value = this.#readString();
          if (indexing) this.#insert(name, value);
        }
        sawField = true;
        listSize += name.length + value.length + ENTRY_OVERHEAD;
        // Past the limit, keep decoding (the table must stay in step) but collect nothing.
        if (listSize <= this.#maxListSize) fields.push([name, value]);
      }
    } finally {
      this.#block = EMPTY;
    }
    if (listSize > this.#maxListSize) {
      throw new HeaderListTooLargeError(
        `Cannot decode headers: the header list is ${listSize} octets, above the limit ${this.#maxListSize}`,
      );
    }
    return fields;
  }

  /** Reads an integer with an N-bit prefix (§5.1); rejects values above 2^31-1. */
  #readInt(prefixBits: number): number {
    const block = this.#block;
    let pos = this.#pos;
    const mask = (1 << prefixBits) - 1;
    let value = block[pos++] & mask;
    if (value === mask) {
      for (let shift = 0;; shift += 7) {
        if (pos >= block.length) throw new HpackError("Cannot decode headers: truncated integer");
        if (shift > 28) throw new HpackError("Cannot decode headers: integer too long");
        const byte = block[pos++];
        value += (byte & 0x7f) * 2 ** shift;
        if (value > MAX_INT) throw new HpackError("Cannot decode headers: integer above 2^31-1");
        if ((byte & 0x80) === 0) break;
      }
    }
    this.#pos = pos;
    return value;
  }

  /** Reads a string literal (§5.2). */
  #readString(): string {
    const block = this.#block;
    if (this.#pos >= block.length) {
      throw new HpackError("Cannot decode headers: truncated string");
    }
    const huffman = (block[this.#pos] & 0x80) !== 0;
    const length = this.#readInt(7);
    const start = this.#pos;
    const end = start + length;
    if (end > block.length) {
      throw new HpackError(
        `Cannot decode headers: a string of ${length} octets runs past the block end`,
      );
    }
    this.#pos = end;
    return huffman ? huffmanDecodeRange(block, start, end) : bytesToLatin1(block, start, end);
  }

  /** The field at 1-based `index` in the static then dynamic table. */
  #field(index: number): readonly [string, string] {
    if (index === 0) throw new HpackError("Cannot decode headers: index 0");
    if (index <= STATIC_COUNT) return STATIC_TABLE[index - 1];
    const age = index - STATIC_COUNT - 1; // 0 = newest
    if (age >= this.#count) {
      throw new HpackError(
        `Cannot decode headers: index ${index} beyond the table (${
          STATIC_COUNT + this.#count
        } entries)`,
      );
    }
    const ring = this.#ring;
    return ring[(this.#start + this.#count - 1 - age) % ring.length];
  }

  /** Adds an entry (§4.4): evicts until it fits; an entry larger than the table empties it. */
  #insert(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    if (size > this.#maxSize) {
      this.#evictTo(0);
      return;
    }
    this.#evictTo(this.#maxSize - size);
    if (this.#count === this.#ring.length) this.#grow();
    const ring = this.#ring;
    ring[(this.#start + this.#count) % ring.length] = [name, value];
    this.#count++;
    this.#size += size;
  }

  /** Doubles the ring, moving the entries to its start in order. */
  #grow(): void {
    const old = this.#ring;
    const ring: (readonly [string, string])[] = new Array(old.length * 2);
    for (let i = 0; i < this.#count; i++) ring[i] = old[(this.#start + i) % old.length];
    this.#ring = ring;
    this.#start = 0;
  }

  /** Evicts the oldest entries until the table size is at most `target`. */
  #evictTo(target: number): void {
    const ring = this.#ring;
    while (this.#size > target) {
      const [name, value] = ring[this.#start];
      ring[this.#start] = EVICTED; // drop the reference
      this.#size -= name.length + value.length + ENTRY_OVERHEAD;
      this.#start = (this.#start + 1) % ring.length;
      this.#count--;
    }
    if (this.#count === 0) this.#start = 0;
  }
}

/** Octets of an integer with an N-bit prefix. */
function intLength(value: number, prefixBits: number): number {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) return 1;
  let n = 2;
  for (let rest = value - mask; rest >= 0x80; rest = Math.floor(rest / 0x80)) n++;
  return n;
}

/** Writes an integer with an N-bit prefix (§5.1) over the flag bits `flags`; returns the new position. */
function writeInt(out: Uint8Array, pos: number, value: number, prefixBits: number, flags: number) {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) {
    out[pos++] = flags | value;
    return pos;
  }
  out[pos++] = flags | mask;
  let rest = value - mask;
  while (rest >= 0x80) {
    out[pos++] = (rest & 0x7f) | 0x80;
    rest = Math.floor(rest / 0x80);
  }
  out[pos++] = rest;
  return pos;
}

/** Writes a plain (H=0) string literal; returns the new position. */
function writeString(out: Uint8Array, pos: number, text: string): number {
  pos = writeInt(out, pos, text.length, 7, 0);
  for (let i = 0; i < text.length; i++) out[pos++] = text.charCodeAt(i);
  return pos;
}

/** Throws unless every char of `text` (the name or the value of header `name`) is one octet. */
function checkLatin1(name: string, text: string, what: "name" | "value"): void {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) {
      throw new HpackError(
        `Cannot encode header ${JSON.stringify(name)}: its ${what} has U+${
          c.toString(16).padStart(4, "0")
        } at ${i}, above U+00FF`,
      );
    }
  }
}

/**
 * Encodes without touching any dynamic table (stateless, so safe for any peer): indexed
 * representation when name+value is in the static table, else literal WITHOUT indexing with
 * the static name index when the name is in the static table, else literal without indexing
 * with a literal name; string literals NOT Huffman-coded (plain, H=0).
 * Throws {@link HpackError} when a name or value has a char above U+00FF.
 */
export function encodeHeaders(fields: readonly HeaderField[]): Uint8Array {
  let total = 0;
  for (const [name, value] of fields) {
    checkLatin1(name, name, "name");
    checkLatin1(name, value, "value");
    const known = STATIC_INDEX.get(name);
    if (known?.values.has(value)) {
      total += intLength(known.values.get(value)!, 7);
      continue;
    }
    total += known ? intLength(known.index, 4) : 1 + intLength(name.length, 7) + name.length;
    total += intLength(value.length, 7) + value.length;
  }
  const out = new Uint8Array(total);
  let pos = 0;
  for (const [name, value] of fields) {
    const known = STATIC_INDEX.get(name);
    const full = known?.values.get(value);
    if (full !== undefined) {
      pos = writeInt(out, pos, full, 7, 0x80);
    } else if (known) {
      pos = writeInt(out, pos, known.index, 4, 0x00);
      pos = writeString(out, pos, value);
    } else {
      out[pos++] = 0x00;
      pos = writeString(out, pos, name);
      pos = writeString(out, pos, value);
    }
  }
  return out;
}
