/**
 * HTTP/2 frames (RFC 9113 §4, §6): type, flag, setting and error-code numbers, the 9-byte
 * frame header, and an incremental reader that cuts a byte stream into frames.
 *
 * @module
 */

/** Frame types. */
export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

/** Frame flags (the same bit means different things per type). */
export const Flag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

/** SETTINGS parameters. */
export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

/** Error codes of RST_STREAM and GOAWAY. */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

/** The client connection preface (RFC 9113 §3.4). */
export const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** Size of a frame header. */
export const FRAME_HEADER_BYTES = 9;
/** SETTINGS_MAX_FRAME_SIZE's initial value and lower bound. */
export const DEFAULT_MAX_FRAME_SIZE = 16_384;
/** SETTINGS_MAX_FRAME_SIZE's upper bound. */
export const MAX_FRAME_SIZE_LIMIT = 16_777_215;
/** Flow-control windows never exceed this. */
export const MAX_WINDOW = 2 ** 31 - 1;
/** SETTINGS_INITIAL_WINDOW_SIZE's initial value (and the connection window's). */
export const DEFAULT_WINDOW = 65_535;

/** One frame. `payload` is the frame's own copy. */
export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Uint8Array;
}

/**
 * A connection error (RFC 9113 §5.4.1): the connection is closed with GOAWAY carrying `code`.
 */
export class H2ConnectionError extends Error {
  override name = "H2ConnectionError";
  /** The GOAWAY error code. */
  readonly code: number;
  constructor(code: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** Writes a frame header for a payload of `length` bytes at `out[offset…offset+9]`. */
export function writeFrameHeader(
  out: Uint8Array,
  offset: number,
  header: { length: number; type: number; flags: number; streamId: number },
): void {
  out[offset] = (header.length >>> 16) & 0xff;
  out[offset + 1] = (header.length >>> 8) & 0xff;
  out[offset + 2] = header.length & 0xff;
  out[offset + 3] = header.type;
  out[offset + 4] = header.flags;
  out[offset + 5] = (header.streamId >>> 24) & 0x7f;
  out[offset + 6] = (header.streamId >>> 16) & 0xff;
  out[offset + 7] = (header.streamId >>> 8) & 0xff;
  out[offset + 8] = header.streamId & 0xff;
}

/** One frame as bytes. */
export function encodeFrame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  writeFrameHeader(out, 0, { length: payload.length, type, flags, streamId });
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

/** A SETTINGS frame with `settings` as (id, value) pairs, or an ACK when `ack`. */
export function encodeSettings(settings: ReadonlyArray<[number, number]>, ack = false): Uint8Array {
  const payload = new Uint8Array(ack ? 0 : settings.length * 6);
  const view = new DataView(payload.buffer);
  if (!ack) {
    settings.forEach(([id, value], i) => {
      view.setUint16(i * 6, id);
      view.setUint32(i * 6 + 2, value);
    });
  }
  return encodeFrame(FrameType.SETTINGS, ack ? Flag.ACK : 0, 0, payload);
}

/** A WINDOW_UPDATE frame. */
export function encodeWindowUpdate(streamId: number, increment: number): Uint8Array {
  const payload = new Uint8Array(4);
  new DataView(payload.buffer).setUint32(0, increment & MAX_WINDOW);
  return encodeFrame(FrameType.WINDOW_UPDATE, 0, streamId, payload);
}

/** A RST_STREAM frame. */
export function encodeRstStream(streamId: number, code: number): Uint8Array {
  const payload = new Uint8Array(4);
  new DataView(payload.buffer).setUint32(0, code);
  return encodeFrame(FrameType.RST_STREAM, 0, streamId, payload);
}

/** A GOAWAY frame with optional debug text. */
export function encodeGoaway(lastStreamId: number, code: number, debug = ""): Uint8Array {
  const text = new TextEncoder().encode(debug);
  const payload = new Uint8Array(8 + text.length);
  const view = new DataView(payload.buffer);
  view.setUint32(0, lastStreamId & MAX_WINDOW);
  view.setUint32(4, code);
  payload.set(text, 8);
  return encodeFrame(FrameType.GOAWAY, 0, 0, payload);
}

/**
 * Cuts a byte stream into frames. {@linkcode FrameReader.push} appends bytes;
 * {@linkcode FrameReader.next} returns the next whole frame or `undefined`.
 */
export class FrameReader {
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  /** Largest payload accepted (our SETTINGS_MAX_FRAME_SIZE). */
  readonly maxFrameSize: number;

  constructor(maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {
    this.maxFrameSize = maxFrameSize;
  }

  /** Bytes buffered but not yet returned as frames. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Appends `chunk`. */
  push(chunk: Uint8Array): void {
    if (this.#end + chunk.length > this.#buf.length) {
      const live = this.#end - this.#start;
      if (live + chunk.length <= this.#buf.length) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const next = new Uint8Array(Math.max(this.#buf.length * 2, live + chunk.length));
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = next;
      }
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /**
   * Takes exactly `n` raw bytes (the preface) if buffered; `undefined` when fewer are.
   */
  take(n: number): Uint8Array | undefined {
    if (this.#end - this.#start < n) return undefined;
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  /** The next whole frame, or `undefined`. Throws {@linkcode H2ConnectionError} on a frame too large. */
  next(): Frame | undefined {
    const available = this.#end - this.#start;
    if (available < FRAME_HEADER_BYTES) return undefined;
    const b = this.#buf;
    const s = this.#start;
    const length = (b[s] << 16) | (b[s + 1] << 8) | b[s + 2];
    if (length > this.maxFrameSize) {
      throw new H2ConnectionError(
        ErrorCode.FRAME_SIZE_ERROR,
        `frame of ${length} bytes exceeds SETTINGS_MAX_FRAME_SIZE ${this.maxFrameSize}`,
      );
    }
    if (available < FRAME_HEADER_BYTES + length) return undefined;
    const frame: Frame = {
      type: b[s + 3],
      flags: b[s + 4],
      streamId: ((b[s + 5] & 0x7f) << 24 | (b[s + 6] << 16) | (b[s + 7] << 8) | b[s + 8]) >>> 0,
      payload: b.slice(s + FRAME_HEADER_BYTES, s + FRAME_HEADER_BYTES + length),
    };
    this.#start += FRAME_HEADER_BYTES + length;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return frame;
  }
}
