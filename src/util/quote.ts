/**
 * Bounds on what an error message (or a log line) echoes of a client's input. A snapshot key
 * may be 4 KiB and a request may carry 16 MiB; a message that repeats such a value whole can
 * be larger than an HTTP/2 peer accepts as a header (`grpc-message`), and the call then fails
 * with a transport error instead of the error it was meant to report.
 *
 * Invariants:
 * - {@linkcode shorten} keeps a string of at most `maxBytes` bytes of UTF-8 as it is; a longer
 *   one is cut on a code point boundary to at most `maxBytes` bytes and followed by
 *   `…(N bytes)`, N being its whole size, so what is shown is always a prefix of the input;
 * - {@linkcode quote} is {@linkcode shorten} inside JSON quotes (the marker after the closing
 *   quote, so it cannot be mistaken for part of the value);
 * - {@linkcode boundText} caps a whole message the same way ({@linkcode MAX_MESSAGE_TEXT_BYTES}).
 *
 * @module
 */

/** How much of one echoed value (key, label, path) a message shows, in bytes of UTF-8. */
export const MAX_ECHO_BYTES = 128;

/** How long a whole error message may be, in bytes of UTF-8, before it is cut. */
export const MAX_MESSAGE_TEXT_BYTES = 1024;

/** Bytes of UTF-8 of code unit `c` outside a surrogate pair (a lone surrogate counts 3). */
function unitBytes(c: number): number {
  return c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
}

/**
 * `s` itself when it takes at most `maxBytes` bytes of UTF-8, else its longest prefix within
 * `maxBytes` bytes (never splitting a surrogate pair) followed by `…(N bytes)`.
 */
export function shorten(s: string, maxBytes: number = MAX_ECHO_BYTES): string {
  // fast path: even at 3 bytes per code unit it fits
  if (s.length * 3 <= maxBytes) return s;
  let bytes = 0;
  let cut = -1;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < s.length &&
      (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
    const n = pair ? 4 : unitBytes(c);
    if (cut < 0 && bytes + n > maxBytes) cut = i;
    bytes += n;
    if (pair) i++;
  }
  if (cut < 0) return s;
  return `${s.slice(0, cut)}…(${bytes} bytes)`;
}

/** `s` as a JSON string, shortened like {@linkcode shorten} (the marker outside the quotes). */
export function quote(s: string, maxBytes: number = MAX_ECHO_BYTES): string {
  const short = shorten(s, maxBytes);
  if (short === s) return JSON.stringify(s);
  const mark = short.lastIndexOf("…(");
  return JSON.stringify(short.slice(0, mark)) + short.slice(mark);
}

/** A whole message capped at {@linkcode MAX_MESSAGE_TEXT_BYTES} (see {@linkcode shorten}). */
export function boundText(text: string, maxBytes: number = MAX_MESSAGE_TEXT_BYTES): string {
  return shorten(text, maxBytes);
}
