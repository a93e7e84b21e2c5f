/**
 * The wire contract: protobuf types of `containerd.services.snapshots.v1.Snapshots`, loaded from
 * the embedded proto text, and the gRPC service definition built from them.
 *
 * Decoded messages use proto field names (`created_at`), enums as numbers and 64-bit integers
 * as decimal strings, so no precision is lost on decoding; encoding accepts numbers or strings.
 * The message types are generated from the same `.proto` files (`proto_types.ts`); the `Wire*`
 * names below alias them for the rest of the code.
 *
 * Decoding is strict about strings: every string field (also repeated, map keys and values, in
 * nested messages) must be valid UTF-8, as proto3 requires and Go's protobuf enforces; the
 * bytes are checked before protobufjs, which would turn invalid ones into U+FFFD, decodes them.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import protobuf from "protobufjs";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { InvalidArgumentError } from "../util/errors.ts";
import { quote } from "../util/quote.ts";
import { PROTO_FILES } from "./proto_text.ts";
import type * as pb from "./proto_types.ts";

/** Proto package of the service. */
export const SNAPSHOTS_PACKAGE = "containerd.services.snapshots.v1";
/** Fully-qualified service name (it appears in every HTTP/2 `:path`). */
export const SNAPSHOTS_SERVICE = `${SNAPSHOTS_PACKAGE}.Snapshots`;

/** Well-known types the service imports; protobufjs bundles their definitions. */
const WELL_KNOWN = [
  "google/protobuf/empty.proto",
  "google/protobuf/field_mask.proto",
  "google/protobuf/timestamp.proto",
];

/**
 * Options used to turn decoded messages into plain objects. `proto_types.ts` describes exactly
 * the objects they produce: its generator refuses other options, so a change here fails
 * `proto_types_test.ts` until the types are regenerated for it.
 */
export const DECODE_OPTIONS: Readonly<protobuf.IConversionOptions> = {
  longs: String,
  enums: Number,
  defaults: true,
  arrays: true,
  objects: true,
};

/** Wire `google.protobuf.Timestamp`; `seconds` is a decimal string after decoding. */
export type WireTimestamp = pb.Timestamp;

/** Wire `containerd.types.Mount`. */
export type WireMount = pb.Mount;

/** Wire `Info`. `kind`: 0 unknown, 1 view, 2 active, 3 committed (`Kind` of `proto_types.ts`). */
export type WireInfo = pb.Info;

/** Prepare/View request (the two messages have the same fields). */
export type WirePrepareRequest = pb.PrepareSnapshotRequest | pb.ViewSnapshotRequest;

/** Requests that only name a key: Mounts, Remove, Stat, Usage (the same fields). */
export type WireKeyRequest =
  | pb.MountsRequest
  | pb.RemoveSnapshotRequest
  | pb.StatSnapshotRequest
  | pb.UsageRequest;

/** Commit request. */
export type WireCommitRequest = pb.CommitSnapshotRequest;

/** Update request. */
export type WireUpdateRequest = pb.UpdateSnapshotRequest;

/** List request. */
export type WireListRequest = pb.ListSnapshotsRequest;

/** Cleanup request. */
export type WireCleanupRequest = pb.CleanupRequest;

/** Responses carrying mounts (Prepare, View, Mounts: the same fields). */
export type WireMountsResponse =
  | pb.PrepareSnapshotResponse
  | pb.ViewSnapshotResponse
  | pb.MountsResponse;

/** Responses carrying one Info (Stat, Update: the same fields). */
export type WireInfoResponse = pb.StatSnapshotResponse | pb.UpdateSnapshotResponse;

/** One List stream message. */
export type WireListResponse = pb.ListSnapshotsResponse;

/** Usage response; 64-bit values are decimal strings after decoding. */
export type WireUsageResponse = pb.UsageResponse;

/** `google.protobuf.Empty`. */
export type WireEmpty = pb.Empty;

/** A method of the service with its request and response types. */
interface MethodSpec {
  request: string;
  response: string;
  responseStream: boolean;
}

/** The ten RPCs, in the order of the proto file. */
export const METHODS = {
  Prepare: { request: "PrepareSnapshotRequest", response: "PrepareSnapshotResponse" },
  View: { request: "ViewSnapshotRequest", response: "ViewSnapshotResponse" },
  Mounts: { request: "MountsRequest", response: "MountsResponse" },
  Commit: { request: "CommitSnapshotRequest", response: ".google.protobuf.Empty" },
  Remove: { request: "RemoveSnapshotRequest", response: ".google.protobuf.Empty" },
  Stat: { request: "StatSnapshotRequest", response: "StatSnapshotResponse" },
  Update: { request: "UpdateSnapshotRequest", response: "UpdateSnapshotResponse" },
  List: { request: "ListSnapshotsRequest", response: "ListSnapshotsResponse", stream: true },
  Usage: { request: "UsageRequest", response: "UsageResponse" },
  Cleanup: { request: "CleanupRequest", response: ".google.protobuf.Empty" },
} as const;

/** Name of an RPC. */
export type MethodName = keyof typeof METHODS;

function methodSpec(name: MethodName): MethodSpec {
  const m: { request: string; response: string; stream?: boolean } = METHODS[name];
  return { request: m.request, response: m.response, responseStream: m.stream === true };
}

/** Encoder/decoder of one message type. */
/**
 * A message already encoded (e.g. a List response made of the encoded Infos the store keeps):
 * {@linkcode MessageCodec.encode} passes its bytes through as they are.
 */
export class EncodedMessage {
  /** Wraps `bytes`, a message of the type it is sent as. */
  constructor(readonly bytes: Uint8Array) {}
}

export interface MessageCodec<T> {
  /** Fully-qualified type name. */
  readonly typeName: string;
  /**
   * Encodes a plain object (unknown fields ignored; values converted as protobufjs does); an
   * {@linkcode EncodedMessage} is sent as it is.
   */
  encode(value: Partial<T> | EncodedMessage): Uint8Array;
  /**
   * Decodes bytes into a plain object with every field present (defaults filled in).
   * Throws {@linkcode InvalidUtf8Error} (an `InvalidArgumentError`) when a string field is not
   * valid UTF-8, and protobufjs's error when the bytes are not a message of the type.
   */
  decode(bytes: Uint8Array): T;
}

/** The loaded contract. */
export interface SnapshotsProto {
  /** The protobufjs root (all types resolved). */
  readonly root: protobuf.Root;
  /** Codec for a type: a name relative to the service package, or `.`-prefixed absolute. */
  codec<T>(typeName: string): MessageCodec<T>;
  /** The gRPC service definition for `@grpc/grpc-js` (server and client). */
  readonly service: ServiceDefinition;
}

/** Parses the embedded proto text (plus bundled well-known types) into a resolved root. */
export function loadProtoRoot(
  files: Readonly<Record<string, string>> = PROTO_FILES,
): protobuf.Root {
  const root = new protobuf.Root();
  for (const name of WELL_KNOWN) {
    const json = protobuf.common.get(name);
    if (!json?.nested) throw new Error(`Cannot load "${name}": not bundled with protobufjs`);
    root.addJSON(json.nested);
  }
  for (const [name, text] of Object.entries(files)) {
    try {
      protobuf.parse(text, root, { keepCase: true });
    } catch (err) {
      throw new Error(`Cannot parse "${name}": ${(err as Error).message}`, { cause: err });
    }
  }
  root.resolveAll();
  return root;
}

/**
 * A string field of a message is not valid UTF-8. proto3 requires strings to be (Go's protobuf
 * refuses such a message); protobufjs would decode the bytes leniently (U+FFFD, lone
 * surrogates), so a key would silently become another key.
 */
export class InvalidUtf8Error extends InvalidArgumentError {
  /** Where: e.g. `key`, `labels` (a key), `info.labels["k"]` (a value), `filters[1]`. */
  readonly field: string;
  /** Creates the error. */
  constructor(typeName: string, field: string, options?: ErrorOptions) {
    super(`Invalid ${typeName.split(".").pop()}: field ${field} is not valid UTF-8`, options);
    this.name = "InvalidUtf8Error";
    this.field = field;
  }
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** True when `bytes` are valid UTF-8 (no overlong forms, surrogates or values past U+10FFFF). */
export function isValidUtf8(bytes: Uint8Array): boolean {
  let i = 0;
  while (i < bytes.length && bytes[i] < 0x80) i++; // ASCII: nothing to decode
  if (i === bytes.length) return true;
  try {
    strictUtf8.decode(bytes.subarray(i));
    return true;
  } catch {
    return false;
  }
}

/** Wire type of length-delimited fields (strings, messages, map entries, packed arrays). */
const LEN = 2;

/**
 * Walks the wire bytes of a `type` message and throws {@linkcode InvalidUtf8Error} at the first
 * string field (singular, repeated, map key or value, in nested messages too) that is not
 * valid UTF-8. Malformed framing ends the walk quietly: decoding reports it.
 */
function checkStrings(type: protobuf.Type, bytes: Uint8Array, top: string, path: string): void {
  const seen = new Map<number, number>();
  forEachLenField(bytes, (id) => type.fieldsById[id] !== undefined, (id, value) => {
    const field = type.fieldsById[id];
    const index = seen.get(field.id) ?? 0;
    seen.set(field.id, index + 1);
    const name = path + field.name;
    if (field instanceof protobuf.MapField) {
      checkMapEntry(field, value, top, name);
    } else if (field.resolvedType instanceof protobuf.Type) {
      checkStrings(field.resolvedType, value, top, `${name}${field.repeated ? `[${index}]` : ""}.`);
    } else if (field.type === "string" && !isValidUtf8(value)) {
      throw new InvalidUtf8Error(top, JSON.stringify(field.repeated ? `${name}[${index}]` : name));
    }
  });
}

/**
 * Calls `fn` with the number and bytes of each length-delimited field of the message `bytes`
 * that `wanted` takes, in wire order; every other field is skipped (protobufjs throws a
 * RangeError when it runs past the end). A wanted field that runs past the end ends the walk
 * of this message quietly.
 */
function forEachLenField(
  bytes: Uint8Array,
  wanted: (id: number) => boolean,
  fn: (id: number, value: Uint8Array) => void,
): void {
  const reader = protobuf.Reader.create(bytes);
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const id = tag >>> 3;
    if ((tag & 7) !== LEN || !wanted(id)) {
      reader.skipType(tag & 7);
      continue;
    }
    const length = reader.uint32();
    const start = reader.pos;
    if (start + length > reader.len) return;
    reader.pos = start + length;
    fn(id, bytes.subarray(start, start + length));
  }
}

/** A map entry: key is field 1, value field 2. */
function checkMapEntry(field: protobuf.MapField, entry: Uint8Array, top: string, name: string) {
  let key: Uint8Array | undefined;
  forEachLenField(entry, (id) => id === 1 || id === 2, (id, value) => {
    if (id === 1) {
      if (field.keyType === "string" && !isValidUtf8(value)) {
        throw new InvalidUtf8Error(top, `${JSON.stringify(name)} (a key)`);
      }
      key = value;
    } else if (field.resolvedType instanceof protobuf.Type) {
      checkStrings(field.resolvedType, value, top, `${name}.`);
    } else if (field.type === "string" && !isValidUtf8(value)) {
      const of = key === undefined ? "" : ` of ${quote(new TextDecoder().decode(key))}`;
      throw new InvalidUtf8Error(top, `${JSON.stringify(name)} (the value${of})`);
    }
  });
}

/**
 * Throws {@linkcode InvalidUtf8Error} when a string field anywhere in the `type` message
 * `bytes` is not valid UTF-8.
 */
export function checkUtf8(type: protobuf.Type, bytes: Uint8Array): void {
  try {
    checkStrings(type, bytes, type.fullName.replace(/^\./, ""), "");
  } catch (err) {
    if (err instanceof InvalidUtf8Error) throw err;
    // malformed framing (e.g. a length past the end): left to the decoder to report
  }
}

function makeCodec<T>(root: protobuf.Root, typeName: string): MessageCodec<T> {
  const full = typeName.startsWith(".") ? typeName.slice(1) : `${SNAPSHOTS_PACKAGE}.${typeName}`;
  const type = root.lookupType(full);
  return {
    typeName: full,
    encode: (value) =>
      value instanceof EncodedMessage
        ? value.bytes
        : type.encode(type.fromObject(value as Record<string, unknown>)).finish(),
    decode: (bytes) => {
      checkUtf8(type, bytes);
      return type.toObject(type.decode(bytes), DECODE_OPTIONS) as T;
    },
  };
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** Loads the contract from the embedded proto text. */
export function loadSnapshotsProto(): SnapshotsProto {
  const root = loadProtoRoot();
  const codec = <T>(typeName: string) => makeCodec<T>(root, typeName);
  const service: Record<string, MethodDefinition<object, object>> = {};
  for (const name of Object.keys(METHODS) as MethodName[]) {
    const spec = methodSpec(name);
    const req = codec<object>(spec.request);
    const res = codec<object>(spec.response);
    service[name] = {
      path: `/${SNAPSHOTS_SERVICE}/${name}`,
      requestStream: false,
      responseStream: spec.responseStream,
      requestSerialize: (value) => toBuffer(req.encode(value)),
      requestDeserialize: (bytes) => req.decode(bytes),
      responseSerialize: (value) => toBuffer(res.encode(value)),
      responseDeserialize: (bytes) => res.decode(bytes),
      originalName: name,
    };
  }
  return { root, codec, service };
}
