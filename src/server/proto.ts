/**
 * The wire contract: protobuf types of `containerd.services.snapshots.v1.Snapshots`, loaded from
 * the embedded proto text, and the gRPC service definition built from them.
 *
 * Decoded messages use proto field names (`created_at`), enums as numbers and 64-bit integers
 * as decimal strings, so no precision is lost on decoding; encoding accepts numbers or strings.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import protobuf from "protobufjs";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { PROTO_FILES } from "./proto_text.ts";

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

/** Options used to turn decoded messages into plain objects. */
const TO_OBJECT: protobuf.IConversionOptions = {
  longs: String,
  enums: Number,
  defaults: true,
  arrays: true,
  objects: true,
};

/** Wire `google.protobuf.Timestamp`; `seconds` is a decimal string after decoding. */
export interface WireTimestamp {
  seconds: string | number;
  nanos: number;
}

/** Wire `containerd.types.Mount`. */
export interface WireMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** Wire `Info`. `kind`: 0 unknown, 1 view, 2 active, 3 committed. */
export interface WireInfo {
  name: string;
  parent: string;
  kind: number;
  created_at: WireTimestamp | null;
  updated_at: WireTimestamp | null;
  labels: Record<string, string>;
}

/** Prepare/View request. */
export interface WirePrepareRequest {
  snapshotter: string;
  key: string;
  parent: string;
  labels: Record<string, string>;
}

/** Requests that only name a key (Mounts, Remove, Stat, Usage). */
export interface WireKeyRequest {
  snapshotter: string;
  key: string;
}

/** Commit request. */
export interface WireCommitRequest {
  snapshotter: string;
  name: string;
  key: string;
  labels: Record<string, string>;
  parent: string;
}

/** Update request. */
export interface WireUpdateRequest {
  snapshotter: string;
  info: WireInfo | null;
  update_mask: { paths: string[] } | null;
}

/** List request. */
export interface WireListRequest {
  snapshotter: string;
  filters: string[];
}

/** Cleanup request. */
export interface WireCleanupRequest {
  snapshotter: string;
}

/** Responses carrying mounts (Prepare, View, Mounts). */
export interface WireMountsResponse {
  mounts: WireMount[];
}

/** Responses carrying one Info (Stat, Update). */
export interface WireInfoResponse {
  info: WireInfo | null;
}

/** One List stream message. */
export interface WireListResponse {
  info: WireInfo[];
}

/** Usage response; 64-bit values are decimal strings after decoding. */
export interface WireUsageResponse {
  size: string | number;
  inodes: string | number;
}

/** `google.protobuf.Empty`. */
export type WireEmpty = Record<string, never>;

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
export interface MessageCodec<T> {
  /** Fully-qualified type name. */
  readonly typeName: string;
  /** Encodes a plain object (unknown fields ignored; values converted as protobufjs does). */
  encode(value: Partial<T>): Uint8Array;
  /** Decodes bytes into a plain object with every field present (defaults filled in). */
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

function makeCodec<T>(root: protobuf.Root, typeName: string): MessageCodec<T> {
  const full = typeName.startsWith(".") ? typeName.slice(1) : `${SNAPSHOTS_PACKAGE}.${typeName}`;
  const type = root.lookupType(full);
  return {
    typeName: full,
    encode: (value) => type.encode(type.fromObject(value as Record<string, unknown>)).finish(),
    decode: (bytes) => type.toObject(type.decode(bytes), TO_OBJECT) as T,
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
