/**
 * Adversarial tests of the HTTP/2 server connection: a raw client (testing/h2_raw_client.ts)
 * speaks bytes to an {@linkcode H2ServerConnection} over a real unix socket, including what no
 * well-behaved client sends. The application on top is a tiny test app (echo, large bodies,
 * held streams), so these tests are about HTTP/2 alone; gRPC is in native_server_test.ts.
 */
import assert from "node:assert/strict";
import {
  CLIENT_PREFACE,
  concat,
  dataFrame,
  E,
  F,
  field,
  goawayFrame,
  headersFrame,
  pingFrame,
  type RawClientOptions,
  rawFrame,
  RawH2Client,
  rstFrame,
  S,
  settingsFrame,
  T,
  u32,
  windowUpdateFrame,
} from "../../../../testing/h2_raw_client.ts";
import { poll } from "../../../../testing/poll.ts";
import { type H2ConnectionOptions, H2ServerConnection, type H2ServerStream } from "./connection.ts";
import { H2ConnectionError } from "./frames.ts";
import { encodeHeaders, type HeaderField } from "./hpack.ts";

/** Deterministic bytes of length `n` (so corruption or reordering shows). */
function pattern(n: number, seed = 0): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + seed + (i >>> 8)) & 0xff;
  return out;
}

function req(path: string, method = "POST"): HeaderField[] {
  return [[":method", method], [":scheme", "http"], [":path", path], [":authority", "x"]];
}

interface Server {
  path: string;
  /** Streams of `/hold` requests, for the test to answer. */
  held: H2ServerStream[];
  /** Every request delivered. */
  requests: H2ServerStream[];
  conns: H2ServerConnection[];
  /** The run() promises of the connections. */
  runs: Promise<void>[];
  errors: unknown[];
  client(options?: RawClientOptions): Promise<RawH2Client>;
  /** A plain socket to the server (no reader). */
  raw(): Promise<Deno.UnixConn>;
  /** Waits until `n` connections' run() have resolved. */
  allRunsDone(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * The test app: `/echo` answers the body with trailers that describe it, `/big/N` answers N
 * pattern bytes, `/bigheader/N` answers a header of N bytes, `/hold` waits for the test.
 */
function app(s: H2ServerStream, held: H2ServerStream[]): void {
  const path = s.header(":path") ?? "";
  if (path === "/echo") {
    const body = s.body();
    s.sendHeaders([[":status", "200"]]);
    s.sendData(body);
    s.sendHeaders([
      ["x-body-bytes", String(body.length)],
      ["x-too-large", String(s.bodyTooLarge)],
      ["x-method", s.header(":method") ?? ""],
    ], true);
  } else if (path.startsWith("/big/")) {
    s.sendHeaders([[":status", "200"]]);
    s.sendData(pattern(Number(path.slice(5))), true);
  } else if (path.startsWith("/bigheader/")) {
    s.sendHeaders([[":status", "200"], ["x-big", "h".repeat(Number(path.slice(11)))]], true);
  } else if (path === "/hold") {
    held.push(s);
  } else {
    s.sendHeaders([[":status", "404"]], true);
  }
}

async function server(options: Partial<H2ConnectionOptions> = {}): Promise<Server> {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-h2-" });
  const path = `${dir}/h2.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const held: H2ServerStream[] = [];
  const requests: H2ServerStream[] = [];
  const conns: H2ServerConnection[] = [];
  const runs: Promise<void>[] = [];
  const errors: unknown[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const c = new H2ServerConnection(conn, {
          maxBodyBytes: 1 << 20,
          onRequest: (s) => {
            requests.push(s);
            app(s, held);
          },
          onError: (e) => errors.push(e),
          ...options,
        });
        conns.push(c);
        runs.push(c.run());
      }
    } catch {
      // listener closed
    }
  })();
  const clients: RawH2Client[] = [];
  let connects = 0;
  return {
    path,
    held,
    requests,
    conns,
    runs,
    errors,
    async client(clientOptions) {
      const c = await RawH2Client.connect(path, clientOptions);
      clients.push(c);
      const n = ++connects;
      await poll(() => conns.length >= n, "the server to accept");
      return c;
    },
    async raw() {
      const conn = await Deno.connect({ transport: "unix", path });
      const n = ++connects;
      await poll(() => conns.length >= n, "the server to accept");
      return conn;
    },
    async allRunsDone() {
      await withTimeout(Promise.all(runs), 5000, "every connection's run() to resolve");
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const c of clients) if (!c.eof) await c.close();
      for (const c of conns) c.destroy();
      await withTimeout(Promise.all(runs), 5000, "connections to end");
      for (const c of clients) await c.close();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts the server sent GOAWAY with `code` and closed the connection. */
async function assertGoaway(c: RawH2Client, code: number, lastStreamId?: number): Promise<void> {
  await c.waitEof();
  const goaways = c.goaways();
  assert.equal(goaways.length, 1, JSON.stringify(goaways));
  assert.equal(goaways[0].code, code, `GOAWAY code; debug: ${goaways[0].debug}`);
  if (lastStreamId !== undefined) assert.equal(goaways[0].lastStreamId, lastStreamId);
  assert.equal(c.frames.at(-1)?.type, T.GOAWAY, "GOAWAY is the last frame");
}

/** Connects and does the handshake. */
async function ready(s: Server, settings: [number, number][] = [], options?: RawClientOptions) {
  const c = await s.client(options);
  await c.handshake(settings);
  return c;
}

/**
 * Opens `/hold` streams `ids` (whole requests) and waits, with a barrier, until the app holds
 * them; returns them.
 */
async function hold(s: Server, c: RawH2Client, ...ids: number[]): Promise<H2ServerStream[]> {
  const before = s.held.length;
  await c.send(...ids.map((id) => headersFrame(id, req("/hold"), true)));
  await c.barrier();
  assert.deepEqual(s.held.slice(before).map((h) => h.id), ids, "held streams");
  return s.held.slice(before);
}

async function echo(c: RawH2Client, id: number, body: Uint8Array) {
  await c.send(headersFrame(id, req("/echo")));
  await c.sendBody(id, body, { end: true });
  const r = await c.response(id);
  assert.equal(field(r.blocks[0], ":status"), "200");
  assert.deepEqual(r.data, body);
  return r;
}

// ---- preface and SETTINGS ----

Deno.test("connection: the server preface is SETTINGS with our values, then a connection WINDOW_UPDATE", async () => {
  await using s = await server();
  await using c = await s.client();
  await c.waitUntil(() => c.frames.length >= 2);
  const [settings, wu] = c.frames;
  assert.equal(settings.type, T.SETTINGS);
  assert.equal(settings.flags, 0);
  assert.equal(settings.streamId, 0);
  const values = new Map<number, number>();
  const v = new DataView(settings.payload.buffer);
  assert.equal(settings.payload.length % 6, 0);
  for (let i = 0; i < settings.payload.length; i += 6) {
    values.set(v.getUint16(i), v.getUint32(i + 2));
  }
  assert.deepEqual(
    values,
    new Map([
      [S.MAX_CONCURRENT_STREAMS, 1000],
      [S.INITIAL_WINDOW_SIZE, 65_535],
      [S.MAX_HEADER_LIST_SIZE, 65_536],
      [S.ENABLE_PUSH, 0],
    ]),
  );
  assert.equal(wu.type, T.WINDOW_UPDATE);
  assert.equal(wu.streamId, 0);
  assert.equal(new DataView(wu.payload.buffer).getUint32(0), 16 * 1024 * 1024 - 65_535);
  // both went out before the client said anything, in one write
  assert.equal(settings.read, wu.read);
});

Deno.test("connection: custom windows and limits are what the preface advertises", async () => {
  await using s = await server({
    maxConcurrentStreams: 7,
    streamWindow: 70_000,
    connectionWindow: 65_535,
    maxHeaderListSize: 1000,
  });
  await using c = await ready(s);
  const settings = c.frames[0];
  const v = new DataView(settings.payload.buffer);
  const values = new Map<number, number>();
  for (let i = 0; i < settings.payload.length; i += 6) {
    values.set(v.getUint16(i), v.getUint32(i + 2));
  }
  assert.equal(values.get(S.MAX_CONCURRENT_STREAMS), 7);
  assert.equal(values.get(S.INITIAL_WINDOW_SIZE), 70_000);
  assert.equal(values.get(S.MAX_HEADER_LIST_SIZE), 1000);
  // the connection window is the default: no WINDOW_UPDATE on stream 0 before any DATA
  await c.send(pingFrame(pattern(8)));
  await c.waitFrame((f) => f.type === T.PING);
  assert.equal(c.frames.filter((f) => f.type === T.WINDOW_UPDATE).length, 0);
});

Deno.test("connection: a bad preface gets GOAWAY PROTOCOL_ERROR and the connection closes", async () => {
  await using s = await server();
  await using c = await s.client();
  await c.send(new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), settingsFrame());
  await assertGoaway(c, E.PROTOCOL_ERROR, 0);
  await s.allRunsDone();
  assert.equal(s.errors.length, 1);
});

Deno.test("connection: an HTTP/1.1 request gets GOAWAY PROTOCOL_ERROR", async () => {
  await using s = await server();
  await using c = await s.client();
  await c.send(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  await assertGoaway(c, E.PROTOCOL_ERROR, 0);
});

Deno.test("connection: the preface may arrive a byte at a time", async () => {
  await using s = await server();
  await using c = await s.client();
  for (const b of CLIENT_PREFACE) await c.send(new Uint8Array([b]));
  const settings = settingsFrame([[S.MAX_FRAME_SIZE, 20_000]]);
  for (const b of settings) await c.send(new Uint8Array([b]));
  await c.waitFrame((f) => f.type === T.SETTINGS && f.flags === F.ACK);
  await echo(c, 1, pattern(100));
});

Deno.test("connection: a first frame other than SETTINGS gets GOAWAY PROTOCOL_ERROR", async () => {
  await using s = await server();
  for (
    const first of [
      pingFrame(pattern(8)),
      settingsFrame([], true), // a SETTINGS ACK is not the preface's SETTINGS
      headersFrame(1, req("/echo"), true),
      windowUpdateFrame(0, 100),
    ]
  ) {
    await using c = await s.client();
    await c.send(CLIENT_PREFACE, first);
    await assertGoaway(c, E.PROTOCOL_ERROR);
    assert.equal(s.requests.length, 0);
  }
});

Deno.test("connection: every SETTINGS is ACKed, in order with other frames", async () => {
  await using s = await server();
  await using c = await s.client();
  await c.send(CLIENT_PREFACE, settingsFrame([[S.HEADER_TABLE_SIZE, 0]]), settingsFrame([]));
  await c.waitUntil(() =>
    c.frames.filter((f) => f.type === T.SETTINGS && f.flags & F.ACK).length === 2
  );
  const acks = c.frames.filter((f) => f.type === T.SETTINGS && f.flags & F.ACK);
  for (const a of acks) {
    assert.equal(a.flags, F.ACK);
    assert.equal(a.payload.length, 0);
    assert.equal(a.streamId, 0);
  }
  // the server's own SETTINGS ACK from us is accepted silently
  await c.send(settingsFrame([], true), pingFrame(pattern(8, 3)));
  await c.waitFrame((f) => f.type === T.PING);
  assert.equal(c.goaways().length, 0);
});

Deno.test("connection: malformed SETTINGS are connection errors with the right codes", async () => {
  await using s = await server();
  const cases: [string, Uint8Array, number][] = [
    [
      "length not a multiple of 6",
      rawFrame(T.SETTINGS, 0, 0, new Uint8Array(5)),
      E.FRAME_SIZE_ERROR,
    ],
    ["ACK with a payload", rawFrame(T.SETTINGS, F.ACK, 0, new Uint8Array(6)), E.FRAME_SIZE_ERROR],
    ["on a stream", rawFrame(T.SETTINGS, 0, 1, new Uint8Array(0)), E.PROTOCOL_ERROR],
    ["ENABLE_PUSH 2", settingsFrame([[S.ENABLE_PUSH, 2]]), E.PROTOCOL_ERROR],
    ["MAX_FRAME_SIZE 16383", settingsFrame([[S.MAX_FRAME_SIZE, 16_383]]), E.PROTOCOL_ERROR],
    ["MAX_FRAME_SIZE 2^24", settingsFrame([[S.MAX_FRAME_SIZE, 2 ** 24]]), E.PROTOCOL_ERROR],
    [
      "INITIAL_WINDOW_SIZE 2^31",
      settingsFrame([[S.INITIAL_WINDOW_SIZE, 2 ** 31]]),
      E.FLOW_CONTROL_ERROR,
    ],
  ];
  for (const [name, frame, code] of cases) {
    await using c = await s.client();
    await c.send(CLIENT_PREFACE, settingsFrame(), frame);
    await assertGoaway(c, code).catch((err) => assert.fail(`${name}: ${err}`));
  }
  // unknown settings are ignored, and the largest legal values are accepted
  await using c = await ready(s, [
    [0x99, 12345],
    [S.MAX_FRAME_SIZE, 2 ** 24 - 1],
    [S.INITIAL_WINDOW_SIZE, 2 ** 31 - 1],
    [S.ENABLE_PUSH, 1],
  ]);
  await echo(c, 1, pattern(50_000));
});

// ---- PING, unknown frames, GOAWAY ----

Deno.test("connection: PING is answered with an ACK carrying the same payload", async () => {
  await using s = await server();
  await using c = await ready(s);
  const payload = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 0xff]);
  await c.send(pingFrame(payload), pingFrame(pattern(8, 9), true));
  const ack = await c.waitFrame((f) => f.type === T.PING);
  assert.equal(ack.flags, F.ACK);
  assert.equal(ack.streamId, 0);
  assert.deepEqual(ack.payload, payload);
  // our ACK got no answer: exactly one PING came back
  await c.send(pingFrame(pattern(8, 1)));
  await c.waitFrame((f) => f.type === T.PING);
  assert.equal(c.frames.filter((f) => f.type === T.PING).length, 2);
});

Deno.test("connection: malformed PINGs are connection errors", async () => {
  await using s = await server();
  {
    await using c = await ready(s);
    await c.send(rawFrame(T.PING, 0, 0, new Uint8Array(7)));
    await assertGoaway(c, E.FRAME_SIZE_ERROR);
  }
  {
    await using c = await ready(s);
    await c.send(rawFrame(T.PING, 0, 1, new Uint8Array(8)));
    await assertGoaway(c, E.PROTOCOL_ERROR);
  }
});

Deno.test("connection: unknown frame types are ignored, anywhere but inside a header block", async () => {
  await using s = await server();
  {
    await using c = await ready(s);
    await c.send(
      rawFrame(0xfa, 0xff, 0, pattern(100)),
      rawFrame(0x0b, 0, 1, pattern(3)), // on an idle stream, too
      rawFrame(0x20, 0, 0),
    );
    await echo(c, 1, pattern(10));
    assert.equal(c.goaways().length, 0);
  }
  {
    await using c = await ready(s);
    const block = encodeHeaders(req("/echo"));
    await c.send(
      rawFrame(T.HEADERS, F.END_STREAM, 1, block.subarray(0, 4)),
      rawFrame(0xfa, 0, 0, pattern(4)),
      rawFrame(T.CONTINUATION, F.END_HEADERS, 1, block.subarray(4)),
    );
    await assertGoaway(c, E.PROTOCOL_ERROR);
    assert.equal(s.requests.length, 1);
  }
});

Deno.test("connection: PRIORITY frames are ignored; on stream 0 they are an error", async () => {
  await using s = await server();
  {
    await using c = await ready(s);
    await c.send(rawFrame(T.PRIORITY, 0, 3, new Uint8Array([0, 0, 0, 1, 16])));
    await echo(c, 5, pattern(5));
  }
  {
    await using c = await ready(s);
    await c.send(rawFrame(T.PRIORITY, 0, 0, new Uint8Array(5)));
    await assertGoaway(c, E.PROTOCOL_ERROR);
  }
});

Deno.test("connection: frames a client may not send are connection errors", async () => {
  await using s = await server();
  const block = encodeHeaders(req("/echo"));
  const cases: [string, Uint8Array[], number][] = [
    ["HEADERS on stream 0", [headersFrame(0, req("/echo"), true)], E.PROTOCOL_ERROR],
    ["DATA on stream 0", [dataFrame(0, pattern(3))], E.PROTOCOL_ERROR],
    ["DATA on an idle stream", [dataFrame(3, pattern(3), true)], E.PROTOCOL_ERROR],
    ["PUSH_PROMISE", [rawFrame(T.PUSH_PROMISE, F.END_HEADERS, 1, u32(2))], E.PROTOCOL_ERROR],
    ["CONTINUATION alone", [rawFrame(T.CONTINUATION, F.END_HEADERS, 1, block)], E.PROTOCOL_ERROR],
    [
      "CONTINUATION of another stream",
      [
        rawFrame(T.HEADERS, F.END_STREAM, 1, block.subarray(0, 3)),
        rawFrame(T.CONTINUATION, F.END_HEADERS, 3, block.subarray(3)),
      ],
      E.PROTOCOL_ERROR,
    ],
    [
      "HEADERS inside a header block",
      [
        rawFrame(T.HEADERS, F.END_STREAM, 1, block.subarray(0, 3)),
        headersFrame(3, req("/echo"), true),
      ],
      E.PROTOCOL_ERROR,
    ],
    ["RST_STREAM on stream 0", [rstFrame(0, E.CANCEL)], E.PROTOCOL_ERROR],
    [
      "RST_STREAM of 5 bytes",
      [rawFrame(T.RST_STREAM, 0, 1, new Uint8Array(5))],
      E.FRAME_SIZE_ERROR,
    ],
    [
      "WINDOW_UPDATE of 3 bytes",
      [rawFrame(T.WINDOW_UPDATE, 0, 0, new Uint8Array(3))],
      E.FRAME_SIZE_ERROR,
    ],
    ["a frame over 16384 bytes", [dataFrame(1, new Uint8Array(16_385))], E.FRAME_SIZE_ERROR],
    [
      "HEADERS padded past its end",
      [rawFrame(
        T.HEADERS,
        F.END_HEADERS | F.END_STREAM | F.PADDED,
        1,
        concat(new Uint8Array([200]), block),
      )],
      E.PROTOCOL_ERROR,
    ],
    ["HPACK garbage", [
      rawFrame(T.HEADERS, F.END_HEADERS, 1, new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])),
    ], E.COMPRESSION_ERROR],
    [
      "HPACK index 0",
      [rawFrame(T.HEADERS, F.END_HEADERS, 1, new Uint8Array([0x80]))],
      E.COMPRESSION_ERROR,
    ],
  ];
  for (const [name, frames, code] of cases) {
    await using c = await ready(s);
    await c.send(...frames);
    await assertGoaway(c, code).catch((err) => assert.fail(`${name}: ${err}`));
  }
  assert.equal(s.requests.length, 0);
});

Deno.test("connection: stream ids must be odd and increasing", async () => {
  await using s = await server();
  {
    await using c = await ready(s);
    await c.send(headersFrame(2, req("/echo"), true));
    await assertGoaway(c, E.PROTOCOL_ERROR, 0);
  }
  {
    await using c = await ready(s);
    await echo(c, 5, pattern(3));
    await c.send(headersFrame(3, req("/echo"), true));
    await assertGoaway(c, E.PROTOCOL_ERROR, 5);
  }
  {
    // reusing a finished stream's id
    await using c = await ready(s);
    await echo(c, 1, pattern(3));
    await c.send(headersFrame(1, req("/echo"), true));
    await assertGoaway(c, E.PROTOCOL_ERROR, 1);
  }
  {
    // ids may skip; the largest one is what counts
    await using c = await ready(s);
    await echo(c, 1, pattern(3));
    await echo(c, 99, pattern(3));
    await echo(c, 2 ** 31 - 1, pattern(3));
    assert.equal(c.goaways().length, 0);
  }
});

// ---- requests ----

Deno.test("connection: a request in pieces — CONTINUATIONs, PADDED and PRIORITY, padded DATA — arrives whole", async () => {
  await using s = await server();
  await using c = await ready(s);
  const block = encodeHeaders([...req("/echo"), ["x-long", "v".repeat(300)]]);
  const body = pattern(5000);
  const priority = new Uint8Array([0x80, 0, 0, 0, 0xff]); // exclusive on stream 0, weight 256
  await c.send(
    rawFrame(
      T.HEADERS,
      F.PADDED | F.PRIORITY,
      1,
      concat(new Uint8Array([4]), priority, block.subarray(0, 10), new Uint8Array(4)),
    ),
    rawFrame(T.CONTINUATION, 0, 1, block.subarray(10, 10)), // empty fragment
    rawFrame(T.CONTINUATION, 0, 1, block.subarray(10, 200)),
    rawFrame(T.CONTINUATION, F.END_HEADERS, 1, block.subarray(200)),
    rawFrame(
      T.DATA,
      F.PADDED,
      1,
      concat(new Uint8Array([10]), body.subarray(0, 1000), new Uint8Array(10)),
    ),
    rawFrame(T.DATA, 0, 1, new Uint8Array(0)),
    rawFrame(T.DATA, F.PADDED, 1, concat(new Uint8Array([0]), body.subarray(1000, 3000))),
    // padding that fills the whole frame: legal, no data
    rawFrame(T.DATA, F.PADDED, 1, concat(new Uint8Array([7]), new Uint8Array(7))),
    rawFrame(T.DATA, F.END_STREAM, 1, body.subarray(3000)),
  );
  const r = await c.response(1);
  assert.deepEqual(r.data, body);
  assert.equal(field(r.blocks[1], "x-body-bytes"), "5000");
  assert.equal(s.requests[0].header("x-long"), "v".repeat(300));
  // the answer (headers, data, trailers) left in one write
  const answer = c.frames.filter((f) => f.streamId === 1);
  assert.deepEqual(answer.map((f) => f.type), [T.HEADERS, T.DATA, T.HEADERS]);
  assert.equal(new Set(answer.map((f) => f.read)).size, 1, "one read for the whole answer");
});

Deno.test("connection: DATA padding longer than the frame is a PROTOCOL_ERROR", async () => {
  await using s = await server();
  await using c = await ready(s);
  await c.send(
    headersFrame(1, req("/echo")),
    rawFrame(T.DATA, F.PADDED | F.END_STREAM, 1, concat(new Uint8Array([8]), new Uint8Array(7))),
  );
  await assertGoaway(c, E.PROTOCOL_ERROR);
  assert.equal(s.requests.length, 0);
});

Deno.test("connection: trailers from the client end the request; HEADERS mid-body resets the stream", async () => {
  await using s = await server();
  await using c = await ready(s);
  await c.send(
    headersFrame(1, req("/echo")),
    dataFrame(1, pattern(10)),
    headersFrame(1, [["x-trailer", "t"]], true),
  );
  const r = await c.response(1);
  assert.deepEqual(r.data, pattern(10));
  await c.send(headersFrame(3, req("/echo")), headersFrame(3, [["x", "y"]], false));
  assert.equal((await c.response(3)).rst, E.PROTOCOL_ERROR);
  await echo(c, 5, pattern(3));
});

Deno.test("connection: a malformed request is reset with PROTOCOL_ERROR; the connection carries on", async () => {
  await using s = await server();
  await using c = await ready(s);
  const good = req("/echo");
  const malformed: HeaderField[][] = [
    [...good, ["X-Upper", "1"]],
    [...good.filter(([n]) => n !== ":path")],
    [...good.filter(([n]) => n !== ":method")],
    [["x-first", "1"], ...good],
    [...good, [":status", "200"]],
    [...good, ["connection", "keep-alive"]],
    [...good, ["te", "gzip"]],
    [...good, ["x-bad", "a\nb"]],
  ];
  let id = 1;
  for (const fields of malformed) {
    await c.send(headersFrame(id, fields, true));
    assert.equal((await c.response(id)).rst, E.PROTOCOL_ERROR, JSON.stringify(fields));
    id += 2;
  }
  // its DATA, arriving after the reset, is ignored like any closed stream's
  await c.send(
    headersFrame(id, [...good, ["x-upper", "1"], ["X", "2"]]),
    dataFrame(id, pattern(4)),
  );
  assert.equal((await c.response(id)).rst, E.PROTOCOL_ERROR);
  await echo(c, id + 2, pattern(3));
  assert.equal(s.requests.length, 1, "the application saw only the good request");
  assert.equal(c.goaways().length, 0);
});

Deno.test("connection: content-length must match the body; trailers may not hold pseudo-headers", async () => {
  await using s = await server();
  await using c = await ready(s);
  await c.send(headersFrame(1, [...req("/echo"), ["content-length", "5"]]));
  await c.sendBody(1, pattern(4), { end: true });
  assert.equal((await c.response(1)).rst, E.PROTOCOL_ERROR);
  await c.send(headersFrame(3, [...req("/echo"), ["content-length", "4"]]));
  await c.sendBody(3, pattern(4), { end: true });
  assert.deepEqual((await c.response(3)).data, pattern(4));
  await c.send(headersFrame(5, [...req("/echo"), ["content-length", "-1"]], true));
  assert.equal((await c.response(5)).rst, E.PROTOCOL_ERROR);
  await c.send(
    headersFrame(7, req("/echo")),
    dataFrame(7, pattern(2)),
    headersFrame(7, [[":path", "/other"]], true),
  );
  assert.equal((await c.response(7)).rst, E.PROTOCOL_ERROR);
  assert.equal(s.requests.length, 1);
  assert.equal(c.goaways().length, 0);
});

Deno.test("connection: the HPACK dynamic table is shared across streams", async () => {
  await using s = await server();
  await using c = await ready(s);
  const path = "/echo";
  // literal with incremental indexing, name = static index 4 (":path"), then index 62
  const first = concat(
    new Uint8Array([0x83, 0x86, 0x44, path.length]),
    new TextEncoder().encode(path),
  );
  await c.send(rawFrame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1, first));
  await c.response(1);
  await c.send(
    rawFrame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 3, new Uint8Array([0x83, 0x86, 0xbe])),
  );
  const r = await c.response(3);
  assert.equal(field(r.blocks[0], ":status"), "200");
  assert.equal(s.requests[1].header(":path"), "/echo");
});

Deno.test("connection: a body over maxBodyBytes is flagged and dropped, the stream answered", async () => {
  await using s = await server({ maxBodyBytes: 1000 });
  await using c = await ready(s);
  const r = await echo(c, 1, pattern(1000));
  assert.equal(field(r.blocks[1], "x-too-large"), "false");
  await c.send(headersFrame(3, req("/echo")));
  await c.sendBody(3, pattern(3000), { end: true });
  const big = await c.response(3);
  assert.equal(field(big.blocks[1], "x-too-large"), "true");
  assert.equal(field(big.blocks[1], "x-body-bytes"), "0");
  await echo(c, 5, pattern(7));
});

// ---- flow control ----

Deno.test("connection: a small peer INITIAL_WINDOW_SIZE holds DATA until WINDOW_UPDATEs", async () => {
  await using s = await server();
  await using c = await ready(s, [[S.INITIAL_WINDOW_SIZE, 100]], { autoWindowUpdate: false });
  await c.send(headersFrame(1, req("/big/1000"), true));
  await c.waitUntil(() => (c.stream(1)?.data.length ?? 0) >= 100);
  await c.barrier();
  const stream = () => c.stream(1)!;
  assert.equal(stream().data.length, 100, "no more than the window");
  assert.equal(stream().ended, false);
  await c.send(windowUpdateFrame(1, 250));
  await c.waitUntil(() => stream().data.length >= 350);
  await c.barrier();
  assert.equal(stream().data.length, 350);
  // raising INITIAL_WINDOW_SIZE adds the difference to open streams' windows
  await c.send(settingsFrame([[S.INITIAL_WINDOW_SIZE, 400]]));
  await c.waitUntil(() => stream().data.length >= 650);
  await c.barrier();
  assert.equal(stream().data.length, 650);
  // lowering it makes the window negative: nothing more until it is positive again
  await c.send(settingsFrame([[S.INITIAL_WINDOW_SIZE, 0]]), windowUpdateFrame(1, 300));
  await c.barrier();
  assert.equal(stream().data.length, 650);
  await c.send(windowUpdateFrame(1, 101));
  await c.waitUntil(() => stream().data.length >= 651);
  await c.barrier();
  assert.equal(stream().data.length, 651);
  await c.send(windowUpdateFrame(1, 10_000));
  const r = await c.response(1);
  assert.deepEqual(r.data, pattern(1000));
  assert.ok(r.dataFrameSizes.every((n) => n <= 350), `${r.dataFrameSizes}`);
  // a new stream starts with the current INITIAL_WINDOW_SIZE (0): headers, but no data
  await c.send(headersFrame(3, req("/big/10"), true));
  await c.waitUntil(() => (c.stream(3)?.blocks.length ?? 0) === 1);
  await c.barrier();
  assert.equal(c.stream(3)!.data.length, 0);
  await c.send(windowUpdateFrame(3, 10));
  assert.deepEqual((await c.response(3)).data, pattern(10));
});

Deno.test("connection: the connection send window is shared by streams and honoured", async () => {
  await using s = await server();
  await using c = await ready(s, [[S.INITIAL_WINDOW_SIZE, 2 ** 31 - 1]], {
    autoWindowUpdate: false,
  });
  await c.send(headersFrame(1, req("/big/50000")), headersFrame(3, req("/big/50000")));
  await c.send(dataFrame(1, new Uint8Array(0), true), dataFrame(3, new Uint8Array(0), true));
  const total = () => (c.stream(1)?.data.length ?? 0) + (c.stream(3)?.data.length ?? 0);
  await c.waitUntil(() => total() >= 65_535);
  await c.barrier();
  assert.equal(total(), 65_535);
  await c.send(windowUpdateFrame(0, 30_000));
  await c.waitUntil(() => total() >= 95_535);
  await c.barrier();
  assert.equal(total(), 95_535);
  await c.send(windowUpdateFrame(0, 10_000));
  assert.deepEqual((await c.response(1)).data, pattern(50_000));
  assert.deepEqual((await c.response(3)).data, pattern(50_000));
});

Deno.test("connection: flow-control errors — WINDOW_UPDATE 0 and window overflow", async () => {
  await using s = await server();
  {
    await using c = await ready(s);
    await c.send(windowUpdateFrame(0, 0));
    await assertGoaway(c, E.PROTOCOL_ERROR);
  }
  {
    await using c = await ready(s);
    await c.send(windowUpdateFrame(0, 2 ** 31 - 1));
    await assertGoaway(c, E.FLOW_CONTROL_ERROR);
  }
  {
    // on a stream these are stream errors: the connection lives
    await using c = await ready(s);
    await hold(s, c, 1, 3);
    await c.send(windowUpdateFrame(1, 0), windowUpdateFrame(3, 2 ** 31 - 1));
    assert.equal((await c.response(1)).rst, E.PROTOCOL_ERROR);
    assert.equal((await c.response(3)).rst, E.FLOW_CONTROL_ERROR);
    assert.ok(s.held.every((h) => h.cancelled));
    // a WINDOW_UPDATE for a closed stream is ignored
    await c.send(windowUpdateFrame(1, 5));
    await echo(c, 5, pattern(3));
    assert.equal(c.goaways().length, 0);
  }
  {
    // a SETTINGS change that pushes an open stream's window past 2^31-1
    await using c = await ready(s, [], { autoWindowUpdate: false });
    await c.send(headersFrame(7, req("/hold"), true), windowUpdateFrame(7, 2 ** 31 - 1 - 65_535));
    await c.barrier();
    assert.equal(s.held.length, 3, "held stream");
    await c.send(settingsFrame([[S.INITIAL_WINDOW_SIZE, 65_536]]));
    await assertGoaway(c, E.FLOW_CONTROL_ERROR);
  }
});

Deno.test("connection: a client that overruns the stream window gets RST_STREAM FLOW_CONTROL_ERROR", async () => {
  await using s = await server({ streamWindow: 1000 });
  await using c = await ready(s);
  await c.send(headersFrame(1, req("/echo")), dataFrame(1, pattern(1001), true));
  assert.equal((await c.response(1)).rst, E.FLOW_CONTROL_ERROR);
  assert.equal(s.requests.length, 0);
  // within the window, refilled by the server as it reads: many times the window is fine
  await echo(c, 3, pattern(20_000));
});

Deno.test("connection: a connectionWindow option below 65535 does not shrink what the client may send", async () => {
  await using s = await server({ connectionWindow: 1000 });
  await using c = await ready(s);
  // the client may send 65535 bytes before any WINDOW_UPDATE: the protocol's initial window
  await echo(c, 1, pattern(65_535));
  await echo(c, 3, pattern(200_000));
  assert.equal(c.goaways().length, 0);
});

Deno.test("connection: a large request body is flow-controlled by WINDOW_UPDATEs from the server", async () => {
  await using s = await server({
    maxBodyBytes: 8 << 20,
    streamWindow: 65_535,
    connectionWindow: 65_535,
  });
  await using c = await ready(s);
  const body = pattern(3 << 20, 5);
  await echo(c, 1, body);
  const updates = c.frames.filter((f) => f.type === T.WINDOW_UPDATE);
  assert.ok(updates.some((f) => f.streamId === 0) && updates.some((f) => f.streamId === 1));
});

// ---- what a client can make the server buffer ----

/** A body that declares its own length in its first 4 bytes (big-endian, prefix included). */
const LENGTH_PREFIX = {
  bytes: 4,
  length: (p: Uint8Array) => new DataView(p.buffer, p.byteOffset, 4).getUint32(0),
};

function prefixed(n: number, seed = 0): Uint8Array {
  const body = pattern(n, seed);
  new DataView(body.buffer).setUint32(0, n);
  return body;
}

/** The WINDOW_UPDATE increments the server sent on stream `id`. */
function streamUpdates(c: RawH2Client, id: number): number[] {
  return c.frames.filter((f) => f.type === T.WINDOW_UPDATE && f.streamId === id)
    .map((f) => new DataView(f.payload.buffer).getUint32(0));
}

Deno.test("connection: a stream's window opens once, for exactly what its prefix declares", async () => {
  await using s = await server({ maxBodyBytes: 1 << 20, bodyPrefix: LENGTH_PREFIX });
  await using c = await ready(s);
  const body = prefixed(300_000);
  await c.send(headersFrame(1, req("/echo")));
  // only the prefix: the server learns the length and grants the rest in one update
  await c.sendAvailable(1, body.subarray(0, 4), 0);
  await c.barrier();
  assert.deepEqual(streamUpdates(c, 1), [300_000 - 65_535]);
  await c.sendBody(1, body.subarray(4), { end: true });
  const r = await c.response(1);
  assert.deepEqual(r.data, body);
  assert.deepEqual(streamUpdates(c, 1), [300_000 - 65_535], "no more window than declared");
  // a body within the initial window needs no update at all
  await echo(c, 3, prefixed(60_000));
  assert.deepEqual(streamUpdates(c, 3), []);
});

Deno.test("connection: large bodies take turns: one reservation of maxBodyBytes per connection", async () => {
  // windows beyond the initial 65535 come out of 160000 bytes: room for one 150000-byte body
  await using s = await server({ maxBodyBytes: 160_000, bodyPrefix: LENGTH_PREFIX });
  await using c = await ready(s);
  const a = prefixed(150_000, 1);
  const b = prefixed(150_000, 2);
  await c.send(headersFrame(1, req("/echo")), headersFrame(3, req("/echo")));
  // both send what they may; the second must wait at its initial window
  let sentA = await c.sendAvailable(1, a, 0);
  let sentB = await c.sendAvailable(3, b, 0);
  await c.barrier();
  sentA = await c.sendAvailable(1, a, sentA);
  sentB = await c.sendAvailable(3, b, sentB);
  await c.barrier();
  assert.equal(sentA, a.length, "the first body got its whole window");
  assert.equal(sentB, 65_535, "the second waits at its initial window");
  assert.deepEqual(streamUpdates(c, 3), []);
  // once the first is consumed, the reservation passes on
  await c.send(dataFrame(1, new Uint8Array(0), true));
  assert.deepEqual((await c.response(1)).data, a);
  await c.barrier();
  assert.deepEqual(streamUpdates(c, 3), [150_000 - 65_535]);
  await c.sendBody(3, b.subarray(sentB), { end: true });
  assert.deepEqual((await c.response(3)).data, b);
});

Deno.test("connection: a waiting or reserved stream that is reset gives its turn back", async () => {
  await using s = await server({ maxBodyBytes: 160_000, bodyPrefix: LENGTH_PREFIX });
  await using c = await ready(s);
  const body = prefixed(150_000);
  await c.send(headersFrame(1, req("/echo")), headersFrame(3, req("/echo")));
  await c.send(headersFrame(5, req("/echo")));
  await c.sendAvailable(1, body, 0); // reserved
  await c.sendAvailable(3, body, 0); // waiting
  await c.sendAvailable(5, body, 0); // waiting behind it
  await c.barrier();
  assert.equal(streamUpdates(c, 1).length, 1);
  // the waiting stream 3 goes away: 5 is next; the reserved 1 goes away: 5 gets it
  await c.send(rstFrame(3, E.CANCEL), rstFrame(1, E.CANCEL));
  await c.barrier();
  assert.deepEqual(streamUpdates(c, 3), []);
  assert.deepEqual(streamUpdates(c, 5), [150_000 - 65_535]);
  await c.sendBody(5, body.subarray(65_535), { end: true });
  assert.deepEqual((await c.response(5)).data, body);
});

Deno.test("connection: a body declared larger than maxBodyBytes is delivered at once, flagged, without its bytes", async () => {
  await using s = await server({ maxBodyBytes: 100_000, bodyPrefix: LENGTH_PREFIX });
  await using c = await ready(s);
  await c.send(headersFrame(1, req("/echo")), dataFrame(1, prefixed(100)));
  // the prefix of this one says 100001 bytes: answered before the rest is sent
  const big = prefixed(100_001);
  await c.send(headersFrame(3, req("/echo")));
  const sent = await c.sendBody(3, big, { end: true });
  const r = await c.response(3);
  await c.barrier();
  assert.equal(field(r.blocks[1], "x-too-large"), "true");
  assert.equal(field(r.blocks[1], "x-body-bytes"), "0");
  assert.ok(sent <= 65_535, `${sent} bytes sent`);
  assert.equal(c.stream(3)!.rst, E.NO_ERROR, "the client is told to stop");
  assert.equal(s.requests.find((q) => q.id === 3)?.declaredBodyBytes, 100_001);
  assert.deepEqual(streamUpdates(c, 3), []);
  // the first stream is unaffected
  await c.send(dataFrame(1, new Uint8Array(0), true));
  assert.deepEqual((await c.response(1)).data, prefixed(100));
});

Deno.test("connection: DATA frames never exceed the peer's MAX_FRAME_SIZE; headers split into CONTINUATIONs", async () => {
  await using s = await server();
  {
    await using c = await ready(s);
    await c.send(headersFrame(1, req("/big/100000"), true));
    const r = await c.response(1);
    assert.deepEqual(r.data, pattern(100_000));
    assert.ok(r.dataFrameSizes.every((n) => n <= 16_384));
    assert.equal(Math.max(...r.dataFrameSizes), 16_384);
    await c.send(headersFrame(3, req("/bigheader/40000"), true));
    const h = await c.response(3);
    assert.equal(field(h.blocks[0], "x-big")?.length, 40_000);
    const frames = c.frames.filter((f) => f.streamId === 3);
    assert.deepEqual(frames.map((f) => f.type), [T.HEADERS, T.CONTINUATION, T.CONTINUATION]);
    assert.deepEqual(frames.map((f) => f.flags), [F.END_STREAM, 0, F.END_HEADERS]);
    assert.ok(frames.every((f) => f.payload.length <= 16_384));
  }
  {
    await using c = await ready(s, [[S.MAX_FRAME_SIZE, 20_000], [S.INITIAL_WINDOW_SIZE, 1 << 20]]);
    await c.send(headersFrame(1, req("/big/100000"), true));
    const r = await c.response(1);
    assert.deepEqual(r.data, pattern(100_000));
    assert.ok(r.dataFrameSizes.every((n) => n <= 20_000), `${r.dataFrameSizes}`);
    assert.equal(Math.max(...r.dataFrameSizes), 20_000);
  }
});

// ---- streams: reset, limits, goaway ----

Deno.test("connection: RST_STREAM from the client cancels that stream only", async () => {
  await using s = await server();
  await using c = await ready(s);
  const [held] = await hold(s, c, 1);
  let cancelled = 0;
  held.onCancel(() => cancelled++);
  await c.send(rstFrame(1, E.CANCEL));
  await c.barrier();
  assert.equal(held.cancelled, true, "cancelled by the RST_STREAM");
  assert.equal(cancelled, 1);
  // late answers to a reset stream go nowhere and do not hang
  held.sendHeaders([[":status", "200"]]);
  await held.sendData(pattern(10), true);
  await echo(c, 3, pattern(10));
  assert.equal(c.frames.filter((f) => f.streamId === 1).length, 0);
  // RST_STREAM for a stream that is already closed is ignored
  await c.send(rstFrame(3, E.CANCEL), rstFrame(1, E.CANCEL));
  await echo(c, 5, pattern(10));
  assert.equal(cancelled, 1);
  assert.equal(s.conns[0].activeStreams, 0);
});

Deno.test("connection: a reset while the answer waits for flow control releases sendData", async () => {
  await using s = await server();
  await using c = await ready(s, [[S.INITIAL_WINDOW_SIZE, 10]], { autoWindowUpdate: false });
  const [held] = await hold(s, c, 1);
  held.sendHeaders([[":status", "200"]]);
  const sent = held.sendData(pattern(1000), true);
  await c.waitUntil(() => (c.stream(1)?.data.length ?? 0) === 10);
  await c.send(rstFrame(1, E.CANCEL));
  await withTimeout(sent, 2000, "sendData to resolve after the reset");
  assert.equal(held.cancelled, true);
  assert.equal(s.conns[0].activeStreams, 0);
});

Deno.test("connection: streams over MAX_CONCURRENT_STREAMS are refused; freed slots are reused", async () => {
  await using s = await server({ maxConcurrentStreams: 2 });
  await using c = await ready(s);
  await c.send(
    headersFrame(1, req("/hold"), true),
    headersFrame(3, req("/hold")), // open, no body yet: counts too
    headersFrame(5, req("/echo"), true),
    headersFrame(7, req("/echo")),
    dataFrame(7, pattern(10), true), // DATA for a refused stream is ignored
  );
  assert.equal((await c.response(5)).rst, E.REFUSED_STREAM);
  assert.equal((await c.response(7)).rst, E.REFUSED_STREAM);
  await c.barrier();
  assert.equal(s.held.length, 1, "held stream");
  s.held[0].sendHeaders([[":status", "204"]], true);
  await c.response(1);
  await echo(c, 9, pattern(4));
  await c.send(dataFrame(3, new Uint8Array(0), true));
  await c.barrier();
  assert.equal(s.held.length, 2, "the second held stream");
  s.held[1].sendHeaders([[":status", "204"]], true);
  await c.response(3);
  assert.equal(c.goaways().length, 0);
  assert.equal(s.requests.filter((r) => r.id === 5 || r.id === 7).length, 0);
});

Deno.test("connection: client GOAWAY — open streams finish, then the server closes", async () => {
  const closeGraceMs = 300;
  await using s = await server({ closeGraceMs });
  await using c = await ready(s);
  await hold(s, c, 1);
  await c.send(goawayFrame(0, E.NO_ERROR));
  await c.barrier();
  assert.equal(c.eof, false, "the server waits for the open stream");
  // the grace period starts when the last stream ends, inside sendData
  const answered = performance.now();
  s.held[0].sendHeaders([[":status", "200"]]);
  s.held[0].sendData(pattern(10), true);
  const r = await c.response(1);
  assert.deepEqual(r.data, pattern(10));
  // the server leaves closing to the client (as grpc clients do after GOAWAY) for
  // closeGraceMs, then closes itself
  await c.waitEof();
  const took = performance.now() - answered;
  assert.ok(took >= closeGraceMs - 1, `closed ${took.toFixed(1)} ms after the last answer`);
  await c.close(); // the client closes too: the server's pending read returns, run() ends
  await s.allRunsDone();
  assert.deepEqual(s.errors, []);
});

Deno.test("connection: after GOAWAY an idle client that closes first is never closed under it", async () => {
  await using s = await server({ closeGraceMs: 60_000 });
  await using c = await ready(s);
  await c.send(goawayFrame(0, E.NO_ERROR));
  await c.barrier();
  assert.equal(c.eof, false);
  await c.close();
  await s.allRunsDone(); // closed when the client closed, long before the grace period
  assert.deepEqual(s.errors, []);
});

Deno.test("connection: client GOAWAY with nothing open closes the connection", async () => {
  await using s = await server();
  await using c = await ready(s);
  await c.send(goawayFrame(0, E.NO_ERROR));
  await c.waitEof();
  assert.equal(c.goaways().length, 0);
});

Deno.test("connection: goaway() sends GOAWAY NO_ERROR, refuses new streams, waits for open ones", async () => {
  await using s = await server();
  await using c = await ready(s);
  await hold(s, c, 1, 3);
  let done = false;
  const closing = s.conns[0].goaway().then(() => done = true);
  await c.waitFrame((f) => f.type === T.GOAWAY);
  assert.deepEqual(c.goaways(), [{ lastStreamId: 3, code: E.NO_ERROR, debug: "" }]);
  await c.send(headersFrame(5, req("/echo"), true));
  assert.equal((await c.response(5)).rst, E.REFUSED_STREAM);
  s.held[0].sendHeaders([[":status", "200"]], true);
  await c.response(1);
  await c.barrier();
  assert.equal(done, false);
  assert.equal(c.eof, false);
  s.held[1].sendHeaders([[":status", "200"]]);
  s.held[1].sendData(pattern(100_000), true); // larger than one write, all delivered first
  assert.deepEqual((await c.response(3)).data, pattern(100_000));
  await withTimeout(closing, 2000, "goaway() to resolve");
  await c.waitEof();
  assert.equal(s.conns[0].goaway(), s.conns[0].closed, "idempotent");
});

// ---- broken clients ----

Deno.test("connection: garbage after the preface ends the connection with GOAWAY, never a crash", async () => {
  await using s = await server();
  {
    await using c = await ready(s);
    await c.send(new TextEncoder().encode("hello, this is certainly not HTTP/2 framing"));
    await assertGoaway(c, E.FRAME_SIZE_ERROR);
  }
  // seeded random bytes: whatever they parse as, the server ends cleanly or keeps serving
  let seed = 0x9e3779b9;
  const random = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const int = (n: number) => Math.floor(random() * n);
  for (let i = 0; i < 150; i++) {
    const c = await ready(s);
    const parts: Uint8Array[] = [];
    if (i % 3 === 0) {
      // raw noise
      parts.push(new Uint8Array(1 + int(200)).map(() => int(256)));
    } else {
      // random frames of known types on a few streams: they parse and reach the handlers
      for (let k = 0; k < 1 + int(8); k++) {
        const payload = new Uint8Array(int(40)).map(() => int(256));
        if (k === 0 && i % 3 === 1) parts.push(headersFrame(1, req("/echo")));
        parts.push(rawFrame(int(10), int(256) & ~F.PADDED, int(6), payload));
      }
      if (i % 3 === 1) parts.push(dataFrame(1, pattern(3), true));
    }
    await c.send(...parts);
    await c.close(); // shut down our side: the server must finish and close too
  }
  await withTimeout(Promise.all(s.runs), 5000, "every connection to end");
  // every failure was a protocol error the connection reported, nothing unexpected
  for (const e of s.errors) assert.ok(e instanceof H2ConnectionError, String(e));
  assert.ok(s.errors.length > 50, `${s.errors.length} connection errors`);
  assert.ok(s.requests.length > 0, "no frames made it to a request");
});

Deno.test("connection: a client that vanishes mid-request cancels its streams; the server lives", async () => {
  await using s = await server();
  // with a request delivered and held, and another half-sent (a frame cut in two)
  const conn = await s.raw();
  const headers = headersFrame(3, req("/echo"));
  await conn.write(concat(
    CLIENT_PREFACE,
    settingsFrame(),
    headersFrame(1, req("/hold"), true),
    headers,
    dataFrame(3, pattern(100)).subarray(0, 50),
  ));
  await poll(() => s.held.length === 1, "held");
  conn.close(); // no read pending: a real close, with the server's bytes unread
  await poll(() => s.held[0].cancelled, "the held stream to be cancelled");
  await withTimeout(s.runs[0], 2000, "run() to resolve");
  // the answer to a vanished client goes nowhere and does not hang
  s.held[0].sendHeaders([[":status", "200"]]);
  await withTimeout(s.held[0].sendData(pattern(10), true), 1000, "sendData");
  // other connections are served
  await using c = await ready(s);
  await echo(c, 1, pattern(10));
});

Deno.test("connection: a client that half-closes after its request loses the answer, cleanly", async () => {
  await using s = await server();
  const c = await ready(s);
  await hold(s, c, 1);
  await c.close();
  assert.equal(s.held[0].cancelled, true);
  await withTimeout(s.runs[0], 2000, "run() to resolve");
});

Deno.test("connection: 200 interleaved streams on one connection each get their own answer", async () => {
  await using s = await server();
  await using c = await ready(s);
  const frames: Uint8Array[] = [];
  for (let i = 0; i < 200; i++) frames.push(headersFrame(2 * i + 1, req(`/echo`)));
  for (let i = 0; i < 200; i++) frames.push(dataFrame(2 * i + 1, pattern(i + 1, i)));
  for (let i = 199; i >= 0; i--) frames.push(dataFrame(2 * i + 1, pattern(i, i + 1), true));
  await c.send(...frames);
  for (let i = 0; i < 200; i++) {
    const r = await c.response(2 * i + 1);
    assert.deepEqual(r.data, concat(pattern(i + 1, i), pattern(i, i + 1)), `stream ${2 * i + 1}`);
  }
  assert.equal(s.conns[0].activeStreams, 0);
});

// ---- abuse ----

Deno.test("connection: a flood of empty CONTINUATION frames is cut off with ENHANCE_YOUR_CALM", async () => {
  await using s = await server();
  await using c = await ready(s);
  const block = encodeHeaders(req("/echo"));
  const empty = rawFrame(T.CONTINUATION, 0, 1);
  await c.send(rawFrame(T.HEADERS, F.END_STREAM, 1, block.subarray(0, 2)));
  // 4 × 64 KiB of header block is the limit; empty frames must count towards it too
  for (let i = 0; i < 20 && !c.eof; i++) {
    await c.send(...Array.from({ length: 2000 }, () => empty)).catch(() => {});
  }
  await assertGoaway(c, E.ENHANCE_YOUR_CALM);
  assert.equal(s.requests.length, 0);
});

Deno.test("connection: a header block over 4 × MAX_HEADER_LIST_SIZE in CONTINUATIONs is ENHANCE_YOUR_CALM", async () => {
  await using s = await server({ maxHeaderListSize: 1000 });
  await using c = await ready(s);
  const block = encodeHeaders([...req("/echo"), ["x", "v".repeat(5000)]]);
  await c.send(
    rawFrame(T.HEADERS, F.END_STREAM, 1, block.subarray(0, 1000)),
    rawFrame(T.CONTINUATION, 0, 1, block.subarray(1000, 3000)),
    rawFrame(T.CONTINUATION, 0, 1, block.subarray(3000, 4500)),
    rawFrame(T.CONTINUATION, F.END_HEADERS, 1, block.subarray(4500)),
  );
  await assertGoaway(c, E.ENHANCE_YOUR_CALM);
});

Deno.test("connection: a header list over MAX_HEADER_LIST_SIZE refuses that stream only", async () => {
  await using s = await server({ maxHeaderListSize: 1000 });
  await using c = await ready(s);
  // the oversized block also adds ("x", "y") to the HPACK table: the next request refers to it,
  // so the table must have been kept in step with the client's
  const big = concat(
    encodeHeaders(req("/echo")),
    new Uint8Array([0x40, 1, 0x78, 1, 0x79]),
    encodeHeaders([["x-big", "v".repeat(1100)]]),
  );
  await c.send(
    rawFrame(T.HEADERS, F.END_HEADERS, 1, big),
    dataFrame(1, pattern(10), true), // DATA of the refused stream is ignored
  );
  assert.equal((await c.response(1)).rst, E.FRAME_SIZE_ERROR);
  await c.send(
    rawFrame(
      T.HEADERS,
      F.END_HEADERS | F.END_STREAM,
      3,
      concat(encodeHeaders(req("/echo")), new Uint8Array([0xbe])),
    ),
  );
  assert.equal(field((await c.response(3)).blocks[0], ":status"), "200");
  assert.equal(s.requests.length, 1);
  assert.equal(s.requests[0].header("x"), "y");
  assert.equal(c.goaways().length, 0);
  // and the id of the refused stream is used up
  await c.send(headersFrame(1, req("/echo"), true));
  await assertGoaway(c, E.PROTOCOL_ERROR);
});

Deno.test("connection: DATA after the client's END_STREAM is answered with RST_STREAM STREAM_CLOSED", async () => {
  await using s = await server();
  await using c = await ready(s);
  await hold(s, c, 1);
  await c.send(dataFrame(1, pattern(5)));
  assert.equal((await c.response(1)).rst, E.STREAM_CLOSED);
  assert.equal(s.held[0].cancelled, true);
  await echo(c, 3, pattern(5));
  assert.equal(c.goaways().length, 0);
});

Deno.test("connection: a PING flood from a client that never reads stops being read, and loses nothing", async () => {
  await using s = await server();
  const conn = await s.raw();
  const pings = 200_000;
  const chunk = concat(...Array.from({ length: 1000 }, (_, i) => pingFrame(pattern(8, i))));
  let written = 0;
  const writing = (async () => {
    await conn.write(concat(CLIENT_PREFACE, settingsFrame()));
    for (let i = 0; i < pings / 1000; i++) {
      let offset = 0;
      while (offset < chunk.length) offset += await conn.write(chunk.subarray(offset));
      written += 1000;
    }
  })();
  // the server answers into a socket nobody reads: it must stop reading us rather than
  // queue 200k answers in memory, so our writes stall. A stall has no event to wait for: what
  // is tested is that in a whole second (a server that keeps reading takes all 200k PINGs in
  // far less) our writes get no further than a quarter.
  await new Promise((r) => setTimeout(r, 1000));
  assert.ok(written < pings / 4, `${written} PINGs read although no answer could be written`);
  // reading everything unblocks both sides, and every PING gets its ACK
  let acks = 0;
  let buf: Uint8Array = new Uint8Array(0);
  const readBuf = new Uint8Array(1 << 16);
  while (acks < pings) {
    const n = await withTimeout(conn.read(readBuf), 5000, `PING ACK ${acks + 1}`);
    assert.notEqual(n, null, "the server closed the connection");
    buf = concat(buf, readBuf.subarray(0, n!));
    while (buf.length >= 9) {
      const length = (buf[0] << 16) | (buf[1] << 8) | buf[2];
      if (buf.length < 9 + length) break;
      if (buf[3] === T.PING) {
        assert.equal(buf[4], F.ACK);
        acks++;
      }
      buf = buf.subarray(9 + length);
    }
  }
  await writing;
  assert.equal(acks, pings);
  await conn.closeWrite();
  while ((await conn.read(readBuf)) !== null) { /* drain to EOF */ }
  conn.close();
});
