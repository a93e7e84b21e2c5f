/**
 * The gRPC proxy-snapshotter server on a unix socket, over one of two transports:
 * `native` (default: this project's HTTP/2 stack, see `native/server.ts`) or
 * `grpc-js` (`@grpc/grpc-js` over `node:http2`). Both serve the same handlers.
 *
 * ```ts
 * const server = await startServer({ address: "/run/x/x.sock", snapshotter, logger });
 * // ...
 * await server.close(); // stop accepting, drain, close the snapshotter, remove the socket
 * ```
 *
 * @module
 */
import { type Logger, silentLogger } from "../util/log.ts";
import type { Snapshotter } from "../snapshots/types.ts";
import type { Metrics } from "../metrics/metrics.ts";
import {
  createService,
  DEFAULT_LIST_BATCH,
  type HandlerOptions,
  type SnapshotsService,
} from "./handlers.ts";
import { type NativeServer, serveNative } from "./native/server.ts";
import { loadSnapshotsProto } from "./proto.ts";
import {
  finishSocket,
  prepareSocketPath,
  removeSocket,
  SocketError,
  type SocketIdentity,
  socketPath,
} from "./socket.ts";
import { type Listening, MAX_MESSAGE_BYTES } from "./transport.ts";

/** Default bound on waiting for in-flight calls at shutdown. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;

/**
 * Default bound on closing the snapshotter at shutdown: above the pool's own 10 s wait for a
 * suspend still in the kernel, so that wait is not cut short.
 */
export const DEFAULT_SNAPSHOTTER_CLOSE_TIMEOUT_MS = 20_000;

/** Bound on waiting for List filter workers after the calls have stopped, at shutdown. */
const CLOSE_WORKERS_MS = 1000;

/** The gRPC implementations {@linkcode startServer} can serve with. */
export const TRANSPORTS = ["native", "grpc-js"] as const;
/** A gRPC implementation. */
export type Transport = typeof TRANSPORTS[number];

/** Options for {@linkcode startServer}. */
export interface ServerOptions {
  /** Socket path or `unix://` address. */
  address: string;
  /** Served snapshotter; {@linkcode RunningServer.close} closes it. */
  snapshotter: Snapshotter;
  logger?: Logger;
  /** Infos per List message (default 100). */
  listBatchSize?: number;
  /** Bytes per List message (default 4 MiB). */
  listBatchBytes?: number;
  /** How long close() waits for in-flight calls before cutting them off (default 10 s). */
  shutdownTimeoutMs?: number;
  /**
   * How long close() waits for the snapshotter to close (default
   * {@linkcode DEFAULT_SNAPSHOTTER_CLOSE_TIMEOUT_MS}); past it, the socket is removed and close()
   * resolves anyway, so a stop signal always ends the process.
   */
  snapshotterCloseTimeoutMs?: number;
  /** gRPC implementation (default `native`). */
  transport?: Transport;
  /** Counts and times every call (by method and gRPC code); none when absent. */
  metrics?: Metrics;
}

/** A listening server. */
export interface RunningServer {
  /** Absolute socket path. */
  readonly socketPath: string;
  /** True if a stale socket was found and replaced at start. */
  readonly replacedStaleSocket: boolean;
  /**
   * Graceful shutdown: stops accepting, waits for in-flight calls (bounded by
   * `shutdownTimeoutMs`), then cuts them off, closes the snapshotter (bounded by
   * `snapshotterCloseTimeoutMs`), removes the socket. Idempotent; every call returns the same
   * promise.
   */
  close(): Promise<void>;
  /** Resolves when close() has finished. */
  readonly closed: Promise<void>;
}

function listenNative(path: string, service: SnapshotsService, logger: Logger): Listening {
  let listener: Deno.Listener;
  try {
    listener = Deno.listen({ transport: "unix", path });
  } catch (err) {
    throw new SocketError(`Cannot listen on "${path}": ${(err as Error).message}`, {
      cause: err,
    });
  }
  const server: NativeServer = serveNative(listener, {
    service,
    proto: loadSnapshotsProto(),
    logger,
    maxMessageBytes: MAX_MESSAGE_BYTES,
  });
  return {
    drain: (timeoutMs) => server.shutdown(timeoutMs),
    force: () => server.forceShutdown(),
  };
}

/**
 * Closes the snapshotter, waiting at most `timeoutMs`: a close that hangs (something stuck in
 * the kernel) is logged and left behind; its error, if it fails in time, is thrown.
 */
async function closeBounded(s: Snapshotter, timeoutMs: number, logger: Logger): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closing = s.close();
  const inTime = await Promise.race([
    closing.then(() => true),
    new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), timeoutMs)),
  ]).finally(() => clearTimeout(timer));
  if (!inTime) {
    closing.catch(() => {}); // a late failure is of no interest any more
    logger.error("shutdown: the snapshotter did not close in time, stopping without it", {
      timeout_ms: timeoutMs,
    });
  }
}

/** Starts serving `snapshotter` on the unix socket `address`. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const logger = options.logger ?? silentLogger();
  const path = socketPath(options.address);
  const replacedStaleSocket = await prepareSocketPath(path);
  if (replacedStaleSocket) logger.info("replaced stale socket", { socket: path });

  const transport = options.transport ?? "native";
  const handlers: HandlerOptions = {
    snapshotter: options.snapshotter,
    logger,
    listBatchSize: options.listBatchSize ?? DEFAULT_LIST_BATCH,
    listBatchBytes: options.listBatchBytes,
    metrics: options.metrics,
  };
  const service = createService(handlers);
  const server = transport === "native"
    ? listenNative(path, service, logger)
    // loaded only when chosen: @grpc/grpc-js costs the native transport's start ~0.25 s in the
    // test kernel, and memory
    : await (await import("./grpc_js.ts")).listenGrpcJs(path, service, logger);
  let identity: SocketIdentity;
  try {
    identity = await finishSocket(path);
  } catch (err) {
    server.force();
    await service.close(0);
    throw new SocketError(`Cannot set up socket "${path}": ${(err as Error).message}`, {
      cause: err,
    });
  }
  logger.info("serving", { socket: path, transport });

  const timeoutMs = options.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;
  const { promise: closed, resolve: resolveClosed } = Promise.withResolvers<void>();
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      logger.info("shutting down", { socket: path });
      try {
        if (!(await server.drain(timeoutMs))) {
          logger.warn("shutdown: in-flight calls did not finish in time, cancelling them", {
            timeout_ms: timeoutMs,
          });
        }
        // filter workers of Lists cut off above stop at their next snapshot
        await service.close(CLOSE_WORKERS_MS);
        await closeBounded(
          options.snapshotter,
          options.snapshotterCloseTimeoutMs ?? DEFAULT_SNAPSHOTTER_CLOSE_TIMEOUT_MS,
          logger,
        );
      } finally {
        await removeSocket(path, identity);
        resolveClosed();
        logger.info("stopped", { socket: path });
      }
    })();
    return closing;
  };
  return { socketPath: path, replacedStaleSocket, close, closed };
}
