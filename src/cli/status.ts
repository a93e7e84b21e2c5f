/**
 * `status`: the state of one configured snapshotter for an operator at the shell, or for a
 * script (`--json`): the pool (space, mode, health under `min_free_space`), snapshots by kind,
 * thin devices, templates, and whether the server is up.
 *
 * Where each figure comes from:
 * - the pool, always from device-mapper (its status and table: two calls), and the active thin
 *   devices of this `root_path` from one listing of all devices;
 * - snapshots by kind from the running server (one List call on the socket `address`, bounded
 *   by a timeout), and when no server answers, from the metadata database opened read-only
 *   ({@linkcode readMetadataSummary}), which also gives the thin devices and templates it
 *   records. A running server holds the database exclusively, so while it is up those two are
 *   unknown (`null`).
 *
 * Invariants: nothing is created or changed (no database, no socket, no device); every problem
 * is reported (stderr, and `errors` in the JSON) and the rest still shown; the exit code says
 * which of {@linkcode EXIT_OK} (healthy), {@linkcode EXIT_UNHEALTHY} (the pool was read and
 * cannot take new snapshots: failed, read-only, needs_check, out of data space or below
 * `min_free_space`) or {@linkcode EXIT_FAILURE} (something could not be read: the pool, or the
 * snapshots from both the server and the database) applies, unhealthy first.
 *
 * @module
 */
import { join } from "node:path";
import type { Config } from "../config/config.ts";
import type { DeviceMapper, PoolStatus } from "../dm/types.ts";
import { DenoCommandRunner } from "../dm/runner.ts";
import { NoMetadataError } from "../metadata/store.ts";
import { type MetadataSummary, readMetadataSummary } from "../metadata/summary.ts";
import { poolProblem, type PoolState } from "../pool/health.ts";
import { poolStatus } from "../pool/loop_pool.ts";
import { activeDevicesOf, deviceUuidPrefix } from "../snapshotter/open_metadata.ts";
import { errorMessage } from "../util/errors.ts";
import { formatFreeSpace } from "../util/free_space.ts";
import { createLogger, type Logger } from "../util/log.ts";
import { configFlagHelp, configFlagOptions, loadConfigFromFlags } from "./config_flags.ts";
import { type KindCounts, probeServer } from "./server_probe.ts";
import { createDeviceMapper } from "./snapshotter_factory.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_UNHEALTHY, parseFlags } from "./usage.ts";

/** Help text of `status`. */
export const STATUS_HELP = `Usage: devmapper-snapshotter status [flags]

Show the pool (data and metadata used, mode, health under min_free_space), snapshots by kind,
thin devices, templates, and whether the server is up. The pool is read from device-mapper;
snapshots from the running server (a List call on its socket), or, when it is down, from the
metadata database opened read-only (which also gives thin devices and templates; the running
server holds the database, so these are unknown while it is up). Changes nothing.

Exit status: 0 healthy; ${EXIT_UNHEALTHY} the pool cannot take new snapshots (failed, read-only,
needs_check, out of data space, or below min_free_space); ${EXIT_FAILURE} something could not be
read (the pool, or the snapshots from both server and database); 2 wrong command line.

Flags:
  --json              print one JSON object (for scripts)
${configFlagHelp()}
`;

/** The pool's mode, most serious first: what `status` shows. */
export type PoolMode = "fail" | "read_only" | "needs_check" | "out_of_data_space" | "read-write";

/** The mode a pool's status reports (`fail` over `ro` over needs_check over out of space). */
export function poolMode(status: PoolStatus): PoolMode {
  if (status.failed || status.mode === "fail") return "fail";
  if (status.mode === "ro") return "read_only";
  if (status.needsCheck) return "needs_check";
  if (status.mode === "out_of_data_space") return "out_of_data_space";
  return "read-write";
}

/** The pool as `status` reports it. */
export interface PoolReport {
  name: string;
  mode: PoolMode;
  needsCheck: boolean;
  dataUsedBytes: number;
  dataTotalBytes: number;
  metadataUsedBytes: number;
  metadataTotalBytes: number;
  blockBytes: number;
  transactionId: number;
  /** `min_free_space` as configured. */
  minFreeSpace: string;
  /** Why the pool cannot take new snapshots; null when it can. */
  problem: { state: PoolState; message: string } | null;
}

/** What `status` found (the object `--json` prints). */
export interface StatusReport {
  /** The pool was read and can take new snapshots. */
  healthy: boolean;
  server: { address: string; state: "up" | "down" | "unknown"; error?: string };
  /** Null when the pool could not be read (see `errors`). */
  pool: PoolReport | null;
  /** Snapshots by kind and where the counts come from; null when neither could tell. */
  snapshots: (KindCounts & { source: "server" | "database" }) | null;
  thinDevices: {
    /** Thin devices recorded in the database; null while the server holds it. */
    total: number | null;
    /** Active (dm device present) devices of this root_path on the pool; null without the pool. */
    active: number | null;
  };
  /** Template devices recorded in the database; null while the server holds it. */
  templates: number | null;
  database: { path: string; read: boolean; error?: string };
  /** Everything that could not be read, one sentence each. */
  errors: string[];
}

/** Options of {@linkcode collectStatus}. */
export interface CollectOptions {
  dm: DeviceMapper;
  /** Bound on the server's List call (default `PROBE_TIMEOUT_MS`). */
  probeTimeoutMs?: number;
}

/** Reads everything `status` shows for `config` (see the module doc); never throws. */
export async function collectStatus(
  config: Config,
  options: CollectOptions,
): Promise<StatusReport> {
  const { dm } = options;
  const errors: string[] = [];
  const dbPath = join(config.rootPath, "metadata.db");
  const report: StatusReport = {
    healthy: false,
    server: { address: config.address, state: "down" },
    pool: null,
    snapshots: null,
    thinDevices: { total: null, active: null },
    templates: null,
    database: { path: dbPath, read: false },
    errors,
  };

  const probe = await probeServer(config.address, { timeoutMs: options.probeTimeoutMs });
  report.server.state = probe.state;
  if (probe.state !== "down" && probe.error) {
    report.server.error = probe.error;
    errors.push(`server on "${config.address}": ${probe.error}`);
  }
  if (probe.state === "up" && probe.snapshots) {
    report.snapshots = { ...probe.snapshots, source: "server" };
  }

  try {
    const space = await poolStatus(dm, config.poolName);
    const problem = poolProblem(space.status, config.poolName, config.minFreeSpace);
    report.pool = {
      name: config.poolName,
      mode: poolMode(space.status),
      needsCheck: space.needsCheck,
      dataUsedBytes: space.dataUsedBytes,
      dataTotalBytes: space.dataTotalBytes,
      metadataUsedBytes: space.metadataUsedBytes,
      metadataTotalBytes: space.metadataTotalBytes,
      blockBytes: space.blockBytes,
      transactionId: space.transactionId,
      minFreeSpace: formatFreeSpace(config.minFreeSpace),
      problem: problem ? { state: problem.state, message: problem.message } : null,
    };
    report.healthy = problem === undefined;
    const prefix = deviceUuidPrefix(config.rootPath, config.poolName);
    report.thinDevices.active = (await activeDevicesOf(dm, config.poolName, prefix)).length;
  } catch (err) {
    const message = errorMessage(err);
    errors.push(
      message.startsWith("Cannot ") ? message : `Cannot read pool "${config.poolName}": ${message}`,
    );
  }

  if (report.snapshots === null) {
    let summary: MetadataSummary | undefined;
    try {
      summary = readMetadataSummary(dbPath);
    } catch (err) {
      const message = err instanceof NoMetadataError
        ? `Cannot read metadata database "${dbPath}": it is ${err.reason} (has the server ` +
          `run with root_path "${config.rootPath}"?); nothing was created`
        : errorMessage(err);
      report.database.error = message;
      errors.push(message);
    }
    if (summary) {
      report.database.read = true;
      report.snapshots = { ...summary.snapshots, source: "database" };
      report.thinDevices.total = summary.thinDevices;
      report.templates = summary.templates;
    }
  }
  return report;
}

/** The exit code of `report` (see the module doc). */
export function statusExitCode(report: StatusReport): number {
  if (report.pool?.problem) return EXIT_UNHEALTHY;
  if (report.pool === null || report.snapshots === null) return EXIT_FAILURE;
  return EXIT_OK;
}

/** About `bytes` in the largest binary unit it reaches, one decimal (`1.5GiB`, `512B`). */
function approxSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (i < units.length - 1 && bytes >= 1024 ** (i + 1)) i++;
  return `${i === 0 ? bytes : Number((bytes / 1024 ** i).toFixed(1))}${units[i]}`;
}

function used(usedBytes: number, totalBytes: number): string {
  const pct = totalBytes > 0 ? ` (${(100 * usedBytes / totalBytes).toFixed(1)}%)` : "";
  return `${approxSize(usedBytes)} of ${approxSize(totalBytes)} used${pct}`;
}

/** `report` as a short aligned table for people. */
export function formatStatus(report: StatusReport): string {
  const rows: [string, string][] = [];
  const { server, pool, snapshots } = report;
  rows.push([
    "server",
    `${server.state === "unknown" ? "unknown" : server.state}, ${server.address}` +
    (server.state === "up" && server.error ? " (not answering)" : ""),
  ]);
  if (pool) {
    rows.push(["pool", pool.name]);
    rows.push(["mode", pool.mode]);
    rows.push(["data", used(pool.dataUsedBytes, pool.dataTotalBytes)]);
    rows.push(["metadata", used(pool.metadataUsedBytes, pool.metadataTotalBytes)]);
    rows.push([
      "health",
      pool.problem
        ? `${pool.problem.state}: ${pool.problem.message}`
        : `ok (min_free_space ${pool.minFreeSpace})`,
    ]);
  } else rows.push(["pool", "unknown (see the error)"]);
  const unknown = server.state === "up"
    ? "unknown (the running server holds the database)"
    : "unknown (see the error)";
  rows.push([
    "snapshots",
    snapshots
      ? `${snapshots.committed} committed, ${snapshots.active} active, ${snapshots.view} view ` +
        `(from the ${snapshots.source})`
      : "unknown (see the error)",
  ]);
  const { total, active } = report.thinDevices;
  const activeText = active === null ? "active unknown" : `${active} active`;
  rows.push([
    "thin devices",
    total === null ? `${activeText}; total ${unknown}` : `${total}, ${activeText}`,
  ]);
  rows.push(["templates", report.templates === null ? unknown : String(report.templates)]);
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n") + "\n";
}

/** What `status` needs besides its flags (tests replace the device mapper). */
export interface StatusContext {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Default config path (tests). */
  defaultConfigPath?: string;
  /** Log destination (default stderr). */
  logWrite?: (line: string) => void;
  /** The device mapper to read the pool with (default: the configured `dm_backend`). */
  deviceMapper?: (config: Config, logger: Logger) => DeviceMapper;
  /** Bound on the server's List call (default `PROBE_TIMEOUT_MS`). */
  probeTimeoutMs?: number;
}

/** Runs `status [flags]`; returns the exit code (usage and config errors throw). */
export async function runStatus(args: string[], ctx: StatusContext): Promise<number> {
  const { values } = parseFlags(args, {
    command: "status",
    options: { ...configFlagOptions(), json: { type: "boolean" } },
  });
  if (values.help) return ctx.stdout(STATUS_HELP), EXIT_OK;
  const { config } = await loadConfigFromFlags(values, ctx.defaultConfigPath);
  // info lines (which dm backend) would only clutter an operator's screen
  const logger = createLogger({
    level: config.logLevel === "info" ? "warn" : config.logLevel,
    format: config.logFormat,
    write: ctx.logWrite,
  });
  const dm = ctx.deviceMapper?.(config, logger) ??
    createDeviceMapper(
      config,
      new DenoCommandRunner({ logger: logger.with({ component: "exec" }) }),
      logger,
    );
  let report: StatusReport;
  try {
    report = await collectStatus(config, { dm, probeTimeoutMs: ctx.probeTimeoutMs });
  } finally {
    dm.close?.();
  }
  ctx.stdout(values.json ? JSON.stringify(report, null, 2) + "\n" : formatStatus(report));
  for (const error of report.errors) ctx.stderr(`devmapper-snapshotter: status: ${error}\n`);
  return statusExitCode(report);
}
