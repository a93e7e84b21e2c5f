/**
 * Renders `src/server/proto_types.ts`: one TypeScript type per message and enum of a loaded
 * protobufjs root, describing the plain objects `src/server/proto.ts` decodes and encodes.
 * `tools/gen_proto_text.ts` runs it (one command regenerates both generated files), and
 * `src/server/proto_types_test.ts` fails when the file is stale.
 *
 * Invariants: the types describe exactly the objects protobufjs's `toObject` produces with the
 * decode options given, so only the options `proto.ts` uses are accepted (anything else throws
 * rather than rendering types that lie); two proto types that would share a TypeScript name
 * throw; the output is stable under `deno fmt`, so the test compares text.
 *
 * @module
 */
import protobuf from "protobufjs";

/** How one field appears in a decoded object. */
export interface FieldModel {
  /** Property name (the proto field name; `proto.ts` parses with `keepCase`). */
  name: string;
  /** The field as declared in proto syntax, e.g. `map<string, string> labels = 6`. */
  declaration: string;
  /** TypeScript type of the property. */
  type: string;
  /** True for oneof members (proto3 `optional` included): present only when set. */
  optional: boolean;
  /** A sentence documenting what the type cannot say, if any. */
  note?: string;
}

/** A message type. */
export interface MessageModel {
  kind: "message";
  /** TypeScript name: the proto name, nested names joined with `_`. */
  name: string;
  /** Fully-qualified proto name without the leading dot. */
  fullName: string;
  /** Fields in declaration order. */
  fields: FieldModel[];
}

/** An enum type. */
export interface EnumModel {
  kind: "enum";
  /** TypeScript name: the proto name, nested names joined with `_`. */
  name: string;
  /** Fully-qualified proto name without the leading dot. */
  fullName: string;
  /** Value names and numbers in declaration order. */
  values: [string, number][];
}

/** One generated type. */
export type TypeModel = MessageModel | EnumModel;

/** Name of the generated alias for 64-bit integer fields. */
export const INT64 = "Int64";

/** TypeScript type of each scalar proto type as decoded with `longs: String` and no `bytes`. */
const SCALARS: Readonly<Record<string, string>> = {
  double: "number",
  float: "number",
  int32: "number",
  uint32: "number",
  sint32: "number",
  fixed32: "number",
  sfixed32: "number",
  int64: INT64,
  uint64: INT64,
  sint64: INT64,
  fixed64: INT64,
  sfixed64: INT64,
  bool: "boolean",
  string: "string",
  bytes: "Uint8Array",
};

/** Names the output itself uses, which no proto type may take. */
const RESERVED = new Set([INT64, "Record", "Uint8Array", "Array"]);

/** The decode options the rendered types describe; `proto.ts` must decode with exactly these. */
const DESCRIBED: Readonly<Record<string, unknown>> = {
  longs: String,
  enums: Number,
  bytes: undefined,
  defaults: true,
  arrays: true,
  objects: true,
  oneofs: undefined,
  json: undefined,
};

/** Error thrown when a root or options cannot be described. */
export class ProtoTypesError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtoTypesError";
  }
}

function optionName(value: unknown): string {
  return typeof value === "function" ? value.name : String(value);
}

function checkOptions(options: protobuf.IConversionOptions): void {
  const given = options as Record<string, unknown>;
  for (const key of Object.keys(given)) {
    if (!Object.hasOwn(DESCRIBED, key)) {
      throw new ProtoTypesError(`Cannot describe decoded messages: unknown option "${key}"`);
    }
  }
  for (const [key, want] of Object.entries(DESCRIBED)) {
    // `false` and absent mean the same to protobufjs
    const got = given[key] === false ? undefined : given[key];
    if (got !== want) {
      throw new ProtoTypesError(
        `Cannot describe decoded messages: option ${key} is ${optionName(got)}, ` +
          `the generator only describes ${optionName(want)}`,
      );
    }
  }
}

/** TypeScript name of a message or enum: its name and those of the messages it nests in. */
function tsName(obj: protobuf.ReflectionObject): string {
  const parts: string[] = [];
  let o: protobuf.ReflectionObject | null = obj;
  while (o instanceof protobuf.Type || o instanceof protobuf.Enum) {
    parts.unshift(o.name);
    o = o.parent;
  }
  return parts.join("_");
}

function fullName(obj: protobuf.ReflectionObject): string {
  return obj.fullName.replace(/^\./, "");
}

function valueType(field: protobuf.FieldBase, where: string): string {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Enum) return "number";
  if (resolved instanceof protobuf.Type) return tsName(resolved);
  const scalar = SCALARS[field.type];
  if (scalar === undefined) {
    throw new ProtoTypesError(`Cannot describe ${where}: unresolved type "${field.type}"`);
  }
  return scalar;
}

function describeField(field: protobuf.Field, where: string): FieldModel {
  field.resolve();
  const value = valueType(field, where);
  const isMessage = field.resolvedType instanceof protobuf.Type;
  const optional = field.partOf !== null;
  let declaration: string;
  let type: string;
  if (field instanceof protobuf.MapField) {
    declaration = `map<${field.keyType}, ${field.type}> ${field.name} = ${field.id}`;
    type = `Record<string, ${value}>`;
  } else if (field.repeated) {
    declaration = `repeated ${field.type} ${field.name} = ${field.id}`;
    type = `${value}[]`;
  } else {
    const proto3Optional = field.options?.proto3_optional === true;
    declaration = `${proto3Optional ? "optional " : ""}${field.type} ${field.name} = ${field.id}`;
    type = isMessage && !optional ? `${value} | null` : value;
  }
  const notes: string[] = [];
  if (field.resolvedType instanceof protobuf.Enum) {
    notes.push(
      `a {@linkcode ${tsName(field.resolvedType)}} value; other numbers decode as they are`,
    );
  }
  if (field instanceof protobuf.MapField && field.keyType !== "string") {
    notes.push(`keys are ${field.keyType}s as protobufjs renders them`);
  }
  if (optional && field.options?.proto3_optional !== true && field.partOf) {
    notes.push(`member of oneof \`${field.partOf.name}\``);
  }
  const model: FieldModel = { name: field.name, declaration, type, optional };
  if (notes.length > 0) model.note = notes.join("; ");
  return model;
}

/**
 * Describes every message and enum of `root` (services are skipped) as decoded with
 * `options`, in the root's order. Throws {@linkcode ProtoTypesError} on options other than
 * the ones described, on unresolved types and on TypeScript name clashes.
 */
export function describeTypes(
  root: protobuf.Root,
  options: protobuf.IConversionOptions,
): TypeModel[] {
  checkOptions(options);
  const models: TypeModel[] = [];
  const owners = new Map<string, string>();
  const claim = (obj: protobuf.ReflectionObject): string => {
    const name = tsName(obj);
    const other = owners.get(name) ?? (RESERVED.has(name) ? "the generated module" : undefined);
    if (other !== undefined) {
      throw new ProtoTypesError(
        `Cannot describe "${fullName(obj)}": its name ${name} is taken by ${other}`,
      );
    }
    owners.set(name, `"${fullName(obj)}"`);
    return name;
  };
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const obj of ns.nestedArray) {
      if (obj instanceof protobuf.Type) {
        const name = claim(obj);
        const fields = obj.fieldsArray.map((f) =>
          describeField(f, `field "${f.name}" of "${fullName(obj)}"`)
        );
        models.push({ kind: "message", name, fullName: fullName(obj), fields });
        walk(obj);
      } else if (obj instanceof protobuf.Enum) {
        const values = Object.entries(obj.values);
        models.push({ kind: "enum", name: claim(obj), fullName: fullName(obj), values });
      } else if (obj instanceof protobuf.Namespace && !(obj instanceof protobuf.Service)) {
        walk(obj);
      }
    }
  };
  walk(root);
  return models;
}

const HEADER = [
  "// Generated by tools/gen_proto_text.ts with gen_proto_types.ts from proto/ - do not edit.",
  "/**",
  " * TypeScript types of the messages and enums under `proto/` and of the well-known types they",
  " * import, as `proto.ts` decodes them (its `DECODE_OPTIONS`) and as its encoder takes them:",
  " *",
  " * - every field is present, with its default when unset, except oneof members (proto3",
  " *   `optional` included), which are present only when set;",
  " * - a singular message field is `null` when unset; repeated fields are arrays and maps are",
  " *   objects keyed by strings (`[]` and `{}` when empty);",
  " * - enum fields are numbers, and any number decodes as it is (proto3 enums are open); each",
  " *   enum is also a const object of its named values;",
  ` * - 64-bit integers are {@linkcode ${INT64}}s: decimal strings after decoding, so no`,
  " *   precision is lost; the encoder also takes numbers;",
  " * - bytes are `Uint8Array`s.",
  " *",
  " * Regenerate with `deno run -R -W --allow-run tools/gen_proto_text.ts`; `proto_types_test.ts`",
  " * fails when this file is stale.",
  " *",
  " * @module",
  " */",
  "",
  "/**",
  " * A 64-bit integer field: a decimal string after decoding (exact for any value); encoding also",
  " * takes a number.",
  " */",
  `export type ${INT64} = string | number;`,
].join("\n");

function renderMessage(m: MessageModel): string {
  const doc = `/** \`${m.fullName}\`. */`;
  if (m.fields.length === 0) return `${doc}\nexport type ${m.name} = Record<string, never>;`;
  const fields = m.fields.map((f) => {
    const note = f.note === undefined ? "." : `: ${f.note}.`;
    return `  /** \`${f.declaration}\`${note} */\n  ${f.name}${f.optional ? "?" : ""}: ${f.type};`;
  });
  return `${doc}\nexport interface ${m.name} {\n${fields.join("\n")}\n}`;
}

function renderEnum(e: EnumModel): string {
  const values = e.values.map(([name, n]) => `  ${name}: ${n},`).join("\n");
  return [
    `/** \`${e.fullName}\`: the number of each named value. */`,
    `export const ${e.name} = {\n${values}\n} as const;`,
    `/** A named \`${e.fullName}\` value. */`,
    `export type ${e.name} = (typeof ${e.name})[keyof typeof ${e.name}];`,
  ].join("\n");
}

/** The text of `proto_types.ts` for `models`. */
export function renderTypes(models: readonly TypeModel[]): string {
  const parts = models.map((m) => m.kind === "message" ? renderMessage(m) : renderEnum(m));
  return [HEADER, ...parts].join("\n\n") + "\n";
}
