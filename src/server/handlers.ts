/**
 * The RPC handlers: validate the request, call the snapshotter, convert the result, map any
 * error through `status.ts`. {@linkcode createService} does that independently of any gRPC
 * library (the native HTTP/2 server uses it); `grpc_js.ts` adapts it to `@grpc/grpc-js`.
 * Every call catches everything, so no rejection escapes into the transport
 * or the process; a client that cancels or disconnects only stops its own call.
 *
 * List streams the snapshotter's walk a page at a time and matches its filters here, not in the
 * snapshotter, in a way that never holds the server's thread for long (`list_match.ts`), and
 * stops when its caller goes away. A snapshot
 * whose Info alone is larger than a message is left out of List (and logged) instead of
 * failing the whole List. What requests echo into logs and statuses is shortened
 * (`util/quote.ts`).
 *
 * @module
 */
import type { Logger } from "../util/log.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { Code } from "./codes.ts";
import type { EncodedPage, Info, Snapshotter } from "../snapshots/types.ts";
import { joinListEntries } from "../snapshots/info_wire.ts";
import { infoToWire, mountToWire, usageToWire } from "./convert.ts";
import {
  EncodedMessage,
  InvalidUtf8Error,
  type MessageCodec,
  type MethodName,
  type WireCleanupRequest,
  type WireCommitRequest,
  type WireEmpty,
  type WireInfoResponse,
  type WireKeyRequest,
  type WireListRequest,
  type WireListResponse,
  type WireMountsResponse,
  type WirePrepareRequest,
  type WireUpdateRequest,
  type WireUsageResponse,
} from "./proto.ts";
import { toRpcStatus } from "./status.ts";
import { matchesEverything } from "../filters/filters.ts";
import { utf8Length } from "../snapshots/labels.ts";
import {
  matchSliced,
  MatchStoppedError,
  RegexMatcher,
  type RegexMatcherOptions,
  Slices,
} from "./list_match.ts";
import { MAX_MESSAGE_BYTES } from "./transport.ts";
import { boundText, shorten } from "../util/quote.ts";
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

/** Options for {@linkcode createService}. */
export interface HandlerOptions {
  snapshotter: Snapshotter;
  logger: Logger;
  /** Infos per List message; default {@linkcode DEFAULT_LIST_BATCH}. */
  listBatchSize?: number;
  /** Bytes per List message; default {@linkcode MAX_LIST_BATCH_BYTES}. */
  listBatchBytes?: number;
  /** Largest message a response may be; default `MAX_MESSAGE_BYTES` (16 MiB). */
  maxMessageBytes?: number;
  /** How Lists with `~=` filters run on worker threads (tests). */
  regexMatcher?: RegexMatcherOptions;
  /** Where every finished call is counted and timed, by method and code; none when absent. */
  metrics?: Metrics;
}

/** Framing of an Info beside its strings: tags, lengths, kind, timestamps, the List's field. */
const INFO_FRAMING_BYTES = 64;
/** Framing of one label: entry tag and length, key and value tags and lengths. */
const LABEL_FRAMING_BYTES = 16;

/** Upper bound of an Info's encoded size: its strings (UTF-8 ≤ 3 bytes per unit) + framing. */
function infoSizeBound(info: Info): number {
  let n = INFO_FRAMING_BYTES + 3 * (info.name.length + info.parent.length);
  for (const [k, v] of Object.entries(info.labels)) {
    n += LABEL_FRAMING_BYTES + 3 * (k.length + v.length);
  }
  return n;
}

/** A tighter upper bound of an Info's encoded size (its strings in UTF-8 bytes + framing). */
function infoSize(info: Info): number {
  let n = INFO_FRAMING_BYTES + utf8Length(info.name) + utf8Length(info.parent);
  for (const [k, v] of Object.entries(info.labels)) {
    n += LABEL_FRAMING_BYTES + utf8Length(k) + utf8Length(v);
  }
  return n;
}

/**
 * The Infos that fit in a message of `maxBytes` alone, and those that do not. None can be too
 * large since labels are bounded in total (`MAX_LABELS_TOTAL_SIZE`), but one written before
 * that bound must not fail every List, and so containerd's garbage collection: it is left out
 * (and logged). Left out, it is also never collected, which is safe; sent without its labels it
 * could be (its GC labels missing).
 */
export function fitInMessage(
  infos: readonly Info[],
  maxBytes: number,
): { fit: Info[]; tooLarge: { info: Info; bytes: number }[] } {
  const tooLarge: { info: Info; bytes: number }[] = [];
  const fit = infos.filter((info) => {
    if (infoSizeBound(info) <= maxBytes) return true;
    const bytes = infoSize(info);
    if (bytes <= maxBytes) return true;
    tooLarge.push({ info, bytes });
    return false;
  });
  return { fit, tooLarge };
}

/** Splits `infos` into batches of at most `count` Infos and about `bytes` bytes. */
export function listBatches(infos: readonly Info[], count: number, bytes: number): Info[][] {
  return batchesOf(infos, count, bytes, infoSizeBound);
}

/**
 * Splits `items` into batches of at most `count` items and at most `bytes` bytes by `size`
 * (one item larger than that still goes, alone), in order.
 */
function batchesOf<T>(
  items: readonly T[],
  count: number,
  bytes: number,
  size: (item: T) => number,
): T[][] {
  const batches: T[][] = [];
  let current: T[] = [];
  let total = 0;
  for (const item of items) {
    const n = size(item);
    if (current.length > 0 && (current.length >= count || total + n > bytes)) {
      batches.push(current);
      current = [];
      total = 0;
    }
    current.push(item);
    total += n;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/** The key (or name) a request is about, for error messages. */
function requestKey(method: MethodName, request: unknown): string {
  const r = (request ?? {}) as Record<string, unknown>;
  if (method === "Commit") return typeof r.name === "string" ? r.name : "";
  if (method === "Update") {
    const info = r.info as { name?: unknown } | null | undefined;
    return typeof info?.name === "string" ? info.name : "";
  }
  return typeof r.key === "string" ? r.key : "";
}

/**
 * Decodes a request message: the request, or the status to answer when the bytes are not one.
 * A string that is not valid UTF-8 is InvalidArgument (the client sent a bad request);
 * anything else that does not decode is Internal, as grpc-go answers it.
 */
export function decodeRequest(
  codec: MessageCodec<object>,
  bytes: Uint8Array,
): { request: object } | { code: Failure; details: string } {
  try {
    return { request: codec.decode(bytes) };
  } catch (err) {
    if (err instanceof InvalidUtf8Error) {
      return toRpcStatus(err) as { code: Failure; details: string };
    }
    return {
      code: Code.INTERNAL,
      details: boundText(`cannot decode request: ${(err as Error)?.message ?? String(err)}`),
    };
  }
}

/** Records one finished RPC. */
type Finish = (code: Code, err?: unknown) => void;

/** Times a call for `metrics` (by method and code name), then logs it with `log`. */
function measureCall(metrics: Metrics, method: MethodName, log: Finish): Finish {
  const started = performance.now();
  return (code, err) => {
    metrics.rpcDone(method, Code[code] ?? String(code), (performance.now() - started) / 1000);
    log(code, err);
  };
}

function logCall(logger: Logger, method: MethodName, key: string): Finish {
  if (!logger.enabled("debug") && !logger.enabled("warn")) return () => {};
  const started = performance.now();
  return (code, err) => {
    const fields = {
      method,
      key: key ? shorten(key) : undefined,
      code: Code[code] ?? code,
      duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
      error: err === undefined ? undefined : err,
    };
    logger.debug("rpc", fields);
    if (code === Code.UNKNOWN) logger.warn("rpc failed unexpectedly", fields);
  };
}

function logTooLarge(logger: Logger, key: string, bytes: number, maxBytes: number): void {
  logger.error("List: a snapshot is left out, its Info is larger than a message", {
    key: shorten(key),
    bytes,
    max_bytes: maxBytes,
  });
}

/**
 * Sends pages of snapshots in wire form (`Snapshotter.walkEncoded`): a page joined into one
 * message as it is; a page of entries in messages of at most `count` entries and about `bytes`
 * bytes, each message one copy of its entries. An entry too large for a message alone is left
 * out and logged, as in {@linkcode fitInMessage}.
 */
export async function sendEncoded(
  pages: AsyncIterable<EncodedPage>,
  sink: ListSink,
  o: { count: number; bytes: number; maxMessage: number; logger: Logger },
): Promise<void> {
  for await (const page of pages) {
    if (sink.gone() !== undefined) return;
    if ("message" in page) {
      await sink.write(new EncodedMessage(page.message));
      continue;
    }
    const fit: Uint8Array[] = [];
    for (const { key, entry } of page.entries) {
      if (entry.length <= o.maxMessage) fit.push(entry);
      else logTooLarge(o.logger, key, entry.length, o.maxMessage);
    }
    for (const batch of batchesOf(fit, o.count, o.bytes, (entry) => entry.length)) {
      if (sink.gone() !== undefined) return;
      await sink.write(new EncodedMessage(joinListEntries(batch)));
    }
  }
}

/** A method with one response message. */
export type UnaryMethod = Exclude<MethodName, "List">;

/** What a unary call came to: a response (code OK) or a status. */
export type UnaryResult =
  | { code: Code.OK; response: object }
  | { code: Failure; details: string };

/** A status other than OK. */
export type Failure = Exclude<Code, Code.OK>;

/** Where a List call sends its messages. */
export interface ListSink {
  /** Sends one message; resolves when more may be sent (it may still be queued). */
  write(message: WireListResponse | EncodedMessage): Promise<void>;
  /** Resolves once every message written has left (none queued), if the sink queues any. */
  drain?(): Promise<void>;
  /** Why nobody waits for the stream any more (CANCELLED, DEADLINE_EXCEEDED), or undefined. */
  gone(): Failure | undefined;
}

/**
 * The Snapshots service independent of any gRPC library: request objects in, response
 * objects or statuses out. Never throws or rejects; logs every call.
 */
export interface SnapshotsService {
  /**
   * Runs a unary method. `gone` is consulted before answering: it returns why nobody waits
   * for the answer any more (CANCELLED, DEADLINE_EXCEEDED), or undefined.
   */
  unary(
    method: UnaryMethod,
    request: unknown,
    gone: () => Failure | undefined,
  ): Promise<UnaryResult>;
  /** Runs List, streaming batches to `sink`; resolves with the final status. */
  list(request: unknown, sink: ListSink): Promise<{ code: Code; details: string }>;
  /**
   * Stops what runs beside the calls (the `~=` filter workers), waiting up to `timeoutMs` for
   * it; after the transport has stopped the calls.
   */
  close(timeoutMs: number): Promise<void>;
}

/** The status of a call nobody waits for any more. */
function stopped(code: Failure): { code: Failure; details: string } {
  const details = code === Code.DEADLINE_EXCEEDED ? "deadline exceeded" : "cancelled by the client";
  return { code, details };
}

/** Builds the transport-independent service. */
export function createService(options: HandlerOptions): SnapshotsService {
  const { snapshotter: s, logger, metrics } = options;
  // every call starts here, whatever its transport: the one place calls are logged and counted
  const startLog = (method: MethodName, key: string): Finish =>
    metrics
      ? measureCall(metrics, method, logCall(logger, method, key))
      : logCall(logger, method, key);
  const count = Math.max(1, options.listBatchSize ?? DEFAULT_LIST_BATCH);
  const bytes = options.listBatchBytes ?? MAX_LIST_BATCH_BYTES;
  const maxMessage = options.maxMessageBytes ?? MAX_MESSAGE_BYTES;
  const matcher = new RegexMatcher(options.regexMatcher);
  const empty: WireEmpty = {};
  const mounts = (list: Awaited<ReturnType<Snapshotter["mounts"]>>): WireMountsResponse => ({
    mounts: list.map(mountToWire),
  });
  const impls: Record<UnaryMethod, (request: never) => Promise<object>> = {
    Prepare: async (req: WirePrepareRequest) => {
      const a = validateCreate(req);
      return mounts(await s.prepare(a.key, a.parent, a.labels));
    },
    View: async (req: WirePrepareRequest) => {
      const a = validateCreate(req);
      return mounts(await s.view(a.key, a.parent, a.labels));
    },
    Mounts: async (req: WireKeyRequest) => mounts(await s.mounts(validateKeyRequest(req))),
    Commit: async (req: WireCommitRequest) => {
      const a = validateCommit(req);
      await s.commit(a.name, a.key, a.labels, a.parent);
      return empty;
    },
    Remove: async (req: WireKeyRequest) => {
      await s.remove(validateKeyRequest(req));
      return empty;
    },
    Stat: async (req: WireKeyRequest): Promise<WireInfoResponse> => ({
      info: infoToWire(await s.stat(validateKeyRequest(req))),
    }),
    Update: async (req: WireUpdateRequest): Promise<WireInfoResponse> => {
      const a = validateUpdate(req);
      return { info: infoToWire(await s.update({ name: a.name, labels: a.labels }, a.paths)) };
    },
    Usage: async (req: WireKeyRequest): Promise<WireUsageResponse> =>
      usageToWire(await s.usage(validateKeyRequest(req))),
    Cleanup: async (_req: WireCleanupRequest) => {
      await s.cleanup();
      return empty;
    },
  };
  return {
    async unary(method, request, gone) {
      let key = "";
      let finish: Finish = () => {};
      try {
        key = requestKey(method, request);
        finish = startLog(method, key);
      } catch {
        // logging setup must never break the call
      }
      try {
        const response = await impls[method](request as never);
        const why = gone();
        if (why !== undefined) {
          finish(why);
          return stopped(why);
        }
        finish(Code.OK);
        return { code: Code.OK, response };
      } catch (err) {
        const st = toRpcStatus(err, { method, key });
        const why = gone();
        if (why !== undefined) {
          finish(why, err);
          return stopped(why);
        }
        finish(st.code, st.details);
        return st as UnaryResult;
      }
    },
    async list(request, sink) {
      const finish = startLog("List", "");
      const gone = () => sink.gone() !== undefined;
      try {
        const checked = validateList(request as WireListRequest);
        // a page of the snapshotter's walk at a time, so memory holds one page whatever the
        // number of snapshots; matched here, not by the snapshotter: in slices, or on a worker
        // (list_match.ts)
        if (!("regexSources" in checked) && matchesEverything(checked.filter) && s.walkEncoded) {
          // everything: pages as SQLite joins the List entries kept with the rows
          const pages = s.walkEncoded({
            pageSize: count,
            maxBytes: bytes,
            maxEntryBytes: maxMessage,
          });
          await sendEncoded(pages, sink, { count, bytes, maxMessage, logger });
        } else {
          const slices = new Slices();
          for await (const page of s.walk()) {
            await slices.next(gone); // reading a page is work too: other calls get their turn
            const infos = "regexSources" in checked
              ? await matcher.match(checked.regexSources, page, gone)
              : matchesEverything(checked.filter)
              ? page
              : await matchSliced(page, checked.filter, gone, slices);
            const { fit, tooLarge } = fitInMessage(infos, maxMessage);
            for (const { info, bytes: size } of tooLarge) {
              logTooLarge(logger, info.name, size, maxMessage);
            }
            for (const batch of listBatches(fit, count, bytes)) {
              if (gone()) break;
              await sink.write({ info: batch.map(infoToWire) });
            }
          }
        }
        await sink.drain?.(); // the List ends when its messages are out, not queued
        const why = sink.gone();
        if (why !== undefined) {
          finish(why);
          return stopped(why);
        }
        finish(Code.OK);
        return { code: Code.OK, details: "" };
      } catch (err) {
        const why = sink.gone() ?? (err instanceof MatchStoppedError ? Code.CANCELLED : undefined);
        if (why !== undefined) {
          finish(why);
          return stopped(why);
        }
        const st = toRpcStatus(err, { method: "List" });
        finish(st.code, st.details);
        return st;
      }
    },
    close: (timeoutMs) => matcher.close(timeoutMs),
  };
}
