/**
 * The Snapshots service over this project's own HTTP/2 stack (`h2/`) on a Deno unix-socket
 * listener: gRPC framing, method routing, deadlines and statuses, with protobufjs codecs.
 *
 * A unary answer (headers, message, trailers) leaves in one write, and nothing sits between
 * the socket and the handler but frame parsing and HPACK; the per-call cost is a fraction of
 * `@grpc/grpc-js` over `node:http2`, which is what a proxy snapshotter pays on every call
 * containerd makes (List alone makes one Stat per snapshot).
 *
 * A request's 5-byte message prefix tells the HTTP/2 layer how long its body is: a stream's
 * window opens for that much only (out of one reservation of a message's size per connection),
 * and a request declared larger than the limit is answered RESOURCE_EXHAUSTED at once, before
 * its bytes are sent (see `h2/connection.ts`).
 *
 * @module
 */
import type { Logger } from "../../util/log.ts";
import { quote, shorten } from "../../util/quote.ts";
import { Code } from "../codes.ts";
import {
  encodeGrpcMessage,
  GrpcFramingError,
  MESSAGE_PREFIX_BYTES,
  messagePrefix,
  parseTimeout,
  readMessages,
} from "./grpc_wire.ts";
import {
  decodeRequest,
  type Failure,
  type SnapshotsService,
  type UnaryMethod,
} from "../handlers.ts";
import { type BodyPrefix, H2ServerConnection, type H2ServerStream } from "./h2/connection.ts";
import { ErrorCode } from "./h2/frames.ts";
import type { HeaderField } from "./h2/hpack.ts";
import {
  type MessageCodec,
  type MethodName,
  METHODS,
  SNAPSHOTS_SERVICE,
  type SnapshotsProto,
} from "../proto.ts";

/**
 * Bytes of a streaming answer queued ahead of the socket (see `dispatch`): a List's messages
 * leave in writes of up to this much, and a List holds at most this much beyond its page.
 */
export const STREAM_BYTES_IN_FLIGHT = 1 << 20;

/** A message up to this size goes with its prefix in one DATA frame (copied behind it). */
const COPY_BELOW_BYTES = 4096;

/** A gRPC request body starts with its message's prefix: flag, then big-endian length. */
const GRPC_BODY_PREFIX: BodyPrefix = {
  bytes: MESSAGE_PREFIX_BYTES,
  length: (p) => MESSAGE_PREFIX_BYTES + (((p[1] << 24) | (p[2] << 16) | (p[3] << 8) | p[4]) >>> 0),
};

/** The longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const RESPONSE_HEADERS: readonly HeaderField[] = [
  [":status", "200"],
  ["content-type", "application/grpc"],
];

/** Options for {@linkcode serveNative}. */
export interface NativeServerOptions {
  service: SnapshotsService;
  proto: SnapshotsProto;
  logger: Logger;
  /** Largest request and response message. */
  maxMessageBytes: number;
}

/** A running native server. */
export interface NativeServer {
  /**
   * Stops accepting, sends GOAWAY on every connection, waits up to `timeoutMs` for open calls,
   * then closes whatever is left. Resolves true when everything finished in time.
   */
  shutdown(timeoutMs: number): Promise<boolean>;
  /** Closes everything at once. */
  forceShutdown(): void;
}

interface Route {
  name: MethodName;
  request: MessageCodec<object>;
  response: MessageCodec<object>;
  streaming: boolean;
}

function routes(proto: SnapshotsProto): Map<string, Route> {
  const table = new Map<string, Route>();
  for (const name of Object.keys(METHODS) as MethodName[]) {
    const m: { request: string; response: string; stream?: boolean } = METHODS[name];
    table.set(`/${SNAPSHOTS_SERVICE}/${name}`, {
      name,
      request: proto.codec(m.request),
      response: proto.codec(m.response),
      streaming: m.stream === true,
    });
  }
  return table;
}

/** One gRPC call on a stream: answers once, headers before messages, trailers last. */
class Call {
  #stream: H2ServerStream;
  #headersSent = false;
  #timer?: ReturnType<typeof setTimeout>;
  answered = false;
  #endedWith: Failure | typeof Code.OK = Code.OK;

  constructor(stream: H2ServerStream) {
    this.#stream = stream;
  }

  /** Why nobody waits for an answer any more (the status it ended with), or undefined. */
  gone(): Failure | undefined {
    if (this.#stream.cancelled) return Code.CANCELLED;
    return this.answered && this.#endedWith !== Code.OK ? this.#endedWith : undefined;
  }

  deadline(ms: number): void {
    // setTimeout fires at once past 2^31-1 ms (~24.8 days, e.g. grpc-go's "2592000S" for a
    // 30-day deadline): a deadline that far away is as good as none.
    if (ms > MAX_TIMER_MS) return;
    this.#timer = setTimeout(() => {
      this.finish(Code.DEADLINE_EXCEEDED, "deadline exceeded");
    }, Math.max(0, Math.ceil(ms)));
  }

  send(bytes: Uint8Array): Promise<void> {
    if (this.answered || this.#stream.cancelled) return Promise.resolve();
    if (!this.#headersSent) {
      this.#stream.sendHeaders(RESPONSE_HEADERS);
      this.#headersSent = true;
    }
    const prefix = messagePrefix(bytes.length);
    if (bytes.length > COPY_BELOW_BYTES) {
      // a large message (a List's) is not copied behind its prefix: two DATA frames
      return this.#stream.sendData(bytes, false, prefix);
    }
    const framed = new Uint8Array(prefix.length + bytes.length);
    framed.set(prefix);
    framed.set(bytes, prefix.length);
    return this.#stream.sendData(framed);
  }

  finish(code: number, details = ""): void {
    if (this.answered) return;
    this.answered = true;
    this.#endedWith = code;
    clearTimeout(this.#timer);
    if (this.#stream.cancelled) return;
    const status: HeaderField[] = [["grpc-status", String(code)]];
    if (details) status.push(["grpc-message", encodeGrpcMessage(details)]);
    this.#stream.sendHeaders(this.#headersSent ? status : [...RESPONSE_HEADERS, ...status], true);
  }
}

function dispatch(stream: H2ServerStream, table: Map<string, Route>, options: NativeServerOptions) {
  const method = stream.header(":method");
  const contentType = stream.header("content-type") ?? "";
  // Not gRPC at all: an HTTP status, plus a gRPC status for clients that read only that.
  const reject = (httpStatus: string, message: string) =>
    stream.sendHeaders([
      [":status", httpStatus],
      ["content-type", "application/grpc"],
      ["grpc-status", String(Code.INTERNAL)],
      ["grpc-message", encodeGrpcMessage(message)],
    ], true);
  if (method !== "POST") return reject("405", `method ${shorten(method ?? "(none)")} is not POST`);
  if (!/^application\/grpc($|[+;])/.test(contentType)) {
    return reject("415", `content-type ${quote(contentType)} is not application/grpc`);
  }
  const call = new Call(stream);
  stream.onCancel(() => call.finish(Code.CANCELLED));
  const path = stream.header(":path") ?? "";
  const route = table.get(path);
  if (!route) return call.finish(Code.UNIMPLEMENTED, `unknown method ${shorten(path)}`);
  const timeout = parseTimeout(stream.header("grpc-timeout"));
  if (timeout !== undefined) call.deadline(timeout);
  if (stream.bodyTooLarge) {
    // answered as soon as the prefix (or the bytes received) said so, before the rest is sent
    const declared = stream.declaredBodyBytes;
    return call.finish(
      Code.RESOURCE_EXHAUSTED,
      declared !== undefined && declared > options.maxMessageBytes + MESSAGE_PREFIX_BYTES
        ? `message of ${declared - MESSAGE_PREFIX_BYTES} bytes is larger than the limit of ` +
          `${options.maxMessageBytes}`
        : `request larger than the limit of ${options.maxMessageBytes} bytes`,
    );
  }
  let message: Uint8Array;
  try {
    const messages = readMessages(stream.body(), options.maxMessageBytes);
    if (messages.length !== 1) {
      return call.finish(Code.INTERNAL, `expected one request message, got ${messages.length}`);
    }
    if (messages[0].compressed) {
      const encoding = stream.header("grpc-encoding") ?? "identity";
      return call.finish(Code.UNIMPLEMENTED, `grpc-encoding ${quote(encoding)} is not supported`);
    }
    message = messages[0].bytes;
  } catch (err) {
    if (!(err instanceof GrpcFramingError)) throw err;
    return call.finish(
      /larger/.test(err.message) ? Code.RESOURCE_EXHAUSTED : Code.INTERNAL,
      err.message,
    );
  }
  const decoded = decodeRequest(route.request, message);
  if (!("request" in decoded)) return call.finish(decoded.code, decoded.details);
  const request = decoded.request;
  const encode = (value: object): Uint8Array | undefined => {
    const bytes = route.response.encode(value);
    if (bytes.length <= options.maxMessageBytes) return bytes;
    call.finish(Code.RESOURCE_EXHAUSTED, `response of ${bytes.length} bytes is too large`);
    return undefined;
  };
  if (route.streaming) {
    // Up to STREAM_BYTES_IN_FLIGHT of messages are queued before the next write waits for
    // them to leave: messages queued in one turn of the event loop go out in one socket write,
    // not one write (and one wait) each; memory holds that much more, whatever the List's size.
    let inFlight = 0;
    let last = Promise.resolve();
    options.service.list(request, {
      write: async (message) => {
        const bytes = encode(message);
        if (!bytes) return;
        inFlight += bytes.length;
        const sent = last = call.send(bytes).then(() => {
          inFlight -= bytes.length;
        });
        if (inFlight > STREAM_BYTES_IN_FLIGHT) await sent;
      },
      drain: () => last, // resolves once every message left (or the stream was dropped)
      gone: () => call.gone(),
    }).then((st) => call.finish(st.code, st.details));
    return;
  }
  options.service.unary(route.name as UnaryMethod, request, () => call.gone()).then((result) => {
    if (result.code !== Code.OK) return call.finish(result.code, result.details);
    const bytes = encode(result.response);
    if (!bytes) return;
    call.send(bytes);
    call.finish(Code.OK);
  });
}

/** Serves the Snapshots service on `listener` until shut down. */
export function serveNative(listener: Deno.Listener, options: NativeServerOptions): NativeServer {
  const table = routes(options.proto);
  const connections = new Set<H2ServerConnection>();
  const log = options.logger;
  const stopping = Promise.withResolvers<void>();
  let stopped = false;
  const serve = (conn: Deno.Conn) => {
    const c = new H2ServerConnection(conn, {
      maxBodyBytes: options.maxMessageBytes + MESSAGE_PREFIX_BYTES,
      // the message prefix says how long the body is: windows open for that much only
      bodyPrefix: GRPC_BODY_PREFIX,
      onRequest: (stream) => {
        try {
          dispatch(stream, table, options);
        } catch (err) {
          log.error("cannot answer rpc", { error: err });
          stream.reset(ErrorCode.INTERNAL_ERROR);
        }
      },
      onError: (error) => log.debug("connection closed on error", { error }),
    });
    connections.add(c);
    c.run().finally(() => connections.delete(c));
  };
  const accepting = (async () => {
    let backoffMs = 0;
    while (!stopped) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (stopped || err instanceof Deno.errors.BadResource) return;
        // e.g. EMFILE: the listener is fine, so keep it and retry (backing off like grpc-go),
        // or the socket would stay bound with nobody accepting until a restart
        backoffMs = Math.min(1000, backoffMs === 0 ? 5 : backoffMs * 2);
        log.error("accept failed, retrying", { error: err, retry_ms: backoffMs });
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          new Promise((r) => timer = setTimeout(r, backoffMs)),
          stopping.promise,
        ]);
        clearTimeout(timer);
        continue;
      }
      backoffMs = 0;
      serve(conn);
    }
  })();
  const stopAccepting = async () => {
    stopped = true;
    stopping.resolve();
    try {
      listener.close();
    } catch {
      // already closed
    }
    await accepting;
  };
  return {
    async shutdown(timeoutMs) {
      await stopAccepting();
      const all = Promise.all([...connections].map((c) => c.goaway()));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const inTime = await Promise.race([
        all.then(() => true),
        new Promise<boolean>((r) => timer = setTimeout(() => r(false), timeoutMs)),
      ]);
      clearTimeout(timer);
      if (!inTime) { for (const c of connections) c.destroy(); }
      return inTime;
    },
    forceShutdown() {
      stopAccepting();
      for (const c of connections) c.destroy();
    },
  };
}
