/**
 * The pool and thin-device manager: turns device records of the metadata store into thin
 * devices in one device-mapper thin-pool and back.
 *
 * Every device has a row in the store *before* the pool is asked to create it (state
 * `creating`) and keeps it until *after* the pool deleted it (state `deleting`), so a crash
 * at any point leaves a row that {@linkcode ThinPool.finishPending} can finish or undo: no
 * thin id is ever created without a record. Ids come from a durable counter and are never
 * reused; an id found taken by someone else sharing the pool is recorded as `foreign` and
 * skipped.
 *
 * A snapshot of an active origin suspends it around `create_snap`, and a suspend flushes the
 * origin's filesystem, which never completes while the pool cannot write (full, in
 * `queue_if_no_space` mode). So the wait for the suspend is bounded
 * ({@linkcode SUSPEND_TIMEOUT_MS}); past it the snapshot fails with a
 * {@linkcode SuspendTimeoutError} and `create_snap` is never sent, while the suspend, which
 * nothing can cancel, goes on in the kernel. When it ends the origin is resumed, and only then
 * may the next snapshot of that origin suspend it (it waits for that within its own bound).
 *
 * @module
 */
import type { DeviceInfo, DeviceMapper, PoolStatus } from "../dm/types.ts";
import { devicePath, thinTable } from "../dm/types.ts";
import { isErrno } from "../dm/errors.ts";
import { MAX_THIN_ID } from "../dm/thin_messages.ts";
import type { FsType } from "../dm/mkfs.ts";
import { checkPoolHealth } from "./health.ts";
import { PoolMonitor } from "./monitor.ts";
import type { PoolFigures } from "../metrics/metrics.ts";
import type { DeviceRecord, MetadataStore } from "../metadata/store.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import { errorMessage, NotFoundError, UnavailableError } from "../util/errors.ts";
import type { FreeSpace } from "../util/free_space.ts";

export type { FsType };

/**
 * How long a snapshot of an active origin waits for the origin's suspend (the freeze and flush
 * of its filesystem), ms. A flush that takes longer goes on in the kernel, so a timeout costs
 * only a retry (by then the data is flushed and the retry's suspend is quick), never data;
 * a flush that never completes costs no more than this. 10 s is well past a healthy pool's
 * flush of a committed layer (containerd writes a layer, unmounts it and commits it: little is
 * left dirty) and well below the kernel's own `no_space_timeout` (60 s by default, after which
 * a full pool fails the queued writes) and containerd's and the kubelet's request timeouts.
 */
export const SUSPEND_TIMEOUT_MS = 10_000;

/** How long the state of the pool is awaited for the message of a {@linkcode SuspendTimeoutError}. */
const POOL_STATE_WAIT_MS = 2000;

/**
 * A snapshot of an active origin gave up waiting for the origin's suspend: the origin's
 * filesystem could not be flushed in time (typically a full pool that queues writes). Nothing
 * was created; the origin is resumed when the suspend ends. gRPC `Unavailable`: retrying is
 * safe and works once the pool can write again.
 */
export class SuspendTimeoutError extends UnavailableError {
  /** dm name of the origin. */
  readonly device: string;
  /** Creates the error. */
  constructor(message: string, device: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SuspendTimeoutError";
    this.device = device;
  }
}

/** Makes and prepares filesystems on block devices (see `src/dm/mkfs.ts`). */
export interface Formatter {
  /** Creates a filesystem on `device` (path). */
  mkfs(device: string, fsType: FsType, fsOptions: string): Promise<void>;
  /** Leaves the filesystem's root empty (no `lost+found`), without mounting it. */
  emptyRoot(device: string, fsType: FsType): Promise<void>;
  /** Discards all blocks of `device` (path). */
  discard(device: string): Promise<void>;
  /**
   * Grows the filesystem on `device` (path, not mounted elsewhere) to fill the device. A
   * filesystem that grows only while mounted (xfs) is mounted on `mountPoint` (created, then
   * unmounted and removed) meanwhile.
   */
  grow(device: string, fsType: FsType, mountPoint: string): Promise<void>;
  /** Unmounts (lazily) and removes a grow's mount point left by a crash; absent is fine. */
  releaseMount(mountPoint: string): Promise<void>;
  /**
   * True when a mount of the filesystem on `device` (path) would have to replay a journal
   * (see `src/dm/fs_state.ts`); absent, never.
   */
  needsRecovery?(device: string, fsType: FsType): Promise<boolean>;
}

/** Options for {@linkcode ThinPool}. */
export interface ThinPoolOptions {
  dm: DeviceMapper;
  store: MetadataStore;
  /** dm name of the thin-pool. */
  poolName: string;
  formatter: Formatter;
  logger?: Logger;
  /** Discard a device's blocks before deleting it. */
  discardBlocks?: boolean;
  /** Attempts to find a free thin id when ids are taken by another pool user (default 64). */
  idAttempts?: number;
  /** The pool's status as read when it was opened (see `openPool` in `health.ts`). */
  status?: PoolStatus;
  /** Bound on the wait for an active origin's suspend, ms (default {@linkcode SUSPEND_TIMEOUT_MS}). */
  suspendTimeoutMs?: number;
  /** `min_free_space`: new devices are refused below it (see `health.ts`); absent, no guard. */
  minFreeSpace?: FreeSpace;
  /**
   * Directory for the temporary mount points of filesystem grows (see
   * {@linkcode ThinPool.growFilesystem}), this instance's own (under its `root_path`): what is
   * left there after a crash is released at the next start. Absent: xfs cannot grow.
   */
  growDir?: string;
  /**
   * Devices get the dm UUID `<uuidPrefix><thin id>` when activated, which tells this
   * instance's active devices from another's on a shared pool (see
   * `src/snapshotter/open_metadata.ts`); absent, none.
   */
  uuidPrefix?: string;
}

/**
 * How far a create message got: `not sent` (the pool was asked nothing), `sent` (asked; the
 * answer was an error or never came: the id may be another owner's, or ours), `created`.
 */
interface CreateOutcome {
  state: "not sent" | "sent" | "created";
}

/** What to create a device from. */
export type DeviceOrigin =
  | { kind: "snapshot"; originId: number }
  | { kind: "empty" };

/** Manages this snapshotter's thin devices in one pool. */
export class ThinPool {
  readonly dm: DeviceMapper;
  readonly store: MetadataStore;
  readonly poolName: string;
  readonly #formatter: Formatter;
  readonly #log: Logger;
  readonly #discardBlocks: boolean;
  /**
   * The last snapshot of an active origin queued, by origin thin id; it resolves (never
   * rejects) once that snapshot is done, the resume after a late suspend included.
   */
  readonly #originTurns = new Map<number, Promise<void>>();
  readonly #suspendTimeoutMs: number;
  /** Resumes waiting for a suspend that ended after its snapshot gave up. */
  readonly #lateResumes = new Set<Promise<void>>();
  readonly #idAttempts: number;
  readonly #uuidPrefix: string | undefined;
  /** In-flight template builds, by template key (instance state). */
  readonly #templates = new Map<string, Promise<DeviceRecord>>();
  readonly #monitor: PoolMonitor;
  readonly #growDir: string | undefined;

  /** Creates the manager; call {@linkcode ThinPool.status} to check the pool. */
  constructor(options: ThinPoolOptions) {
    this.dm = options.dm;
    this.store = options.store;
    this.poolName = options.poolName;
    this.#formatter = options.formatter;
    this.#log = options.logger ?? silentLogger();
    this.#discardBlocks = options.discardBlocks ?? false;
    this.#idAttempts = options.idAttempts ?? 64;
    this.#uuidPrefix = options.uuidPrefix;
    this.#suspendTimeoutMs = options.suspendTimeoutMs ?? SUSPEND_TIMEOUT_MS;
    this.#growDir = options.growDir;
    this.#monitor = new PoolMonitor({
      dm: this.dm,
      poolName: this.poolName,
      status: options.status,
      minFreeSpace: options.minFreeSpace,
      logger: this.#log,
    });
  }

  /** Processes the device-mapper layer has spawned so far. */
  get spawns(): number {
    return this.dm.spawns;
  }

  /** Path of the node of `device`. */
  devicePath(device: { name: string }): string {
    return devicePath(device.name);
  }

  /** dm name of the device with thin id `thinId`. */
  deviceName(thinId: number): string {
    return `${this.poolName}-dms-${thinId}`;
  }

  /** The thin id in a {@linkcode deviceName}, or undefined for any other name. */
  thinIdOf(name: string): number | undefined {
    const prefix = `${this.poolName}-dms-`;
    const id = name.startsWith(prefix) ? name.slice(prefix.length) : "";
    return /^[1-9][0-9]*$/.test(id) ? Number(id) : undefined;
  }

  /** Throws when the pool cannot take new devices, from a status read now. */
  async checkHealthNow(): Promise<void> {
    checkPoolHealth(await this.#monitor.poolStatus(), this.poolName);
  }

  /**
   * Refuses new devices on an unhealthy pool with an error that starts with `what`; trusts a
   * healthy status up to a second old (see `monitor.ts`).
   */
  checkHealth(what: string): Promise<void> {
    return this.#monitor.checkHealth(what);
  }

  /**
   * Refuses to delete devices on a pool that cannot change (read-only, failed) with a
   * FailedPreconditionError that starts with `what` (see `monitor.ts`).
   */
  checkDeletable(what: string): Promise<void> {
    return this.#monitor.checkDeletable(what);
  }

  /** The pool's status, read now. */
  poolStatus(): Promise<PoolStatus> {
    return this.#monitor.poolStatus();
  }

  /**
   * The pool's figures for the metrics, from the last status read, or one read now when that
   * is older than `maxAgeMs` (see `monitor.ts`).
   */
  figures(maxAgeMs?: number): Promise<PoolFigures | undefined> {
    return this.#monitor.figures(maxAgeMs);
  }

  /**
   * Mapped bytes of an active device, from the shared status of all devices (at most a second
   * old), or read now when that status does not have it.
   */
  async usedBytes(device: { name: string }): Promise<number> {
    const line = (await this.#monitor.deviceStatus()).get(device.name)?.[0];
    if (line && "mappedSectors" in line) return line.mappedSectors * 512;
    return await this.mappedBytes(device);
  }

  /**
   * Waits for a status read in flight and (within the suspend timeout) for the resume of an
   * origin whose suspend is still in the kernel, then releases the device-mapper backend. An
   * origin left suspended is resumed at the next start (see `reconcile.ts`).
   */
  async close(): Promise<void> {
    await this.#monitor.settle();
    if (this.#lateResumes.size > 0) {
      const late = Promise.all(this.#lateResumes);
      if (!await settlesBy(late, performance.now() + this.#suspendTimeoutMs)) {
        this.#log.warn(
          "closing with a suspend still in the kernel; its device is resumed at the next start",
          {
            pool: this.poolName,
            pending: this.#lateResumes.size,
          },
        );
      }
    }
    this.dm.close?.();
  }

  /**
   * Records a new device (state `creating`) inside the caller's transaction and returns it.
   * The caller commits the transaction, then calls {@linkcode ThinPool.materialize}.
   */
  reserve(init: {
    origin: DeviceOrigin;
    sizeBytes: number;
    fsType: FsType;
    role?: "snapshot" | "template";
    templateKey?: string;
  }): DeviceRecord {
    const thinId = this.store.allocateThinId(MAX_THIN_ID);
    const device: DeviceRecord = {
      thinId,
      name: this.deviceName(thinId),
      role: init.role ?? "snapshot",
      state: "creating",
      originId: init.origin.kind === "snapshot" ? init.origin.originId : null,
      sizeBytes: init.sizeBytes,
      fsType: init.fsType,
      templateKey: init.templateKey ?? null,
    };
    this.store.insertDevice(device);
    return device;
  }

  /**
   * Creates the reserved device in the pool (`create_thin` or `create_snap`) and activates it.
   * An id found taken by another pool user is recorded `foreign` and the device moves to a
   * fresh id (its row and name change; the returned record is current). On failure the pool
   * is left without the device and the row stays `creating` for the caller to drop.
   */
  async materialize(device: DeviceRecord, options: { readOnly?: boolean } = {}): Promise<
    DeviceRecord
  > {
    let current = device;
    for (let attempt = 1;; attempt++) {
      const outcome: CreateOutcome = { state: "not sent" };
      try {
        await this.#createInPool(current, outcome);
        break;
      } catch (err) {
        if (outcome.state === "created") throw err; // ours: the caller's undo deletes it
        if (outcome.state === "not sent") {
          this.#forget(current); // nothing was asked of the pool
          throw err;
        }
        if (isErrno(err, "EEXIST") && attempt < this.#idAttempts) {
          current = this.#moveToFreshId(current);
          continue;
        }
        this.#abandon(current, err);
        throw err;
      }
    }
    try {
      await this.activate(current, options);
    } catch (err) {
      await this.#deleteThin(current.thinId).catch((cause) =>
        this.#log.warn("cannot undo thin device after failed activation", {
          thin_id: current.thinId,
          error: cause,
        })
      );
      throw err;
    }
    return current;
  }

  async #createInPool(device: DeviceRecord, outcome: CreateOutcome): Promise<void> {
    const { thinId, originId } = device;
    if (originId === null) {
      return await this.#send(outcome, () => this.dm.createThin(this.poolName, thinId));
    }
    if (!await this.isActive(this.deviceName(originId))) {
      return await this.#send(outcome, () => this.dm.createSnap(this.poolName, thinId, originId));
    }
    await this.#originTurn(
      originId,
      (turn) => this.#snapshotActive(thinId, originId, turn, outcome),
    );
  }

  /** Sends a create message, recording how far it got. */
  async #send(outcome: CreateOutcome, create: () => Promise<void>): Promise<void> {
    outcome.state = "sent";
    await create();
    outcome.state = "created";
  }

  /**
   * Snapshots an active origin (e.g. committed while still mounted), suspended so that the
   * snapshot sees a consistent, flushed filesystem. Commit removed it with --deferred: the
   * kernel takes it away once its last user closes it, which can happen before the suspend or
   * while it is suspended. A device gone is an inactive origin, and nothing is left to resume.
   *
   * A suspend not done by the turn's deadline is left to finish in the kernel: the snapshot
   * fails with a {@linkcode SuspendTimeoutError} before `create_snap` (the caller undoes the
   * reserved device, which the pool never made), and the origin is resumed once the suspend
   * ends, whichever way; the origin's turn lasts until then.
   */
  async #snapshotActive(
    thinId: number,
    originId: number,
    turn: OriginTurn,
    outcome: CreateOutcome,
  ): Promise<void> {
    const origin = this.deviceName(originId);
    const suspending = this.dm.suspend(origin).then(
      () => true,
      (err) => {
        if (isErrno(err, "ENXIO")) return false;
        throw err;
      },
    );
    if (!await settlesBy(suspending, turn.deadline)) {
      turn.hold(this.#resumeWhenSuspended(origin, suspending));
      throw await this.#suspendTimeout(
        origin,
        `its suspend did not finish within ${this.#suspendTimeoutMs} ms, so its filesystem ` +
          `could not be flushed`,
      );
    }
    const suspended = await suspending;
    try {
      await this.#send(outcome, () => this.dm.createSnap(this.poolName, thinId, originId));
    } finally {
      if (suspended) {
        await this.dm.resume(origin).catch((err) => {
          if (!isErrno(err, "ENXIO")) throw err;
        });
      }
    }
  }

  /**
   * Runs `fn` after every earlier snapshot of the same origin is done: two snapshots of one
   * active origin must not interleave, or one resumes the origin before the other's
   * create_snap. The wait counts against the suspend timeout: an earlier suspend still in the
   * kernel fails this snapshot in time too. The turn ends when `fn` is done and whatever it
   * held (a resume waiting for a late suspend) has settled.
   */
  async #originTurn(originId: number, fn: (turn: OriginTurn) => Promise<void>): Promise<void> {
    const deadline = performance.now() + this.#suspendTimeoutMs;
    const previous = this.#originTurns.get(originId) ?? Promise.resolve();
    const held: Promise<void>[] = [previous];
    const { promise: turn, resolve: endTurn } = Promise.withResolvers<void>();
    this.#originTurns.set(originId, turn);
    try {
      if (!await settlesBy(previous, deadline)) {
        throw await this.#suspendTimeout(
          this.deviceName(originId),
          `an earlier snapshot's suspend of it has not finished within ${this.#suspendTimeoutMs} ms`,
        );
      }
      await fn({ deadline, hold: (p) => held.push(p) });
    } finally {
      // every held promise resolves, never rejects
      Promise.all(held).then(() => {
        if (this.#originTurns.get(originId) === turn) this.#originTurns.delete(originId);
        endTurn();
      });
    }
  }

  /**
   * Resumes `origin` once a suspend its snapshot gave up on has ended. A suspend that failed
   * late may have suspended the device all the same (dmsetup killed at its time limit after
   * the kernel suspended it), so the device is resumed whichever way it ended: resuming a
   * device that is not suspended does nothing, and one that is gone is fine. Never rejects.
   */
  #resumeWhenSuspended(origin: string, suspending: Promise<boolean>): Promise<void> {
    const started = performance.now();
    const done = (async () => {
      const outcome = await suspending.then(
        (suspended) => (suspended ? "suspended" : "gone"),
        (err) => `failed: ${errorMessage(err)}`,
      );
      await this.resume({ name: origin });
      this.#log.warn("a suspend ended after its snapshot gave up; the device is resumed", {
        device: origin,
        suspend: outcome,
        ms: Math.round(performance.now() - started),
      });
    })().catch((error) => {
      this.#log.error(
        "cannot resume a device after its late suspend; it is resumed at the next start",
        {
          device: origin,
          error,
        },
      );
    });
    this.#lateResumes.add(done);
    done.then(() => this.#lateResumes.delete(done));
    return done;
  }

  /** The error of a snapshot of `origin` that gave up waiting, naming the pool's state. */
  async #suspendTimeout(origin: string, reason: string): Promise<SuspendTimeoutError> {
    let state: string;
    let advice = "retry later";
    try {
      const reading = this.#monitor.poolStatus();
      reading.catch(() => {}); // read on past the wait below: its failure is of no interest then
      if (!await settlesBy(reading, performance.now() + POOL_STATE_WAIT_MS)) {
        throw new Error(`no status within ${POOL_STATE_WAIT_MS} ms`);
      }
      const status = await reading;
      state = describePool(status);
      if (status.mode === "out_of_data_space") {
        advice = "give the pool data space (extend it, or remove snapshots), then retry";
      }
    } catch (err) {
      state = `state unknown (${errorMessage(err)})`;
    }
    return new SuspendTimeoutError(
      `Cannot snapshot active device "${origin}": ${reason}; pool "${this.poolName}" ${state}. ` +
        `Nothing was created; the device is resumed when the suspend ends: ${advice}`,
      origin,
    );
  }

  /** Drops the rows of a device the pool was never asked to create (left `creating` if that fails). */
  #forget(device: DeviceRecord): void {
    this.#tryRowWrite(
      device,
      (id) => this.store.deleteDevice(id),
      "cannot drop the row of a device never created; the next start does",
    );
  }

  /** Runs `write` on the row of `device`; when it fails, logs `warning` and returns false. */
  #tryRowWrite(device: DeviceRecord, write: (thinId: number) => void, warning: string): boolean {
    try {
      write(device.thinId);
      return true;
    } catch (error) {
      this.#log.warn(warning, { thin_id: device.thinId, error });
      return false;
    }
  }

  /**
   * A create that failed leaves its thin id to whoever may hold it: taken by another pool user
   * (EEXIST), or of unknown outcome (a `dmsetup` killed at its time limit may have created it).
   * The id is recorded `foreign`, so it is never deleted nor handed out again; a possible leak
   * of our own is the price of never deleting another owner's device. A failure of that write
   * leaves the row `creating`, which the next start treats the same way (see `reconcile.ts`).
   */
  #abandon(device: DeviceRecord, cause: unknown): void {
    const recorded = this.#tryRowWrite(
      device,
      (id) => this.store.markDeviceForeign(id),
      "cannot record a failed create; the next start leaves its id alone",
    );
    if (!recorded) return;
    if (!isErrno(cause, "EEXIST")) {
      this.#log.warn("thin id of a failed create left alone (never deleted, never reused)", {
        pool: this.poolName,
        thin_id: device.thinId,
        error: cause,
      });
    }
  }

  #moveToFreshId(device: DeviceRecord): DeviceRecord {
    return this.store.transaction(() => {
      const thinId = this.store.allocateThinId(MAX_THIN_ID);
      const moved: DeviceRecord = { ...device, thinId, name: this.deviceName(thinId) };
      this.store.markDeviceForeign(device.thinId);
      this.store.insertDevice(moved);
      this.store.repointSnapshots(device.thinId, thinId);
      this.#log.warn("thin id taken by another pool user; skipping it", {
        pool: this.poolName,
        thin_id: device.thinId,
        next: thinId,
      });
      return moved;
    });
  }

  /**
   * Activates `device` (creates its dm device) unless it is already active. `strict`: a device
   * of that name already active fails with EBUSY instead.
   */
  async activate(
    device: DeviceRecord,
    options: { readOnly?: boolean; strict?: boolean } = {},
  ): Promise<void> {
    const create = { readOnly: options.readOnly };
    try {
      await this.dm.create(
        device.name,
        thinTable(this.poolName, device.thinId, device.sizeBytes),
        this.#uuidPrefix === undefined
          ? create
          : { ...create, uuid: this.#uuidPrefix + device.thinId },
      );
    } catch (err) {
      // EBUSY: a device of that name exists already; fine if it is ours and live.
      if (options.strict) throw err;
      if (isErrno(err, "EBUSY") && await this.isActive(device.name)) return;
      throw err;
    }
  }

  /**
   * Activates `device` read-only under its own name, for the views that share it. Returns true
   * when it is active read-only (now, or already); false, leaving nothing activated, when it
   * must not be shared: a device of that name is active read-write (a committed snapshot still
   * open, committed while mounted, its deferred removal pending: writes can still reach it), or
   * its filesystem needs a journal replayed (its host crashed while it was mounted), which a
   * read-only device cannot do. One create (and a 1 KiB read of an ext4 superblock) when it is
   * not active; its info when it is.
   */
  async activateReadOnly(device: DeviceRecord): Promise<boolean> {
    try {
      await this.activate(device, { readOnly: true, strict: true });
    } catch (err) {
      if (!isErrno(err, "EBUSY")) throw err;
      const info = await this.dm.info(device.name);
      if (!info) throw err; // EBUSY for its UUID, under another name: not ours to share
      return info.readOnly;
    }
    const path = devicePath(device.name);
    let dirty: boolean;
    try {
      dirty = await this.#formatter.needsRecovery?.(path, device.fsType as FsType) ?? false;
    } catch (error) {
      this.#log.warn("cannot read a filesystem's journal state; not shared", {
        device: device.name,
        error,
      });
      dirty = true;
    }
    if (!dirty) return true;
    await this.deactivate(device);
    return false;
  }

  /** Resumes a suspended device; one that is gone is fine. */
  async resume(device: { name: string }): Promise<void> {
    try {
      await this.dm.resume(device.name);
    } catch (err) {
      if (!isErrno(err, "ENXIO") && !isErrno(err, "ENODEV")) throw err;
    }
  }

  /**
   * Deactivates `device`. `deferred`: when it is open (mounted), it goes away at its last
   * close instead of failing. Otherwise an open device fails with EBUSY (after the dm layer's
   * bounded retries); a device that is not active is fine.
   */
  async deactivate(device: { name: string }, options: { deferred?: boolean } = {}): Promise<
    void
  > {
    if (!await this.isActive(device.name)) return;
    try {
      await this.dm.remove(device.name, { deferred: options.deferred });
    } catch (err) {
      if (isErrno(err, "ENXIO") || isErrno(err, "ENODEV")) return;
      throw err;
    }
  }

  async #deleteThin(thinId: number): Promise<void> {
    try {
      await this.dm.deleteThin(this.poolName, thinId);
    } catch (err) {
      if (isErrno(err, "ENODATA")) return; // already gone
      throw err;
    }
  }

  /** True when `info` is a device this instance activated (its dm UUID carries our prefix). */
  isOurs(info: { uuid?: string }): boolean {
    return this.#uuidPrefix !== undefined && info.uuid?.startsWith(this.#uuidPrefix) === true;
  }

  /**
   * Deletes a device whose row is `deleting` (or `creating`, when undoing): deactivates it,
   * optionally discards its blocks, deletes the thin id, then drops the row. A device that is
   * still open fails with EBUSY and keeps its row for a later attempt.
   */
  async destroy(device: DeviceRecord): Promise<void> {
    if (this.store.getDevice(device.thinId)?.state === "foreign") {
      throw new Error(
        `Cannot delete thin device ${device.thinId} of pool "${this.poolName}": it is not ` +
          "known to be this snapshotter's (another owner's, or a create of unknown outcome)",
      );
    }
    if (this.#discardBlocks && device.state !== "creating") await this.#discard(device);
    await this.deactivate(device);
    await this.#deleteThin(device.thinId);
    // a deleting row lost at a power cut is deleting again at the next start, which finds its
    // thin id gone and drops it: no fsync for it (Remove: one fsync, marking it deleting)
    this.store.deleteDevice(device.thinId, { durable: device.state !== "deleting" });
  }

  /**
   * `discard_blocks`: discards a device's blocks before its thin id is deleted, so that the pool
   * passes the discards down (a loop file's blocks go back to the host's filesystem; deleting
   * the thin id alone only frees them inside the pool). A device that is not active (a
   * committed layer, or a removed snapshot's) is activated for it; one still open is left for
   * the deactivation to refuse.
   */
  async #discard(device: DeviceRecord): Promise<void> {
    const info = await this.dm.info(device.name);
    if (info && info.openCount > 0) return;
    try {
      if (!info) await this.activate(device);
      await this.#formatter.discard(devicePath(device.name));
    } catch (error) {
      this.#log.warn("discard failed; deleting anyway", { device: device.name, error });
    }
  }

  /**
   * Grows the filesystem on active `device` (just created, not yet handed out) to fill its
   * virtual size. An xfs grow mounts it on a private directory of the grow directory meanwhile;
   * a crash there leaves that mount for {@linkcode ThinPool.releaseGrowMounts}.
   */
  async growFilesystem(device: DeviceRecord): Promise<void> {
    if (this.#growDir === undefined) {
      throw new Error(`Cannot grow the filesystem on "${device.name}": no grow directory given`);
    }
    await this.#formatter.grow(
      devicePath(device.name),
      device.fsType as FsType,
      `${this.#growDir}/${device.name}`,
    );
  }

  /**
   * Unmounts and removes what grows a crash interrupted left in the grow directory, so that
   * their devices are no longer open and can be deleted. Reads the directory only: nothing is
   * spawned unless something was left. Returns the mount points released.
   */
  async releaseGrowMounts(): Promise<string[]> {
    const left: string[] = [];
    if (this.#growDir === undefined) return left;
    try {
      for await (const entry of Deno.readDir(this.#growDir)) {
        if (entry.name.startsWith(`${this.poolName}-dms-`)) {
          left.push(`${this.#growDir}/${entry.name}`);
        }
      }
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw err;
    }
    for (const mountPoint of left) await this.#formatter.releaseMount(mountPoint);
    return left;
  }

  /**
   * Bytes of the pool's data space (the length of its thin-pool table), from the last status
   * read; undefined before any. The health check before a creation keeps it at most about a
   * second old.
   */
  get dataBytes(): number | undefined {
    const status = this.#monitor.lastStatus;
    return status === undefined ? undefined : status.length * 512;
  }

  /** Mapped bytes of an active device (from `dmsetup status`). */
  async mappedBytes(device: { name: string }): Promise<number> {
    const lines = await this.dm.status(device.name);
    const thin = lines[0];
    if (!thin || thin.target !== "thin") {
      throw new NotFoundError(`device "${device.name}" is not an active thin device`);
    }
    if ("failed" in thin && thin.failed) {
      throw new UnavailableError(`thin device "${device.name}" has failed`);
    }
    return "mappedSectors" in thin ? thin.mappedSectors * 512 : 0;
  }

  /** True when a dm device called `name` exists (a pending deferred removal counts). */
  isActive(name: string): Promise<boolean> {
    return this.dm.isActive(name);
  }

  /** Info of every active dm device whose name belongs to this pool's devices. */
  async activeDevices(): Promise<Map<string, DeviceInfo>> {
    const all = await this.dm.infoAll();
    const prefix = `${this.poolName}-dms-`;
    return new Map([...all].filter(([name]) => name.startsWith(prefix)));
  }

  /**
   * The formatted, empty template device for `(fsType, fsOptions, sizeBytes)`, built once
   * (create_thin, activate, mkfs, empty root, deactivate) and then snapshotted for every
   * parentless snapshot, so those cost a thin snapshot instead of a mkfs.
   */
  template(fsType: FsType, fsOptions: string, sizeBytes: number): Promise<DeviceRecord> {
    const key = templateKey(fsType, fsOptions, sizeBytes);
    const ready = this.store.getTemplate(key);
    if (ready?.state === "ready") return Promise.resolve(ready);
    let pending = this.#templates.get(key);
    if (!pending) {
      pending = this.#buildTemplate(key, fsType, fsOptions, sizeBytes).finally(() =>
        this.#templates.delete(key)
      );
      this.#templates.set(key, pending);
    }
    return pending;
  }

  /**
   * Deletes the templates of other settings than `(fsType, fsOptions, sizeBytes)`, which a
   * configuration change leaves behind: nothing depends on a template (a thin snapshot does not
   * need its origin). Each is marked `deleting` first, so a failure or a crash leaves it to
   * Cleanup or the next start. Returns the thin ids deleted.
   */
  async dropTemplatesExcept(fsType: FsType, fsOptions: string, sizeBytes: number): Promise<
    number[]
  > {
    const keep = templateKey(fsType, fsOptions, sizeBytes);
    const dropped: number[] = [];
    for (const device of this.store.listTemplates()) {
      // a template that views share stays until their last one is removed (the next start)
      if (device.templateKey === keep || this.store.countViews(device.thinId) > 0) continue;
      this.store.setDeviceState(device.thinId, "deleting");
      try {
        await this.destroy({ ...device, state: "deleting" });
        dropped.push(device.thinId);
      } catch (error) {
        this.#log.warn("cannot delete the template of earlier settings; Cleanup retries", {
          thin_id: device.thinId,
          error,
        });
      }
    }
    return dropped;
  }

  async #buildTemplate(
    key: string,
    fsType: FsType,
    fsOptions: string,
    sizeBytes: number,
  ): Promise<DeviceRecord> {
    const stale = this.store.getTemplate(key);
    if (stale) await this.destroy(stale); // a build that crashed half-way
    let device = this.store.transaction(() =>
      this.reserve({
        origin: { kind: "empty" },
        sizeBytes,
        fsType,
        role: "template",
        templateKey: key,
      })
    );
    try {
      device = await this.materialize(device);
      const path = devicePath(device.name);
      await this.#formatter.mkfs(path, fsType, fsOptions);
      await this.#formatter.emptyRoot(path, fsType);
      await this.deactivate(device);
    } catch (err) {
      await this.destroy(device).catch((cause) =>
        this.#log.warn("cannot undo template device", { thin_id: device.thinId, error: cause })
      );
      throw err;
    }
    this.store.setDeviceState(device.thinId, "ready");
    this.#log.info("template device ready", {
      fs_type: fsType,
      size: sizeBytes,
      thin_id: device.thinId,
    });
    return { ...device, state: "ready" };
  }
}

/** The key of the template device for `(fsType, fsOptions, sizeBytes)`. */
function templateKey(fsType: FsType, fsOptions: string, sizeBytes: number): string {
  return `${fsType}|${fsOptions}|${sizeBytes}`;
}

/** A snapshot's turn on its origin (see `#originTurn`). */
interface OriginTurn {
  /** When the snapshot gives up waiting (`performance.now()` time, ms). */
  deadline: number;
  /** Keeps the turn until `promise` (which must never reject) settles. */
  hold(promise: Promise<void>): void;
}

/** True when `promise` settles (either way) by `deadline` (`performance.now()` time, ms). */
async function settlesBy(promise: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, deadline - performance.now()));
  });
  try {
    return await Promise.race([promise.then(() => true, () => true), expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** `is out of data space (1024/1024 data blocks used, queue_if_no_space)`. */
function describePool(status: PoolStatus): string {
  const mode = status.failed || status.mode === "fail"
    ? "failed"
    : status.mode === "out_of_data_space"
    ? "out of data space"
    : status.mode === "ro"
    ? "read-only"
    : "read-write";
  return `is ${mode} (${status.usedDataBlocks}/${status.totalDataBlocks} data blocks used, ${
    status.errorIfNoSpace ? "error_if_no_space" : "queue_if_no_space: writes wait for space"
  })`;
}
