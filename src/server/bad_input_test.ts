/**
 * Requests an adversary would send, on both transports: strings that are not UTF-8, keys far
 * over the limit (whose echo in an error must not break the call), labels whose total would
 * make a snapshot unlistable, and a snapshot stored too large for one message. The snapshotter
 * is the in-memory double; the real one is in tests/kernel/server_bad_input_test.ts.
 */
import assert from "node:assert/strict";
import { status as GrpcStatus } from "@grpc/grpc-js";
import type { Info } from "../snapshots/types.ts";
import { MAX_LABEL_SIZE, MAX_LABELS_TOTAL_SIZE } from "../snapshots/labels.ts";
import { memorySnapshotter } from "../../testing/memory_snapshotter.ts";
import {
  dataFrame,
  grpcMessage,
  grpcRequestHeaders,
  headersFrame,
  type RawH2Client,
} from "../../testing/h2_raw_client.ts";
import { poll } from "../../testing/poll.ts";
import { startTestServer } from "../../testing/test_server.ts";
import { isServiceError } from "../../testing/snapshots_client.ts";
import { decodeGrpcMessage } from "./native/grpc_wire.ts";
import { loadSnapshotsProto, SNAPSHOTS_SERVICE } from "./proto.ts";
import { type Transport, TRANSPORTS } from "./server.ts";

const proto = loadSnapshotsProto();
const T = { seconds: 1, nanos: 0 };

function test(name: string, fn: (transport: Transport) => Promise<void>): void {
  for (const transport of TRANSPORTS) {
    Deno.test(`[${transport}] ${name}`, () => fn(transport));
  }
}

async function harness(transport: Transport) {
  const s = memorySnapshotter({ now: () => ({ ...T }) });
  return Object.assign(
    await startTestServer({ prefix: "dmsnap-bad-", transport, snapshotter: s }),
    { s },
  );
}

async function grpcError(p: Promise<unknown>, what: string) {
  try {
    await p;
  } catch (err) {
    assert.ok(isServiceError(err), `${what}: expected a gRPC error, got ${err}`);
    return { code: err.code, details: err.details };
  }
  assert.fail(`${what}: expected the call to fail`);
}

/** A unary call with raw request bytes; its gRPC status and decoded message. */
async function rawCall(c: RawH2Client, id: number, method: string, message: Uint8Array) {
  await c.send(
    headersFrame(id, grpcRequestHeaders(`/${SNAPSHOTS_SERVICE}/${method}`)),
    dataFrame(id, grpcMessage(message), true),
  );
  const r = await c.grpcResponse(id);
  return { code: r.grpcStatus, details: decodeGrpcMessage(r.grpcMessage ?? "") };
}

/**
 * `codec.encode(value)` with the bytes of `marker` (ASCII, unique in the message) replaced by
 * `bytes` of the same length: a string field that is not UTF-8, the framing unchanged.
 */
function withBytes(type: string, value: Record<string, unknown>, marker: string, bytes: number[]) {
  const encoded = proto.codec<object>(type).encode(value);
  const m = new TextEncoder().encode(marker);
  assert.equal(m.length, bytes.length);
  const at = encoded.findIndex((_, i) => m.every((b, j) => encoded[i + j] === b));
  assert.ok(at >= 0, `${marker} in the message`);
  const out = encoded.slice();
  out.set(bytes, at);
  return out;
}

// ---- (a) strings that are not UTF-8 ----

test("a string that is not UTF-8, in any field of any request, is InvalidArgument", async (transport) => {
  await using h = await harness(transport);
  await h.s.prepare("k", "");
  await h.s.commit("c", "k");
  h.s.calls.length = 0;
  const c = await h.raw();
  const FF = [0x61, 0xff]; // "a" then a byte that never occurs in UTF-8
  const cases: [string, string, Record<string, unknown>, string, number[], RegExp][] = [
    ["Stat", "StatSnapshotRequest", { key: "@@" }, "@@", FF, /field "key"/],
    ["Stat", "StatSnapshotRequest", { snapshotter: "@@", key: "k" }, "@@", FF, /"snapshotter"/],
    ["Prepare", "PrepareSnapshotRequest", { key: "x", parent: "@@" }, "@@", FF, /"parent"/],
    [
      "Prepare",
      "PrepareSnapshotRequest",
      { key: "x", labels: { "@@": "v" } },
      "@@",
      FF,
      /field "labels" \(a key\)/,
    ],
    [
      "View",
      "ViewSnapshotRequest",
      { key: "x", parent: "c", labels: { l: "@@" } },
      "@@",
      FF,
      /field "labels" \(the value of "l"\)/,
    ],
    // an encoded surrogate (CESU-8): protobufjs would decode it to a lone U+D800
    ["Mounts", "MountsRequest", { key: "@@@" }, "@@@", [0xed, 0xa0, 0x80], /"key"/],
    // an overlong "/" (0xC0 0xAF): would decode to U+FFFD
    ["Remove", "RemoveSnapshotRequest", { key: "@@" }, "@@", [0xc0, 0xaf], /"key"/],
    ["Commit", "CommitSnapshotRequest", { name: "@@", key: "k" }, "@@", FF, /"name"/],
    [
      "Commit",
      "CommitSnapshotRequest",
      { name: "n", key: "k", labels: { a: "@@" } },
      "@@",
      FF,
      /"labels"/,
    ],
    [
      "Update",
      "UpdateSnapshotRequest",
      { info: { name: "@@" } },
      "@@",
      FF,
      /field "info\.name"/,
    ],
    [
      "Update",
      "UpdateSnapshotRequest",
      { info: { name: "c", labels: { "@@": "1" } } },
      "@@",
      FF,
      /field "info\.labels" \(a key\)/,
    ],
    [
      "Update",
      "UpdateSnapshotRequest",
      { info: { name: "c" }, update_mask: { paths: ["labels.a", "labels.@@"] } },
      "@@",
      FF,
      /field "update_mask\.paths\[1\]"/,
    ],
    // past U+10FFFF
    [
      "List",
      "ListSnapshotsRequest",
      { filters: ["name==@@@@"] },
      "@@@@",
      [0xf4, 0x90, 0x80, 0x80],
      /"filters\[0\]"/,
    ],
    ["Usage", "UsageRequest", { key: "@@" }, "@@", FF, /"key"/],
    ["Cleanup", "CleanupRequest", { snapshotter: "@@" }, "@@", FF, /"snapshotter"/],
  ];
  let id = 1;
  for (const [method, type, value, marker, bytes, field] of cases) {
    const what = `${method} ${JSON.stringify(value)}`;
    const r = await rawCall(c, id, method, withBytes(type, value, marker, bytes));
    id += 2;
    assert.equal(r.code, GrpcStatus.INVALID_ARGUMENT, `${what}: ${r.details}`);
    assert.match(r.details, field, what);
    assert.match(r.details, /is not valid UTF-8: invalid argument$/, what);
  }
  assert.deepEqual(h.s.calls, [], "no bad request reached the snapshotter");
  // valid UTF-8 that looks alike is fine: U+FFFD itself, and a 4-byte character
  const truncated = await rawCall(
    c,
    id,
    "Prepare",
    withBytes("PrepareSnapshotRequest", { key: "@@@@@@@" }, "@@@@@@@", [
      0x61,
      0xef,
      0xbf,
      0xbd,
      0xf0,
      0x9f,
      0x98,
    ]),
  );
  assert.equal(truncated.code, GrpcStatus.INVALID_ARGUMENT, "a truncated 4-byte sequence");
  await h.client.prepare("a\ufffd😀");
  assert.equal((await h.client.stat("a\ufffd😀")).name, "a\ufffd😀");
});

test("a lone surrogate sent by a JavaScript client is refused, not stored as another key", async (transport) => {
  await using h = await harness(transport);
  // protobufjs encodes a lone surrogate as the 3 bytes ED A0 80, which are not UTF-8
  for (
    const [what, call] of [
      ["key", () => h.client.prepare("a\ud800b")],
      ["label", () => h.client.prepare("x", "", { "\udc00": "v" })],
      ["filter", () => h.client.list(["name==\ud800"])],
    ] as const
  ) {
    const e = await grpcError(call(), what);
    assert.equal(e.code, GrpcStatus.INVALID_ARGUMENT, `${what}: ${e.details}`);
    assert.match(e.details, /is not valid UTF-8/);
  }
  assert.deepEqual(h.s.calls, []);
  assert.deepEqual([...h.s.infos.keys()], []);
});

// ---- (b) long keys: the error they cause must arrive ----

test("a 64 KiB or 1 MiB key is InvalidArgument, with the key shortened in the message", async (transport) => {
  await using h = await harness(transport);
  for (const n of [65_536, 1 << 20]) {
    const key = "k".repeat(n);
    for (
      const [what, call] of [
        ["stat", () => h.client.stat(key)],
        ["prepare", () => h.client.prepare(key)],
        ["prepare parent", () => h.client.prepare("x", key)],
        ["commit name", () => h.client.commit(key, "x")],
        ["update", () => h.client.update(key, {})],
        ["label", () => h.client.prepare("x", "", { [key]: "v" })],
      ] as const
    ) {
      const e = await grpcError(call(), `${what} ${n}`);
      assert.equal(e.code, GrpcStatus.INVALID_ARGUMENT, `${what} ${n}: ${e.details.slice(0, 200)}`);
      assert.ok(e.details.length < 400, `${what}: ${e.details.length} characters`);
      assert.ok(e.details.includes(`"${"k".repeat(128)}"…(${n} bytes)`), e.details);
      assert.match(e.details, /: invalid argument$/);
    }
  }
  assert.deepEqual(h.s.calls, []);
  // logs shorten the key too
  assert.ok(h.logs.every((l) => l.length < 2000), "no log line repeats a whole key");
});

test("a snapshotter error that echoes a long key arrives whole, capped at 1 KiB", async (transport) => {
  await using h = await harness(transport);
  const key = "k".repeat(4096); // valid: exactly the maximum
  const e = await grpcError(h.client.stat(key), "stat");
  assert.equal(e.code, GrpcStatus.NOT_FOUND);
  // `snapshot "<4096 k>" does not exist`: cut after 1 KiB, with its size; the class kept
  assert.equal(e.details, `snapshot "${"k".repeat(1014)}…(4122 bytes): not found`);
});

test("native only: an unknown method with a 15 KB path is UNIMPLEMENTED with a short message", async (transport) => {
  if (transport !== "native") return; // grpc-js answers unknown paths itself
  await using h = await harness(transport);
  const c = await h.raw();
  const path = `/${SNAPSHOTS_SERVICE}/` + "X".repeat(15_000); // one HEADERS frame
  await c.send(
    headersFrame(1, grpcRequestHeaders(path)),
    dataFrame(1, grpcMessage(new Uint8Array()), true),
  );
  const r = await c.grpcResponse(1);
  assert.equal(r.grpcStatus, GrpcStatus.UNIMPLEMENTED);
  assert.ok((r.grpcMessage ?? "").length < 300, `${r.grpcMessage?.length} bytes`);
});

// ---- (d) labels: one snapshot must never make List fail ----

function bigLabels(n: number): Record<string, string> {
  const labels: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    labels[`l${i.toString().padStart(2, "0")}`] = "v".repeat(MAX_LABEL_SIZE - 3);
  }
  return labels;
}

test("labels over 64 KiB in total are InvalidArgument on Prepare, View, Commit and Update", async (transport) => {
  await using h = await harness(transport);
  await h.s.prepare("k", "");
  await h.s.commit("c", "k");
  await h.s.prepare("k2", "");
  h.s.calls.length = 0;
  const sixteen = bigLabels(16); // 16 × 4096 = 64 KiB: the bound
  const seventeen = bigLabels(17);
  const total = 17 * MAX_LABEL_SIZE;
  const message = `Invalid labels: total size of keys and values (${total} bytes) greater than ` +
    `maximum size (${MAX_LABELS_TOTAL_SIZE} bytes)`;
  for (
    const [what, call] of [
      ["prepare", () => h.client.prepare("x", "", seventeen)],
      ["view", () => h.client.view("x", "c", seventeen)],
      ["commit", () => h.client.commit("x", "k2", seventeen)],
      ["update", () => h.client.update("c", seventeen)],
    ] as const
  ) {
    const e = await grpcError(call(), what);
    assert.equal(e.code, GrpcStatus.INVALID_ARGUMENT, `${what}: ${e.details}`);
    assert.ok(e.details.endsWith(`${message}: invalid argument`), `${what}: ${e.details}`);
  }
  assert.deepEqual(h.s.calls, []);
  // the bound itself is accepted, and such a snapshot is returned by Stat and List
  await h.client.prepare("full", "", sixteen);
  assert.deepEqual((await h.client.stat("full")).labels, sixteen);
  assert.deepEqual((await h.client.list()).infos.find((i) => i.name === "full")?.labels, sixteen);
});

test("a snapshot too large for one message is left out of List (and logged), never failing it", async (transport) => {
  await using h = await harness(transport);
  await h.s.prepare("a", "");
  await h.s.prepare("z", "");
  // stored before labels were bounded (the double takes anything): ~17 MiB of labels
  const huge: Info = {
    name: "huge",
    parent: "",
    kind: "active",
    created: T,
    updated: T,
    labels: Object.fromEntries(
      Array.from({ length: 4400 }, (_, i) => [`l${i}`, "v".repeat(4000)]),
    ),
  };
  h.s.infos.set("huge", huge);
  const { infos } = await h.client.list();
  assert.deepEqual(infos.map((i) => i.name).sort(), ["a", "z"]);
  await poll(() => h.logs.find((l) => l.includes("left out")), "the log line");
  assert.match(
    h.logs.find((l) => l.includes("left out"))!,
    /level=error msg="List: a snapshot is left out, its Info is larger than a message" key=huge bytes=\d+ max_bytes=16777216/,
  );
  // Stat of that one snapshot alone fails, with ResourceExhausted
  const e = await grpcError(h.client.stat("huge"), "stat");
  assert.equal(e.code, GrpcStatus.RESOURCE_EXHAUSTED, e.details);
  // everything else is served
  assert.equal((await h.client.stat("a")).name, "a");
});
