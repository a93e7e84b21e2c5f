import assert from "node:assert/strict";
import { join } from "node:path";
import protobuf from "protobufjs";
import {
  GENERATED,
  readProtoFiles,
  renderTypesModule,
  REPO_ROOT,
} from "../../tools/gen_proto_text.ts";
import {
  describeTypes,
  type MessageModel,
  renderTypes,
  type TypeModel,
} from "../../tools/gen_proto_types.ts";
import { DECODE_OPTIONS, loadProtoRoot, loadSnapshotsProto } from "./proto.ts";

const REGENERATE = "run `deno run -R -W --allow-run tools/gen_proto_text.ts`";

/** A proto exercising what `proto/` does not: every scalar, nesting, oneofs, odd maps. */
const SAMPLE_PROTO = `
syntax = "proto3";
package t.v1;
import "google/protobuf/timestamp.proto";
enum Color { COLOR_UNSET = 0; RED = 1; BLUE = 2; }
message Scalars {
  double d = 1; float f = 2; int32 i32 = 3; uint32 u32 = 4; sint32 s32 = 5; fixed32 f32 = 6;
  sfixed32 sf32 = 7; int64 i64 = 8; uint64 u64 = 9; sint64 s64 = 10; fixed64 f64 = 11;
  sfixed64 sf64 = 12; bool b = 13; string s = 14; bytes by = 15;
}
message Outer {
  message Inner { Color color = 1; Outer back = 2; }
  enum Mode { MODE_UNSET = 0; FAST = 1; }
  Inner inner = 1;
  repeated Inner inners = 2;
  map<int64, Inner> by_id = 3;
  map<bool, Color> flags = 4;
  repeated bytes blobs = 5;
  repeated Color colors = 6;
  optional int64 maybe = 7;
  oneof choice { string text = 8; Inner picked = 9; }
  Mode mode = 10;
  google.protobuf.Timestamp at = 11;
  Nothing nothing = 12;
  map<string, int64> counts = 13;
}
message Nothing {}
`;

type Models = ReadonlyMap<string, MessageModel>;

function messageModels(models: readonly TypeModel[]): Models {
  const out = new Map<string, MessageModel>();
  for (const m of models) if (m.kind === "message") out.set(m.name, m);
  return out;
}

/** Asserts that a decoded `value` is assignable to the rendered TypeScript `type`. */
function assertConforms(value: unknown, type: string, models: Models, at: string): void {
  if (type.endsWith(" | null")) {
    if (value !== null) assertConforms(value, type.slice(0, -" | null".length), models, at);
    return;
  }
  const record = /^Record<string, (.+)>$/.exec(type);
  if (record) {
    assert.equal(Object.getPrototypeOf(value), Object.prototype, `${at}: not a plain object`);
    for (const [k, v] of Object.entries(value as object)) {
      assertConforms(v, record[1], models, `${at}[${JSON.stringify(k)}]`);
    }
    return;
  }
  if (type.endsWith("[]")) {
    assert.ok(Array.isArray(value), `${at}: not an array`);
    value.forEach((v, i) => assertConforms(v, type.slice(0, -2), models, `${at}[${i}]`));
    return;
  }
  switch (type) {
    case "string":
    case "number":
    case "boolean":
      assert.equal(typeof value, type, at);
      return;
    case "Int64":
      // the type admits numbers (for encoding); decoding must give exact decimal strings
      assert.match(value as string, /^-?\d+$/, at);
      return;
    case "Uint8Array":
      assert.ok(value instanceof Uint8Array, `${at}: not a Uint8Array`);
      return;
  }
  const model = models.get(type);
  assert.ok(model, `${at}: no generated type ${type}`);
  assertMessage(value, model, models, at);
}

/** Asserts that a decoded message has exactly the properties its generated interface has. */
function assertMessage(value: unknown, model: MessageModel, models: Models, at: string): void {
  assert.equal(Object.getPrototypeOf(value), Object.prototype, `${at}: not a plain object`);
  const obj = value as Record<string, unknown>;
  const declared = new Set(model.fields.map((f) => f.name));
  for (const key of Object.keys(obj)) {
    assert.ok(declared.has(key), `${at}.${key} is not in ${model.name}`);
  }
  for (const f of model.fields) {
    if (!Object.hasOwn(obj, f.name)) {
      assert.ok(f.optional, `${at}.${f.name} is missing but ${model.name} requires it`);
      continue;
    }
    assertConforms(obj[f.name], f.type, models, `${at}.${f.name}`);
  }
}

const MAP_KEYS: Readonly<Record<string, string>> = { string: "k", bool: "true" };
const SCALAR_SAMPLES: Readonly<Record<string, unknown>> = {
  double: 1.5,
  float: 2.5,
  int32: -7,
  uint32: 7,
  sint32: -7,
  fixed32: 7,
  sfixed32: -7,
  int64: "-9007199254740993",
  uint64: "18446744073709551615",
  sint64: "-9007199254740993",
  fixed64: "18446744073709551615",
  sfixed64: "-9007199254740993",
  bool: true,
  string: "s",
  bytes: [1, 2, 3],
};

/** A plain object setting every field of `type` (messages nested `depth` deep at most). */
function sample(type: protobuf.Type, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of type.fieldsArray) {
    let value: unknown;
    if (f.resolvedType instanceof protobuf.Type) {
      if (depth === 0) continue;
      value = sample(f.resolvedType, depth - 1);
    } else if (f.resolvedType instanceof protobuf.Enum) {
      value = 99; // not a named value: enums are open
    } else {
      value = SCALAR_SAMPLES[f.type];
    }
    if (f instanceof protobuf.MapField) out[f.name] = { [MAP_KEYS[f.keyType] ?? "5"]: value };
    else out[f.name] = f.repeated ? [value, value] : value;
  }
  return out;
}

/** Checks decoding of every message of `root`, empty and fully set, against its model. */
function assertRootConforms(
  root: protobuf.Root,
  models: readonly TypeModel[],
  decode: (type: protobuf.Type, bytes: Uint8Array) => unknown,
): number {
  const byName = messageModels(models);
  let checked = 0;
  for (const model of byName.values()) {
    const type = root.lookupType(model.fullName);
    assertMessage(decode(type, new Uint8Array()), model, byName, `empty ${model.name}`);
    const bytes = type.encode(type.fromObject(sample(type, 2))).finish();
    assertMessage(decode(type, bytes), model, byName, `full ${model.name}`);
    checked++;
  }
  return checked;
}

Deno.test("proto_types.ts is up to date with proto/ (else regenerate it)", async () => {
  const files = await readProtoFiles(join(REPO_ROOT, "proto"));
  const onDisk = await Deno.readTextFile(join(REPO_ROOT, GENERATED.types));
  assert.ok(onDisk === renderTypesModule(files), `proto_types.ts is stale: ${REGENERATE}`);
});

Deno.test("what proto.ts decodes has exactly the shape of the generated types", () => {
  const proto = loadSnapshotsProto();
  const models = describeTypes(proto.root, DECODE_OPTIONS);
  const checked = assertRootConforms(
    proto.root,
    models,
    (type, bytes) => proto.codec(`.${type.fullName.slice(1)}`).decode(bytes),
  );
  // 18 service messages, Mount, Timestamp, FieldMask, Empty
  assert.equal(checked, 22);
  assert.deepEqual(
    models.filter((m) => m.kind === "enum"),
    [{
      kind: "enum",
      name: "Kind",
      fullName: "containerd.services.snapshots.v1.Kind",
      values: [["UNKNOWN", 0], ["VIEW", 1], ["ACTIVE", 2], ["COMMITTED", 3]],
    }],
  );
});

Deno.test("every scalar, nesting, oneofs, proto3 optional and odd maps are described", () => {
  const root = loadProtoRoot({ "t.proto": SAMPLE_PROTO });
  const models = describeTypes(root, DECODE_OPTIONS);
  assertRootConforms(
    root,
    models,
    (type, bytes) => type.toObject(type.decode(bytes), DECODE_OPTIONS),
  );
  const text = renderTypes(models);
  for (
    const line of [
      "export interface Outer_Inner {",
      "  back: Outer | null;",
      "export const Outer_Mode = {",
      "  /** `optional int64 maybe = 7`. */\n  maybe?: Int64;",
      "  /** `Inner picked = 9`: member of oneof `choice`. */\n  picked?: Outer_Inner;",
      "  by_id: Record<string, Outer_Inner>;",
      "  /** `map<bool, Color> flags = 4`: a {@linkcode Color} value; other numbers decode as " +
      "they are; keys are bools as protobufjs renders them. */\n  flags: Record<string, number>;",
      "  blobs: Uint8Array[];",
      "  at: Timestamp | null;",
      "export type Nothing = Record<string, never>;",
      "  by: Uint8Array;",
      "  u64: Int64;",
      "  f: number;",
      "  b: boolean;",
    ]
  ) {
    assert.ok(text.includes(line), `missing: ${line}`);
  }
});

Deno.test("rendered types type-check and are stable under deno fmt", async () => {
  const root = loadProtoRoot({ "t.proto": SAMPLE_PROTO });
  const dir = await Deno.makeTempDir({ prefix: "proto_types_test_" });
  try {
    const path = join(dir, "types.ts");
    await Deno.writeTextFile(path, renderTypes(describeTypes(root, DECODE_OPTIONS)));
    for (const args of [["check", "-q", path], ["fmt", "-q", "--check", path]]) {
      const out = await new Deno.Command(Deno.execPath(), { args, cwd: dir }).output();
      assert.ok(out.success, `deno ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("decode options the types do not describe are refused", () => {
  const root = loadProtoRoot({});
  for (
    const [change, message] of [
      [{ longs: Number }, /option longs is Number, the generator only describes String/],
      [{ enums: String }, /option enums is String/],
      [{ defaults: false }, /option defaults is undefined, the generator only describes true/],
      [{ oneofs: true }, /option oneofs is true/],
      [{ bytes: String }, /option bytes is String/],
      [{ json: true }, /option json is true/],
    ] as const
  ) {
    assert.throws(() => describeTypes(root, { ...DECODE_OPTIONS, ...change }), message);
  }
  assert.throws(
    () => describeTypes(root, { ...DECODE_OPTIONS, longz: String } as protobuf.IConversionOptions),
    /unknown option "longz"/,
  );
});

Deno.test("proto types that would share a TypeScript name are refused", () => {
  const clash = loadProtoRoot({
    "a.proto": 'syntax = "proto3"; package a; message X {}',
    "b.proto": 'syntax = "proto3"; package b; message X {}',
  });
  assert.throws(
    () => describeTypes(clash, DECODE_OPTIONS),
    { name: "ProtoTypesError", message: /"b\.X": its name X is taken by "a\.X"/ },
  );
  const nested = loadProtoRoot({
    "c.proto": 'syntax = "proto3"; package c; message A { message B {} } message A_B {}',
  });
  assert.throws(() => describeTypes(nested, DECODE_OPTIONS), /name A_B is taken by "c\.A\.B"/);
  const reserved = loadProtoRoot({ "d.proto": 'syntax = "proto3"; package d; message Int64 {}' });
  assert.throws(() => describeTypes(reserved, DECODE_OPTIONS), /taken by the generated module/);
});
