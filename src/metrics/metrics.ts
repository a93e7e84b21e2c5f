/**
 * The snapshotter's Prometheus metrics, kept with `prom-client` in a registry of their own.
 *
 * Invariants:
 * - recording on a call's path ({@linkcode Metrics.rpcDone}, {@linkcode Metrics.dmDone}) is a
 *   map lookup and two increments: the labelled children are made once per label set and kept,
 *   so no label object is hashed per call, and nothing is awaited;
 * - figures that already exist elsewhere (the pool's last status, the database's counts, the
 *   start's reconciliation) are read when the endpoint is scraped, through the sources given to
 *   {@linkcode Metrics.watchPool} and {@linkcode Metrics.watchInventory}: a scrape adds no
 *   device-mapper call, and nothing is kept up to date in between;
 * - a source that throws leaves its metrics out of that scrape (logged by the caller of
 *   {@linkcode Metrics.text}), never the whole exposition;
 * - process metrics are prom-client's defaults that are right under Deno (checked in
 *   `metrics_test.ts` against `/proc/self`); CPU time and the start time are our own
 *   (prom-client's are wrong under Deno, {@linkcode REPLACED_DEFAULT_METRICS}); those wrong or empty under Deno are dropped
 *   ({@linkcode DROPPED_DEFAULT_METRICS});
 * - a figure that is not known (no pool status yet, the database closed) has no sample rather
 *   than a 0.
 *
 * @module
 */
import process from "node:process";
import { collectDefaultMetrics, Counter, Histogram, type Metric, Registry } from "prom-client";
import {
  METRIC_NAMES,
  POOL_MODES,
  type PoolMode,
  RECONCILE_ACTIONS,
  type ReconcileAction,
} from "./names.ts";

/**
 * Latency buckets, seconds: from 100 µs (a Stat answered from the database) to 30 s (a removal
 * waiting for a busy device).
 */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

/**
 * prom-client defaults that are wrong or empty under Deno: the `nodejs_active_*` counts are
 * always 0 (Deno has no libuv handles to count; promtool also rejects the `_total` gauges), the
 * GC histogram never gets a sample (no `gc` performance entries), and `nodejs_version_info`
 * names the Node version Deno emulates, not Deno's (see {@linkcode METRIC_NAMES.buildInfo}).
 */
export const DROPPED_DEFAULT_METRICS: readonly string[] = [
  "nodejs_active_handles",
  "nodejs_active_handles_total",
  "nodejs_active_requests",
  "nodejs_active_requests_total",
  "nodejs_active_resources",
  "nodejs_active_resources_total",
  "nodejs_gc_duration_seconds",
  "nodejs_version_info",
];

/**
 * prom-client defaults this module writes itself: prom-client counts CPU time from when its
 * metrics were registered, not from the process's start, and its start time is off by seconds
 * under Deno (both checked against `/proc/self/stat` in `metrics_test.ts`).
 */
export const REPLACED_DEFAULT_METRICS: readonly string[] = [
  "process_cpu_user_seconds_total",
  "process_cpu_system_seconds_total",
  "process_cpu_seconds_total",
  "process_start_time_seconds",
];

/** Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ: 100 on every Linux ABI). */
const USER_HZ = 100;

/**
 * When this process started, Unix seconds: from `/proc/self/stat` and the boot time in
 * `/proc/stat` (prom-client's `now - process.uptime()` is off by seconds under Deno, whose
 * uptime starts with the JavaScript runtime, not the process); the runtime's time origin where
 * `/proc` cannot be read.
 */
export function processStartSeconds(): number {
  try {
    const stat = Deno.readTextFileSync("/proc/self/stat");
    // the fields after the command's closing parenthesis; starttime is field 22 of stat(5)
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const startTicks = Number(fields[22 - 3]);
    const boot = /^btime (\d+)$/m.exec(Deno.readTextFileSync("/proc/stat"));
    if (boot && Number.isFinite(startTicks)) return Number(boot[1]) + startTicks / USER_HZ;
  } catch {
    // not Linux, or no /proc: the runtime's start below
  }
  return performance.timeOrigin / 1000;
}

/** How often the event-loop lag is sampled, ms. */
export const EVENT_LOOP_SAMPLE_MS = 100;

/** The pool's figures as last read (from the status the server reads anyway). */
export interface PoolFigures {
  dataUsedBytes: number;
  dataSizeBytes: number;
  metadataUsedBytes: number;
  metadataSizeBytes: number;
  mode: PoolMode;
  /** Free space is below the low-water mark now. */
  belowLowWater: { data: boolean; metadata: boolean };
  /** Times free space fell below the low-water mark since start. */
  lowWaterCrossings: { data: number; metadata: number };
  /** When the status was read, Unix ms. */
  readAtMs: number;
}

/** What the metadata database holds. */
export interface Inventory {
  /** Thin device rows by state. */
  thinDevices: Record<string, number>;
  /** Snapshots by kind (`active`, `view`, `committed`). */
  snapshots: Record<string, number>;
  /** Ready template devices. */
  templates: number;
  /** Thin ids handed out since the database was created. */
  thinIdsAllocated: number;
}

/** Labels of {@linkcode METRIC_NAMES.buildInfo}. */
export interface BuildInfo {
  version: string;
  denoVersion: string;
  /** The backend in use (`ioctl`, `dmsetup`), not the configured `auto`. */
  dmBackend: string;
  transport: string;
}

/** Options of {@linkcode Metrics}. */
export interface MetricsOptions {
  /** Collect the process metrics (default true; tests of our own metrics turn them off). */
  processMetrics?: boolean;
  /** Told when a source throws (its metrics are then left out of that scrape). */
  onSourceError?: (source: "pool" | "inventory", error: unknown) => void;
}

type Child = { inc(): void };
type Observer = { observe(value: number): void };

/** The registry and every metric of ours. */
export class Metrics {
  /** The prom-client registry (only ours: the global one is never used). */
  readonly registry: Registry;
  readonly #rpcs: Counter<"method" | "code">;
  readonly #rpcDuration: Histogram<"method" | "code">;
  readonly #dmOps: Counter<"operation" | "backend">;
  readonly #dmDuration: Histogram<"operation" | "backend">;
  readonly #dmErrors: Counter<"operation" | "backend" | "errno">;
  readonly #rpcChildren = new Map<string, [Child, Observer]>();
  readonly #dmChildren = new Map<string, [Child, Observer]>();
  #pool: (() => PoolFigures | undefined | Promise<PoolFigures | undefined>) | undefined;
  /** The pool's figures read for the scrape in progress. */
  #scrapedPool: PoolFigures | undefined;
  #inventory: (() => Inventory | Promise<Inventory>) | undefined;
  /** The inventory read in flight, shared by concurrent scrapes. */
  #reading: Promise<Inventory | undefined> | undefined;
  /** The inventory read for the scrape in progress. */
  #scraped: Inventory | undefined;
  readonly #onSourceError: MetricsOptions["onSourceError"];
  #reconciled: Partial<Record<ReconcileAction, number>> | undefined;
  #build: Partial<BuildInfo> | undefined;

  /** Creates the registry with every metric. */
  constructor(options: MetricsOptions = {}) {
    this.#onSourceError = options.onSourceError;
    const registry = this.registry = new Registry();
    const registers = [registry];
    this.#rpcs = new Counter({
      name: METRIC_NAMES.rpcs,
      help: "Snapshots API calls finished, by method and gRPC status code.",
      labelNames: ["method", "code"],
      registers,
    });
    this.#rpcDuration = new Histogram({
      name: METRIC_NAMES.rpcDuration,
      help: "Latency of Snapshots API calls in seconds, by method and gRPC status code.",
      labelNames: ["method", "code"],
      buckets: [...LATENCY_BUCKETS],
      registers,
    });
    this.#dmOps = new Counter({
      name: METRIC_NAMES.dmOperations,
      help: "Device-mapper operations, by operation and backend.",
      labelNames: ["operation", "backend"],
      registers,
    });
    this.#dmDuration = new Histogram({
      name: METRIC_NAMES.dmDuration,
      help: "Latency of device-mapper operations in seconds, by operation and backend.",
      labelNames: ["operation", "backend"],
      buckets: [...LATENCY_BUCKETS],
      registers,
    });
    this.#dmErrors = new Counter({
      name: METRIC_NAMES.dmErrors,
      help: "Failed device-mapper operations, by operation, backend and errno " +
        '("unknown" when the failure names none).',
      labelNames: ["operation", "backend", "errno"],
      registers,
    });
    this.#poolMetrics(registry);
    this.#inventoryMetrics(registry);
    this.#startMetrics(registry);
    if (options.processMetrics ?? true) {
      // the event-loop lag is sampled by a timer: every 10 ms (the default) costs an idle
      // server 5 ms of CPU a second under Deno, every 100 ms under 1 ms
      collectDefaultMetrics({
        register: registry,
        eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
      });
      for (const name of [...DROPPED_DEFAULT_METRICS, ...REPLACED_DEFAULT_METRICS]) {
        registry.removeSingleMetric(name);
      }
      this.#processMetrics(registry);
    }
  }

  /** Content type of {@linkcode Metrics.text} (Prometheus text format 0.0.4). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Records a finished RPC: `code` is the gRPC status code's name (`OK`, `NOT_FOUND`, ...). */
  rpcDone(method: string, code: string, seconds: number): void {
    const key = `${method}\0${code}`;
    let child = this.#rpcChildren.get(key);
    if (!child) {
      child = [this.#rpcs.labels(method, code), this.#rpcDuration.labels(method, code)];
      this.#rpcChildren.set(key, child);
    }
    child[0].inc();
    child[1].observe(seconds);
  }

  /** Records a finished device-mapper operation; `errno` when it failed (`unknown` if none). */
  dmDone(operation: string, backend: string, seconds: number, errno?: string): void {
    const key = `${operation}\0${backend}`;
    let child = this.#dmChildren.get(key);
    if (!child) {
      child = [
        this.#dmOps.labels(operation, backend),
        this.#dmDuration.labels(operation, backend),
      ];
      this.#dmChildren.set(key, child);
    }
    child[0].inc();
    child[1].observe(seconds);
    if (errno !== undefined) this.#dmErrors.labels(operation, backend, errno).inc();
  }

  /** Where the pool's figures come from at each scrape (read once per scrape). */
  watchPool(source: () => PoolFigures | undefined | Promise<PoolFigures | undefined>): void {
    this.#pool = source;
  }

  /**
   * Where the database's counts come from at each scrape (read once per scrape, shared by
   * scrapes at the same time).
   */
  watchInventory(source: () => Inventory | Promise<Inventory>): void {
    this.#inventory = source;
  }

  /** What the reconciliation at start did, by action. */
  setReconciled(counts: Partial<Record<ReconcileAction, number>>): void {
    this.#reconciled = counts;
  }

  /**
   * The build and the running configuration; merged into what was set before (the backend is
   * known only once the snapshotter opened). A label never set reads `unknown`.
   */
  setBuildInfo(info: Partial<BuildInfo>): void {
    this.#build = { ...this.#build, ...info };
  }

  /** The exposition in the Prometheus text format; reads the database's counts once. */
  async text(): Promise<string> {
    const [pool, inventory] = await Promise.all([this.#poolFigures(), this.#readInventory()]);
    // nothing is awaited between setting them and the collectors' synchronous reads
    this.#scrapedPool = pool;
    this.#scraped = inventory;
    const text = this.registry.metrics();
    this.#scrapedPool = this.#scraped = undefined;
    return await text;
  }

  /** The database's counts, or undefined when there is no source or it fails (reported). */
  #readInventory(): Promise<Inventory | undefined> {
    const source = this.#inventory;
    if (!source) return Promise.resolve(undefined);
    this.#reading ??= (async () => {
      try {
        return await source();
      } catch (err) {
        this.#onSourceError?.("inventory", err);
        return undefined;
      } finally {
        this.#reading = undefined;
      }
    })();
    return this.#reading;
  }

  /** The pool's figures, or undefined when there are none or its source fails (reported). */
  async #poolFigures(): Promise<PoolFigures | undefined> {
    try {
      return await this.#pool?.();
    } catch (err) {
      this.#onSourceError?.("pool", err);
      return undefined;
    }
  }

  #poolMetrics(registry: Registry): void {
    const pool = () => this.#scrapedPool;
    const bytes = (name: string, help: string, pick: (p: PoolFigures) => number) =>
      collected(registry, { name, help, type: "gauge" }, () => {
        const p = pool();
        return p ? [{ value: pick(p) }] : [];
      });
    bytes(
      METRIC_NAMES.poolDataUsed,
      "Bytes of the thin-pool's data device in use, as last read.",
      (p) => p.dataUsedBytes,
    );
    bytes(
      METRIC_NAMES.poolDataSize,
      "Bytes of the thin-pool's data device.",
      (p) => p.dataSizeBytes,
    );
    bytes(
      METRIC_NAMES.poolMetadataUsed,
      "Bytes of the thin-pool's metadata device in use, as last read.",
      (p) => p.metadataUsedBytes,
    );
    bytes(
      METRIC_NAMES.poolMetadataSize,
      "Bytes of the thin-pool's metadata device.",
      (p) => p.metadataSizeBytes,
    );
    bytes(
      METRIC_NAMES.poolStatusTime,
      "Unix time in seconds the pool status these figures come from was read.",
      (p) => p.readAtMs / 1000,
    );
    collected(registry, {
      name: METRIC_NAMES.poolMode,
      help: "The thin-pool's mode: 1 for the current one (read_write, out_of_data_space, " +
        "read_only, needs_check, failed), 0 for the others.",
      type: "gauge",
    }, () => {
      const p = pool();
      return p
        ? POOL_MODES.map((mode) => ({ labels: { mode }, value: mode === p.mode ? 1 : 0 }))
        : [];
    });
    const bySpace = (p: { data: number | boolean; metadata: number | boolean }) => [
      { labels: { space: "data" }, value: Number(p.data) },
      { labels: { space: "metadata" }, value: Number(p.metadata) },
    ];
    collected(registry, {
      name: METRIC_NAMES.poolBelowLowWater,
      help: "1 while the pool's free space is below its low-water mark (min_free_space; for " +
        "metadata twice that, and at least the kernel's metadata low-water mark), by space.",
      type: "gauge",
    }, () => {
      const p = pool();
      return p ? bySpace(p.belowLowWater) : [];
    });
    collected(registry, {
      name: METRIC_NAMES.poolLowWaterCrossings,
      help: "Times the pool's free space fell below its low-water mark since start, by space.",
      type: "counter",
    }, () => {
      const p = pool();
      return p ? bySpace(p.lowWaterCrossings) : [];
    });
  }

  #inventoryMetrics(registry: Registry): void {
    // one read of the database per scrape (in text()), shared by the four metrics
    const inventory = () => this.#scraped;
    const byLabel = (label: string, counts: Record<string, number> | undefined) =>
      Object.entries(counts ?? {}).map(([value, n]) => ({ labels: { [label]: value }, value: n }));
    collected(registry, {
      name: METRIC_NAMES.thinDevices,
      help: "Thin devices recorded in the metadata database, by state.",
      type: "gauge",
    }, () => byLabel("state", inventory()?.thinDevices));
    collected(registry, {
      name: METRIC_NAMES.snapshots,
      help: "Snapshots, by kind (active, view, committed).",
      type: "gauge",
    }, () => byLabel("kind", inventory()?.snapshots));
    collected(registry, {
      name: METRIC_NAMES.templateDevices,
      help: "Template devices (empty filesystems new parentless snapshots are cut from).",
      type: "gauge",
    }, () => {
      const inv = inventory();
      return inv ? [{ value: inv.templates }] : [];
    });
    collected(registry, {
      name: METRIC_NAMES.thinIdsAllocated,
      help: "Thin ids handed out since the metadata database was created.",
      type: "gauge",
    }, () => {
      const inv = inventory();
      return inv ? [{ value: inv.thinIdsAllocated }] : [];
    });
  }

  #startMetrics(registry: Registry): void {
    collected(registry, {
      name: METRIC_NAMES.reconciled,
      help: "What the reconciliation with the pool did at start, by action (devices, or " +
        "snapshots for undone).",
      type: "gauge",
    }, () => {
      const counts = this.#reconciled;
      return counts
        ? RECONCILE_ACTIONS.map((action) => ({ labels: { action }, value: counts[action] ?? 0 }))
        : [];
    });
    collected(registry, {
      name: METRIC_NAMES.buildInfo,
      help: "Always 1: the version, the Deno version, the device-mapper backend and the gRPC " +
        "transport in use.",
      type: "gauge",
    }, () => {
      const b = this.#build;
      if (!b) return [];
      const labels = {
        version: b.version ?? "unknown",
        deno_version: b.denoVersion ?? "unknown",
        dm_backend: b.dmBackend ?? "unknown",
        transport: b.transport ?? "unknown",
      };
      return [{ labels, value: 1 }];
    });
  }

  /**
   * CPU time since the process started (prom-client's counts only from its registration, and
   * so missed the start: module loading, opening the pool), and the start time.
   */
  #processMetrics(registry: Registry): void {
    const seconds = (pick: (u: NodeJS.CpuUsage) => number) => () => [
      { value: pick(process.cpuUsage()) / 1e6 },
    ];
    collected(registry, {
      name: "process_cpu_user_seconds_total",
      help: "User CPU time spent, seconds.",
      type: "counter",
    }, seconds((u) => u.user));
    collected(registry, {
      name: "process_cpu_system_seconds_total",
      help: "System CPU time spent, seconds.",
      type: "counter",
    }, seconds((u) => u.system));
    collected(registry, {
      name: METRIC_NAMES.processCpu,
      help: "User and system CPU time spent, seconds.",
      type: "counter",
    }, seconds((u) => u.user + u.system));
    const start = processStartSeconds();
    collected(registry, {
      name: METRIC_NAMES.processStartTime,
      help: "Start time of the process since the Unix epoch, seconds.",
      type: "gauge",
    }, () => [{ value: start }]);
  }
}

/** One sample of a {@linkcode collected} metric. */
interface CollectedValue {
  labels?: Record<string, string | number>;
  value: number;
}

/**
 * Registers a metric whose samples `values` computes at each scrape: a family with no value has
 * no sample (a prom-client gauge without labels would read 0, which would be a wrong figure).
 */
function collected(
  registry: Registry,
  family: { name: string; help: string; type: "gauge" | "counter" },
  values: () => CollectedValue[],
): void {
  const metric = {
    ...family,
    aggregator: "sum",
    get: () => Promise.resolve({ ...family, aggregator: "sum", values: values() }),
    reset: () => {},
  };
  registry.registerMetric(metric as unknown as Metric);
}
