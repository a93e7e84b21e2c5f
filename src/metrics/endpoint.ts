/**
 * The metrics endpoint: HTTP `GET /metrics` on a TCP address or a unix socket, answering with
 * the Prometheus text exposition of a {@linkcode Metrics}.
 *
 * Invariants:
 * - only `GET` and `HEAD` of `/metrics` are answered with metrics; other paths are 404, other
 *   methods 405; a scrape that fails is a 500 with the reason, logged, and the endpoint stays up;
 * - a unix socket left by a process that is gone is replaced; one that answers is never taken
 *   over (the start fails with {@linkcode MetricsEndpointError});
 * - {@linkcode MetricsEndpoint.close} stops listening, waits for scrapes in flight and removes
 *   the unix socket it made; it is idempotent.
 *
 * @module
 */
import type { Metrics } from "./metrics.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import { errorMessage } from "../util/errors.ts";
import {
  formatListenAddress,
  type ListenAddress,
  parseListenAddress,
} from "../util/listen_address.ts";
import { isSocketLive } from "../util/socket_live.ts";

/** The endpoint cannot start. */
export class MetricsEndpointError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MetricsEndpointError";
  }
}

/** Options of {@linkcode serveMetrics}. */
export interface MetricsEndpointOptions {
  /** `HOST:PORT` or `unix:PATH` (or parsed). */
  address: string | ListenAddress;
  metrics: Metrics;
  logger?: Logger;
}

/** A listening endpoint. */
export interface MetricsEndpoint {
  /** Where it listens (for TCP with the port bound, when 0 was asked for). */
  readonly address: ListenAddress;
  /** Stops listening, waits for scrapes in flight, removes the unix socket. Idempotent. */
  close(): Promise<void>;
}

/** Path served. */
export const METRICS_PATH = "/metrics";

/** Starts serving `GET /metrics` on `options.address`. */
export async function serveMetrics(options: MetricsEndpointOptions): Promise<MetricsEndpoint> {
  const { metrics } = options;
  const log = options.logger ?? silentLogger();
  const address = typeof options.address === "string"
    ? parseListenAddress(options.address)
    : options.address;
  const text = formatListenAddress(address);
  const handler = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    if (url.pathname !== METRICS_PATH) {
      return new Response(`Not found: metrics are at ${METRICS_PATH}\n`, { status: 404 });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("Method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    try {
      const body = await metrics.text();
      return new Response(request.method === "HEAD" ? null : body, {
        headers: { "content-type": metrics.contentType },
      });
    } catch (err) {
      log.error("cannot collect metrics", { error: errorMessage(err) });
      return new Response(`Cannot collect metrics: ${errorMessage(err)}\n`, { status: 500 });
    }
  };
  const listen = (): Deno.HttpServer<Deno.Addr> => {
    const common = { handler, onListen: () => {} };
    return address.transport === "unix"
      ? Deno.serve({ ...common, path: address.path }) as Deno.HttpServer<Deno.Addr>
      : Deno.serve({ ...common, hostname: address.hostname, port: address.port });
  };
  let server: Deno.HttpServer<Deno.Addr>;
  try {
    try {
      server = listen();
    } catch (err) {
      if (!(address.transport === "unix" && err instanceof Deno.errors.AddrInUse)) throw err;
      if (await isSocketLive(address.path)) {
        throw new Error("another process serves on this socket", { cause: err });
      }
      await Deno.remove(address.path);
      log.info("replaced stale metrics socket", { socket: address.path });
      server = listen();
    }
  } catch (err) {
    throw new MetricsEndpointError(`Cannot serve metrics on ${text}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  const bound: ListenAddress = server.addr.transport === "tcp"
    ? { transport: "tcp", hostname: server.addr.hostname, port: server.addr.port }
    : address;
  log.info("serving metrics", { address: formatListenAddress(bound), path: METRICS_PATH });
  let closing: Promise<void> | undefined;
  return {
    address: bound,
    close() {
      closing ??= (async () => {
        await server.shutdown();
        if (address.transport === "unix") await Deno.remove(address.path).catch(() => {});
      })();
      return closing;
    },
  };
}
