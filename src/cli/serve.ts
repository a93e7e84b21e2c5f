/**
 * `serve`: open the snapshotter, serve it on the socket, shut down gracefully on SIGTERM/SIGINT.
 * With `metrics_address` set, the metrics endpoint listens from before the pool is opened until
 * after the snapshotter is closed.
 *
 * The snapshotter comes from a factory so the wiring stays in one place
 * ({@linkcode openDevmapperSnapshotter} in production, a test double in transport tests).
 *
 * @module
 */
import type { Config } from "../config/config.ts";
import { errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { type RunningServer, startServer } from "../server/server.ts";
import { prepareSocketPath } from "../server/socket.ts";
import { notifySystemd } from "../sys/notify.ts";
import type { Snapshotter } from "../snapshots/types.ts";
import { Metrics } from "../metrics/metrics.ts";
import { type MetricsEndpoint, serveMetrics } from "../metrics/endpoint.ts";
import denoJson from "../../deno.json" with { type: "json" };

/**
 * Builds the snapshotter for a configuration; with `metrics` (metrics_address set), records in
 * them what only the snapshotter knows (device-mapper operations, the pool, the database).
 */
export type SnapshotterFactory = (
  config: Config,
  logger: Logger,
  metrics?: Metrics,
) => Promise<Snapshotter>;

/** Options for {@linkcode serve}. */
export interface ServeOptions {
  config: Config;
  logger: Logger;
  openSnapshotter: SnapshotterFactory;
  /** Signals that start a graceful shutdown (default SIGTERM, SIGINT; [] for none). */
  signals?: Deno.Signal[];
  /** Aborting starts a graceful shutdown too (tests, embedding). */
  stop?: AbortSignal;
  /** Bound on waiting for in-flight calls at shutdown (default 10 s). */
  shutdownTimeoutMs?: number;
  /**
   * Tells the service manager about the service's state (`READY=1`, `STOPPING=1`, `STATUS=…`).
   * Default: systemd's `$NOTIFY_SOCKET`, if set (`Type=notify` units).
   */
  notify?: (state: string) => void;
  /** Called once the socket accepts calls. */
  onListening?: (server: RunningServer) => void;
  /** Called once the metrics endpoint listens (`metrics_address` set), before the pool opens. */
  onMetricsListening?: (endpoint: MetricsEndpoint) => void;
}

/**
 * Serves until a stop signal, then drains, closes the snapshotter and removes the socket.
 * Resolves after the shutdown; rejects if the service cannot start (nothing is left behind).
 *
 * Stop signals are handled from the first moment: one that arrives while the snapshotter opens
 * (reconciliation with the pool can take a while) ends the start at the next safe point instead
 * of killing the process with the signal's default action halfway through.
 */
export async function serve(options: ServeOptions): Promise<void> {
  const { config, logger } = options;
  const notify = (state: string) => {
    try {
      (options.notify ?? notifySystemd)(state);
    } catch (err) {
      logger.warn("cannot notify the service manager", { error: errorMessage(err) });
    }
  };
  let stopping = false;
  let server: RunningServer | undefined;
  let shutdownError: unknown;
  const shutdown = () => {
    server?.close().catch((e) => {
      shutdownError = e;
      logger.error("shutdown failed", { error: errorMessage(e) });
    });
  };
  const requestStop = () => {
    stopping = true;
    notify("STOPPING=1");
    shutdown();
  };
  const onSignal = (signal: Deno.Signal) => () => {
    if (stopping) {
      logger.warn("second signal: exiting without waiting", { signal });
      Deno.exit(130);
    }
    logger.info("signal received, shutting down", { signal });
    requestStop();
  };
  const handlers = (options.signals ?? ["SIGTERM", "SIGINT"]).map((s) => [s, onSignal(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  if (options.stop?.aborted) stopping = true;
  else options.stop?.addEventListener("abort", requestStop, { once: true });

  // a stray rejection or exception must not take the service down
  const onRejection = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    logger.error("unhandled rejection", { error: errorMessage(e.reason) });
  };
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    logger.error("uncaught exception", { error: errorMessage(e.error ?? e.message) });
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.addEventListener("error", onError);

  let endpoint: MetricsEndpoint | undefined;
  try {
    // refuse a live socket before touching the pool: a second instance must not reconcile
    await prepareSocketPath(config.address);
    const metrics = config.metricsAddress ? newMetrics(config, logger) : undefined;
    if (metrics) {
      // a taken port fails the start before the pool is touched, as a taken socket does
      endpoint = await serveMetrics({
        address: config.metricsAddress,
        metrics,
        logger: logger.with({ component: "metrics" }),
      });
      options.onMetricsListening?.(endpoint);
    }
    notify(`STATUS=opening pool ${config.poolName}`);
    const snapshotter = await options.openSnapshotter(config, logger, metrics);
    const closeSnapshotter = () =>
      snapshotter.close().catch((e) =>
        logger.error("cannot close snapshotter", { error: errorMessage(e) })
      );
    if (stopping) {
      logger.info("stopped before serving");
      return await closeSnapshotter();
    }
    try {
      server = await startServer({
        address: config.address,
        snapshotter,
        logger: logger.with({ component: "grpc" }),
        shutdownTimeoutMs: options.shutdownTimeoutMs,
        transport: config.grpcTransport,
        metrics,
      });
    } catch (err) {
      await closeSnapshotter();
      throw err;
    }
    if (stopping) shutdown();
    else {
      // units ordered after this one (containerd) start now, with the socket ready
      notify(`READY=1\nSTATUS=serving on ${server.socketPath}`);
      options.onListening?.(server);
    }
    await server.closed;
    await server.close().catch(() => {}); // settle shutdownError
    if (shutdownError !== undefined) throw shutdownError;
  } finally {
    // after the snapshotter closed: a scrape meanwhile leaves out what it cannot read
    await endpoint?.close().catch((e) =>
      logger.error("cannot close the metrics endpoint", { error: errorMessage(e) })
    );
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    options.stop?.removeEventListener("abort", requestStop);
    globalThis.removeEventListener("unhandledrejection", onRejection);
    globalThis.removeEventListener("error", onError);
  }
}

/** The metrics of a server with `config`, their source errors logged. */
function newMetrics(config: Config, logger: Logger): Metrics {
  const log = logger.with({ component: "metrics" });
  const metrics = new Metrics({
    onSourceError: (source, error) =>
      log.warn("a scrape left out metrics it cannot read", { source, error: errorMessage(error) }),
  });
  metrics.setBuildInfo({
    version: denoJson.version,
    denoVersion: Deno.version.deno,
    dmBackend: config.dmBackend,
    transport: config.grpcTransport,
  });
  return metrics;
}
