import assert from "node:assert/strict";
import protobuf from "protobufjs";
import {
  infoFromWire,
  infoToWire,
  int64ToNumber,
  KIND_NUMBER,
  kindFromNumber,
  usageFromWire,
  usageToWire,
} from "./convert.ts";
import {
  InvalidUtf8Error,
  isValidUtf8,
  loadProtoRoot,
  loadSnapshotsProto,
  METHODS,
  SNAPSHOTS_SERVICE,
  type WireInfo,
  type WireUpdateRequest,
  type WireUsageResponse,
} from "./proto.ts";
import type { Info } from "../snapshots/types.ts";

const proto = loadSnapshotsProto();

/** Field name → [number, type, rule] for every message of spec §1.3. */
const EXPECTED_FIELDS: Record<string, Record<string, [number, string, string?]>> = {
  PrepareSnapshotRequest: {
    snapshotter: [1, "string"],
    key: [2, "string"],
    parent: [3, "string"],
    labels: [4, "string", "map"],
  },
  PrepareSnapshotResponse: { mounts: [1, "containerd.types.Mount", "repeated"] },
  ViewSnapshotRequest: {
    snapshotter: [1, "string"],
    key: [2, "string"],
    parent: [3, "string"],
    labels: [4, "string", "map"],
  },
  ViewSnapshotResponse: { mounts: [1, "containerd.types.Mount", "repeated"] },
  MountsRequest: { snapshotter: [1, "string"], key: [2, "string"] },
  MountsResponse: { mounts: [1, "containerd.types.Mount", "repeated"] },
  RemoveSnapshotRequest: { snapshotter: [1, "string"], key: [2, "string"] },
  CommitSnapshotRequest: {
    snapshotter: [1, "string"],
    name: [2, "string"],
    key: [3, "string"],
    labels: [4, "string", "map"],
    parent: [5, "string"],
  },
  StatSnapshotRequest: { snapshotter: [1, "string"], key: [2, "string"] },
  StatSnapshotResponse: { info: [1, "Info"] },
  UpdateSnapshotRequest: {
    snapshotter: [1, "string"],
    info: [2, "Info"],
    update_mask: [3, "google.protobuf.FieldMask"],
  },
  UpdateSnapshotResponse: { info: [1, "Info"] },
  ListSnapshotsRequest: { snapshotter: [1, "string"], filters: [2, "string", "repeated"] },
  ListSnapshotsResponse: { info: [1, "Info", "repeated"] },
  UsageRequest: { snapshotter: [1, "string"], key: [2, "string"] },
  UsageResponse: { size: [1, "int64"], inodes: [2, "int64"] },
  CleanupRequest: { snapshotter: [1, "string"] },
  Info: {
    name: [1, "string"],
    parent: [2, "string"],
    kind: [3, "Kind"],
    created_at: [4, "google.protobuf.Timestamp"],
    updated_at: [5, "google.protobuf.Timestamp"],
    labels: [6, "string", "map"],
  },
  ".containerd.types.Mount": {
    type: [1, "string"],
    source: [2, "string"],
    target: [3, "string"],
    options: [4, "string", "repeated"],
  },
  ".google.protobuf.Timestamp": { seconds: [1, "int64"], nanos: [2, "int32"] },
  ".google.protobuf.FieldMask": { paths: [1, "string", "repeated"] },
};

function lookup(name: string): protobuf.Type {
  const full = name.startsWith(".") ? name.slice(1) : `containerd.services.snapshots.v1.${name}`;
  return proto.root.lookupType(full);
}

Deno.test("every message has exactly the field numbers and types of spec §1.3", () => {
  for (const [message, fields] of Object.entries(EXPECTED_FIELDS)) {
    const type = lookup(message);
    const actual: Record<string, [number, string, string?]> = {};
    for (const f of type.fieldsArray) {
      const rule = f.map ? "map" : f.repeated ? "repeated" : undefined;
      const t = f.resolvedType ? f.resolvedType.fullName.slice(1) : f.type;
      const short = t.replace(/^containerd\.services\.snapshots\.v1\./, "");
      actual[f.name] = rule ? [f.id, short, rule] : [f.id, short];
      if (f.map) {
        assert.equal((f as unknown as protobuf.MapField).keyType, "string", `${message}.${f.name}`);
      }
    }
    assert.deepEqual(actual, fields, message);
  }
});

Deno.test("Kind enum: UNKNOWN 0, VIEW 1, ACTIVE 2, COMMITTED 3, matching KIND_NUMBER", () => {
  const kind = proto.root.lookupEnum("containerd.services.snapshots.v1.Kind");
  assert.deepEqual(kind.values, { UNKNOWN: 0, VIEW: 1, ACTIVE: 2, COMMITTED: 3 });
  assert.deepEqual(KIND_NUMBER, { view: 1, active: 2, committed: 3 });
  assert.equal(kindFromNumber(1), "view");
  assert.equal(kindFromNumber(2), "active");
  assert.equal(kindFromNumber(3), "committed");
  assert.throws(() => kindFromNumber(0), /unknown kind number 0/);
  assert.throws(() => kindFromNumber(7), /unknown kind number 7/);
});

Deno.test("service: exact name, ten methods, only List is server-streaming", () => {
  const service = proto.root.lookupService(SNAPSHOTS_SERVICE);
  assert.deepEqual(
    Object.keys(service.methods),
    ["Prepare", "View", "Mounts", "Commit", "Remove", "Stat", "Update", "List", "Usage", "Cleanup"],
  );
  for (const [name, m] of Object.entries(service.methods)) {
    assert.equal(m.requestStream ?? false, false, name);
    assert.equal(m.responseStream ?? false, name === "List", name);
    const expected = METHODS[name as keyof typeof METHODS];
    assert.equal(m.resolvedRequestType?.name, expected.request);
    assert.equal(
      m.resolvedResponseType?.fullName.split(".").pop(),
      expected.response.split(".").pop(),
    );
  }
  for (const [name, def] of Object.entries(proto.service)) {
    assert.equal(def.path, `/containerd.services.snapshots.v1.Snapshots/${name}`);
    assert.equal(def.responseStream, name === "List");
  }
});

Deno.test("Info encodes to the exact bytes containerd expects (hand-computed)", () => {
  const codec = proto.codec<WireInfo>("Info");
  const bytes = codec.encode({
    name: "a",
    kind: 2,
    created_at: { seconds: 1, nanos: 2 },
    updated_at: { seconds: 300, nanos: 3 },
    labels: { k: "v" },
  });
  assert.deepEqual([...bytes], [
    0x0a,
    1,
    0x61, // name = "a"
    0x18,
    2, // kind = ACTIVE
    0x22,
    4,
    0x08,
    1,
    0x10,
    2, // created_at {seconds 1, nanos 2}
    0x2a,
    5,
    0x08,
    0xac,
    0x02,
    0x10,
    3, // updated_at {seconds 300 (varint 0xac 0x02), nanos 3}
    0x32,
    6,
    0x0a,
    1,
    0x6b,
    0x12,
    1,
    0x76, // labels entry {key "k", value "v"}
  ]);
});

Deno.test("Timestamp: int64 seconds and nanos survive encode/decode exactly", () => {
  const codec = proto.codec<WireInfo>("Info");
  const cases = [
    { seconds: 0, nanos: 0 },
    { seconds: 1_700_000_000, nanos: 999_999_999 },
    { seconds: 253_402_300_799, nanos: 1 }, // 9999-12-31T23:59:59
    { seconds: -62_135_596_800, nanos: 123_456_789 }, // 0001-01-01
    { seconds: Number.MAX_SAFE_INTEGER, nanos: 5 },
    { seconds: 4_294_967_296, nanos: 7 }, // 2^32 crosses the low/high word boundary
  ];
  for (const t of cases) {
    const info: Info = {
      name: "n",
      parent: "p",
      kind: "committed",
      created: t,
      updated: t,
      labels: {},
    };
    const decoded = codec.decode(codec.encode(infoToWire(info)));
    assert.equal(decoded.created_at?.seconds, String(t.seconds));
    assert.deepEqual(infoFromWire(decoded), info);
  }
});

Deno.test("int64 beyond 2^53 decodes as an exact string and is refused as a number", () => {
  const codec = proto.codec<WireUsageResponse>("UsageResponse");
  const decoded = codec.decode(codec.encode({ size: "9223372036854775807", inodes: "-1" }));
  assert.equal(decoded.size, "9223372036854775807");
  assert.equal(decoded.inodes, "-1");
  assert.throws(() => usageFromWire(decoded), /usage size: 9223372036854775807 is not an exact/);
  assert.equal(int64ToNumber("9007199254740991", "x"), Number.MAX_SAFE_INTEGER);
  assert.throws(() => int64ToNumber("9007199254740993", "x"), RangeError);
});

Deno.test("Usage: sizes up to 2^53-1 round-trip exactly", () => {
  const codec = proto.codec<WireUsageResponse>("UsageResponse");
  for (const size of [0, 1, 2 ** 31, 2 ** 32 + 1, 10 * 2 ** 40 + 3, Number.MAX_SAFE_INTEGER]) {
    const usage = usageFromWire(codec.decode(codec.encode(usageToWire({ size, inodes: 3 }))));
    assert.deepEqual(usage, { size, inodes: 3 });
  }
});

Deno.test("maps: many labels with odd keys round-trip; empty map decodes as {}", () => {
  const codec = proto.codec<WireInfo>("Info");
  const labels: Record<string, string> = {
    "containerd.io/snapshot.ref": "sha256:abc",
    "containerd.io/snapshot/devmapper/fstype": "ext4",
    "with space": "and\nnewline",
    "ünïcødé": "✓",
  };
  for (let i = 0; i < 50; i++) labels[`k${i}`] = "v".repeat(i);
  const decoded = codec.decode(codec.encode({ name: "x", kind: 1, labels }));
  assert.deepEqual(decoded.labels, labels);
  const none = codec.decode(codec.encode({ name: "x", kind: 1 }));
  assert.deepEqual(none.labels, {});
  assert.equal(none.created_at, null);
  assert.equal(none.parent, "");
});

Deno.test("UpdateSnapshotRequest: field mask paths and nested info decode", () => {
  const codec = proto.codec<WireUpdateRequest>("UpdateSnapshotRequest");
  const decoded = codec.decode(codec.encode({
    snapshotter: "devmapper-ts",
    info: { name: "ns/1/a", labels: { a: "b" } } as unknown as WireInfo,
    update_mask: { paths: ["labels.a", "labels.containerd.io/gc.root"] },
  }));
  assert.equal(decoded.snapshotter, "devmapper-ts");
  assert.equal(decoded.info?.name, "ns/1/a");
  assert.deepEqual(decoded.info?.labels, { a: "b" });
  assert.deepEqual(decoded.update_mask?.paths, ["labels.a", "labels.containerd.io/gc.root"]);
  const empty = codec.decode(new Uint8Array());
  assert.equal(empty.info, null);
  assert.equal(empty.update_mask, null);
});

Deno.test("unknown fields from a newer client are skipped, known ones still decode", () => {
  const codec = proto.codec<{ key: string }>("StatSnapshotRequest");
  // key = "k" then an unknown field 9 (varint 1) and unknown field 10 (bytes "zz")
  const bytes = new Uint8Array([0x12, 1, 0x6b, 0x48, 1, 0x52, 2, 0x7a, 0x7a]);
  assert.equal(codec.decode(bytes).key, "k");
});

Deno.test("loadProtoRoot reports which embedded file failed to parse", () => {
  assert.throws(
    () => loadProtoRoot({ "broken.proto": 'syntax = "proto3"; message {' }),
    /Cannot parse "broken.proto"/,
  );
});

// ---- strings must be UTF-8 ----

Deno.test("isValidUtf8: accepts UTF-8, refuses what is not (as Go's utf8.Valid does)", () => {
  const valid = [[], [0x61], [0xc3, 0xa9], [0xef, 0xbf, 0xbd], [0xf0, 0x9f, 0x98, 0x80], [
    0xf4,
    0x8f,
    0xbf,
    0xbf,
  ]];
  const invalid = [
    [0xff],
    [0x80], // a continuation byte alone
    [0xc3], // truncated
    [0xc0, 0xaf], // overlong "/"
    [0xe0, 0x80, 0xaf], // overlong
    [0xed, 0xa0, 0x80], // an encoded surrogate (U+D800)
    [0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
    [0x61, 0x62, 0xfe], // after ASCII
  ];
  for (const b of valid) assert.ok(isValidUtf8(new Uint8Array(b)), JSON.stringify(b));
  for (const b of invalid) assert.ok(!isValidUtf8(new Uint8Array(b)), JSON.stringify(b));
});

/** Where a string can be in a message: a plain field, an element, a map key or value. */
interface StringSite {
  path: string[];
  kind: "scalar" | "repeated" | "key" | "value";
}

/** Every string site of `type`, in nested messages too (each message type once per path). */
function stringSites(
  type: protobuf.Type,
  path: string[] = [],
  seen = new Set<string>(),
): StringSite[] {
  if (seen.has(type.fullName)) return [];
  const inner = new Set(seen).add(type.fullName);
  const out: StringSite[] = [];
  for (const field of type.fieldsArray) {
    const at = [...path, field.name];
    if (field instanceof protobuf.MapField) {
      if (field.keyType === "string") out.push({ path: at, kind: "key" });
      if (field.type === "string") out.push({ path: at, kind: "value" });
    } else if (field.resolvedType instanceof protobuf.Type) {
      if (!field.repeated) out.push(...stringSites(field.resolvedType, at, inner));
    } else if (field.type === "string") {
      out.push({ path: at, kind: field.repeated ? "repeated" : "scalar" });
    }
  }
  return out;
}

/** A message value with the marker "@@" at `site`. */
function valueAt(site: StringSite): Record<string, unknown> {
  const leaf = site.kind === "scalar"
    ? "@@"
    : site.kind === "repeated"
    ? ["ok", "@@"]
    : site.kind === "key"
    ? { "@@": "v" }
    : { k: "@@" };
  let value: unknown = leaf;
  for (const name of [...site.path].reverse()) value = { [name]: value };
  return value as Record<string, unknown>;
}

Deno.test("every string field of every request refuses bytes that are not UTF-8, naming the field", () => {
  let sites = 0;
  for (const method of Object.keys(METHODS) as (keyof typeof METHODS)[]) {
    const codec = proto.codec<object>(METHODS[method].request);
    const type = proto.root.lookupType(codec.typeName);
    for (const site of stringSites(type)) {
      sites++;
      const encoded = codec.encode(valueAt(site));
      const at = encoded.findIndex((b, i) => b === 0x40 && encoded[i + 1] === 0x40);
      assert.ok(at >= 0);
      // still decodes as it is: the marker is valid
      codec.decode(encoded);
      const bad = encoded.slice();
      bad.set([0x61, 0xff], at);
      const name = site.path.join(".");
      const expected = site.kind === "scalar"
        ? `"${name}"`
        : site.kind === "repeated"
        ? `"${name}[1]"`
        : site.kind === "key"
        ? `"${name}" (a key)`
        : `"${name}" (the value of "k")`;
      assert.throws(() => codec.decode(bad), (err: unknown) => {
        assert.ok(err instanceof InvalidUtf8Error, `${method} ${name}: ${err}`);
        assert.equal(
          err.message,
          `Invalid ${
            METHODS[method].request.split(".").pop()
          }: field ${expected} is not valid UTF-8`,
        );
        return true;
      });
    }
  }
  // snapshotter ×10, key ×7, parent ×3, labels ×4 (key and value), name ×2, paths, filters
  assert.ok(sites >= 30, `${sites} string sites`);
});

Deno.test("a message that is not protobuf still fails as a decode error, not as UTF-8", () => {
  const codec = proto.codec<object>("StatSnapshotRequest");
  // field 2 (key) claims 100 bytes, 2 follow
  const truncated = new Uint8Array([0x12, 100, 0xff, 0xff]);
  assert.throws(
    () => codec.decode(truncated),
    (err: unknown) => !(err instanceof InvalidUtf8Error),
  );
});
