/**
 * The pool's status as the server sees it, read at most about once a second however many calls
 * ask: one status read of all devices serves every Usage call and the health check before
 * Prepare/View for {@link STATUS_CACHE_MS}.
 *
 * Invariants:
 * - a healthy last status is trusted for the health check, so Prepare/View add no dm call; an
 *   unhealthy one is read again before refusing, so a pool that recovered is used at once;
 * - at most one status read is in flight; a failed read is forgotten, never cached;
 * - {@linkcode PoolMonitor.settle} waits for the read in flight, so nothing runs after close.
 *
 * @module
 */
import { errorMessage, UnavailableError } from "../util/errors.ts";
import type { DeviceMapper, PoolStatus, TargetStatus } from "../dm/types.ts";
import { checkPoolHealth } from "./health.ts";

/** How long one status read of all devices is shared, ms. */
export const STATUS_CACHE_MS = 1000;

/** Caches the status of all devices and judges the pool's health from it. */
export class PoolMonitor {
  readonly #dm: DeviceMapper;
  readonly #poolName: string;
  #cache: { at: number; status: Promise<Map<string, TargetStatus[]>> } | undefined;
  /** The pool's status as last read. */
  #pool: PoolStatus | undefined;

  /** `initial`: the pool's status as read when it was opened. */
  constructor(dm: DeviceMapper, poolName: string, initial?: PoolStatus) {
    this.#dm = dm;
    this.#poolName = poolName;
    this.#pool = initial;
  }

  /** Status of all dm devices, shared for {@link STATUS_CACHE_MS}. */
  deviceStatus(): Promise<Map<string, TargetStatus[]>> {
    const now = performance.now();
    if (!this.#cache || now - this.#cache.at > STATUS_CACHE_MS) {
      const status = this.#dm.statusAll();
      status.then(
        (all) => {
          const line = all.get(this.#poolName)?.[0];
          this.#pool = line?.target === "thin-pool" ? line as PoolStatus : undefined;
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
   * Refuses new devices on a failed, read-only, full or unchecked pool with an
   * {@linkcode UnavailableError} that starts with `what`. Starts a background refresh when the
   * last status is older than {@link STATUS_CACHE_MS}.
   */
  async checkHealth(what: string): Promise<void> {
    if (performance.now() - (this.#cache?.at ?? -Infinity) > STATUS_CACHE_MS) {
      this.deviceStatus().catch(() => {}); // refresh in the background
    }
    const check = (status: PoolStatus | undefined) => {
      if (status) checkPoolHealth(status, this.#poolName);
    };
    try {
      check(this.#pool);
    } catch {
      try {
        check(await this.poolStatus());
      } catch (err) {
        throw new UnavailableError(`${what}: ${errorMessage(err)}`, { cause: err });
      }
    }
  }

  /** Waits for a status read in flight. */
  async settle(): Promise<void> {
    await this.#cache?.status.catch(() => {});
  }
}
