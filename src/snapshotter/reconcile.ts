/**
 * Reconciliation at start: finishes or undoes whatever a crash interrupted and brings device
 * activation in line with the records, before the server accepts calls.
 *
 * Invariants it restores:
 * - no snapshot row is left `creating` (its Prepare never returned: dropped);
 * - no device of ours is left suspended (a crash between the suspend and the resume around a
 *   snapshot of an active origin would leave its filesystem frozen);
 * - no device row is left `creating` (the device is deleted when provably ours, its id left alone
 *   otherwise) or `deleting` (the device is deleted, then the row), except
 *   a device still open, which is reported busy and retried at the next start or Cleanup, and
 *   every such device of a pool that cannot change (read-only, failed: `deletionsRefused`),
 *   which keeps its row and is reported `postponed`: the start goes on, degraded;
 * - templates of earlier settings are deleted (nothing depends on a template);
 * - no temporary mount of a filesystem grow (`containerd.io/snapshot/max-size`, xfs) is left:
 *   a crash during one leaves its device mounted (open), so these go first;
 * - the devices of active snapshots and views are active, those of committed snapshots are not,
 *   except a committed snapshot's (or a template's) that views share, which is active read-only
 *   exactly while a view row on it exists (a crash between its activation and the view's row,
 *   or between a removal's deactivation and the row's deletion, is put right here);
 * - an active device named like ours without a row of our own (another instance's on a shared
 *   pool) is left alone and reported `foreign`.
 *
 * @module
 */
import { isErrno } from "../dm/errors.ts";
import type { MetadataStore } from "../metadata/store.ts";
import type { ThinPool } from "../pool/thin_pool.ts";
import type { Logger } from "../util/log.ts";
import type { SnapshotterSettings } from "./settings.ts";

/** What {@linkcode reconcile} works on. */
export interface ReconcileContext {
  store: MetadataStore;
  pool: ThinPool;
  settings: Pick<SnapshotterSettings, "fsType" | "fsOptions" | "baseImageSize">;
  log: Logger;
  /**
   * Why the pool deletes nothing now (read-only, failed), when it does not: pending deletions
   * and old templates are then left for Cleanup or the next start.
   */
  deletionsRefused?: string;
}

/** Brings the pool and the store in line; returns what it did. */
export async function reconcile(
  { store, pool, settings, log, deletionsRefused }: ReconcileContext,
): Promise<ReconcileReport> {
  const report: ReconcileReport = {
    undone: [],
    deleted: [],
    resumed: [],
    unproven: [],
    activated: [],
    deactivated: [],
    missing: [],
    busy: [],
    foreign: [],
    postponed: [],
    released: [],
  };
  // 0. mounts of grows a crash interrupted: released, so that their devices can go.
  report.released.push(...await pool.releaseGrowMounts());
  // 1. snapshots whose creation never finished: drop them (Prepare never returned).
  for (const s of store.listSnapshots("creating")) {
    store.deleteSnapshot(s.id);
    report.undone.push(s.key);
  }
  const active = await pool.activeDevices();
  // 2a. devices of ours left suspended: a crash between the suspend and the resume around a
  // snapshot of an active origin. Another instance's suspended device may be mid-snapshot: left.
  for (const [name, info] of active) {
    if (!info.suspended) continue;
    const thinId = pool.thinIdOf(name);
    const device = thinId === undefined ? undefined : store.getDevice(thinId);
    if (!device || device.state === "foreign") continue;
    await pool.resume(device);
    report.resumed.push(name);
  }
  // 2. devices half-created or half-deleted: delete them. A `deleting` row's device is ours (it
  // was ready); a `creating` row's is ours only when its device is active with our dm UUID
  // (activated after our create succeeded). Otherwise the create may never have happened, or
  // have failed on an id another pool user holds: its id is left alone, never deleted nor
  // reused (recorded `foreign`), and reported: a possible leak, never another owner's loss.
  const pending = store.listDevices("deleting");
  for (const device of store.listDevices("creating")) {
    const info = active.get(device.name);
    if (info && pool.isOurs(info)) {
      pending.push(device);
      continue;
    }
    store.markDeviceForeign(device.thinId);
    report.unproven.push(device.thinId);
  }
  if (report.unproven.length > 0) {
    log.warn("thin ids of interrupted creations left alone: not known to be ours", {
      thin_ids: report.unproven,
    });
  }
  if (deletionsRefused !== undefined) {
    report.postponed.push(...pending.map((d) => d.name));
    if (pending.length > 0) {
      log.warn("devices of removed or unfinished snapshots left in the pool until it can change", {
        devices: report.postponed,
        reason: deletionsRefused,
      });
    }
  } else {
    for (const device of pending) {
      try {
        await pool.destroy(device);
        report.deleted.push(device.thinId);
      } catch (err) {
        if (!isErrno(err, "EBUSY")) throw err;
        report.busy.push(device.name);
      }
    }
    // 3. templates of earlier settings: garbage once the configuration changed.
    report.deleted.push(
      ...await pool.dropTemplatesExcept(
        settings.fsType,
        settings.fsOptions,
        settings.baseImageSize,
      ),
    );
  }
  // 4. activation follows the records.
  const wanted = new Set<string>();
  for (const { key, device, shared } of store.listLiveDevices()) {
    if (wanted.has(device.name)) continue; // views sharing one device
    wanted.add(device.name);
    const info = active.get(device.name);
    if (info) {
      if (shared && !info.readOnly) {
        log.warn("views share a device that is active read-write", { device: device.name });
      }
      continue;
    }
    try {
      await pool.activate(device, { readOnly: shared });
      report.activated.push(device.name);
    } catch (err) {
      log.error("cannot activate the device of a snapshot", {
        key,
        device: device.name,
        error: err,
      });
      report.missing.push(key);
    }
  }
  for (const [name, info] of active) {
    if (wanted.has(name) || pending.some((d) => d.name === name)) continue;
    const thinId = pool.thinIdOf(name);
    const device = thinId === undefined ? undefined : store.getDevice(thinId);
    if (!device || device.state === "foreign") {
      // another instance sharing the pool (its ids are "foreign" here), or a wiped root
      report.foreign.push(name);
      continue;
    }
    try {
      await pool.deactivate({ name }, { deferred: info.openCount > 0 });
      report.deactivated.push(name);
    } catch (err) {
      report.busy.push(name);
      log.warn("cannot deactivate device", { device: name, error: err });
    }
  }
  return report;
}

/** What {@linkcode reconcile} did. */
export interface ReconcileReport {
  /** Keys of snapshots whose creation a crash interrupted (dropped). */
  undone: string[];
  /** Thin ids deleted from the pool (half-created or half-deleted devices, old templates). */
  deleted: number[];
  /**
   * Thin ids of interrupted creations that cannot be proven ours (not active with our dm UUID):
   * left alone in the pool, recorded `foreign` (a possible leak, never another owner's loss).
   */
  unproven: number[];
  /** Devices of ours found suspended and resumed. */
  resumed: string[];
  /** Devices activated for active snapshots and views. */
  activated: string[];
  /** Devices deactivated (committed snapshots, templates, strays). */
  deactivated: string[];
  /** Active snapshots and views whose device cannot be activated. */
  missing: string[];
  /** Devices still open, left for later. */
  busy: string[];
  /**
   * Devices whose deletion waits because the pool cannot change now (read-only, failed); their
   * rows stay for Cleanup or the next start.
   */
  postponed: string[];
  /** Temporary mount points of interrupted filesystem grows, unmounted and removed. */
  released: string[];
  /**
   * Active devices named like ours that this store has no row of its own for: another
   * instance's on a shared pool (or left by a wiped `root_path`). Left alone.
   */
  foreign: string[];
}
