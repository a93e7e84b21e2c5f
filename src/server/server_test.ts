/**
 * Transport-level tests of the gRPC server over a real unix socket with a grpc-js client. The
 * snapshotter is an in-memory test double (testing/memory_snapshotter.ts); the real one is
 * tested over gRPC in tests/kernel/server_rpc_test.ts.
 */
import assert from "node:assert/strict";
import { Metadata, status as GrpcStatus } from "@grpc/grpc-js";
import { NotFoundError } from "../util/errors.ts";
import { createLogger } from "../util/log.ts";
import type { Snapshotter, Timestamp } from "../snapshots/types.ts";
import {
  type MemorySnapshotter,
  memorySnapshotter,
  type MemorySnapshotterOptions,
} from "../../testing/memory_snapshotter.ts";
import { poll } from "../../testing/poll.ts";
import { makeStaleSocket } from "../../testing/socket_fixtures.ts";
import { serverConnections } from "../../testing/socket_peers.ts";
import { startTestServer, type TestServer } from "../../testing/test_server.ts";
import {
  connectSnapshots,
  isServiceError,
  type SnapshotsClient,
} from "../../testing/snapshots_client.ts";
import { type ServerOptions, startServer, type Transport, TRANSPORTS } from "./server.ts";
import { SocketError } from "./socket.ts";

const HANGING_CLIENT = new URL("../../testing/hanging_client.ts", import.meta.url).pathname;

/** Registers `fn` once per transport: both must behave the same for a grpc-js client. */
function test(name: string, fn: (transport: Transport) => Promise<void>): void {
  for (const transport of TRANSPORTS) Deno.test(`[${transport}] ${name}`, () => fn(transport));
}

const T0: Timestamp = { seconds: 1_700_000_000, nanos: 123_456_789 };

/** A served memory snapshotter `s`; the socket's directory is made by the server. */
interface Harness extends TestServer {
  s: MemorySnapshotter;
}

async function harness(
  transport: Transport,
  opts: MemorySnapshotterOptions & Partial<Omit<ServerOptions, "address">> = {},
): Promise<Harness> {
  const s = memorySnapshotter({ now: () => ({ ...T0 }), ...opts });
  const served = await startTestServer({
    prefix: "dmsnap-srv-",
    socket: "run/s.sock",
    transport,
    ...opts,
    snapshotter: opts.snapshotter ?? s,
  });
  return Object.assign(served, { s });
}

/** Resolves with the call's gRPC error (fails when the call succeeds). */
async function grpcError(
  p: Promise<unknown>,
  what = "the call",
): Promise<{ code: number; details: string }> {
  try {
    await p;
  } catch (err) {
    assert.ok(isServiceError(err), `expected a gRPC error, got ${err}`);
    return { code: err.code, details: err.details };
  }
  assert.fail(`expected ${what} to fail`);
}

/**
 * A List call whose messages are counted as they arrive (the client's `list` only resolves at
 * the end), for cancelling it mid-stream.
 */
function listStream(client: SnapshotsClient) {
  const metadata = new Metadata();
  metadata.set("containerd-namespace", "default");
  const call = (client.grpc as unknown as {
    List(request: unknown, metadata: Metadata): {
      cancel(): void;
      on(event: string, listener: (arg: unknown) => void): void;
    };
  }).List({ filters: [] }, metadata);
  let messages = 0;
  const done = new Promise<void>((resolve, reject) => {
    call.on("data", () => messages++);
    call.on("error", reject);
    call.on("end", () => resolve());
  });
  return { messages: () => messages, cancel: () => call.cancel(), done };
}

/** A gate: calls for `method` wait until released. */
function gate(method: string) {
  const { promise, resolve } = Promise.withResolvers<void>();
  const entered = Promise.withResolvers<void>();
  return {
    fn: (m: string) => {
      if (m !== method) return Promise.resolve();
      entered.resolve();
      return promise;
    },
    entered: entered.promise,
    release: () => resolve(),
  };
}

test("all ten RPCs round-trip through the socket", async (transport) => {
  await using h = await harness(transport);
  const { client, s } = h;
  const mounts = await client.prepare("ns/1/base", "", { "containerd.io/snapshot.ref": "x" });
  assert.deepEqual(mounts, [{
    type: "ext4",
    source: "/dev/mapper/mem-9",
    target: "",
    options: [],
  }]);
  await client.commit("ns/2/layer", "ns/1/base", { a: "1" });
  assert.deepEqual(await client.stat("ns/2/layer"), {
    name: "ns/2/layer",
    parent: "",
    kind: "committed",
    created: T0,
    updated: T0,
    labels: { a: "1" },
  });
  const view = await client.view("ns/3/view", "ns/2/layer");
  assert.deepEqual(view[0].options, ["ro"]);
  assert.equal((await client.stat("ns/3/view")).kind, "view");
  await client.prepare("ns/4/active", "ns/2/layer");
  assert.equal((await client.stat("ns/4/active")).kind, "active");
  assert.deepEqual(await client.mounts("ns/4/active"), await s.mounts("ns/4/active"));
  const updated = await client.update("ns/2/layer", { b: "2", c: "" }, ["labels.b", "labels.a"]);
  assert.deepEqual(updated.labels, { b: "2" });
  assert.deepEqual(await client.usage("ns/4/active"), { size: 4096 * 11, inodes: 0 });
  const list = await client.list();
  assert.deepEqual(list.infos.map((i) => i.name).sort(), [
    "ns/2/layer",
    "ns/3/view",
    "ns/4/active",
  ]);
  assert.deepEqual(list.infos.find((i) => i.name === "ns/2/layer"), updated);
  await client.remove("ns/3/view");
  await client.cleanup();
  assert.deepEqual(s.calls, [
    "prepare ns/1/base",
    "commit ns/1/base",
    "stat ns/2/layer",
    "view ns/3/view",
    "stat ns/3/view",
    "prepare ns/4/active",
    "stat ns/4/active",
    "mounts ns/4/active",
    "mounts ns/4/active",
    "update ns/2/layer",
    "usage ns/4/active",
    "list ",
    "remove ns/3/view",
    "cleanup ",
  ]);
});

test("timestamps: nanosecond precision and int64 seconds survive the wire", async (transport) => {
  const stamps: Timestamp[] = [
    { seconds: 1_700_000_000, nanos: 999_999_999 },
    { seconds: 253_402_300_799, nanos: 1 },
    { seconds: 2 ** 33 + 7, nanos: 0 },
  ];
  let i = 0;
  await using h = await harness(transport, { now: () => stamps[i++ % stamps.length] });
  for (const t of stamps) {
    const key = `k${t.seconds}`;
    await h.client.prepare(key);
    const info = await h.client.stat(key);
    assert.deepEqual(info.created, t);
    assert.deepEqual(info.updated, t);
  }
});

test("List streams in batches of 100 by default, and of any configured size", async (transport) => {
  {
    await using h = await harness(transport);
    assert.deepEqual(await h.client.list(), { infos: [], messages: 0 });
    for (let i = 0; i < 250; i++) await h.s.prepare(`k${i}`, "");
    const r = await h.client.list();
    assert.equal(r.infos.length, 250);
    assert.equal(r.messages, 3);
    assert.deepEqual(new Set(r.infos.map((x) => x.name)).size, 250);
  }
  {
    await using h = await harness(transport, { listBatchSize: 7 });
    for (let i = 0; i < 50; i++) await h.s.prepare(`k${i}`, "");
    const r = await h.client.list(["kind==active", 'labels."a.b"~=/x|y/']);
    assert.equal(r.infos.length, 50);
    assert.equal(r.messages, 8);
  }
});

test("List: Infos with many labels are split so no message nears the 16 MiB limit", async (transport) => {
  await using h = await harness(transport);
  const labels: Record<string, string> = {};
  for (let i = 0; i < 250; i++) labels[`label-${i}`] = "x".repeat(4000);
  for (let i = 0; i < 30; i++) await h.s.prepare(`big${i}`, "", labels); // ~1 MiB each
  const r = await h.client.list();
  assert.equal(r.infos.length, 30);
  assert.ok(r.messages >= 8, `${r.messages} messages`);
  assert.deepEqual(r.infos[29].labels, labels);
});

test("snapshotter errors arrive with containerd's codes and `msg: class` messages", async (transport) => {
  await using h = await harness(transport);
  const { client } = h;
  await client.prepare("a");
  assert.deepEqual(await grpcError(client.stat("nope")), {
    code: GrpcStatus.NOT_FOUND,
    details: 'snapshot "nope" does not exist: not found',
  });
  assert.deepEqual(await grpcError(client.prepare("a")), {
    code: GrpcStatus.ALREADY_EXISTS,
    details: 'snapshot "a" already exists: already exists',
  });
  assert.deepEqual(await grpcError(client.prepare("b", "a")), {
    code: GrpcStatus.INVALID_ARGUMENT,
    details: 'prepare "b": parent "a" is not committed: invalid argument',
  });
  await client.commit("c", "a");
  await client.prepare("d", "c");
  const rm = await grpcError(client.remove("c"));
  assert.equal(rm.code, GrpcStatus.FAILED_PRECONDITION);
  assert.match(rm.details, /remove/);
  assert.match(rm.details, /: failed precondition$/);
  assert.equal((await grpcError(client.mounts("c"))).code, GrpcStatus.FAILED_PRECONDITION);
  assert.equal((await grpcError(client.usage("zz"))).code, GrpcStatus.NOT_FOUND);
  assert.equal((await grpcError(client.commit("x", "zz"))).code, GrpcStatus.NOT_FOUND);
});

test("bad requests are InvalidArgument and never reach the snapshotter", async (transport) => {
  await using h = await harness(transport);
  const { client, s } = h;
  await s.prepare("a", "");
  await s.commit("c", "a");
  s.calls.length = 0;
  const before = structuredClone([...s.infos]);
  const cases: [string, () => Promise<unknown>, RegExp][] = [
    ["empty key", () => client.prepare(""), /key "": must not be empty/],
    ["empty stat key", () => client.stat(""), /must not be empty/],
    ["long key", () => client.prepare("k".repeat(4097)), /longer than the maximum of 4096 bytes/],
    ["NUL key", () => client.view("a\0b", "c"), /NUL/],
    ["long parent", () => client.prepare("x", "p".repeat(5000)), /parent/],
    ["long label", () => client.prepare("x", "", { k: "v".repeat(4096) }), /label "k"/],
    ["empty label key", () => client.prepare("x", "", { "": "v" }), /key must not be empty/],
    ["empty commit name", () => client.commit("", "a"), /name "": must not be empty/],
    ["empty update name", () => client.update("", { a: "b" }), /must not be empty/],
    ["mask: parent", () => client.update("c", {}, ["parent"]), /cannot update "parent" field/],
    ["mask: kind", () => client.update("c", {}, ["labels.a", "kind"]), /cannot update "kind"/],
    ["mask: labels.", () => client.update("c", {}, ["labels."]), /empty label key/],
    [
      "mask: long label",
      () => client.update("c", {}, ["labels." + "k".repeat(5000)]),
      /greater than/,
    ],
    ["filter", () => client.list(["name=="]), /./],
    ["filter 2", () => client.list(['labels."unterminated']), /./],
    ["usage", () => client.usage(""), /must not be empty/],
    ["remove", () => client.remove(""), /must not be empty/],
    ["mounts", () => client.mounts(""), /must not be empty/],
  ];
  for (const [name, call, message] of cases) {
    const e = await grpcError(call(), name);
    assert.equal(e.code, GrpcStatus.INVALID_ARGUMENT, `${name}: ${e.details}`);
    assert.match(e.details, message, name);
    assert.match(e.details, /: invalid argument$/, name);
  }
  assert.deepEqual(s.calls, []);
  assert.deepEqual([...s.infos], before);
});

test("an Update with no info names nothing: InvalidArgument", async (transport) => {
  await using h = await harness(transport);
  const e = await grpcError(h.client.raw("Update", {}));
  assert.equal(e.code, GrpcStatus.INVALID_ARGUMENT);
  assert.deepEqual(h.s.calls, []);
});

test("whatever the snapshotter throws, the caller gets Unknown and the server lives", async (transport) => {
  const thrown: unknown[] = [new TypeError("boom"), "a string", undefined, null, { odd: 1 }];
  let i = 0;
  const s = memorySnapshotter();
  const bad: Snapshotter = {
    ...s,
    stat: () => Promise.reject(thrown[i++]),
    // a synchronous throw, not a rejection
    usage: () => {
      throw new RangeError("sync");
    },
  };
  await using h = await harness(transport, { snapshotter: bad });
  for (let n = 0; n < thrown.length; n++) {
    const e = await grpcError(h.client.stat("k"));
    assert.equal(e.code, GrpcStatus.UNKNOWN);
    assert.match(e.details, /: unknown$/);
  }
  const sync = await grpcError(h.client.usage("k"));
  assert.deepEqual(sync, { code: GrpcStatus.UNKNOWN, details: 'usage "k": sync: unknown' });
  await h.client.prepare("still-alive");
  assert.ok(h.logs.some((l) => l.includes("level=warn") && l.includes("boom")));
});

test("a client that cancels mid-call gets CANCELLED; the server carries on", async (transport) => {
  const g = gate("stat");
  await using h = await harness(transport, { gate: g.fn });
  await h.s.prepare("k", "");
  const ac = new AbortController();
  const call = grpcError(h.client.stat("k", { signal: ac.signal }));
  await g.entered;
  ac.abort();
  assert.equal((await call).code, GrpcStatus.CANCELLED);
  // the client sent RST_STREAM before this call's HEADERS, on the same connection: once it is
  // answered the server has seen the cancellation. Only then does the snapshotter finish.
  await h.client.prepare("k2");
  g.release();
  assert.equal((await h.client.stat("k2")).name, "k2");
  await poll(
    () => h.logs.some((l) => l.includes("method=Stat") && l.includes("code=CANCELLED")),
    "the cancelled Stat to log CANCELLED",
    { detail: () => h.logs.join("\n") },
  );
});

test("a deadline that passes mid-call gives DEADLINE_EXCEEDED; the server carries on", async (transport) => {
  const g = gate("usage");
  await using h = await harness(transport, { gate: g.fn });
  await h.s.prepare("k", "");
  const e = await grpcError(h.client.usage("k", { deadline: Date.now() + 100 }));
  assert.equal(e.code, GrpcStatus.DEADLINE_EXCEEDED);
  g.release();
  assert.equal((await h.client.stat("k")).name, "k");
});

test("a client process killed mid-call does not disturb the server", async (transport) => {
  const g = gate("remove");
  await using h = await harness(transport, { gate: g.fn });
  await h.s.prepare("k", "");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", HANGING_CLIENT, h.path, "k"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await g.entered;
  const open = await serverConnections(h.path);
  child.kill("SIGKILL");
  await child.status;
  // the snapshotter finishes only after the server has let go of the dead client
  await poll(
    async () => await serverConnections(h.path) === open - 1,
    "the server to close the killed client's connection",
  );
  g.release();
  await poll(() => h.s.infos.size === 0, "the Remove to complete"); // the remove itself completed
  await h.client.prepare("after");
  assert.equal((await h.client.stat("after")).name, "after");
});

test("cancelling a List mid-stream stops it; Stat works while a List is held", async (transport) => {
  const g = gate("list");
  await using h = await harness(transport, { gate: g.fn, listBatchSize: 1 });
  const big = { big: "x".repeat(4000) };
  for (let i = 0; i < 3000; i++) await h.s.prepare(`k${i}`, "", big);
  const listing = listStream(h.client);
  await g.entered;
  // the List is held inside the snapshotter: other calls must not wait for it
  assert.equal((await h.client.stat("k1")).name, "k1");
  g.release();
  await poll(() => listing.messages() > 0, "the first List message");
  listing.cancel();
  assert.equal((await grpcError(listing.done)).code, GrpcStatus.CANCELLED);
  await poll(
    () => h.logs.some((l) => l.includes("method=List") && l.includes("code=CANCELLED")),
    "the List to log CANCELLED",
    { detail: () => h.logs.join("\n") },
  );
  assert.equal((await h.client.stat("k2999")).name, "k2999");
});

test("one debug line per RPC with method, key, duration and code", async (transport) => {
  await using h = await harness(transport);
  await h.client.prepare("ns/1/a");
  await grpcError(h.client.stat("missing"));
  await h.client.list();
  const rpc = h.logs.filter((l) => l.includes('msg="rpc"'));
  assert.equal(rpc.length, 3);
  assert.match(
    rpc[0],
    /level=debug msg="rpc" method=Prepare key=ns\/1\/a code=OK duration_ms=[\d.]+/,
  );
  assert.match(rpc[1], /method=Stat key=missing code=NOT_FOUND duration_ms=[\d.]+ error=/);
  assert.match(rpc[2], /method=List code=OK/);
});

test("socket: created with its directory, mode 0660, removed at close; db closed", async (transport) => {
  const h = await harness(transport);
  try {
    const st = await Deno.lstat(h.path);
    assert.ok(st.isSocket);
    assert.equal(st.mode! & 0o777, 0o660);
    assert.equal(h.server.replacedStaleSocket, false);
    h.client.close();
    await h.server.close();
    await assert.rejects(Deno.lstat(h.path), Deno.errors.NotFound);
    assert.equal(h.s.isClosed(), true);
    await h.server.close(); // idempotent
  } finally {
    Deno.removeSync(h.dir, { recursive: true });
  }
});

test("socket: a stale one is replaced, a live one refused with a clear error", async (transport) => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/s.sock`;
    await makeStaleSocket(path);
    const first = await startServer({
      transport,
      address: `unix://${path}`,
      snapshotter: memorySnapshotter(),
    });
    assert.equal(first.replacedStaleSocket, true);
    const second = memorySnapshotter();
    await assert.rejects(
      startServer({ transport, address: path, snapshotter: second }),
      (err: Error) =>
        err instanceof SocketError &&
        err.message ===
          `Cannot listen on "${path}": another server is already listening on this socket`,
    );
    assert.equal(second.isClosed(), false);
    const client = connectSnapshots(path);
    await client.prepare("still-served");
    client.close();
    await first.close();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

test("graceful close: in-flight calls finish, then the socket goes away", async (transport) => {
  const g = gate("prepare");
  const h = await harness(transport, { gate: g.fn });
  try {
    const inflight = h.client.prepare("slow");
    await g.entered;
    const closing = h.server.close();
    let closed = false;
    closing.then(() => (closed = true));
    // once new connections are refused, close() has stopped accepting and waits for calls
    await poll(
      () => Deno.connect({ transport: "unix", path: h.path }).then((c) => c.close(), () => true),
      "the server to stop accepting connections",
    );
    assert.equal(closed, false, "close waits for the in-flight call");
    assert.equal(h.s.isClosed(), false, "the snapshotter stays open while calls run");
    g.release();
    assert.equal((await inflight).length, 1);
    await closing;
    assert.equal(h.s.isClosed(), true);
    await assert.rejects(Deno.lstat(h.path), Deno.errors.NotFound);
  } finally {
    h.client.close();
    Deno.removeSync(h.dir, { recursive: true });
  }
});

test("graceful close is bounded: a stuck call is cut off after the timeout", async (transport) => {
  const g = gate("cleanup");
  const h = await harness(transport, { gate: g.fn, shutdownTimeoutMs: 200 });
  try {
    const stuck = grpcError(h.client.cleanup());
    await g.entered;
    const started = performance.now();
    await h.server.close();
    const took = performance.now() - started;
    assert.ok(took >= 150 && took < 3000, `took ${took} ms`);
    assert.notEqual((await stuck).code, GrpcStatus.OK);
    assert.equal(h.s.isClosed(), true);
    assert.ok(h.logs.some((l) => l.includes("did not finish in time")));
  } finally {
    g.release();
    h.client.close();
    Deno.removeSync(h.dir, { recursive: true });
  }
});

test("close() is bounded even when the snapshotter's close never ends", async (transport) => {
  const s = memorySnapshotter();
  const stuck: Snapshotter = { ...s, close: () => new Promise(() => {}) };
  const dir = await Deno.makeTempDir();
  try {
    const logs: string[] = [];
    const server = await startServer({
      transport,
      address: `${dir}/s.sock`,
      snapshotter: stuck,
      logger: createLogger({ level: "warn", write: (l) => logs.push(l) }),
      snapshotterCloseTimeoutMs: 100,
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      server.close().then(() => true),
      new Promise<boolean>((r) => timer = setTimeout(() => r(false), 5000)),
    ]).finally(() => clearTimeout(timer));
    assert.equal(closed, true, "close() resolved");
    await assert.rejects(Deno.lstat(`${dir}/s.sock`), Deno.errors.NotFound);
    assert.ok(logs.some((l) => l.includes("the snapshotter did not close in time")), logs.join(""));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

test("close() still removes the socket when closing the snapshotter fails", async (transport) => {
  const s = memorySnapshotter();
  const failing: Snapshotter = { ...s, close: () => Promise.reject(new NotFoundError("db gone")) };
  const dir = await Deno.makeTempDir();
  try {
    const server = await startServer({ transport, address: `${dir}/s.sock`, snapshotter: failing });
    await assert.rejects(server.close(), /db gone/);
    await assert.rejects(Deno.lstat(`${dir}/s.sock`), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
