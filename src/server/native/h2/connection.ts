/**
 * The server side of one HTTP/2 connection (RFC 9113) over any Deno byte stream: frames,
 * SETTINGS, HPACK, streams, flow control in both directions, PING, RST_STREAM and GOAWAY.
 *
 * It delivers a request once its headers and whole body have arrived (every method this
 * server has takes one request message) and lets the caller answer with headers, data and
 * trailers. Frames produced in the same tick go out in one write: a unary answer is one
 * syscall, which matters where each syscall is expensive.
 *
 * What a client can make it buffer is bounded by flow control (RFC 9113 §5.2), not only by
 * `maxBodyBytes`:
 * - a stream may send its initial window ({@linkcode DEFAULT_STREAM_WINDOW}) and no more until
 *   the server knows how long its body is: from `bodyPrefix` (gRPC's 5-byte message prefix),
 *   or, without one, `maxBodyBytes`. A body declared longer than `maxBodyBytes` (or one that
 *   grows past it) is delivered at once, flagged `bodyTooLarge`, so it is refused before its
 *   bytes are sent; the server's answer ends the stream (RST_STREAM NO_ERROR);
 * - the rest of a declared body is granted in one WINDOW_UPDATE, out of a per-connection
 *   reservation of `maxBodyBytes`, first come first served: other large bodies wait at their
 *   initial window until a reservation is given back, which happens when a body is delivered
 *   (the application consumes it) or its stream ends. A reserved body can always complete, so
 *   waiting never deadlocks;
 * - so one connection buffers at most `maxBodyBytes` plus the initial window of each open
 *   stream (16 MiB + 1000 × 64 KiB by default), whatever its streams declare; the connection
 *   window is credited as DATA arrives (it bounds nothing the streams do not already).
 * A body is kept in one buffer of its declared size (no chunk list to concatenate).
 *
 * ```ts
 * const c = new H2ServerConnection(conn, { maxBodyBytes: 1 << 24, onRequest: (s) => {
 *   s.sendHeaders([[":status", "200"]]);
 *   s.sendData(body, true);
 * } });
 * await c.run(); // until the peer goes away or the connection fails
 * ```
 *
 * @module
 */
import {
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW,
  encodeFrame,
  encodeGoaway,
  encodeRstStream,
  encodeSettings,
  encodeWindowUpdate,
  ErrorCode,
  Flag,
  type Frame,
  FRAME_HEADER_BYTES,
  FrameReader,
  FrameType,
  H2ConnectionError,
  MAX_FRAME_SIZE_LIMIT,
  MAX_WINDOW,
  PREFACE,
  Setting,
  writeFrameHeader,
} from "./frames.ts";
import {
  encodeHeaders,
  type HeaderField,
  HeaderListTooLargeError,
  HpackDecoder,
  HpackError,
} from "./hpack.ts";
import { malformedRequest, malformedTrailers } from "./request_headers.ts";

/**
 * Answers the peer made us queue (PING and SETTINGS ACKs, RST_STREAMs) past which we stop
 * reading until they are written: a peer that floods us without reading cannot grow our
 * output queue without bound (grpc-go does the same, with 50).
 */
const MAX_PENDING_CONTROL = 1000;

/** After GOAWAY, how long an idle connection waits for the peer to close it. */
export const DEFAULT_CLOSE_GRACE_MS = 1000;

/**
 * Our default per-stream receive window: the protocol's initial one (so clients that send
 * before they see our SETTINGS agree with it). A request that fits needs no WINDOW_UPDATE.
 */
export const DEFAULT_STREAM_WINDOW = DEFAULT_WINDOW;

/** How a body announces its length in its first bytes (gRPC: the 5-byte message prefix). */
export interface BodyPrefix {
  /** Bytes of the prefix. */
  bytes: number;
  /** The whole body's length, prefix included, from the prefix's bytes. */
  length(prefix: Uint8Array): number;
}

/** Options for {@linkcode H2ServerConnection}. */
export interface H2ConnectionOptions {
  /** Called once per stream when its headers and whole body have arrived. */
  onRequest(stream: H2ServerStream): void;
  /**
   * Largest body accepted; a larger one (declared or received) is delivered at once with
   * `bodyTooLarge` set and its bytes dropped. Also the per-connection reservation out of which
   * stream windows beyond the initial one are granted.
   */
  maxBodyBytes: number;
  /** How a body declares its length; without it, a body may be up to `maxBodyBytes`. */
  bodyPrefix?: BodyPrefix;
  /** SETTINGS_MAX_CONCURRENT_STREAMS (default 1000). */
  maxConcurrentStreams?: number;
  /**
   * Our initial per-stream receive window (default {@linkcode DEFAULT_STREAM_WINDOW}); at
   * least the prefix's bytes.
   */
  streamWindow?: number;
  /** Our connection receive window (default 16 MiB; never below the protocol's 65535). */
  connectionWindow?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE (default 64 KiB). */
  maxHeaderListSize?: number;
  /**
   * After GOAWAY, how long to wait for the peer to close an idle connection before closing
   * it from this side (default {@linkcode DEFAULT_CLOSE_GRACE_MS}).
   */
  closeGraceMs?: number;
  /** Called with what went wrong when the connection fails (not on a clean close). */
  onError?(error: unknown): void;
}

type Outbound =
  | { kind: "headers"; block: Uint8Array; end: boolean }
  | { kind: "data"; bytes: Uint8Array; offset: number; end: boolean; done?: () => void };

/** A marker in the output queue: called once everything queued before it was written. */
type Written = () => void;

/** One request stream. */
export class H2ServerStream {
  /** Stream id. */
  readonly id: number;
  /** Request headers (pseudo-headers first, as sent). */
  readonly headers: HeaderField[];
  /**
   * True when the body is larger than `maxBodyBytes`, as declared by its prefix or as
   * received: the stream is delivered at once, without its bytes.
   */
  bodyTooLarge = false;
  /** The body's length as its prefix declares it, once known. */
  declaredBodyBytes?: number;
  /** Set when the peer reset the stream or the connection went away. */
  cancelled = false;
  /** Chunks until the length is known (or without a prefix); then `#buf` is used. */
  #chunks: Uint8Array[] = [];
  #buf?: Uint8Array;
  #bodyBytes = 0;
  #conn: H2ServerConnection;
  /** @internal Body bytes received, counted even past `maxBodyBytes`. */
  received = 0;
  /** @internal Handed to the application (once). */
  delivered = false;
  /** @internal Window beyond the initial one granted from the connection's reservation. */
  reserved = 0;
  /** @internal Window still wanted from the reservation (waiting for it). */
  wanted = 0;
  #onCancel: (() => void)[] = [];
  /** @internal */ sendWindow: number;
  /** @internal */ recvWindow: number;
  /** @internal */ remoteClosed = false;
  /** @internal */ localClosed = false;
  /** @internal */ queue: Outbound[] = [];

  /** @internal */
  constructor(conn: H2ServerConnection, init: {
    id: number;
    headers: HeaderField[];
    sendWindow: number;
    recvWindow: number;
  }) {
    this.#conn = conn;
    this.id = init.id;
    this.headers = init.headers;
    this.sendWindow = init.sendWindow;
    this.recvWindow = init.recvWindow;
  }

  /** The value of request header `name` (first one), or undefined. */
  header(name: string): string | undefined {
    for (const [n, v] of this.headers) if (n === name) return v;
    return undefined;
  }

  /** The request body: all DATA payloads concatenated (empty when `bodyTooLarge`). */
  body(): Uint8Array {
    if (this.#buf) return this.#buf.subarray(0, this.#bodyBytes);
    if (this.#chunks.length === 1) return this.#chunks[0];
    const out = new Uint8Array(this.#bodyBytes);
    let offset = 0;
    for (const chunk of this.#chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  /**
   * @internal Appends DATA; learns the declared length from `prefix` once its bytes are in.
   * Drops everything once the body is too large or has been delivered.
   */
  appendBody(chunk: Uint8Array, limit: number, prefix: BodyPrefix | undefined): void {
    this.received += chunk.length;
    if (this.bodyTooLarge || this.delivered || chunk.length === 0) return;
    if (this.#bodyBytes + chunk.length > limit) return this.#tooLarge();
    if (this.#buf && this.#bodyBytes + chunk.length <= this.#buf.length) {
      this.#buf.set(chunk, this.#bodyBytes);
      this.#bodyBytes += chunk.length;
      return;
    }
    this.#chunks.push(chunk);
    this.#bodyBytes += chunk.length;
    if (this.#buf) {
      // more than declared (a second message): back to a list, as without a prefix
      this.#chunks.unshift(this.#buf.subarray(0, this.#bodyBytes - chunk.length));
      this.#buf = undefined;
      return;
    }
    if (!prefix || this.declaredBodyBytes !== undefined || this.#bodyBytes < prefix.bytes) return;
    const head = this.body();
    const declared = prefix.length(head.subarray(0, prefix.bytes));
    this.declaredBodyBytes = declared;
    if (declared > limit) return this.#tooLarge();
    if (declared > head.length) {
      this.#buf = new Uint8Array(declared);
      this.#buf.set(head);
      this.#chunks = [];
    }
  }

  #tooLarge(): void {
    this.bodyTooLarge = true;
    this.#chunks = [];
    this.#buf = undefined;
    this.#bodyBytes = 0;
  }

  /** Registers `fn` to run once if the stream is cancelled. */
  onCancel(fn: () => void): void {
    if (this.cancelled) fn();
    else this.#onCancel.push(fn);
  }

  /** @internal */
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    for (const fn of this.#onCancel.splice(0)) fn();
  }

  /** Queues a HEADERS frame (response headers, or trailers with `end`). */
  sendHeaders(fields: readonly HeaderField[], end = false): void {
    this.#conn.enqueue(this, { kind: "headers", block: encodeHeaders(fields), end });
  }

  /**
   * Queues `bytes` as DATA (END_STREAM with `end`), sent as flow control allows; `head`, when
   * given, goes just before them (a DATA frame of its own: no copy of `bytes` to join them).
   * Resolves once they have been written to the socket, or the stream or connection went away.
   */
  sendData(bytes: Uint8Array, end = false, head?: Uint8Array): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    if (head) this.#conn.enqueue(this, { kind: "data", bytes: head, offset: 0, end: false });
    this.#conn.enqueue(this, { kind: "data", bytes, offset: 0, end, done: resolve });
    return promise;
  }

  /** Resets the stream with `code`. */
  reset(code: number = ErrorCode.CANCEL): void {
    this.#conn.resetStream(this, code);
  }
}

function u32(bytes: Uint8Array, offset: number): number {
  return ((bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) |
    bytes[offset + 3]) >>> 0;
}

/** Strips PADDED padding (and the PRIORITY fields of HEADERS) from a payload. */
function unpad(frame: Frame, priority: boolean): Uint8Array {
  let p = frame.payload;
  let pad = 0;
  if (frame.flags & Flag.PADDED) {
    if (p.length < 1) {
      throw new H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "padded frame too short");
    }
    pad = p[0];
    p = p.subarray(1);
  }
  if (priority && (frame.flags & Flag.PRIORITY)) {
    if (p.length < 5) throw new H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short");
    p = p.subarray(5);
  }
  if (pad > p.length) {
    throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than the payload");
  }
  return p.subarray(0, p.length - pad);
}

/** Largest write buffer a connection keeps for its next writes (bigger writes get their own). */
const WRITE_BUFFER_KEPT = 1 << 20;

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/** The server side of one HTTP/2 connection. */
export class H2ServerConnection {
  #conn: Deno.Conn;
  #options: H2ConnectionOptions;
  #reader = new FrameReader(DEFAULT_MAX_FRAME_SIZE);
  #decoder: HpackDecoder;
  #streams = new Map<number, H2ServerStream>();
  #blocked = new Set<H2ServerStream>();
  #lastPeerStream = 0;
  #settingsSeen = false;
  #continuation?: {
    streamId: number;
    end: boolean;
    chunks: Uint8Array[];
    bytes: number;
    /** Bytes on the wire so far, frame headers included (empty frames count too). */
    wire: number;
  };
  #peerInitialWindow = DEFAULT_WINDOW;
  #peerMaxFrameSize = DEFAULT_MAX_FRAME_SIZE;
  #connSendWindow = DEFAULT_WINDOW;
  #connRecvWindow: number;
  /** The connection receive window we grant in full. */
  #connWindowSize: number;
  #connRecvUnacked = 0;
  #streamWindow: number;
  /** Bytes of stream window the reservation can still grant (`maxBodyBytes` in all). */
  #reservationFree: number;
  /** Streams waiting for window from the reservation, first come first served. */
  #waitingForWindow: H2ServerStream[] = [];
  #maxConcurrent: number;
  #maxHeaderListSize: number;
  #out: (Uint8Array | Written)[] = [];
  /** The reused write buffer ({@linkcode H2ServerConnection.#writeBuffer}). */
  #kept = new Uint8Array(0);
  /** Control frames queued since the output was last known to be written. */
  #controlPending = 0;
  #flushScheduled = false;
  #writing = false;
  #goingAway = false;
  #peerGoingAway = false;
  #closed = false;
  #lingerTimer?: ReturnType<typeof setTimeout>;
  #closedPromise = Promise.withResolvers<void>();

  constructor(conn: Deno.Conn, options: H2ConnectionOptions) {
    this.#conn = conn;
    this.#options = options;
    this.#streamWindow = Math.max(
      options.streamWindow ?? DEFAULT_STREAM_WINDOW,
      options.bodyPrefix?.bytes ?? 0,
    );
    this.#reservationFree = options.maxBodyBytes;
    // The peer starts with 65535 whatever we prefer: a smaller window cannot be granted.
    this.#connWindowSize = Math.max(DEFAULT_WINDOW, options.connectionWindow ?? 16 * 1024 * 1024);
    this.#connRecvWindow = this.#connWindowSize;
    this.#maxConcurrent = options.maxConcurrentStreams ?? 1000;
    this.#maxHeaderListSize = options.maxHeaderListSize ?? 64 * 1024;
    this.#decoder = new HpackDecoder({ maxHeaderListSize: this.#maxHeaderListSize });
  }

  /** Open streams. */
  get activeStreams(): number {
    return this.#streams.size;
  }

  /** Resolves when the connection has been closed. */
  get closed(): Promise<void> {
    return this.#closedPromise.promise;
  }

  /** Serves the connection until it closes; never rejects. */
  async run(): Promise<void> {
    this.#emit(encodeSettings([
      [Setting.MAX_CONCURRENT_STREAMS, this.#maxConcurrent],
      [Setting.INITIAL_WINDOW_SIZE, this.#streamWindow],
      [Setting.MAX_HEADER_LIST_SIZE, this.#maxHeaderListSize],
      [Setting.ENABLE_PUSH, 0],
    ]));
    if (this.#connRecvWindow > DEFAULT_WINDOW) {
      this.#emit(encodeWindowUpdate(0, this.#connRecvWindow - DEFAULT_WINDOW));
    }
    const buf = new Uint8Array(64 * 1024);
    let preface = false;
    try {
      while (!this.#closed) {
        if (this.#controlPending >= MAX_PENDING_CONTROL) {
          await this.#flushNow();
          this.#controlPending = 0;
          continue;
        }
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.#reader.push(buf.subarray(0, n));
        if (!preface) {
          const head = this.#reader.take(PREFACE.length);
          if (!head) continue;
          if (!head.every((b, i) => b === PREFACE[i])) {
            throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface");
          }
          preface = true;
        }
        for (let frame = this.#reader.next(); frame; frame = this.#reader.next()) {
          this.#onFrame(frame);
          if (this.#closed) break;
        }
      }
    } catch (err) {
      if (err instanceof H2ConnectionError) {
        this.#options.onError?.(err);
        this.#emit(encodeGoaway(this.#lastPeerStream, err.code, err.message));
        await this.#flushNow();
      } else if (!this.#closed && !(err instanceof Deno.errors.BadResource)) {
        this.#options.onError?.(err);
      }
    }
    this.destroy();
  }

  /**
   * Graceful close: GOAWAY (no new streams), then closes once open streams have finished.
   * Returns {@linkcode closed}.
   */
  goaway(): Promise<void> {
    if (!this.#goingAway && !this.#closed) {
      this.#goingAway = true;
      this.#emit(encodeGoaway(this.#lastPeerStream, ErrorCode.NO_ERROR));
      this.#maybeFinish();
    }
    return this.closed;
  }

  /** Closes at once: open streams are cancelled. */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#lingerTimer);
    for (const stream of this.#streams.values()) this.#release(stream);
    this.#streams.clear();
    this.#blocked.clear();
    for (const item of this.#out.splice(0)) if (typeof item === "function") item();
    // Deno does not close a socket whose read is pending (the read holds it): shut down the
    // sending side first so the peer sees EOF, closes, and the pending read returns.
    this.#conn.closeWrite().catch(() => {}).finally(() => {
      try {
        this.#conn.close();
      } catch {
        // already closed
      }
    });
    this.#closedPromise.resolve();
  }

  // ---- output ----

  #emit(bytes: Uint8Array | Written): void {
    if (this.#closed) {
      if (typeof bytes === "function") bytes();
      return;
    }
    this.#out.push(bytes);
    if (!this.#flushScheduled && !this.#writing) {
      this.#flushScheduled = true;
      queueMicrotask(() => {
        this.#flushScheduled = false;
        this.#writeLoop();
      });
    }
  }

  /** Queues a control frame that answers the peer. */
  #emitControl(bytes: Uint8Array): void {
    this.#controlPending++;
    this.#emit(bytes);
  }

  async #writeLoop(): Promise<void> {
    if (this.#writing || this.#closed) return;
    this.#writing = true;
    try {
      while (this.#out.length > 0 && !this.#closed) {
        const items = this.#out;
        this.#out = [];
        let total = 0;
        for (const item of items) if (typeof item !== "function") total += item.length;
        const buf = this.#writeBuffer(total);
        const written: Written[] = [];
        let offset = 0;
        for (const item of items) {
          if (typeof item === "function") written.push(item);
          else {
            buf.set(item, offset);
            offset += item.length;
          }
        }
        if (total > 0) await writeAll(this.#conn, buf);
        for (const fn of written) fn();
      }
    } catch (err) {
      if (!this.#closed) this.#options.onError?.(err);
      this.destroy();
    } finally {
      this.#writing = false;
    }
  }

  /**
   * A buffer of `bytes` to gather one write in: the connection's own, reused from write to
   * write (the previous write has finished when the next is gathered) while it is at most
   * {@linkcode WRITE_BUFFER_KEPT} bytes, so a long answer does not leave one dead ArrayBuffer per
   * write for the garbage collector (they are off V8's heap and collected late, RSS meanwhile).
   */
  #writeBuffer(bytes: number): Uint8Array {
    if (bytes > WRITE_BUFFER_KEPT) return new Uint8Array(bytes);
    if (this.#kept.length < bytes) {
      this.#kept = new Uint8Array(
        Math.min(WRITE_BUFFER_KEPT, Math.max(bytes, this.#kept.length * 2)),
      );
    }
    return this.#kept.subarray(0, bytes);
  }

  async #flushNow(): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#emit(resolve);
    await Promise.race([promise, this.closed]);
  }

  /** @internal Queues an outbound item of `stream` and sends what flow control allows. */
  enqueue(stream: H2ServerStream, item: Outbound): void {
    if (this.#closed || stream.localClosed || stream.cancelled) {
      if (item.kind === "data") item.done?.();
      return;
    }
    stream.queue.push(item);
    this.#drain(stream);
  }

  #drain(stream: H2ServerStream): void {
    while (stream.queue.length > 0) {
      const item = stream.queue[0];
      if (item.kind === "headers") {
        this.#emitHeaders(stream.id, item.block, item.end);
        stream.queue.shift();
        if (item.end) return this.#localEnd(stream);
        continue;
      }
      while (item.offset < item.bytes.length) {
        const n = Math.min(
          item.bytes.length - item.offset,
          this.#peerMaxFrameSize,
          stream.sendWindow,
          this.#connSendWindow,
        );
        if (n <= 0) {
          this.#blocked.add(stream);
          return;
        }
        const last = item.offset + n === item.bytes.length;
        const header = new Uint8Array(FRAME_HEADER_BYTES);
        writeFrameHeader(header, 0, {
          length: n,
          type: FrameType.DATA,
          flags: last && item.end ? Flag.END_STREAM : 0,
          streamId: stream.id,
        });
        // header and payload are queued apart: the write loop copies both into its one buffer
        this.#emit(header);
        this.#emit(item.bytes.subarray(item.offset, item.offset + n));
        item.offset += n;
        stream.sendWindow -= n;
        this.#connSendWindow -= n;
      }
      if (item.bytes.length === 0 && item.end) {
        this.#emit(encodeFrame(FrameType.DATA, Flag.END_STREAM, stream.id));
      }
      stream.queue.shift();
      if (item.done) this.#emit(item.done);
      if (item.end) return this.#localEnd(stream);
    }
    this.#blocked.delete(stream);
  }

  #emitHeaders(streamId: number, block: Uint8Array, end: boolean): void {
    const max = this.#peerMaxFrameSize;
    let offset = 0;
    let type: number = FrameType.HEADERS;
    do {
      const n = Math.min(block.length - offset, max);
      const last = offset + n === block.length;
      const flags = (last ? Flag.END_HEADERS : 0) |
        (type === FrameType.HEADERS && end ? Flag.END_STREAM : 0);
      this.#emit(encodeFrame(type, flags, streamId, block.subarray(offset, offset + n)));
      offset += n;
      type = FrameType.CONTINUATION;
    } while (offset < block.length);
  }

  /** We sent END_STREAM. */
  #localEnd(stream: H2ServerStream): void {
    stream.localClosed = true;
    this.#giveBackWindow(stream);
    this.#blocked.delete(stream);
    if (!stream.remoteClosed) {
      // The answer is complete before the request: tell the peer to stop sending.
      this.#emit(encodeRstStream(stream.id, ErrorCode.NO_ERROR));
    }
    this.#streams.delete(stream.id);
    this.#maybeFinish();
  }

  /** Drops a stream's pending output, releasing whoever waits on it. */
  #release(stream: H2ServerStream): void {
    for (const item of stream.queue.splice(0)) if (item.kind === "data") item.done?.();
    stream.localClosed = true;
    this.#giveBackWindow(stream);
    stream.cancel();
  }

  // ---- receive windows beyond the initial one ----

  /** Asks for `bytes` more window for `stream`: granted now, or when the reservation allows. */
  #wantWindow(stream: H2ServerStream, bytes: number): void {
    if (bytes <= 0 || stream.wanted > 0 || stream.reserved > 0) return;
    stream.wanted = bytes;
    this.#waitingForWindow.push(stream);
    this.#grantWindows();
  }

  /** Grants waiting streams their window, in order, while the reservation has room. */
  #grantWindows(): void {
    while (this.#waitingForWindow.length > 0 && !this.#closed) {
      const stream = this.#waitingForWindow[0];
      if (stream.wanted > this.#reservationFree) return;
      this.#waitingForWindow.shift();
      this.#reservationFree -= stream.wanted;
      stream.reserved = stream.wanted;
      stream.wanted = 0;
      stream.recvWindow += stream.reserved;
      this.#emit(encodeWindowUpdate(stream.id, stream.reserved));
    }
  }

  /** The stream's body was consumed, or the stream ended: its reservation is free again. */
  #giveBackWindow(stream: H2ServerStream): void {
    if (stream.wanted > 0) {
      const i = this.#waitingForWindow.indexOf(stream);
      if (i >= 0) this.#waitingForWindow.splice(i, 1);
      stream.wanted = 0;
    }
    if (stream.reserved > 0) {
      this.#reservationFree += stream.reserved;
      stream.reserved = 0;
    }
    this.#grantWindows();
  }

  /** Hands the stream to the application (once); it no longer needs window. */
  #deliver(stream: H2ServerStream): void {
    if (stream.delivered) return;
    stream.delivered = true;
    this.#giveBackWindow(stream);
    this.#options.onRequest(stream);
  }

  /** @internal */
  resetStream(stream: H2ServerStream, code: number): void {
    if (stream.localClosed && !this.#streams.has(stream.id)) return;
    this.#emitControl(encodeRstStream(stream.id, code));
    this.#closeStream(stream);
  }

  #closeStream(stream: H2ServerStream): void {
    this.#release(stream);
    this.#blocked.delete(stream);
    this.#streams.delete(stream.id);
    this.#maybeFinish();
  }

  /**
   * Once GOAWAY was sent or received and no stream is left, the peer closes the connection
   * (grpc-go and grpc-js do); it is closed from this side only if the peer has not done so
   * within `closeGraceMs`. Closing first would race the peer's own close (Deno's node:net
   * client can then close its socket twice).
   */
  #maybeFinish(): void {
    if ((this.#goingAway || this.#peerGoingAway) && this.#streams.size === 0 && !this.#closed) {
      this.#lingerTimer ??= setTimeout(
        () => this.destroy(),
        this.#options.closeGraceMs ?? DEFAULT_CLOSE_GRACE_MS,
      );
    }
  }

  // ---- input ----

  #onFrame(frame: Frame): void {
    if (this.#continuation && frame.type !== FrameType.CONTINUATION) {
      throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION");
    }
    if (!this.#settingsSeen) {
      if (frame.type !== FrameType.SETTINGS || (frame.flags & Flag.ACK)) {
        throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "expected SETTINGS first");
      }
      this.#settingsSeen = true;
    }
    switch (frame.type) {
      case FrameType.DATA:
        return this.#onData(frame);
      case FrameType.HEADERS:
        return this.#onHeaders(frame);
      case FrameType.CONTINUATION:
        return this.#onContinuation(frame);
      case FrameType.PRIORITY:
        if (frame.streamId === 0) {
          throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
        }
        return;
      case FrameType.RST_STREAM:
        return this.#onRstStream(frame);
      case FrameType.SETTINGS:
        return this.#onSettings(frame);
      case FrameType.PUSH_PROMISE:
        throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      case FrameType.PING:
        return this.#onPing(frame);
      case FrameType.GOAWAY:
        this.#peerGoingAway = true;
        return this.#maybeFinish();
      case FrameType.WINDOW_UPDATE:
        return this.#onWindowUpdate(frame);
      default:
        return; // unknown frame types are ignored (RFC 9113 §4.1)
    }
  }

  #onHeaders(frame: Frame): void {
    if (frame.streamId === 0) {
      throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
    }
    const block = unpad(frame, true);
    const end = (frame.flags & Flag.END_STREAM) !== 0;
    if (frame.flags & Flag.END_HEADERS) return this.#onHeaderBlock(frame.streamId, block, end);
    this.#continuation = {
      streamId: frame.streamId,
      end,
      chunks: [block],
      bytes: block.length,
      wire: FRAME_HEADER_BYTES + frame.payload.length,
    };
  }

  #onContinuation(frame: Frame): void {
    const c = this.#continuation;
    if (!c || c.streamId !== frame.streamId) {
      throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION");
    }
    c.chunks.push(frame.payload);
    c.bytes += frame.payload.length;
    c.wire += FRAME_HEADER_BYTES + frame.payload.length;
    if (c.wire > 4 * this.#maxHeaderListSize) {
      throw new H2ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large");
    }
    if (!(frame.flags & Flag.END_HEADERS)) return;
    this.#continuation = undefined;
    const block = new Uint8Array(c.bytes);
    let offset = 0;
    for (const chunk of c.chunks) {
      block.set(chunk, offset);
      offset += chunk.length;
    }
    this.#onHeaderBlock(c.streamId, block, c.end);
  }

  #onHeaderBlock(id: number, block: Uint8Array, end: boolean): void {
    let headers: HeaderField[];
    try {
      headers = this.#decoder.decode(block);
    } catch (err) {
      if (err instanceof HeaderListTooLargeError) {
        // The whole block was decoded, so the HPACK table is in step: refuse this stream only
        // (as grpc-go does), not every call on the connection.
        return this.#refuseHeaderList(id);
      }
      if (err instanceof HpackError) {
        throw new H2ConnectionError(ErrorCode.COMPRESSION_ERROR, err.message, { cause: err });
      }
      throw err;
    }
    const existing = this.#streams.get(id);
    if (existing) {
      // trailers: only as the end of the request
      if (existing.remoteClosed || !end || malformedTrailers(headers)) {
        this.resetStream(existing, ErrorCode.PROTOCOL_ERROR);
        return;
      }
      return this.#remoteEnd(existing);
    }
    this.#checkNewStreamId(id);
    this.#lastPeerStream = id;
    if (malformedRequest(headers)) {
      // a stream error (RFC 9113 §8.1.1): this request only, the connection carries on
      this.#emitControl(encodeRstStream(id, ErrorCode.PROTOCOL_ERROR));
      return;
    }
    if (this.#goingAway || this.#streams.size >= this.#maxConcurrent) {
      this.#emitControl(encodeRstStream(id, ErrorCode.REFUSED_STREAM));
      return;
    }
    const stream = new H2ServerStream(this, {
      id,
      headers,
      sendWindow: this.#peerInitialWindow,
      recvWindow: this.#streamWindow,
    });
    this.#streams.set(id, stream);
    if (end) this.#remoteEnd(stream);
  }

  #refuseHeaderList(id: number): void {
    const existing = this.#streams.get(id);
    if (existing) return this.resetStream(existing, ErrorCode.FRAME_SIZE_ERROR);
    this.#checkNewStreamId(id);
    this.#lastPeerStream = id;
    this.#emitControl(encodeRstStream(id, ErrorCode.FRAME_SIZE_ERROR));
  }

  #checkNewStreamId(id: number): void {
    if (id % 2 === 0 || id <= this.#lastPeerStream) {
      throw new H2ConnectionError(
        ErrorCode.PROTOCOL_ERROR,
        `HEADERS opening stream ${id} after stream ${this.#lastPeerStream}`,
      );
    }
  }

  #remoteEnd(stream: H2ServerStream): void {
    if (stream.delivered) {
      // refused early (too large): the answer may still be on its way
      stream.remoteClosed = true;
      return;
    }
    const declared = stream.header("content-length");
    if (declared !== undefined && Number(declared) !== stream.received) {
      // a body that is not what content-length said is malformed too (RFC 9113 §8.1.1)
      return this.resetStream(stream, ErrorCode.PROTOCOL_ERROR);
    }
    stream.remoteClosed = true;
    this.#deliver(stream);
  }

  #onData(frame: Frame): void {
    if (frame.streamId === 0) {
      throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
    }
    const length = frame.payload.length;
    this.#connRecvWindow -= length;
    if (this.#connRecvWindow < 0) {
      throw new H2ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window exceeded");
    }
    this.#connRecvUnacked += length;
    if (this.#connRecvUnacked >= this.#connWindowSize / 2) {
      this.#emit(encodeWindowUpdate(0, this.#connRecvUnacked));
      this.#connRecvWindow += this.#connRecvUnacked;
      this.#connRecvUnacked = 0;
    }
    const stream = this.#streams.get(frame.streamId);
    // DATA after the client's END_STREAM (RFC 9113 §5.1, half-closed (remote))
    if (stream?.remoteClosed) return this.resetStream(stream, ErrorCode.STREAM_CLOSED);
    if (!stream) {
      if (frame.streamId > this.#lastPeerStream) {
        throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
      }
      return; // a stream we already closed or reset: ignored
    }
    stream.recvWindow -= length;
    if (stream.recvWindow < 0) return this.resetStream(stream, ErrorCode.FLOW_CONTROL_ERROR);
    const { maxBodyBytes, bodyPrefix } = this.#options;
    const known = stream.declaredBodyBytes !== undefined;
    stream.appendBody(unpad(frame, false), maxBodyBytes, bodyPrefix);
    const end = (frame.flags & Flag.END_STREAM) !== 0;
    if (stream.bodyTooLarge && !stream.delivered) {
      // refused before the rest is sent: the answer ends the stream
      if (end) stream.remoteClosed = true;
      return this.#deliver(stream);
    }
    if (end) return this.#remoteEnd(stream);
    if (stream.delivered) return;
    // more window only for a body whose length is known, and only what it still needs
    const declared = stream.declaredBodyBytes;
    if (!known && declared !== undefined) {
      this.#wantWindow(stream, declared - stream.received - stream.recvWindow);
    } else if (!bodyPrefix && stream.recvWindow < this.#streamWindow / 2) {
      this.#wantWindow(stream, maxBodyBytes - stream.received - stream.recvWindow);
    }
  }

  #onRstStream(frame: Frame): void {
    if (frame.streamId === 0) {
      throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
    }
    if (frame.payload.length !== 4) {
      throw new H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM length");
    }
    const stream = this.#streams.get(frame.streamId);
    if (stream) this.#closeStream(stream);
  }

  #onSettings(frame: Frame): void {
    if (frame.streamId !== 0) {
      throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
    }
    const p = frame.payload;
    if (frame.flags & Flag.ACK) {
      if (p.length !== 0) throw new H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK");
      return;
    }
    if (p.length % 6 !== 0) {
      throw new H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length");
    }
    for (let i = 0; i < p.length; i += 6) {
      const id = (p[i] << 8) | p[i + 1];
      const value = u32(p, i + 2);
      if (id === Setting.INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) {
          throw new H2ConnectionError(
            ErrorCode.FLOW_CONTROL_ERROR,
            "INITIAL_WINDOW_SIZE too large",
          );
        }
        const delta = value - this.#peerInitialWindow;
        this.#peerInitialWindow = value;
        for (const stream of this.#streams.values()) {
          stream.sendWindow += delta;
          if (stream.sendWindow > MAX_WINDOW) {
            throw new H2ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "stream window overflow");
          }
        }
      } else if (id === Setting.MAX_FRAME_SIZE) {
        if (value < DEFAULT_MAX_FRAME_SIZE || value > MAX_FRAME_SIZE_LIMIT) {
          throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range");
        }
        this.#peerMaxFrameSize = value;
      } else if (id === Setting.ENABLE_PUSH && value > 1) {
        throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1");
      }
    }
    this.#emitControl(encodeSettings([], true));
    for (const stream of [...this.#blocked]) this.#drain(stream);
  }

  #onPing(frame: Frame): void {
    if (frame.streamId !== 0) {
      throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
    }
    if (frame.payload.length !== 8) {
      throw new H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING length");
    }
    if (!(frame.flags & Flag.ACK)) {
      this.#emitControl(encodeFrame(FrameType.PING, Flag.ACK, 0, frame.payload));
    }
  }

  #onWindowUpdate(frame: Frame): void {
    if (frame.payload.length !== 4) {
      throw new H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length");
    }
    const increment = u32(frame.payload, 0) & MAX_WINDOW;
    if (frame.streamId === 0) {
      if (increment === 0) {
        throw new H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
      }
      this.#connSendWindow += increment;
      if (this.#connSendWindow > MAX_WINDOW) {
        throw new H2ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow");
      }
      for (const stream of [...this.#blocked]) this.#drain(stream);
      return;
    }
    const stream = this.#streams.get(frame.streamId);
    if (!stream) return; // closed streams may still get updates
    if (increment === 0) return this.resetStream(stream, ErrorCode.PROTOCOL_ERROR);
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) {
      return this.resetStream(stream, ErrorCode.FLOW_CONTROL_ERROR);
    }
    if (this.#blocked.has(stream)) this.#drain(stream);
  }
}
