/**
 * Adversarial tests of the native gRPC server (`startServer({ transport: "native" })`) with a
 * raw HTTP/2 client (testing/h2_raw_client.ts): requests cut and padded in ways a grpc-js
 * client never produces, flow control driven by hand, bad gRPC framing, deadlines, limits,
 * resets, GOAWAY and shutdown. The snapshotter is the in-memory test double.
 */
import assert from "node:assert/strict";
import type { Timestamp } from "../../snapshots/types.ts";
import {
  type MemorySnapshotter,
  memorySnapshotter,
  type MemorySnapshotterOptions,
} from "../../../testing/memory_snapshotter.ts";
import {
  CLIENT_PREFACE,
  concat,
  dataFrame,
  E,
  F,
  field,
  goawayFrame,
  grpcMessage,
  grpcRequestHeaders,
  type GrpcResult,
  headersFrame,
  parseGrpcBody,
  type RawClientOptions,
  rawFrame,
  RawH2Client,
  rstFrame,
  S,
  settingsFrame,
  T,
  windowUpdateFrame,
} from "../../../testing/h2_raw_client.ts";
import { poll } from "../../../testing/poll.ts";
import { serverConnections } from "../../../testing/socket_peers.ts";
import { startTestServer, type TestServer } from "../../../testing/test_server.ts";
import { decodeGrpcMessage } from "./grpc_wire.ts";
import { encodeHeaders, type HeaderField } from "./h2/hpack.ts";
import {
  loadSnapshotsProto,
  SNAPSHOTS_SERVICE,
  type WireInfoResponse,
  type WireListResponse,
} from "../proto.ts";
import type { ServerOptions } from "../server.ts";
import { MAX_MESSAGE_BYTES } from "../transport.ts";
import { serveNative } from "./server.ts";
import { createService } from "../handlers.ts";
import { silentLogger } from "../../util/log.ts";

const T0: Timestamp = { seconds: 1_700_000_000, nanos: 5 };
const proto = loadSnapshotsProto();
const statRequest = proto.codec<{ snapshotter: string; key: string }>("StatSnapshotRequest");
const statResponse = proto.codec<WireInfoResponse>("StatSnapshotResponse");
const listRequest = proto.codec<{ snapshotter: string; filters: string[] }>("ListSnapshotsRequest");
const listResponse = proto.codec<WireListResponse>("ListSnapshotsResponse");

/** Status codes (the protocol's numbers). */
const Code = {
  OK: 0,
  CANCELLED: 1,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
} as const;

const path = (method: string) => `/${SNAPSHOTS_SERVICE}/${method}`;

function statBody(key: string): Uint8Array {
  return grpcMessage(statRequest.encode({ snapshotter: "x", key }));
}

/** The native server of a memory snapshotter `s`, with raw HTTP/2 clients only. */
interface Harness extends Omit<TestServer, "client"> {
  s: MemorySnapshotter;
  /** A connected raw client after the handshake (with `settings`): {@linkcode TestServer.raw}. */
  client(settings?: [number, number][], options?: RawClientOptions): Promise<RawH2Client>;
}

async function harness(
  opts: MemorySnapshotterOptions & Partial<Omit<ServerOptions, "address" | "snapshotter">> = {},
): Promise<Harness> {
  const s = memorySnapshotter({ now: () => ({ ...T0 }), ...opts });
  const served = await startTestServer({
    prefix: "dmsnap-native-",
    transport: "native",
    snapshotter: s,
    ...opts,
  });
  return {
    path: served.path,
    dir: served.dir,
    s,
    server: served.server,
    logs: served.logs,
    bare: served.bare,
    raw: served.raw,
    client: served.raw,
    [Symbol.asyncDispose]: () => served[Symbol.asyncDispose](),
  };
}

/** Sends a unary call: HEADERS and one DATA with END_STREAM, in one write. */
async function sendCall(
  c: RawH2Client,
  id: number,
  method: string,
  body: Uint8Array,
  extra: HeaderField[] = [],
): Promise<void> {
  await c.send(
    headersFrame(id, grpcRequestHeaders(path(method), extra)),
    dataFrame(id, body, true),
  );
}

/** Sends a unary call (see {@linkcode sendCall}) and reads its answer. */
async function call(
  c: RawH2Client,
  id: number,
  method: string,
  body: Uint8Array,
  extra: HeaderField[] = [],
): Promise<GrpcResult> {
  await sendCall(c, id, method, body, extra);
  return await c.grpcResponse(id);
}

/** A gate: calls of `method` wait until released. */
function gate(method: string) {
  const { promise, resolve } = Promise.withResolvers<void>();
  let entered = 0;
  return {
    fn: (m: string) => {
      if (m !== method) return Promise.resolve();
      entered++;
      return promise;
    },
    entered: () => entered,
    release: () => resolve(),
  };
}

/** A harness holding calls of `method` at a gate, with a snapshot "k" and a connected client. */
async function gated(method: string) {
  const g = gate(method);
  const h = await harness({ gate: g.fn });
  await h.s.prepare("k", "");
  const c = await h.client();
  return { g, h, c, [Symbol.asyncDispose]: () => h[Symbol.asyncDispose]() };
}

/** Asserts a trailers-only gRPC answer with `code` (one HEADERS frame with END_STREAM). */
function assertTrailersOnly(r: GrpcResult, code: number, message?: RegExp): void {
  assert.equal(r.rst, undefined);
  assert.equal(r.blocks.length, 1, JSON.stringify(r.blocks));
  assert.equal(r.httpStatus, "200");
  assert.equal(field(r.blocks[0], "content-type"), "application/grpc");
  assert.equal(r.grpcStatus, code, `grpc-message: ${r.grpcMessage}`);
  assert.equal(r.data.length, 0);
  if (message) assert.match(decodeGrpcMessage(r.grpcMessage ?? ""), message);
}

// ---- the happy path, taken apart ----

Deno.test("native: a Stat cut into HEADERS+CONTINUATIONs (PADDED, PRIORITY) and padded DATA pieces, all in one write", async () => {
  await using h = await harness();
  await h.s.prepare("ns/1/key", "", { a: "b" });
  const c = await h.bare();
  const block = encodeHeaders(grpcRequestHeaders(path("Stat"), [["grpc-timeout", "10S"]]));
  const body = statBody("ns/1/key");
  await c.send(
    CLIENT_PREFACE,
    settingsFrame([[S.MAX_FRAME_SIZE, 16_384]]),
    rawFrame(
      T.HEADERS,
      F.PADDED | F.PRIORITY,
      1,
      concat(
        new Uint8Array([3]),
        new Uint8Array([0, 0, 0, 0, 15]),
        block.subarray(0, 7),
        new Uint8Array(3),
      ),
    ),
    rawFrame(T.CONTINUATION, 0, 1, block.subarray(7, 40)),
    rawFrame(T.CONTINUATION, F.END_HEADERS, 1, block.subarray(40)),
    dataFrame(1, body.subarray(0, 2)), // inside the 5-byte message prefix
    rawFrame(
      T.DATA,
      F.PADDED,
      1,
      concat(new Uint8Array([5]), body.subarray(2, 9), new Uint8Array(5)),
    ),
    dataFrame(1, new Uint8Array(0)),
    dataFrame(1, body.subarray(9), true),
  );
  const r = await c.grpcResponse(1);
  assert.equal(r.httpStatus, "200");
  assert.equal(field(r.blocks[0], "content-type"), "application/grpc");
  assert.equal(r.grpcStatus, Code.OK);
  assert.equal(r.grpcMessage, undefined);
  assert.equal(r.messages.length, 1);
  const info = statResponse.decode(r.messages[0]).info!;
  assert.equal(info.name, "ns/1/key");
  assert.equal(info.kind, 2);
  assert.deepEqual(info.labels, { a: "b" });
  assert.deepEqual(info.created_at, { seconds: String(T0.seconds), nanos: T0.nanos });
  // HEADERS, DATA, trailers: in that order, in one read (the server wrote them at once)
  const answer = c.frames.filter((f) => f.streamId === 1);
  assert.deepEqual(answer.map((f) => [f.type, f.flags]), [
    [T.HEADERS, F.END_HEADERS],
    [T.DATA, 0],
    [T.HEADERS, F.END_HEADERS | F.END_STREAM],
  ]);
  assert.equal(new Set(answer.map((f) => f.read)).size, 1);
  assert.deepEqual(h.s.calls, ["prepare ns/1/key", "stat ns/1/key"]);
});

Deno.test("native: grpc-message is percent-encoded UTF-8 on the wire", async () => {
  await using h = await harness();
  await using c = await h.client();
  const key = "ключ 100% \u{1F600}";
  const r = await call(c, 1, "Stat", statBody(key));
  assertTrailersOnly(r, Code.NOT_FOUND);
  assert.match(r.grpcMessage!, /^[\x20-\x7e]+$/);
  assert.ok(r.grpcMessage!.includes("%25"), r.grpcMessage!);
  assert.equal(
    decodeGrpcMessage(r.grpcMessage!),
    `snapshot ${JSON.stringify(key)} does not exist: not found`,
  );
});

// ---- requests the server must turn down ----

Deno.test("native: unknown :path → UNIMPLEMENTED, trailers-only", async () => {
  await using h = await harness();
  await using c = await h.client();
  assertTrailersOnly(await call(c, 1, "Nope", statBody("k")), Code.UNIMPLEMENTED, /unknown method/);
  await c.send(
    headersFrame(3, grpcRequestHeaders("/other.Service/Stat")),
    dataFrame(3, statBody("k"), true),
  );
  assertTrailersOnly(await c.grpcResponse(3), Code.UNIMPLEMENTED, /other\.Service/);
  assert.deepEqual(h.s.calls, []);
});

Deno.test("native: content-type must be application/grpc[+…|;…], else HTTP 415", async () => {
  await using h = await harness();
  await h.s.prepare("k", "");
  await using c = await h.client();
  let id = 1;
  for (
    const ct of ["application/json", "application/grpcx", "text/plain", "", "application/grpc-web"]
  ) {
    const headers = grpcRequestHeaders(path("Stat")).filter(([n]) => n !== "content-type");
    if (ct) headers.push(["content-type", ct]);
    await c.send(headersFrame(id, headers), dataFrame(id, statBody("k"), true));
    const r = await c.response(id);
    assert.equal(field(r.blocks[0], ":status"), "415", ct);
    assert.equal(field(r.blocks[0], "grpc-status"), String(Code.INTERNAL), ct);
    assert.match(field(r.blocks[0], "grpc-message") ?? "", /content-type/);
    assert.equal(r.ended, true);
    id += 2;
  }
  for (
    const ct of ["application/grpc+proto", "application/grpc;charset=utf-8", "application/grpc"]
  ) {
    const headers = grpcRequestHeaders(path("Stat")).map((
      [n, v],
    ): HeaderField => [n, n === "content-type" ? ct : v]);
    await c.send(headersFrame(id, headers), dataFrame(id, statBody("k"), true));
    assert.equal((await c.grpcResponse(id)).grpcStatus, Code.OK, ct);
    id += 2;
  }
  assert.equal(h.s.calls.filter((x) => x.startsWith("stat")).length, 3);
});

Deno.test("native: a method other than POST → HTTP 405", async () => {
  await using h = await harness();
  await using c = await h.client();
  for (const [i, method] of ["GET", "PUT", "OPTIONS"].entries()) {
    const headers = grpcRequestHeaders(path("Stat")).map((
      [n, v],
    ): HeaderField => [n, n === ":method" ? method : v]);
    await c.send(headersFrame(2 * i + 1, headers, true));
    const r = await c.response(2 * i + 1);
    assert.equal(field(r.blocks[0], ":status"), "405");
    assert.equal(field(r.blocks[0], "grpc-status"), String(Code.INTERNAL));
    assert.match(field(r.blocks[0], "grpc-message") ?? "", new RegExp(`method ${method}`));
    assert.equal(r.ended, true);
  }
  assert.deepEqual(h.s.calls, []);
});

Deno.test("native: a compressed message → UNIMPLEMENTED naming the encoding", async () => {
  await using h = await harness();
  await using c = await h.client();
  const body = grpcMessage(statRequest.encode({ key: "k" }), 1);
  assertTrailersOnly(
    await call(c, 1, "Stat", body, [["grpc-encoding", "gzip"]]),
    Code.UNIMPLEMENTED,
    /grpc-encoding "gzip"/,
  );
  assertTrailersOnly(await call(c, 3, "Stat", body), Code.UNIMPLEMENTED, /"identity"/);
  assert.deepEqual(h.s.calls, []);
});

Deno.test("native: a unary body that is not exactly one message → INTERNAL", async () => {
  await using h = await harness();
  await using c = await h.client();
  const one = statBody("k");
  const cases: [string, Uint8Array, RegExp][] = [
    ["two messages", concat(one, one), /got 2/],
    ["no message", new Uint8Array(0), /got 0/],
    ["truncated prefix", one.subarray(0, 3), /truncated/],
    ["truncated message", one.subarray(0, one.length - 1), /truncated/],
    ["flag 2", concat(new Uint8Array([2]), one.subarray(1)), /flag 2/],
    ["not protobuf", grpcMessage(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff])), /cannot decode/],
  ];
  let id = 1;
  for (const [name, body, message] of cases) {
    const r = await call(c, id, "Stat", body);
    assert.equal(r.grpcStatus, Code.INTERNAL, `${name}: ${r.grpcMessage}`);
    assertTrailersOnly(r, Code.INTERNAL, message);
    id += 2;
  }
  // a request with no DATA at all (END_STREAM on HEADERS)
  await c.send(headersFrame(id, grpcRequestHeaders(path("Stat")), true));
  assertTrailersOnly(await c.grpcResponse(id), Code.INTERNAL, /got 0/);
  assert.deepEqual(h.s.calls, []);
});

Deno.test("native: a body over 16 MiB + 5 → RESOURCE_EXHAUSTED at once, before its bytes are sent; the connection stays usable", async () => {
  await using h = await harness();
  await h.s.prepare("k", "");
  await using c = await h.client();
  const key = "k".repeat(MAX_MESSAGE_BYTES - 10);
  const huge = grpcMessage(concat(statRequest.encode({ key }), new Uint8Array(20)));
  assert.ok(huge.length > MAX_MESSAGE_BYTES + 5);
  await c.send(headersFrame(1, grpcRequestHeaders(path("Stat"))));
  // the prefix says 16 MiB + 23: refused without waiting for (or buffering) the rest
  const sent = await c.sendBody(1, huge, { end: true });
  const refused = await c.grpcResponse(1);
  await c.barrier();
  assert.equal(refused.grpcStatus, Code.RESOURCE_EXHAUSTED);
  assert.equal(
    decodeGrpcMessage(refused.grpcMessage ?? ""),
    `message of ${huge.length - 5} bytes is larger than the limit of ${MAX_MESSAGE_BYTES}`,
  );
  assert.ok(sent <= 65_535, `${sent} bytes were sent before the refusal`);
  // the answer ended the stream: the client is told to stop sending
  assert.equal(c.stream(1)!.rst, E.NO_ERROR);
  // a prefix that declares too much is refused without waiting for the bytes
  const declared = new Uint8Array([0, 0x01, 0, 0, 1]); // 16 MiB + 1
  assertTrailersOnly(await call(c, 3, "Stat", declared), Code.RESOURCE_EXHAUSTED, /16777217 bytes/);
  // the same connection serves the next call
  const r = await call(c, 5, "Stat", statBody("k"));
  assert.equal(r.grpcStatus, Code.OK);
  assert.deepEqual(h.s.calls, ["prepare k", "stat k"]);
  assert.equal(c.goaways().length, 0);
});

Deno.test("native: a message of exactly 16 MiB is accepted", async () => {
  await using h = await harness();
  await using c = await h.client();
  // a Stat request whose key fills the message to the limit: it reaches validation
  let key = "k".repeat(MAX_MESSAGE_BYTES - 16);
  while (statRequest.encode({ key }).length < MAX_MESSAGE_BYTES) key += "k";
  const message = statRequest.encode({ key });
  assert.equal(message.length, MAX_MESSAGE_BYTES);
  await c.send(headersFrame(1, grpcRequestHeaders(path("Stat"))));
  await c.sendBody(1, grpcMessage(message), { end: true });
  const r = await c.grpcResponse(1, 20_000);
  assert.equal(r.grpcStatus, 3, r.grpcMessage!); // INVALID_ARGUMENT: the key is too long
});

// ---- deadlines ----

Deno.test("native: grpc-timeout 50m on a held call → DEADLINE_EXCEEDED; the server carries on", async () => {
  await using t = await gated("stat");
  const { g, h, c } = t;
  const started = performance.now();
  const r = await call(c, 1, "Stat", statBody("k"), [["grpc-timeout", "50m"]]);
  const took = performance.now() - started;
  assertTrailersOnly(r, Code.DEADLINE_EXCEEDED);
  assert.ok(took >= 45 && took < 2000, `took ${took} ms`);
  g.release();
  await poll(() => h.logs.some((l) => l.includes("method=Stat")), "the Stat to finish");
  // logged as what it was: the deadline passed (not a cancellation by the client)
  assert.match(h.logs.find((l) => l.includes("method=Stat"))!, /code=DEADLINE_EXCEEDED/);
  // nothing more on the expired stream
  assert.equal(c.frames.filter((f) => f.streamId === 1).length, 1);
  const ok = await call(c, 3, "Stat", statBody("k"));
  assert.equal(ok.grpcStatus, Code.OK);
});

Deno.test("native: a deadline further away than setTimeout's range does not fire at once", async () => {
  await using t = await gated("stat");
  const { g, c } = t;
  // 2^31 ms is about 24.9 days; grpc-go sends e.g. "2592000S" for a 30-day context deadline
  let id = 1;
  for (const timeout of ["2592000S", "99999999H", "3000000S"]) {
    await sendCall(c, id, "Stat", statBody("k"), [["grpc-timeout", timeout]]);
    id += 2;
  }
  await poll(() => g.entered() === 3, "the calls to reach the snapshotter");
  // time is what is tested here: a deadline past 2^31-1 ms given to setTimeout fires after
  // 1 ms; give such a timer ample time, then let the barrier bring in whatever it sent
  await new Promise((r) => setTimeout(r, 50));
  await c.barrier();
  for (let i = 1; i < id; i += 2) {
    assert.equal(c.stream(i), undefined, `stream ${i} answered early`);
  }
  g.release();
  for (let i = 1; i < id; i += 2) assert.equal((await c.grpcResponse(i)).grpcStatus, Code.OK);
});

Deno.test("native: a malformed grpc-timeout is ignored", async () => {
  await using h = await harness();
  await h.s.prepare("k", "");
  await using c = await h.client();
  let id = 1;
  for (const timeout of ["", "1", "5x", "-5m", "123456789m", "1.5S"]) {
    const r = await call(c, id, "Stat", statBody("k"), [["grpc-timeout", timeout]]);
    assert.equal(r.grpcStatus, Code.OK, JSON.stringify(timeout));
    id += 2;
  }
});

// ---- streams and connections ----

Deno.test("native: 200 parallel unary calls on one connection are each answered correctly", async () => {
  await using h = await harness();
  for (let i = 0; i < 200; i += 2) await h.s.prepare(`key-${i}`, "", { i: String(i) });
  await using c = await h.client();
  const frames: Uint8Array[] = [];
  for (let i = 0; i < 200; i++) {
    frames.push(headersFrame(2 * i + 1, grpcRequestHeaders(path("Stat"))));
  }
  for (let i = 0; i < 200; i++) frames.push(dataFrame(2 * i + 1, statBody(`key-${i}`), true));
  await c.send(...frames);
  const results = await Promise.all(
    Array.from({ length: 200 }, (_, i) => c.grpcResponse(2 * i + 1, 10_000)),
  );
  results.forEach((r, i) => {
    if (i % 2 === 0) {
      assert.equal(r.grpcStatus, Code.OK, `call ${i}: ${r.grpcMessage}`);
      const info = statResponse.decode(r.messages[0]).info!;
      assert.equal(info.name, `key-${i}`);
      assert.deepEqual(info.labels, { i: String(i) });
    } else {
      assertTrailersOnly(r, Code.NOT_FOUND, new RegExp(`"key-${i}"`));
    }
  });
  assert.equal(h.s.calls.filter((x) => x.startsWith("stat")).length, 200);
});

Deno.test("native: past MAX_CONCURRENT_STREAMS (1000) a stream is refused with REFUSED_STREAM", async () => {
  await using h = await harness();
  await h.s.prepare("k", "");
  await using c = await h.client();
  const frames: Uint8Array[] = [];
  // 1000 open streams (no END_STREAM: never dispatched), then one more
  for (let i = 0; i < 1001; i++) {
    frames.push(headersFrame(2 * i + 1, grpcRequestHeaders(path("Stat"))));
  }
  await c.send(...frames);
  const refused = await c.response(2001);
  assert.equal(refused.rst, E.REFUSED_STREAM);
  assert.equal(refused.blocks.length, 0);
  // the open ones still work
  await c.send(dataFrame(1, statBody("k"), true));
  assert.equal((await c.grpcResponse(1)).grpcStatus, Code.OK);
  // and the freed slot takes a new stream
  assert.equal((await call(c, 2003, "Stat", statBody("k"))).grpcStatus, Code.OK);
  assert.equal(c.goaways().length, 0);
});

Deno.test("native: RST_STREAM mid-call cancels that call only", async () => {
  await using t = await gated("usage");
  const { g, h, c } = t;
  await sendCall(c, 1, "Usage", statBody("k"));
  await poll(() => g.entered() === 1, "the Usage call");
  await c.send(rstFrame(1, E.CANCEL));
  // other calls are served while the cancelled one is still inside the snapshotter
  assert.equal((await call(c, 3, "Stat", statBody("k"))).grpcStatus, Code.OK);
  g.release();
  await poll(
    () => h.logs.some((l) => l.includes("method=Usage") && l.includes("code=CANCELLED")),
    "the Usage call to log CANCELLED",
  );
  assert.equal((await call(c, 5, "Stat", statBody("k"))).grpcStatus, Code.OK);
  assert.equal(c.frames.filter((f) => f.streamId === 1).length, 0, "nothing sent on stream 1");
});

Deno.test("native: a List larger than a tiny peer window arrives intact, never beyond the window", async () => {
  await using h = await harness({ listBatchSize: 3 });
  const labels = { big: "x".repeat(500) };
  for (let i = 0; i < 60; i++) await h.s.prepare(`k${String(i).padStart(3, "0")}`, "", labels);
  await using c = await h.client([[S.INITIAL_WINDOW_SIZE, 100]], { autoWindowUpdate: false });
  await sendCall(c, 1, "List", grpcMessage(listRequest.encode({ filters: [] })));
  let streamCredit = 100;
  let connCredit = 65_535;
  const received = () => c.stream(1)?.data.length ?? 0;
  let step = 0;
  while (!c.stream(1)?.ended) {
    // wait until the server has used what we allowed, or finished
    await c.waitUntil(
      () => received() === Math.min(streamCredit, connCredit) || c.stream(1)?.ended === true,
      5000,
      `data up to ${Math.min(streamCredit, connCredit)}`,
    );
    await c.barrier(); // nothing more than the credit came
    assert.ok(received() <= streamCredit && received() <= connCredit, `${received()} > credit`);
    if (c.stream(1)?.ended) break;
    const grant = [1, 77, 1000, 4096, 5000][step++ % 5];
    streamCredit += grant;
    connCredit += grant;
    await c.send(windowUpdateFrame(1, grant), windowUpdateFrame(0, grant));
  }
  const r = await c.grpcResponse(1);
  assert.equal(r.grpcStatus, Code.OK, r.grpcMessage!);
  const names = r.messages.flatMap((m) => listResponse.decode(m).info.map((i) => i.name));
  assert.equal(r.messages.length, 20);
  assert.deepEqual(names.sort(), [...h.s.infos.keys()].sort());
  for (const m of r.messages) {
    for (const info of listResponse.decode(m).info) assert.deepEqual(info.labels, labels);
  }
  assert.ok(step > 10, `${step} window updates`);
});

Deno.test("native: List DATA frames respect the peer's MAX_FRAME_SIZE", async () => {
  await using h = await harness({ listBatchSize: 1000 });
  for (let i = 0; i < 100; i++) await h.s.prepare(`k${i}`, "", { v: "y".repeat(1000) });
  for (const max of [16_384, 100_000]) {
    await using c = await h.client([[S.MAX_FRAME_SIZE, max], [S.INITIAL_WINDOW_SIZE, 1 << 24]]);
    await c.send(windowUpdateFrame(0, 1 << 24));
    const r = await call(c, 1, "List", grpcMessage(listRequest.encode({})));
    assert.equal(r.grpcStatus, Code.OK);
    assert.equal(listResponse.decode(r.messages[0]).info.length, 100);
    assert.ok(r.dataFrameSizes.every((n) => n <= max), `${Math.max(...r.dataFrameSizes)} > ${max}`);
    assert.equal(Math.max(...r.dataFrameSizes), max);
  }
});

Deno.test("native: a List stalled by flow control holds its place; RST_STREAM ends it as CANCELLED", async () => {
  await using h = await harness({ listBatchSize: 1 });
  for (let i = 0; i < 50; i++) await h.s.prepare(`k${i}`, "", { v: "z".repeat(2000) });
  await using c = await h.client([[S.INITIAL_WINDOW_SIZE, 1000]], { autoWindowUpdate: false });
  await sendCall(c, 1, "List", grpcMessage(listRequest.encode({})));
  await c.waitUntil(() => (c.stream(1)?.data.length ?? 0) === 1000);
  await c.barrier();
  assert.equal(c.stream(1)!.data.length, 1000);
  assert.ok(!h.logs.some((l) => l.includes("method=List")), "the List is still running");
  // other calls on the connection are not stuck behind it
  await h.s.prepare("other", "");
  assert.equal((await call(c, 3, "Stat", statBody("other"))).grpcStatus, Code.OK);
  await c.send(rstFrame(1, E.CANCEL));
  await poll(
    () => h.logs.some((l) => l.includes("method=List") && l.includes("code=CANCELLED")),
    "the List to end CANCELLED",
  );
});

Deno.test("native: client GOAWAY — the open call is answered, then the server closes", async () => {
  await using t = await gated("stat");
  const { g, c } = t;
  await sendCall(c, 1, "Stat", statBody("k"));
  await poll(() => g.entered() === 1, "the call");
  await c.send(goawayFrame(1, E.NO_ERROR));
  await c.barrier();
  assert.equal(c.eof, false);
  g.release();
  assert.equal((await c.grpcResponse(1)).grpcStatus, Code.OK);
  await c.waitEof();
});

Deno.test("native: graceful shutdown sends GOAWAY, refuses new streams, waits for the call in flight", async () => {
  await using t = await gated("stat");
  const { g, h, c } = t;
  await sendCall(c, 3, "Stat", statBody("k"));
  await poll(() => g.entered() === 1, "the call");
  let closed = false;
  const closing = h.server.close().then(() => closed = true);
  await c.waitFrame((f) => f.type === T.GOAWAY);
  assert.deepEqual(c.goaways(), [{ lastStreamId: 3, code: E.NO_ERROR, debug: "" }]);
  await sendCall(c, 5, "Stat", statBody("k"));
  assert.equal((await c.response(5)).rst, E.REFUSED_STREAM);
  await c.barrier();
  assert.equal(closed, false);
  assert.equal(h.s.isClosed(), false);
  g.release();
  const r = await c.grpcResponse(3);
  assert.equal(r.grpcStatus, Code.OK);
  assert.equal(statResponse.decode(r.messages[0]).info?.name, "k");
  await c.waitEof();
  await closing;
  assert.equal(h.s.isClosed(), true);
});

Deno.test("native: garbage after the preface gets GOAWAY; other connections are unaffected", async () => {
  await using h = await harness();
  await h.s.prepare("k", "");
  await using good = await h.client();
  await using bad = await h.client();
  await bad.send(new TextEncoder().encode("\x00\x00\x08\x06\x00\x00\x00\x00\x01garbage!"));
  await bad.waitEof();
  assert.equal(bad.goaways()[0].code, E.PROTOCOL_ERROR); // PING on stream 1
  assert.equal((await call(good, 1, "Stat", statBody("k"))).grpcStatus, Code.OK);
});

Deno.test("native: a client that disconnects abruptly mid-request or mid-call leaves the server serving", async () => {
  const g = gate("remove");
  await using h = await harness({ gate: g.fn });
  await h.s.prepare("k", "");
  await h.s.prepare("k2", "");
  const conn = await Deno.connect({ transport: "unix", path: h.path });
  const removeBody = grpcMessage(proto.codec("RemoveSnapshotRequest").encode({ key: "k" }));
  await conn.write(concat(
    CLIENT_PREFACE,
    settingsFrame(),
    headersFrame(1, grpcRequestHeaders(path("Remove"))),
    dataFrame(1, removeBody, true),
    headersFrame(3, grpcRequestHeaders(path("Stat"))),
    dataFrame(3, statBody("k2")).subarray(0, 12), // cut inside a frame
  ));
  await poll(() => g.entered() === 1, "the Remove");
  const open = await serverConnections(h.path);
  conn.close(); // nothing read: a hard close
  await poll(
    async () => await serverConnections(h.path) === open - 1,
    "the server to close the dropped connection",
  );
  g.release();
  await poll(() => !h.s.infos.has("k"), "the Remove to complete");
  await poll(
    () => h.logs.some((l) => l.includes("method=Remove") && l.includes("code=CANCELLED")),
    "the Remove to log CANCELLED",
  );
  await using c = await h.client();
  assert.equal((await call(c, 1, "Stat", statBody("k2"))).grpcStatus, Code.OK);
});

Deno.test("native: a List's messages decode with the client's own parser", async () => {
  // a cross-check of framing on a multi-message body (3 messages) against parseGrpcBody
  await using h = await harness({ listBatchSize: 2 });
  for (let i = 0; i < 5; i++) await h.s.prepare(`k${i}`, "");
  await using c = await h.client();
  const r = await call(c, 1, "List", grpcMessage(listRequest.encode({})));
  assert.equal(r.grpcStatus, Code.OK);
  assert.equal(parseGrpcBody(r.data).length, 3);
  assert.deepEqual(r.blocks.length, 2);
});

Deno.test("native: running out of file descriptors at accept is survived: new connections are served once fds are free", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-emfile-" });
  const sock = `${dir}/s.sock`;
  const url = (p: string) => new URL(p, import.meta.url).href;
  const code = `
    import { startServer } from ${JSON.stringify(url("../server.ts"))};
    import { createLogger } from ${JSON.stringify(url("../../util/log.ts"))};
    import { memorySnapshotter } from ${
    JSON.stringify(url("../../../testing/memory_snapshotter.ts"))
  };
    const s = memorySnapshotter();
    await s.prepare("k", "");
    await startServer({
      address: ${JSON.stringify(sock)},
      snapshotter: s,
      logger: createLogger({ level: "debug", write: (l) => console.log(l) }),
    });
    console.log("ready");`;
  // a low fd limit for the server process only
  const child = new Deno.Command("sh", {
    args: ["-c", `ulimit -n 64 && exec "$0" eval "$1"`, Deno.execPath(), code],
    cwd: new URL("../../..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: string[] = [];
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) lines.push(...decoder.decode(chunk).split("\n"));
  })();
  const conns: Deno.UnixConn[] = [];
  try {
    await poll(() => lines.includes("ready"), 'the server process to print "ready"', {
      timeoutMs: 20_000,
      detail: () => lines.join("\n"),
    });
    // more connections than the server can hold open
    for (let i = 0; i < 100; i++) {
      const conn = await Deno.connect({ transport: "unix", path: sock });
      conns.push(conn);
      await conn.write(concat(CLIENT_PREFACE, settingsFrame()));
    }
    await poll(
      () => lines.some((l) => /accept/i.test(l) && /too many open files/i.test(l)),
      "the server to run out of fds",
    );
    for (const conn of conns.splice(0)) conn.close();
    const c = await RawH2Client.connect(sock);
    try {
      await c.handshake().catch((err) => assert.fail(`${err}\n${lines.join("\n")}`));
      const r = await call(c, 1, "Stat", statBody("k"));
      assert.equal(r.grpcStatus, Code.OK);
    } finally {
      await c.close().catch(() => {});
    }
  } finally {
    for (const conn of conns) conn.close();
    child.kill("SIGKILL");
    await child.status;
    await reading;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("native: a List's messages leave in a few socket writes, not a write (and a wait) each", async () => {
  const s = memorySnapshotter({ now: () => ({ ...T0 }) });
  for (let i = 0; i < 400; i++) await s.prepare(`k${i}`, "", { v: "x".repeat(200) });
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-writes-" });
  const inner = Deno.listen({ transport: "unix", path: `${dir}/s.sock` });
  let writes = 0;
  // the server's side of each connection, its writes counted
  const counted = (conn: Deno.Conn): Deno.Conn =>
    new Proxy(conn, {
      get(target, prop) {
        if (prop === "write") {
          return (p: Uint8Array) => (writes++, target.write(p));
        }
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  const listener = new Proxy(inner, {
    get(target, prop) {
      if (prop === "accept") return async () => counted(await target.accept());
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const server = serveNative(listener, {
    service: createService({ snapshotter: s, logger: silentLogger(), listBatchSize: 10 }),
    proto: loadSnapshotsProto(),
    logger: silentLogger(),
    maxMessageBytes: MAX_MESSAGE_BYTES,
  });
  // a raw client (not grpc-js: its node:net closes a socket's fd twice, which can break a later
  // test's connect) with a 16 MiB window: the whole List fits in it
  const c = await RawH2Client.connect(`${dir}/s.sock`);
  try {
    await c.handshake([[S.INITIAL_WINDOW_SIZE, 1 << 24]]);
    await c.send(windowUpdateFrame(0, 1 << 24));
    await c.barrier();
    const before = writes;
    const r = await call(c, 1, "List", grpcMessage(listRequest.encode({})));
    assert.equal(r.grpcStatus, Code.OK);
    const messages = r.messages.length;
    assert.equal(r.messages.flatMap((m) => listResponse.decode(m).info).length, 400);
    assert.equal(messages, 40);
    // 40 messages of ~2.5 KB, all within the window: those queued together leave together
    // (one write and one wait each: 41 writes)
    assert.ok(
      writes - before <= messages / 2,
      `${writes - before} writes for ${messages} messages`,
    );
  } finally {
    await c.close();
    await server.shutdown(1000);
    Deno.removeSync(dir, { recursive: true });
  }
});
