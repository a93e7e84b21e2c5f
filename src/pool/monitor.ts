/**
 * The pool's status as the server sees it, read at most about once a second however many calls
 * ask: one status read of all devices serves every Usage call, the health and free-space check
 * before Prepare/View and the check before deletions for {@link STATUS_CACHE_MS}.
 *
 * Invariants:
 * - the check before Prepare/View trusts a healthy status at most {@link STATUS_CACHE_MS} old,
 *   so under load it adds no dm call, and after a pause it reads one (shared by every caller)
 *   instead of letting a creation through on a pool that filled meanwhile; a status that
 *   refuses (unhealthy, or free space below `min_free_space`) and was not read by this very
 *   check is read again before refusing, so a pool that recovered (space freed, pool extended,
 *   repaired) is used at once;
 * - a deletion is refused only on a pool that cannot change (read-only, failed) as last read,
 *   and read again before refusing: deletions add no device-mapper call;
 * - at most one status read is in flight; a failed read is forgotten, never cached;
 * - every status read is compared with the last one: a change of the pool's state (mode,
 *   needs_check, data or metadata below the guard) is logged once, at warn for space, error for
 *   read-only, failed or needs_check, info when the pool is healthy again;
 * - {@linkcode PoolMonitor.settle} waits for the read in flight, so nothing runs after close;
 * - {@linkcode PoolMonitor.figures} (the metrics) reports the last status read, and reads one
 *   only when that is older than the age the caller allows (a scrape adds no device-mapper
 *   call on a server whose calls keep the status fresh). A fall of free data or metadata space
 *   below the guard seen by any status read counts as one low-water crossing.
 *
 * @module
 */
import { UnavailableError } from "../util/errors.ts";
import type { FreeSpace } from "../util/free_space.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import type { DeviceMapper, PoolStatus, TargetStatus } from "../dm/types.ts";
import {
  creationError,
  deletionError,
  METADATA_BLOCK_BYTES,
  type PoolProblem,
  poolProblem,
} from "./health.ts";
import type { PoolFigures } from "../metrics/metrics.ts";
import type { PoolMode } from "../metrics/names.ts";

/** How long one status read of all devices is shared, ms. */
export const STATUS_CACHE_MS = 1000;

/** Options of {@linkcode PoolMonitor}. */
export interface PoolMonitorOptions {
  dm: DeviceMapper;
  poolName: string;
  /** The pool's status as read when it was opened (not logged: the opener reports it). */
  status?: PoolStatus;
  /** `min_free_space`: new devices are refused below it; absent, only an unhealthy pool refuses. */
  minFreeSpace?: FreeSpace;
  logger?: Logger;
  /** Monotonic milliseconds (default `performance.now`); tests move time with it. */
  now?: () => number;
}

/** Caches the status of all devices and judges the pool's health and free space from it. */
export class PoolMonitor {
  readonly #dm: DeviceMapper;
  readonly #poolName: string;
  readonly #minFreeSpace: FreeSpace | undefined;
  readonly #log: Logger;
  readonly #now: () => number;
  #cache: { at: number; status: Promise<Map<string, TargetStatus[]>> } | undefined;
  /** The pool's status as last read. */
  #pool: PoolStatus | undefined;
  /** When the read that gave {@linkcode PoolMonitor.#pool} started (performance.now()). */
  #poolAt = -Infinity;
  /** The state last logged (or found at open): `healthy`, or the problem's state and flags. */
  #state: string;
  /** When the read that gave {@linkcode PoolMonitor.#pool} started, Unix ms. */
  #poolReadAtMs = 0;
  /** Free space below the guard as last read. */
  #low = { data: false, metadata: false };
  /** Falls of free space below the guard seen since start. */
  readonly #crossings = { data: 0, metadata: 0 };

  /** Creates the monitor. */
  constructor(options: PoolMonitorOptions) {
    this.#dm = options.dm;
    this.#poolName = options.poolName;
    this.#minFreeSpace = options.minFreeSpace;
    this.#log = options.logger ?? silentLogger();
    this.#now = options.now ?? (() => performance.now());
    this.#pool = options.status;
    if (options.status) this.#poolAt = this.#now();
    if (options.status) this.#poolReadAtMs = Date.now();
    const problem = options.status && this.problem(options.status);
    this.#state = options.status ? stateKey(problem) : "healthy";
    this.#low = { data: problem?.dataLow ?? false, metadata: problem?.metadataLow ?? false };
  }

  /** The problem of `status` for new devices under this monitor's guard, if any. */
  problem(status: PoolStatus): PoolProblem | undefined {
    return poolProblem(status, this.#poolName, this.#minFreeSpace);
  }

  /** Status of all dm devices, shared for {@link STATUS_CACHE_MS}. */
  deviceStatus(): Promise<Map<string, TargetStatus[]>> {
    const now = this.#now();
    if (!this.#cache || now - this.#cache.at > STATUS_CACHE_MS) {
      const status = this.#dm.statusAll();
      status.then(
        (all) => {
          const line = all.get(this.#poolName)?.[0];
          this.#pool = line?.target === "thin-pool" ? line as PoolStatus : undefined;
          this.#poolAt = now;
          this.#poolReadAtMs = Date.now() - (this.#now() - now);
          if (this.#pool) this.#observe(this.#pool);
        },
        () => (this.#cache = undefined),
      );
      this.#cache = { at: now, status };
    }
    return this.#cache.status;
  }

  /** The pool's status, read now (and shared with later callers). */
  async poolStatus(): Promise<PoolStatus> {
    this.#cache = undefined;
    await this.deviceStatus();
    if (!this.#pool) throw new UnavailableError(`pool "${this.#poolName}" not found`);
    return this.#pool;
  }

  /**
   * Refuses new devices on a failed, read-only, unchecked or full pool, or one whose free data
   * or metadata space is below `min_free_space`, with an error that starts with `what`
   * (`ResourceExhaustedError` for space, `UnavailableError` otherwise). Reads the status first
   * when the last is older than {@link STATUS_CACHE_MS}; when that read fails, the last status
   * is judged, and with none the creation goes on (the pool itself then says what is wrong).
   */
  async checkHealth(what: string): Promise<void> {
    const fresh = this.#age() > STATUS_CACHE_MS;
    if (fresh) await this.deviceStatus().catch(() => {}); // shared with concurrent callers
    if (!this.#pool) return;
    let problem = this.problem(this.#pool);
    if (problem && !fresh) problem = this.problem(await this.poolStatus());
    if (problem) throw creationError(problem, what);
  }

  /**
   * Refuses to delete devices on a pool that cannot change (read-only, failed) with a
   * `FailedPreconditionError` that starts with `what`. Judges the last status read (by the
   * checks before Prepare/View, Usage, or an earlier refusal), whatever its age, and reads it
   * again before refusing: a deletion adds no device-mapper call. A pool that turned read-only
   * since the last read is found by the deletion itself, whose device row then stays `deleting`
   * for Cleanup or the next start: nothing is lost either way. A status that cannot be read
   * refuses nothing (the pool itself then says what is wrong).
   */
  async checkDeletable(what: string): Promise<void> {
    const refuses = (s: PoolStatus | undefined) => {
      const problem = s && this.problem(s);
      return problem && !problem.canDelete ? problem : undefined;
    };
    if (!refuses(this.#pool)) return;
    const problem = refuses(await this.poolStatus().catch(() => undefined));
    if (problem) throw deletionError(problem, what);
  }

  /** Age of the last status of the pool, ms (Infinity when none). */
  #age(): number {
    return this.#now() - this.#poolAt;
  }

  /**
   * The pool's figures for the metrics (none before the first status read): from the last
   * status read when it is at most `maxAgeMs` old (default: whatever its age), else from a
   * status read now, shared with every other caller as any read is. On a busy server the
   * check before Prepare/View keeps the status fresh, so a scrape reads nothing; on an idle
   * one, a scrape reads at most one status per `maxAgeMs`, so the figures follow what running
   * containers write. A read that fails leaves the last figures.
   */
  async figures(maxAgeMs = Infinity): Promise<PoolFigures | undefined> {
    if (this.#age() > maxAgeMs) await this.deviceStatus().catch(() => {});
    return this.lastFigures();
  }

  /** The pool's figures from the last status read, whatever its age; never reads one. */
  lastFigures(): PoolFigures | undefined {
    const s = this.#pool;
    if (!s) return undefined;
    const dataBytes = s.length * 512;
    const blockBytes = s.totalDataBlocks > 0 ? dataBytes / s.totalDataBlocks : 0;
    return {
      dataUsedBytes: s.usedDataBlocks * blockBytes,
      dataSizeBytes: dataBytes,
      metadataUsedBytes: s.usedMetadataBlocks * METADATA_BLOCK_BYTES,
      metadataSizeBytes: s.totalMetadataBlocks * METADATA_BLOCK_BYTES,
      mode: poolMode(s),
      belowLowWater: { ...this.#low },
      lowWaterCrossings: { ...this.#crossings },
      readAtMs: this.#poolReadAtMs,
    };
  }

  /** Logs a change of the pool's state; counts falls below the guard. */
  #observe(status: PoolStatus): void {
    const problem = this.problem(status);
    const low = { data: problem?.dataLow ?? false, metadata: problem?.metadataLow ?? false };
    if (low.data && !this.#low.data) this.#crossings.data++;
    if (low.metadata && !this.#low.metadata) this.#crossings.metadata++;
    this.#low = low;
    const state = stateKey(problem);
    if (state === this.#state) return;
    const from = this.#state;
    this.#state = state;
    const fields = {
      pool: this.#poolName,
      from,
      to: state,
      mode: status.mode,
      data: `${status.usedDataBlocks}/${status.totalDataBlocks}`,
      metadata: `${status.usedMetadataBlocks}/${status.totalMetadataBlocks}`,
      problem: problem?.message,
    };
    if (!problem) {
      this.#log.info("pool is healthy again: new snapshots are allowed", fields);
    } else if (problem.canDelete && problem.state !== "needs_check") {
      this.#log.warn(stateMessage(problem), fields);
    } else {
      this.#log.error(stateMessage(problem), fields);
    }
  }

  /** The pool's status as last read (undefined before any). */
  get lastStatus(): PoolStatus | undefined {
    return this.#pool;
  }

  /** Waits for a status read in flight. */
  async settle(): Promise<void> {
    await this.#cache?.status.catch(() => {});
  }
}

/** The mode of `status` as the metrics name it (the most serious condition wins). */
export function poolMode(status: PoolStatus): PoolMode {
  if (status.failed || status.mode === "fail") return "failed";
  if (status.needsCheck) return "needs_check";
  if (status.mode === "ro") return "read_only";
  if (status.mode === "out_of_data_space") return "out_of_data_space";
  return "read_write";
}

/** One word per distinct state: what changes it is worth a log line. */
function stateKey(problem: PoolProblem | undefined): string {
  if (!problem) return "healthy";
  const low = [problem.dataLow ? "data" : "", problem.metadataLow ? "metadata" : ""]
    .filter(Boolean).join("+");
  return low ? `${problem.state}(low:${low})` : problem.state;
}

/** The log message of a pool found in `problem`'s state. */
export function stateMessage(problem: PoolProblem): string {
  switch (problem.state) {
    case "failed":
      return "pool has failed: serving reads only; new snapshots and removals are refused";
    case "needs_check":
      return "pool needs a metadata check: new snapshots are refused";
    case "read_only":
      return "pool is read-only: serving reads only; new snapshots and removals are refused";
    case "out_of_data_space":
      return "pool is out of data space: serving reads and removals only";
    case "low_space":
      return `pool is low on ${
        problem.dataLow && problem.metadataLow
          ? "data and metadata"
          : problem.dataLow
          ? "data"
          : "metadata"
      } space: new snapshots are refused (min_free_space)`;
  }
}
