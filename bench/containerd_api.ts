/**
 * A small gRPC client of containerd's own API on its main socket, for the benchmark: the
 * Snapshots service (`containerd.services.snapshots.v1.Snapshots`, every request naming the
 * snapshotter it is for) and the Leases service (create, and delete with `sync` so containerd
 * runs its garbage collection before answering).
 *
 * Built on the project's wire contract (src/server/proto.ts) rather than
 * src/server/client.ts, because that client talks to one snapshotter directly and neither
 * sets the `snapshotter` field nor a `containerd-lease` header.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  type CallOptions,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type MethodDefinition,
  type ServiceDefinition,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  loadProtoRoot,
  loadSnapshotsProto,
  type MethodName,
  type WireInfo,
  type WireMount,
} from "../src/server/proto.ts";

/** Where a call goes: namespace (required by containerd) and optional lease. */
export interface CallScope {
  namespace: string;
  /** Sent as the `containerd-lease` header: what the call creates is held by this lease. */
  lease?: string;
}

/** containerd's Leases service, reduced to the fields the benchmark uses. */
const LEASES_PROTO = `
syntax = "proto3";
package containerd.services.leases.v1;
import "google/protobuf/empty.proto";

service Leases {
  rpc Create(CreateRequest) returns (CreateResponse);
  rpc Delete(DeleteRequest) returns (google.protobuf.Empty);
}

message CreateRequest {
  string id = 1;
  map<string, string> labels = 3;
}

message CreateResponse {}

message DeleteRequest {
  string id = 1;
  bool sync = 2;
}
`;

/** A connection to containerd's API. */
export interface ContainerdApi {
  /** One unary Snapshots RPC for `snapshotter`; resolves with the decoded response. */
  snapshots(
    method: Exclude<MethodName, "List">,
    snapshotter: string,
    request: Record<string, unknown>,
    scope: CallScope,
  ): Promise<Record<string, unknown>>;
  /** Snapshots.List for `snapshotter`: every Info, and how many stream messages carried them. */
  list(
    snapshotter: string,
    scope: CallScope,
    filters?: string[],
  ): Promise<{ infos: WireInfo[]; messages: number }>;
  /** Creates lease `id` in the scope's namespace. */
  createLease(id: string, scope: CallScope): Promise<void>;
  /** Deletes lease `id`; with `sync`, containerd collects garbage before answering. */
  deleteLease(id: string, scope: CallScope, sync: boolean): Promise<void>;
  /** Closes the channel. */
  close(): void;
}

type UnaryFn = (
  request: unknown,
  metadata: Metadata,
  options: CallOptions,
  callback: (err: ServiceError | null, response?: unknown) => void,
) => unknown;

type StreamFn = (request: unknown, metadata: Metadata, options: CallOptions) => {
  on(event: string, listener: (arg: unknown) => void): void;
};

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

function leasesService(): ServiceDefinition {
  const root = loadProtoRoot({ "containerd/services/leases/v1/leases.proto": LEASES_PROTO });
  const method = (name: string, req: string, res: string): MethodDefinition<object, object> => {
    const reqType = root.lookupType(req);
    const resType = root.lookupType(res);
    return {
      path: `/containerd.services.leases.v1.Leases/${name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (v) => toBuffer(reqType.encode(reqType.fromObject(v)).finish()),
      requestDeserialize: (b) => reqType.toObject(reqType.decode(b)),
      responseSerialize: (v) => toBuffer(resType.encode(resType.fromObject(v)).finish()),
      responseDeserialize: (b) => resType.toObject(resType.decode(b)),
      originalName: name,
    };
  };
  const pkg = "containerd.services.leases.v1";
  return {
    Create: method("Create", `${pkg}.CreateRequest`, `${pkg}.CreateResponse`),
    Delete: method("Delete", `${pkg}.DeleteRequest`, "google.protobuf.Empty"),
  };
}

function metadataFor(scope: CallScope): Metadata {
  const md = new Metadata();
  md.set("containerd-namespace", scope.namespace);
  if (scope.lease) md.set("containerd-lease", scope.lease);
  return md;
}

/** Connects to containerd's gRPC socket at `socket` (a path). */
export function connectContainerd(socket: string): ContainerdApi {
  const address = `unix://${socket}`;
  const options = {
    "grpc.max_receive_message_length": 16 * 1024 * 1024,
    "grpc.max_send_message_length": 16 * 1024 * 1024,
  };
  const Snapshots = makeGenericClientConstructor(loadSnapshotsProto().service, "Snapshots");
  const Leases = makeGenericClientConstructor(leasesService(), "Leases");
  const snapshots = new Snapshots(address, credentials.createInsecure(), options);
  // Same channel options and target: grpc-js shares one subchannel (one connection).
  const leases = new Leases(address, credentials.createInsecure(), options);

  function unary(
    client: typeof snapshots,
    method: string,
    request: unknown,
    scope: CallScope,
  ): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const fn = (client[method] as UnaryFn).bind(client);
      fn(request, metadataFor(scope), {}, (err, response) => {
        if (err) {
          reject(
            new Error(`containerd ${method} failed: ${err.details || err.message}`, {
              cause: err,
            }),
          );
        } else resolve(response as Record<string, unknown>);
      });
    });
  }

  return {
    snapshots: (method, snapshotter, request, scope) =>
      unary(snapshots, method, { ...request, snapshotter }, scope),
    list: (snapshotter, scope, filters = []) =>
      new Promise((resolve, reject) => {
        const call = (snapshots.List as StreamFn).bind(snapshots)(
          { snapshotter, filters },
          metadataFor(scope),
          {},
        );
        const infos: WireInfo[] = [];
        let messages = 0;
        call.on("data", (m) => {
          messages++;
          infos.push(...(m as { info: WireInfo[] }).info);
        });
        call.on("error", (err) => {
          const e = err as ServiceError;
          reject(new Error(`containerd List failed: ${e.details || e.message}`, { cause: e }));
        });
        call.on("end", () => resolve({ infos, messages }));
      }),
    createLease: async (id, scope) => {
      await unary(leases, "Create", { id, labels: {} }, { namespace: scope.namespace });
    },
    deleteLease: async (id, scope, sync) => {
      await unary(leases, "Delete", { id, sync }, { namespace: scope.namespace });
    },
    close: () => {
      snapshots.close();
      leases.close();
    },
  };
}

/** The mounts of a Prepare/View/Mounts response. */
export function responseMounts(response: Record<string, unknown>): WireMount[] {
  const mounts = response.mounts;
  if (!Array.isArray(mounts)) throw new Error("Cannot read mounts: the response has none");
  return mounts as WireMount[];
}
