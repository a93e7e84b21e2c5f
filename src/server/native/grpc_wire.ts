/**
 * gRPC over HTTP/2 wire details (grpc/grpc PROTOCOL-HTTP2.md): length-prefixed messages,
 * `grpc-timeout`, and the percent-encoding of `grpc-message`.
 *
 * @module
 */

/** Bytes before each message: compressed flag (1) and big-endian length (4). */
export const MESSAGE_PREFIX_BYTES = 5;

/** One length-prefixed message. */
export interface GrpcMessage {
  compressed: boolean;
  bytes: Uint8Array;
}

/** A body that is not a sequence of whole length-prefixed messages. */
export class GrpcFramingError extends Error {
  override name = "GrpcFramingError";
}

/** The 5-byte prefix of an uncompressed message of `length` bytes: flag 0, big-endian length. */
export function messagePrefix(length: number): Uint8Array {
  const out = new Uint8Array(MESSAGE_PREFIX_BYTES);
  new DataView(out.buffer).setUint32(1, length);
  return out;
}

/** Splits a request body into its messages. Throws {@linkcode GrpcFramingError}. */
export function readMessages(body: Uint8Array, maxMessageBytes: number): GrpcMessage[] {
  const messages: GrpcMessage[] = [];
  let offset = 0;
  while (offset < body.length) {
    if (body.length - offset < MESSAGE_PREFIX_BYTES) {
      throw new GrpcFramingError("truncated message prefix");
    }
    const flag = body[offset];
    if (flag > 1) throw new GrpcFramingError(`invalid compressed flag ${flag}`);
    const length = ((body[offset + 1] << 24) | (body[offset + 2] << 16) |
      (body[offset + 3] << 8) | body[offset + 4]) >>> 0;
    if (length > maxMessageBytes) {
      throw new GrpcFramingError(
        `message of ${length} bytes is larger than the limit of ${maxMessageBytes}`,
      );
    }
    const start = offset + MESSAGE_PREFIX_BYTES;
    if (start + length > body.length) throw new GrpcFramingError("truncated message");
    messages.push({ compressed: flag === 1, bytes: body.subarray(start, start + length) });
    offset = start + length;
  }
  return messages;
}

const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 0.001,
  n: 0.000001,
};

/**
 * `grpc-timeout` (1–8 digits and a unit H, M, S, m, u or n) in milliseconds; `undefined`
 * when absent or malformed (a malformed timeout is ignored, as grpc-go does not send one).
 */
export function parseTimeout(value: string | undefined): number | undefined {
  if (value === undefined || value.length < 2 || value.length > 9) return undefined;
  const unit = TIMEOUT_UNIT_MS[value[value.length - 1]];
  const digits = value.slice(0, -1);
  if (unit === undefined || !/^[0-9]+$/.test(digits)) return undefined;
  return Number(digits) * unit;
}

/** Percent-encodes a status message: UTF-8, with bytes outside 0x20–0x7E and `%` escaped. */
export function encodeGrpcMessage(text: string): string {
  let plain = true;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return text;
  let out = "";
  for (const b of new TextEncoder().encode(text)) {
    out += b < 0x20 || b > 0x7e || b === 0x25
      ? "%" + b.toString(16).toUpperCase().padStart(2, "0")
      : String.fromCharCode(b);
  }
  return out;
}

/** Reverses {@linkcode encodeGrpcMessage} (malformed escapes are kept as they are). */
export function decodeGrpcMessage(value: string): string {
  if (!value.includes("%")) return value;
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const hex = value.slice(i + 1, i + 3);
    if (value[i] === "%" && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else bytes.push(value.charCodeAt(i) & 0xff);
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}
