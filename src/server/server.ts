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
import { createService, DEFAULT_LIST_BATCH, type HandlerOptions } from "./handlers.ts";
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
  /** gRPC implementation (default `native`). */
  transport?: Transport;
}

/** A listening server. */
export interface RunningServer {
  /** Absolute socket path. */
  readonly socketPath: string;
  /** True if a stale socket was found and replaced at start. */
  readonly replacedStaleSocket: boolean;
  /**
   * Graceful shutdown: stops accepting, waits for in-flight calls (bounded), closes the
   * snapshotter, removes the socket. Idempotent; every call returns the same promise.
   */
  close(): Promise<void>;
  /** Resolves when close() has finished. */
  readonly closed: Promise<void>;
}

function listenNative(path: string, handlers: HandlerOptions): Listening {
  let listener: Deno.Listener;
  try {
    listener = Deno.listen({ transport: "unix", path });
  } catch (err) {
    throw new SocketError(`Cannot listen on "${path}": ${(err as Error).message}`, {
      cause: err,
    });
  }
  const server: NativeServer = serveNative(listener, {
    service: createService(handlers),
    proto: loadSnapshotsProto(),
    logger: handlers.logger,
    maxMessageBytes: MAX_MESSAGE_BYTES,
  });
  return {
    drain: (timeoutMs) => server.shutdown(timeoutMs),
    force: () => server.forceShutdown(),
  };
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
  };
  const server = transport === "native"
    ? listenNative(path, handlers)
    // loaded only when chosen: @grpc/grpc-js costs the native transport's start ~0.25 s in the
    // test kernel, and memory
    : await (await import("./grpc_js.ts")).listenGrpcJs(path, handlers);
  let identity: SocketIdentity;
  try {
    identity = await finishSocket(path);
  } catch (err) {
    server.force();
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
        await options.snapshotter.close();
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
