/**
 * The RPC handlers: validate the request, call the snapshotter, convert the result, map any
 * error through `status.ts`. Every handler catches everything, so no rejection escapes into
 * grpc-js or the process; a client that cancels or disconnects only stops its own call.
 *
 * @module
 */
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServerErrorResponse,
  type ServerUnaryCall,
  type ServerWritableStream,
  status as GrpcStatus,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { Logger } from "../log.ts";
import type { Info, Snapshotter } from "../types.ts";
import { infoToWire, mountToWire, usageToWire } from "./convert.ts";
import type {
  MethodName,
  WireCleanupRequest,
  WireCommitRequest,
  WireEmpty,
  WireInfoResponse,
  WireKeyRequest,
  WireListRequest,
  WireListResponse,
  WireMountsResponse,
  WirePrepareRequest,
  WireUpdateRequest,
  WireUsageResponse,
} from "./proto.ts";
import { toRpcStatus } from "./status.ts";
import {
  validateCommit,
  validateCreate,
  validateKeyRequest,
  validateList,
  validateUpdate,
} from "./validate.ts";

/** Infos per List stream message (upstream's service uses 100 too). */
export const DEFAULT_LIST_BATCH = 100;
/** A List message is also cut when its Infos reach this many bytes (the limit is 16 MiB). */
export const MAX_LIST_BATCH_BYTES = 4 * 1024 * 1024;

/** Options for {@linkcode createHandlers}. */
export interface HandlerOptions {
  snapshotter: Snapshotter;
  logger: Logger;
  /** Infos per List message; default {@linkcode DEFAULT_LIST_BATCH}. */
  listBatchSize?: number;
  /** Bytes per List message; default {@linkcode MAX_LIST_BATCH_BYTES}. */
  listBatchBytes?: number;
}

/** Upper bound of an Info's encoded size: its strings (UTF-8 ≤ 3 bytes per unit) + framing. */
function infoSizeBound(info: Info): number {
  let n = 64 + 3 * (info.name.length + info.parent.length);
  for (const [k, v] of Object.entries(info.labels)) n += 16 + 3 * (k.length + v.length);
  return n;
}

/** Splits `infos` into batches of at most `count` Infos and about `bytes` bytes. */
export function listBatches(infos: readonly Info[], count: number, bytes: number): Info[][] {
  const batches: Info[][] = [];
  let current: Info[] = [];
  let size = 0;
  for (const info of infos) {
    const s = infoSizeBound(info);
    if (current.length > 0 && (current.length >= count || size + s > bytes)) {
      batches.push(current);
      current = [];
      size = 0;
    }
    current.push(info);
    size += s;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/** The key (or name) a request is about, for logs and error messages. */
function requestKey(method: MethodName, request: unknown): string {
  const r = (request ?? {}) as Record<string, unknown>;
  if (method === "Commit") return typeof r.name === "string" ? r.name : "";
  if (method === "Update") {
    const info = r.info as { name?: unknown } | null | undefined;
    return typeof info?.name === "string" ? info.name : "";
  }
  return typeof r.key === "string" ? r.key : "";
}

function errorResponse(code: GrpcStatus, details: string): ServerErrorResponse {
  return Object.assign(new Error(details), { code, details });
}

/** Records one finished RPC. */
type Finish = (code: GrpcStatus, err?: unknown) => void;

function startLog(logger: Logger, method: MethodName, key: string): Finish {
  const started = performance.now();
  return (code, err) => {
    const fields = {
      method,
      key: key || undefined,
      code: GrpcStatus[code] ?? code,
      duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
      error: err === undefined ? undefined : err,
    };
    logger.debug("rpc", fields);
    if (code === GrpcStatus.UNKNOWN) logger.warn("rpc failed unexpectedly", fields);
  };
}

/** Wraps a unary implementation: runs it, answers once, never throws or rejects. */
function unary<Req, Res>(
  method: MethodName,
  logger: Logger,
  impl: (request: Req) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call: ServerUnaryCall<Req, Res>, callback) => {
    let key = "";
    let finish: Finish = () => {};
    try {
      key = requestKey(method, call.request);
      finish = startLog(logger, method, key);
    } catch {
      // logging setup must never break the call
    }
    Promise.resolve()
      .then(() => impl(call.request))
      .then(
        (response) => {
          if (call.cancelled) return finish(GrpcStatus.CANCELLED);
          callback(null, response);
          finish(GrpcStatus.OK);
        },
        (err) => {
          const st = toRpcStatus(err, { method, key });
          if (call.cancelled) return finish(GrpcStatus.CANCELLED, err);
          callback(errorResponse(st.code, st.details));
          finish(st.code, st.details);
        },
      )
      .catch((err) => {
        logger.error("cannot answer rpc", { method, key, error: err });
      });
  };
}

/** Resolves when the stream can take more data, or has been cancelled/closed. */
function waitWritable(call: ServerWritableStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("close", done);
      call.off("error", done);
      call.off("cancelled", done);
      resolve();
    };
    call.on("drain", done);
    call.on("close", done);
    call.on("error", done);
    call.on("cancelled", done);
  });
}

/** The List handler: streams Infos in batches; stops quietly when the client goes away. */
function listHandler(
  options: HandlerOptions,
): handleServerStreamingCall<WireListRequest, WireListResponse> {
  const { snapshotter, logger } = options;
  const count = Math.max(1, options.listBatchSize ?? DEFAULT_LIST_BATCH);
  const bytes = options.listBatchBytes ?? MAX_LIST_BATCH_BYTES;
  return (call) => {
    const finish = startLog(logger, "List", "");
    const stream = call as ServerWritableStream<unknown, unknown>;
    Promise.resolve()
      .then(async () => {
        const filters = validateList(call.request);
        const infos = await snapshotter.list(filters);
        for (const batch of listBatches(infos, count, bytes)) {
          if (call.cancelled) return finish(GrpcStatus.CANCELLED);
          const message: WireListResponse = { info: batch.map(infoToWire) };
          if (!call.write(message)) await waitWritable(stream);
        }
        if (call.cancelled) return finish(GrpcStatus.CANCELLED);
        call.end();
        finish(GrpcStatus.OK);
      })
      .catch((err) => {
        const st = toRpcStatus(err, { method: "List" });
        if (call.cancelled) return finish(GrpcStatus.CANCELLED, err);
        call.emit("error", errorResponse(st.code, st.details));
        finish(st.code, st.details);
      })
      .catch((err) => {
        logger.error("cannot answer rpc", { method: "List", error: err });
      });
  };
}

/** Builds the service implementation for `@grpc/grpc-js`'s `Server.addService`. */
export function createHandlers(options: HandlerOptions): UntypedServiceImplementation {
  const { snapshotter: s, logger } = options;
  const empty: WireEmpty = {};
  const mounts = (list: Awaited<ReturnType<Snapshotter["mounts"]>>): WireMountsResponse => ({
    mounts: list.map(mountToWire),
  });
  return {
    Prepare: unary<WirePrepareRequest, WireMountsResponse>("Prepare", logger, async (req) => {
      const a = validateCreate(req);
      return mounts(await s.prepare(a.key, a.parent, a.labels));
    }),
    View: unary<WirePrepareRequest, WireMountsResponse>("View", logger, async (req) => {
      const a = validateCreate(req);
      return mounts(await s.view(a.key, a.parent, a.labels));
    }),
    Mounts: unary<WireKeyRequest, WireMountsResponse>("Mounts", logger, async (req) => {
      return mounts(await s.mounts(validateKeyRequest(req)));
    }),
    Commit: unary<WireCommitRequest, WireEmpty>("Commit", logger, async (req) => {
      const a = validateCommit(req);
      await s.commit(a.name, a.key, a.labels, a.parent);
      return empty;
    }),
    Remove: unary<WireKeyRequest, WireEmpty>("Remove", logger, async (req) => {
      await s.remove(validateKeyRequest(req));
      return empty;
    }),
    Stat: unary<WireKeyRequest, WireInfoResponse>("Stat", logger, async (req) => {
      return { info: infoToWire(await s.stat(validateKeyRequest(req))) };
    }),
    Update: unary<WireUpdateRequest, WireInfoResponse>("Update", logger, async (req) => {
      const a = validateUpdate(req);
      return { info: infoToWire(await s.update({ name: a.name, labels: a.labels }, a.paths)) };
    }),
    List: listHandler(options),
    Usage: unary<WireKeyRequest, WireUsageResponse>("Usage", logger, async (req) => {
      return usageToWire(await s.usage(validateKeyRequest(req)));
    }),
    Cleanup: unary<WireCleanupRequest, WireEmpty>("Cleanup", logger, async () => {
      await s.cleanup();
      return empty;
    }),
  };
}
