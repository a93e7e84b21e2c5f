/**
 * A raw HTTP/2 client for adversarial server tests: it writes whatever bytes a test asks for
 * (malformed frames included), parses every frame the server sends with its own small frame
 * parser, keeps them in arrival order, and assembles per-stream responses (header blocks,
 * DATA, RST_STREAM). Header blocks the server sends are decoded with the project's HPACK
 * decoder (tested against RFC 7541 Appendix C); everything else is independent of the code
 * under test.
 *
 * ```ts
 * await using c = await RawH2Client.connect(path);
 * await c.handshake();
 * await c.send(c.headersFrame(1, grpcRequestHeaders("/pkg.Svc/Method")), c.dataFrame(1, body, true));
 * const r = await c.response(1);
 * await c.barrier(); // the server has processed everything sent so far
 * ```
 *
 * @module
 */
import { encodeHeaders, type HeaderField, HpackDecoder } from "../src/server/native/h2/hpack.ts";

/** Frame type numbers (RFC 9113 §6), spelled out here independently of the server's. */
export const T = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;

/** Flag bits. */
export const F = { END_STREAM: 1, ACK: 1, END_HEADERS: 4, PADDED: 8, PRIORITY: 0x20 } as const;

/** SETTINGS identifiers. */
export const S = {
  HEADER_TABLE_SIZE: 1,
  ENABLE_PUSH: 2,
  MAX_CONCURRENT_STREAMS: 3,
  INITIAL_WINDOW_SIZE: 4,
  MAX_FRAME_SIZE: 5,
  MAX_HEADER_LIST_SIZE: 6,
} as const;

/** Error codes. */
export const E = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  ENHANCE_YOUR_CALM: 11,
} as const;

/** The client connection preface. */
export const CLIENT_PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** One received frame. */
export interface RawFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Uint8Array;
  /** Position in arrival order (0-based). */
  seq: number;
  /** Which read (1-based) completed the frame: frames with the same number came together. */
  read: number;
}

/** What arrived on one stream. */
export interface StreamResult {
  /** Decoded header blocks in order (response headers, then trailers). */
  blocks: HeaderField[][];
  /** DATA payloads concatenated. */
  data: Uint8Array;
  /** Sizes of the DATA frames. */
  dataFrameSizes: number[];
  /** True once a frame with END_STREAM arrived. */
  ended: boolean;
  /** RST_STREAM code, if the server reset the stream. */
  rst?: number;
}

/** A gRPC response: the stream result read as gRPC. */
export interface GrpcResult extends StreamResult {
  /** `:status` of the first header block. */
  httpStatus: string | undefined;
  /** `grpc-status` (from trailers, or a trailers-only response), as a number. */
  grpcStatus: number | undefined;
  /** `grpc-message`, still percent-encoded as sent. */
  grpcMessage: string | undefined;
  /** Length-prefixed messages of the body. */
  messages: Uint8Array[];
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** One frame as bytes; `length` overrides the header's length field (for malformed frames). */
export function rawFrame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array = new Uint8Array(0),
  length = payload.length,
): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  out[0] = (length >>> 16) & 0xff;
  out[1] = (length >>> 8) & 0xff;
  out[2] = length & 0xff;
  out[3] = type;
  out[4] = flags;
  new DataView(out.buffer).setUint32(5, streamId >>> 0);
  out.set(payload, 9);
  return out;
}

/** A SETTINGS frame. */
export function settingsFrame(settings: [number, number][] = [], ack = false): Uint8Array {
  const p = new Uint8Array(settings.length * 6);
  const v = new DataView(p.buffer);
  settings.forEach(([id, value], i) => {
    v.setUint16(i * 6, id);
    v.setUint32(i * 6 + 2, value);
  });
  return rawFrame(T.SETTINGS, ack ? F.ACK : 0, 0, p);
}

/** A 4-byte big-endian payload. */
export function u32(value: number): Uint8Array {
  const p = new Uint8Array(4);
  new DataView(p.buffer).setUint32(0, value >>> 0);
  return p;
}

/** A WINDOW_UPDATE frame. */
export function windowUpdateFrame(streamId: number, increment: number): Uint8Array {
  return rawFrame(T.WINDOW_UPDATE, 0, streamId, u32(increment));
}

/** A RST_STREAM frame. */
export function rstFrame(streamId: number, code: number): Uint8Array {
  return rawFrame(T.RST_STREAM, 0, streamId, u32(code));
}

/** A PING frame. */
export function pingFrame(payload: Uint8Array, ack = false): Uint8Array {
  return rawFrame(T.PING, ack ? F.ACK : 0, 0, payload);
}

/** A GOAWAY frame from the client. */
export function goawayFrame(lastStreamId: number, code: number): Uint8Array {
  return rawFrame(T.GOAWAY, 0, 0, concat(u32(lastStreamId), u32(code)));
}

/** HEADERS (END_HEADERS set) with a header list encoded by the stateless HPACK encoder. */
export function headersFrame(
  streamId: number,
  fields: readonly HeaderField[],
  endStream = false,
): Uint8Array {
  return rawFrame(
    T.HEADERS,
    F.END_HEADERS | (endStream ? F.END_STREAM : 0),
    streamId,
    encodeHeaders(fields),
  );
}

/** A DATA frame. */
export function dataFrame(streamId: number, bytes: Uint8Array, endStream = false): Uint8Array {
  return rawFrame(T.DATA, endStream ? F.END_STREAM : 0, streamId, bytes);
}

/** One gRPC length-prefixed message (flag 0 unless given). */
export function grpcMessage(bytes: Uint8Array, flag = 0): Uint8Array {
  const out = new Uint8Array(5 + bytes.length);
  out[0] = flag;
  new DataView(out.buffer).setUint32(1, bytes.length);
  out.set(bytes, 5);
  return out;
}

/** Splits a body into its length-prefixed messages (throws on a malformed body). */
export function parseGrpcBody(body: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  while (i < body.length) {
    if (body.length - i < 5) throw new Error(`truncated message prefix at ${i}`);
    if (body[i] !== 0) throw new Error(`compressed flag ${body[i]} at ${i}`);
    const n = new DataView(body.buffer, body.byteOffset + i + 1, 4).getUint32(0);
    if (i + 5 + n > body.length) throw new Error(`truncated message at ${i}`);
    out.push(body.subarray(i + 5, i + 5 + n));
    i += 5 + n;
  }
  return out;
}

/** The request headers a gRPC client sends for `path`, plus `extra`. */
export function grpcRequestHeaders(
  path: string,
  extra: readonly HeaderField[] = [],
): HeaderField[] {
  return [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "localhost"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ...extra,
  ];
}

/** The value of `name` in a header block. */
export function field(block: readonly HeaderField[] | undefined, name: string): string | undefined {
  return block?.find(([n]) => n === name)?.[1];
}

/** Options of {@linkcode RawH2Client.connect}. */
export interface RawClientOptions {
  /** Send WINDOW_UPDATEs for every DATA frame received (default true). */
  autoWindowUpdate?: boolean;
  /** ACK the server's SETTINGS automatically (default true). */
  autoSettingsAck?: boolean;
}

interface Waiter {
  check(): boolean;
}

/** A raw HTTP/2 client on a unix socket. */
export class RawH2Client implements AsyncDisposable {
  /** The socket. */
  readonly conn: Deno.UnixConn;
  /** Every frame received, in order. */
  readonly frames: RawFrame[] = [];
  /** Number of reads that returned bytes. */
  reads = 0;
  /** Set when the server's bytes could not be parsed. */
  parseError?: Error;
  #options: Required<RawClientOptions>;
  #buf: Uint8Array = new Uint8Array(0);
  #decoder = new HpackDecoder({ maxHeaderListSize: 1 << 30 });
  #block?: { streamId: number; end: boolean; chunks: Uint8Array[] };
  #streams = new Map<number, StreamResult & { dataChunks: Uint8Array[] }>();
  #taken = new Set<RawFrame>();
  #waiters = new Set<Waiter>();
  #eof = false;
  #barriers = 0;
  #reading: Promise<void>;
  /** Server's SETTINGS_INITIAL_WINDOW_SIZE as last received. */
  serverInitialWindow = 65_535;
  /** What the server lets us send on the connection. */
  connSendWindow = 65_535;
  #streamSendWindows = new Map<number, number>();

  private constructor(conn: Deno.UnixConn, options: RawClientOptions) {
    this.conn = conn;
    this.#options = { autoWindowUpdate: true, autoSettingsAck: true, ...options };
    this.#reading = this.#readLoop();
  }

  /** Connects to the unix socket `path` (nothing is sent yet). */
  static async connect(path: string, options: RawClientOptions = {}): Promise<RawH2Client> {
    const conn = await Deno.connect({ transport: "unix", path });
    return new RawH2Client(conn, options);
  }

  /** True once the server closed its side. */
  get eof(): boolean {
    return this.#eof;
  }

  /** Writes all `chunks` in one write call. */
  async send(...chunks: Uint8Array[]): Promise<void> {
    const bytes = concat(...chunks);
    let offset = 0;
    while (offset < bytes.length) offset += await this.conn.write(bytes.subarray(offset));
  }

  /** Sends the preface and a SETTINGS frame, then waits for the server's SETTINGS. */
  async handshake(settings: [number, number][] = []): Promise<RawFrame> {
    await this.send(CLIENT_PREFACE, settingsFrame(settings));
    return await this.waitFrame((f) => f.type === T.SETTINGS && !(f.flags & F.ACK));
  }

  /**
   * Waits for the first frame not returned before that matches `pred` (any arrival time).
   * Rejects after `timeoutMs` or when the connection ends without one.
   */
  waitFrame(pred: (f: RawFrame) => boolean, timeoutMs = 5000, what = "frame"): Promise<RawFrame> {
    let found: RawFrame | undefined;
    return this.#wait(
      () => {
        found = this.frames.find((f) => !this.#taken.has(f) && pred(f));
        if (found) this.#taken.add(found);
        return found !== undefined;
      },
      timeoutMs,
      what,
    ).then(() => found!);
  }

  /**
   * Sends a PING and waits for its ACK: a barrier. The server handles frames in the order they
   * arrive and writes what it sends in order, so once this resolves everything it sent in
   * answer to the frames sent before (DATA a WINDOW_UPDATE allowed, RST_STREAMs, GOAWAY, …)
   * is in {@linkcode frames}. Use it to check that nothing more arrives, or that the server
   * has processed a frame, instead of sleeping. The ACK stays in {@linkcode frames}.
   */
  async barrier(timeoutMs = 5000): Promise<void> {
    const payload = new Uint8Array(8);
    const view = new DataView(payload.buffer);
    view.setUint32(0, 0x62617272); // "barr"
    const n = ++this.#barriers;
    view.setUint32(4, n);
    await this.send(pingFrame(payload));
    await this.waitFrame(
      (f) =>
        f.type === T.PING && (f.flags & F.ACK) !== 0 &&
        f.payload.every((b, i) => b === payload[i]),
      timeoutMs,
      `the ACK of barrier PING ${n}`,
    );
  }

  /** Waits until the server has closed the connection. */
  waitEof(timeoutMs = 5000): Promise<void> {
    return this.#wait(() => this.#eof, timeoutMs, "end of connection", true);
  }

  /** Waits for `cond` (checked after each frame arrives). */
  waitUntil(cond: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
    return this.#wait(cond, timeoutMs, what);
  }

  /** Waits until stream `id` ended (END_STREAM or RST_STREAM) and returns what arrived. */
  async response(id: number, timeoutMs = 5000): Promise<StreamResult> {
    await this.#wait(
      () => {
        const s = this.#streams.get(id);
        return s !== undefined && (s.ended || s.rst !== undefined);
      },
      timeoutMs,
      `end of stream ${id}`,
    );
    return this.stream(id)!;
  }

  /** Like {@linkcode response}, read as gRPC. */
  async grpcResponse(id: number, timeoutMs = 5000): Promise<GrpcResult> {
    const r = await this.response(id, timeoutMs);
    const last = r.blocks.at(-1);
    return {
      ...r,
      httpStatus: field(r.blocks[0], ":status"),
      grpcStatus: field(last, "grpc-status") === undefined
        ? undefined
        : Number(field(last, "grpc-status")),
      grpcMessage: field(last, "grpc-message"),
      messages: parseGrpcBody(r.data),
    };
  }

  /** What arrived on stream `id` so far. */
  stream(id: number): StreamResult | undefined {
    const s = this.#streams.get(id);
    if (!s) return undefined;
    return {
      blocks: s.blocks,
      data: concat(...s.dataChunks),
      dataFrameSizes: s.dataFrameSizes,
      ended: s.ended,
      rst: s.rst,
    };
  }

  /** The GOAWAY frames received, decoded. */
  goaways(): { lastStreamId: number; code: number; debug: string }[] {
    return this.frames.filter((f) => f.type === T.GOAWAY).map((f) => {
      const v = new DataView(f.payload.buffer, f.payload.byteOffset, f.payload.length);
      return {
        lastStreamId: v.getUint32(0) & 0x7fffffff,
        code: v.getUint32(4),
        debug: new TextDecoder().decode(f.payload.subarray(8)),
      };
    });
  }

  /** How much the server currently lets us send on stream `id`. */
  streamSendWindow(id: number): number {
    return this.#streamSendWindows.get(id) ?? this.serverInitialWindow;
  }

  /** True once the server ended stream `id` (END_STREAM or RST_STREAM): sending is over. */
  answered(id: number): boolean {
    const s = this.#streams.get(id);
    return s !== undefined && (s.ended || s.rst !== undefined);
  }

  /**
   * Sends `body` as DATA on stream `id` in frames of at most `frameSize` bytes, waiting for
   * the server's flow-control windows as a conforming client must. Stops early (resolving
   * with the bytes sent) when the server ends the stream first, as when it refuses a body
   * that is too large from its prefix.
   */
  async sendBody(
    id: number,
    body: Uint8Array,
    opts: { end?: boolean; frameSize?: number; timeoutMs?: number } = {},
  ): Promise<number> {
    let offset = 0;
    do {
      await this.waitUntil(
        () =>
          offset >= body.length || this.answered(id) ||
          Math.min(this.connSendWindow, this.streamSendWindow(id)) > 0,
        opts.timeoutMs ?? 10_000,
        `send window on stream ${id}`,
      );
      if (this.answered(id)) return offset;
      offset = await this.sendAvailable(id, body, offset, opts);
    } while (offset < body.length);
    return offset;
  }

  /**
   * Sends what the windows allow now of `body` from `offset` on stream `id` (END_STREAM with
   * the last byte if `end`), without waiting; returns the new offset.
   */
  async sendAvailable(
    id: number,
    body: Uint8Array,
    offset: number,
    opts: { end?: boolean; frameSize?: number } = {},
  ): Promise<number> {
    const frameSize = opts.frameSize ?? 16_384;
    const frames: Uint8Array[] = [];
    do {
      const n = Math.min(
        body.length - offset,
        frameSize,
        this.connSendWindow,
        this.streamSendWindow(id),
      );
      if (n <= 0 && offset < body.length) break;
      const last = offset + n >= body.length;
      this.connSendWindow -= n;
      this.#streamSendWindows.set(id, this.streamSendWindow(id) - n);
      frames.push(dataFrame(id, body.subarray(offset, offset + n), last && opts.end === true));
      offset += n;
    } while (offset < body.length);
    if (frames.length > 0) await this.send(...frames);
    return offset;
  }

  /**
   * Shuts down the sending side and waits for the server to close; the socket is closed then.
   * (Deno cannot close a socket while a read is pending, so EOF from the server is needed.)
   */
  async close(timeoutMs = 5000): Promise<void> {
    try {
      await this.conn.closeWrite();
    } catch {
      // already shut down
    }
    await this.waitEof(timeoutMs);
    await this.#reading;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #wait(cond: () => boolean, timeoutMs: number, what: string, eofOk = false): Promise<void> {
    if (cond()) return Promise.resolve();
    if (this.#eof && !eofOk) {
      return Promise.reject(new Error(`connection ended while waiting for ${what}`));
    }
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const timer = setTimeout(() => {
      this.#waiters.delete(waiter);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const waiter: Waiter = {
      check: () => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
          return true;
        }
        if (this.#eof && !eofOk) {
          clearTimeout(timer);
          reject(new Error(`connection ended while waiting for ${what}`));
          return true;
        }
        return false;
      },
    };
    this.#waiters.add(waiter);
    return promise;
  }

  #wake(): void {
    for (const w of [...this.#waiters]) if (w.check()) this.#waiters.delete(w);
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(256 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        this.reads++;
        this.#buf = concat(this.#buf, buf.subarray(0, n));
        this.#parse();
        this.#wake();
      }
    } catch {
      // reset by the server: same as EOF for these tests
    }
    this.#eof = true;
    this.#wake();
  }

  #parse(): void {
    while (this.#buf.length >= 9) {
      const b = this.#buf;
      const length = (b[0] << 16) | (b[1] << 8) | b[2];
      if (b.length < 9 + length) return;
      const frame: RawFrame = {
        type: b[3],
        flags: b[4],
        streamId: new DataView(b.buffer, b.byteOffset + 5, 4).getUint32(0) & 0x7fffffff,
        payload: b.slice(9, 9 + length),
        seq: this.frames.length,
        read: this.reads,
      };
      this.#buf = b.slice(9 + length);
      this.frames.push(frame);
      try {
        this.#onFrame(frame);
      } catch (err) {
        this.parseError ??= err as Error;
      }
    }
  }

  #streamLog(id: number) {
    let s = this.#streams.get(id);
    if (!s) {
      s = { blocks: [], data: new Uint8Array(0), dataChunks: [], dataFrameSizes: [], ended: false };
      this.#streams.set(id, s);
    }
    return s;
  }

  #onFrame(f: RawFrame): void {
    const v = new DataView(f.payload.buffer, f.payload.byteOffset, f.payload.length);
    switch (f.type) {
      case T.SETTINGS:
        if (f.flags & F.ACK) return;
        for (let i = 0; i + 6 <= f.payload.length; i += 6) {
          if (v.getUint16(i) === S.INITIAL_WINDOW_SIZE) {
            const value = v.getUint32(i + 2);
            const delta = value - this.serverInitialWindow;
            this.serverInitialWindow = value;
            for (const [id, w] of this.#streamSendWindows) {
              this.#streamSendWindows.set(id, w + delta);
            }
          }
        }
        if (this.#options.autoSettingsAck) this.send(settingsFrame([], true)).catch(() => {});
        return;
      case T.WINDOW_UPDATE: {
        const inc = v.getUint32(0) & 0x7fffffff;
        if (f.streamId === 0) this.connSendWindow += inc;
        else this.#streamSendWindows.set(f.streamId, this.streamSendWindow(f.streamId) + inc);
        return;
      }
      case T.HEADERS: {
        let p = f.payload;
        let pad = 0;
        if (f.flags & F.PADDED) {
          pad = p[0];
          p = p.subarray(1);
        }
        if (f.flags & F.PRIORITY) p = p.subarray(5);
        p = p.subarray(0, p.length - pad);
        this.#block = { streamId: f.streamId, end: (f.flags & F.END_STREAM) !== 0, chunks: [p] };
        if (f.flags & F.END_HEADERS) this.#endBlock();
        return;
      }
      case T.CONTINUATION:
        if (!this.#block || this.#block.streamId !== f.streamId) {
          throw new Error(`unexpected CONTINUATION on stream ${f.streamId}`);
        }
        this.#block.chunks.push(f.payload);
        if (f.flags & F.END_HEADERS) this.#endBlock();
        return;
      case T.DATA: {
        const s = this.#streamLog(f.streamId);
        let p = f.payload;
        if (f.flags & F.PADDED) p = p.subarray(1, p.length - p[0]);
        s.dataChunks.push(p);
        s.dataFrameSizes.push(f.payload.length);
        if (f.flags & F.END_STREAM) s.ended = true;
        if (this.#options.autoWindowUpdate && f.payload.length > 0) {
          const updates = [windowUpdateFrame(0, f.payload.length)];
          if (!(f.flags & F.END_STREAM)) {
            updates.push(windowUpdateFrame(f.streamId, f.payload.length));
          }
          this.send(...updates).catch(() => {});
        }
        return;
      }
      case T.RST_STREAM:
        this.#streamLog(f.streamId).rst = v.getUint32(0);
        return;
    }
  }

  #endBlock(): void {
    const b = this.#block!;
    this.#block = undefined;
    const s = this.#streamLog(b.streamId);
    s.blocks.push(this.#decoder.decode(concat(...b.chunks)));
    if (b.end) s.ended = true;
  }
}
