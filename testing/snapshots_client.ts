/**
 * A small typed client of the Snapshots service over a unix socket, built on `@grpc/grpc-js`.
 * Used by tests, the stress client and tools; containerd itself uses its Go client.
 *
 * Failed calls reject with grpc-js's `ServiceError` (`code`, `details`).
 *
 * @module
 */
import {
  type CallOptions,
  type Client,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import type { Info, Mount, Usage } from "../src/snapshots/types.ts";
import { infoFromWire, mountFromWire, usageFromWire } from "../src/server/convert.ts";
import {
  loadSnapshotsProto,
  type MethodName,
  type WireInfo,
  type WireInfoResponse,
  type WireListResponse,
  type WireMountsResponse,
  type WireUsageResponse,
} from "../src/server/proto.ts";
import { socketPath } from "../src/server/socket.ts";

/** Per-call options. */
export interface CallOpts {
  /** Absolute deadline (ms since epoch or Date). */
  deadline?: number | Date;
  /** Aborting cancels the call (the promise rejects with code CANCELLED). */
  signal?: AbortSignal;
}

/** Result of a List call, with how the stream was batched. */
export interface ListResult {
  infos: Info[];
  /** Number of stream messages received. */
  messages: number;
}

/** A connected client. */
export interface SnapshotsClient {
  prepare(
    key: string,
    parent?: string,
    labels?: Record<string, string>,
    o?: CallOpts,
  ): Promise<Mount[]>;
  view(
    key: string,
    parent?: string,
    labels?: Record<string, string>,
    o?: CallOpts,
  ): Promise<Mount[]>;
  mounts(key: string, o?: CallOpts): Promise<Mount[]>;
  commit(
    name: string,
    key: string,
    labels?: Record<string, string>,
    o?: CallOpts & { parent?: string },
  ): Promise<void>;
  remove(key: string, o?: CallOpts): Promise<void>;
  stat(key: string, o?: CallOpts): Promise<Info>;
  update(
    name: string,
    labels: Record<string, string>,
    paths?: string[],
    o?: CallOpts,
  ): Promise<Info>;
  usage(key: string, o?: CallOpts): Promise<Usage>;
  list(filters?: string[], o?: CallOpts): Promise<ListResult>;
  cleanup(o?: CallOpts): Promise<void>;
  /** Sends any request object to any method; resolves with the decoded wire response(s). */
  raw(method: MethodName, request: Record<string, unknown>, o?: CallOpts): Promise<unknown>;
  /** The underlying grpc-js client. */
  readonly grpc: Client;
  /** Closes the channel. */
  close(): void;
}

/** Type guard for grpc-js call errors. */
export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number";
}

type UnaryFn = (
  request: unknown,
  metadata: Metadata,
  options: CallOptions,
  callback: (err: ServiceError | null, response?: unknown) => void,
) => { cancel(): void };

type StreamFn = (request: unknown, metadata: Metadata, options: CallOptions) => {
  cancel(): void;
  on(event: string, listener: (arg: unknown) => void): void;
};

/** Options of {@linkcode connectSnapshots}. */
export interface ConnectOptions {
  /**
   * The HTTP/2 receive window the client opens, in bytes (default grpc-js's: 64 KiB, so a large
   * List waits for a WINDOW_UPDATE every 64 KiB; grpc-go clients such as containerd's grow
   * theirs up to 16 MiB by bandwidth-delay estimation).
   */
  flowControlWindow?: number;
}

/** Connects to the service at `address` (socket path or `unix://` address). */
export function connectSnapshots(
  address: string,
  namespace = "default",
  options: ConnectOptions = {},
): SnapshotsClient {
  const proto = loadSnapshotsProto();
  const Ctor = makeGenericClientConstructor(proto.service, "Snapshots");
  const client = new Ctor(`unix://${socketPath(address)}`, credentials.createInsecure(), {
    "grpc.max_receive_message_length": 16 * 1024 * 1024,
    "grpc.max_send_message_length": 16 * 1024 * 1024,
    ...(options.flowControlWindow
      ? { "grpc-node.flow_control_window": options.flowControlWindow }
      : {}),
  });
  const metadata = () => {
    const md = new Metadata();
    md.set("containerd-namespace", namespace);
    return md;
  };
  const callOptions = (o?: CallOpts): CallOptions => (o?.deadline ? { deadline: o.deadline } : {});

  function unary<T>(method: MethodName, request: unknown, o?: CallOpts): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fn = (client[method] as UnaryFn).bind(client);
      const call = fn(request, metadata(), callOptions(o), (err, response) => {
        o?.signal?.removeEventListener("abort", onAbort);
        if (err) reject(err);
        else resolve(response as T);
      });
      const onAbort = () => call.cancel();
      if (o?.signal?.aborted) call.cancel();
      else o?.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  function stream(request: unknown, o?: CallOpts): Promise<WireListResponse[]> {
    return new Promise((resolve, reject) => {
      const fn = (client.List as StreamFn).bind(client);
      const call = fn(request, metadata(), callOptions(o));
      const messages: WireListResponse[] = [];
      const onAbort = () => call.cancel();
      call.on("data", (m) => messages.push(m as WireListResponse));
      call.on("error", (err) => {
        o?.signal?.removeEventListener("abort", onAbort);
        reject(err);
      });
      call.on("end", () => {
        o?.signal?.removeEventListener("abort", onAbort);
        resolve(messages);
      });
      if (o?.signal?.aborted) call.cancel();
      else o?.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  const mounts = (r: WireMountsResponse) => r.mounts.map(mountFromWire);
  const info = (r: WireInfoResponse) => {
    if (!r.info) throw new Error("Cannot decode response: info is missing");
    return infoFromWire(r.info);
  };

  return {
    prepare: async (key, parent = "", labels = {}, o) =>
      mounts(await unary("Prepare", { key, parent, labels }, o)),
    view: async (key, parent = "", labels = {}, o) =>
      mounts(await unary("View", { key, parent, labels }, o)),
    mounts: async (key, o) => mounts(await unary("Mounts", { key }, o)),
    commit: async (name, key, labels = {}, o) => {
      await unary("Commit", { name, key, labels, parent: o?.parent ?? "" }, o);
    },
    remove: async (key, o) => {
      await unary("Remove", { key }, o);
    },
    stat: async (key, o) => info(await unary("Stat", { key }, o)),
    update: async (name, labels, paths = [], o) =>
      info(await unary("Update", { info: { name, labels }, update_mask: { paths } }, o)),
    usage: async (key, o) => usageFromWire(await unary<WireUsageResponse>("Usage", { key }, o)),
    list: async (filters = [], o) => {
      const messages = await stream({ filters }, o);
      const infos = messages.flatMap((m) => m.info.map((i: WireInfo) => infoFromWire(i)));
      return { infos, messages: messages.length };
    },
    cleanup: async (o) => {
      await unary("Cleanup", {}, o);
    },
    raw: (method, request, o) => method === "List" ? stream(request, o) : unary(method, request, o),
    grpc: client,
    close: () => client.close(),
  };
}
