/**
 * The names of every metric the snapshotter exposes, in one place, so that whatever reads the
 * endpoint (the `status` command, tests, dashboards) imports them instead of spelling them.
 *
 * Invariants: every name of ours starts with {@linkcode METRIC_PREFIX} and ends with its unit
 * (`_seconds`, `_bytes`) or `_total` for counters, as Prometheus's naming rules ask; process
 * metrics keep the names every Prometheus client library gives them (`process_*`), so the
 * dashboards and alerts written for any exporter work unchanged.
 *
 * @module
 */

/** Prefix of every metric of the snapshotter itself. */
export const METRIC_PREFIX = "devmapper_snapshotter_";

/** Every metric name, by what it measures. */
export const METRIC_NAMES = {
  /** Counter: RPCs finished, by `method` and gRPC `code` (e.g. `OK`, `NOT_FOUND`). */
  rpcs: "devmapper_snapshotter_grpc_requests_total",
  /** Histogram: RPC latency, seconds, by `method` and `code`. */
  rpcDuration: "devmapper_snapshotter_grpc_request_duration_seconds",
  /** Counter: device-mapper operations, by `operation` and `backend` (`ioctl`, `dmsetup`). */
  dmOperations: "devmapper_snapshotter_dm_operations_total",
  /** Histogram: device-mapper operation latency, seconds, by `operation` and `backend`. */
  dmDuration: "devmapper_snapshotter_dm_operation_duration_seconds",
  /** Counter: failed device-mapper operations, by `operation`, `backend` and `errno`. */
  dmErrors: "devmapper_snapshotter_dm_operation_errors_total",
  /** Gauge: bytes of the pool's data device in use. */
  poolDataUsed: "devmapper_snapshotter_pool_data_used_bytes",
  /** Gauge: bytes of the pool's data device. */
  poolDataSize: "devmapper_snapshotter_pool_data_size_bytes",
  /** Gauge: bytes of the pool's metadata device in use. */
  poolMetadataUsed: "devmapper_snapshotter_pool_metadata_used_bytes",
  /** Gauge: bytes of the pool's metadata device. */
  poolMetadataSize: "devmapper_snapshotter_pool_metadata_size_bytes",
  /**
   * State set: 1 for the pool's mode, 0 for the others, by `mode` (`read_write`,
   * `out_of_data_space`, `read_only`, `needs_check`, `failed`).
   */
  poolMode: "devmapper_snapshotter_pool_mode",
  /** Gauge: 1 while free `space` (`data`, `metadata`) is below the low-water mark. */
  poolBelowLowWater: "devmapper_snapshotter_pool_below_low_water",
  /** Counter: times free `space` (`data`, `metadata`) fell below the low-water mark. */
  poolLowWaterCrossings: "devmapper_snapshotter_pool_low_water_crossings_total",
  /** Gauge: Unix time the pool status these figures come from was read, seconds. */
  poolStatusTime: "devmapper_snapshotter_pool_status_timestamp_seconds",
  /** Gauge: thin devices recorded, by `state` (`creating`, `ready`, `deleting`, `foreign`). */
  thinDevices: "devmapper_snapshotter_thin_devices",
  /** Gauge: snapshots, by `kind` (`active`, `view`, `committed`). */
  snapshots: "devmapper_snapshotter_snapshots",
  /** Gauge: template devices (the empty filesystems new parentless snapshots are cut from). */
  templateDevices: "devmapper_snapshotter_template_devices",
  /** Gauge: thin ids handed out since the metadata database was created. */
  thinIdsAllocated: "devmapper_snapshotter_thin_ids_allocated",
  /** Gauge: what the reconciliation at start did, devices (or snapshots) by `action`. */
  reconciled: "devmapper_snapshotter_reconciled_at_start",
  /** Gauge, always 1: `version`, `deno_version`, `dm_backend`, `transport`. */
  buildInfo: "devmapper_snapshotter_build_info",
  /** Counter: user and system CPU time, seconds. */
  processCpu: "process_cpu_seconds_total",
  /** Gauge: resident memory, bytes. */
  processResidentMemory: "process_resident_memory_bytes",
  /** Gauge: open file descriptors. */
  processOpenFds: "process_open_fds",
  /** Gauge: the file descriptor limit. */
  processMaxFds: "process_max_fds",
  /** Gauge: Unix time the process started, seconds. */
  processStartTime: "process_start_time_seconds",
} as const;

/** A metric name. */
export type MetricName = typeof METRIC_NAMES[keyof typeof METRIC_NAMES];

/** The values of the `mode` label of {@linkcode METRIC_NAMES.poolMode}, healthiest first. */
export const POOL_MODES = [
  "read_write",
  "out_of_data_space",
  "read_only",
  "needs_check",
  "failed",
] as const;

/** A pool mode as the metrics name it. */
export type PoolMode = typeof POOL_MODES[number];

/** The actions of {@linkcode METRIC_NAMES.reconciled} (the fields of the reconcile report). */
export const RECONCILE_ACTIONS = [
  "undone",
  "deleted",
  "unproven",
  "resumed",
  "activated",
  "deactivated",
  "missing",
  "busy",
  "postponed",
  "foreign",
] as const;

/** A reconcile action. */
export type ReconcileAction = typeof RECONCILE_ACTIONS[number];
