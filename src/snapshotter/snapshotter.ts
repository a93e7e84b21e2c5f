/**
 * The devmapper snapshotter: containerd's snapshot semantics on thin devices, with all
 * metadata in one SQLite database.
 *
 * Crash consistency rests on three rules:
 * 1. a device row (state `creating`) and the snapshot row that will use it are written in one
 *    transaction *before* the pool is asked to create the device, and both turn `ready` in one
 *    transaction after it is active;
 * 2. a device row turns `deleting` in the same transaction that drops its snapshot, and is
 *    dropped only *after* the pool deleted the device;
 * 3. whether a device is active is never stored: at start every ready active/view snapshot is
 *    (re)activated and every committed one deactivated, from what the kernel reports.
 *
 * A view has no thin device of its own: views of one committed snapshot (or, without a parent,
 * of the template) share that device, active read-only under its own name while a view row on
 * it exists (the row's thin id is the shared device's). Which devices are shared is read from
 * the rows, so a crash anywhere is reconciled like any activation. One turn per shared device
 * ({@linkcode DevmapperSnapshotter.#shareTurn}) orders the activation decisions of its views.
 * A committed snapshot still open read-write (committed while mounted) is not shared: its
 * views get a thin snapshot of their own, as every view did before.
 * {@linkcode DevmapperSnapshotter.reconcile} (`reconcile.ts`) finishes or undoes whatever a
 * crash interrupted.
 *
 * Input is validated once, at the service boundary (`src/server/validate.ts`): keys, labels and
 * field masks reach this module checked, and List filters parsed. Everything the snapshotter
 * talks to below it goes through the {@linkcode ThinPool} (devices, pool status and health) and
 * its own {@linkcode MetadataStore}.
 *
 * No lock is held across an `await`: transactions are synchronous, and every decision made
 * before device-mapper work is checked again inside the transaction that records its result.
 *
 * @module
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type {
  EncodedPage,
  EncodedWalkOptions,
  Info,
  Kind,
  Mount,
  Snapshotter,
  Usage,
} from "../snapshots/types.ts";
import {
  AlreadyExistsError,
  errorMessage,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  SnapshotterError,
  UnavailableError,
} from "../util/errors.ts";
import {
  type DeviceRecord,
  listedInfo,
  type ListedSnapshot,
  MetadataError,
  type MetadataStore,
  type SnapshotRecord,
} from "../metadata/store.ts";
import { deviceUuidPrefix, openMetadata } from "./open_metadata.ts";
import { type Formatter, type FsType, ThinPool } from "../pool/thin_pool.ts";
import type { DeviceMapper, PoolStatus } from "../dm/types.ts";
import { openPool, poolProblem } from "../pool/health.ts";
import { stateMessage } from "../pool/monitor.ts";
import { isErrno } from "../dm/errors.ts";
import { reconcile, type ReconcileReport } from "./reconcile.ts";
import type { SnapshotterSettings } from "./settings.ts";
import { deviceSizeFor } from "./size_label.ts";

export type { SnapshotterSettings };
import { type Logger, silentLogger } from "../util/log.ts";
import { applyUpdate } from "../snapshots/labels.ts";
import type { Filter } from "../filters/filters.ts";
import { matchInfo } from "../snapshots/match.ts";
import { type Clock, createClock } from "../sys/clock.ts";

/** Everything {@linkcode openSnapshotter} needs. */
export interface SnapshotterOptions extends SnapshotterSettings {
  dm: DeviceMapper;
  formatter: Formatter;
  logger?: Logger;
  clock?: Clock;
}

/** Per-operation counters, for benchmarks and the spawn budget. */
export interface OperationStats {
  count: number;
  /** Processes spawned by the device-mapper layer during these operations. */
  spawns: number;
  totalMs: number;
}

/** Snapshots read from the database at a time by {@linkcode DevmapperSnapshotter.walk}. */
const WALK_PAGE = 500;

const KIND_WORD: Record<Kind, string> = { active: "active", view: "view", committed: "committed" };

export type { ReconcileReport };

/**
 * Opens the store, checks the pool, reconciles, and returns a ready snapshotter. Only a missing
 * pool or a device that is not a thin-pool refuses to start: a full, read-only, failed or
 * unchecked pool starts degraded (reads, and removals where the pool allows them, are served;
 * creations are refused with the reason), logged at error level.
 */
export async function openSnapshotter(options: SnapshotterOptions): Promise<DevmapperSnapshotter> {
  const { status } = await openPool(options.dm, options.poolName); // before anything is written
  const log = options.logger ?? silentLogger();
  const problem = poolProblem(status, options.poolName, options.minFreeSpace);
  if (problem) {
    const fields = { pool: options.poolName, mode: status.mode, problem: problem.message };
    if (problem.state === "low_space") log.warn(stateMessage(problem), fields);
    else log.error(stateMessage(problem), fields);
  }
  mkdirSync(options.rootPath, { recursive: true, mode: 0o750 });
  const store = await openMetadata({ ...options, logger: log });
  try {
    const snapshotter = new DevmapperSnapshotter(store, options, status);
    await snapshotter.reconcile();
    return snapshotter;
  } catch (err) {
    store.close();
    throw err;
  }
}

/** The snapshotter. Create with {@linkcode openSnapshotter}. */
export class DevmapperSnapshotter implements Snapshotter {
  readonly pool: ThinPool;
  readonly #store: MetadataStore;
  readonly #settings: SnapshotterSettings;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #stats = new Map<string, OperationStats>();
  /** What the reconciliation at start did. */
  lastReconcile: ReconcileReport | undefined;
  #closed = false;
  /** Ids of the snapshot rows `creating` that a call of this process is working on. */
  readonly #creating = new Set<number>();
  /** The last turn on each shared device, by thin id (see {@linkcode #shareTurn}). */
  readonly #shareTurns = new Map<number, Promise<void>>();
  /** Shared devices whose last view an asynchronous Remove dropped: Cleanup deactivates them. */
  readonly #idleShares = new Set<number>();

  /** Use {@linkcode openSnapshotter}. */
  constructor(store: MetadataStore, options: SnapshotterOptions, poolStatus?: PoolStatus) {
    this.#store = store;
    this.#settings = options;
    this.#log = options.logger ?? silentLogger();
    this.#clock = options.clock ?? createClock();
    this.pool = new ThinPool({
      dm: options.dm,
      store,
      poolName: options.poolName,
      formatter: options.formatter,
      logger: this.#log,
      discardBlocks: options.discardBlocks,
      status: poolStatus,
      minFreeSpace: options.minFreeSpace,
      uuidPrefix: deviceUuidPrefix(options.rootPath, options.poolName),
      growDir: join(options.rootPath, "grow"),
    });
  }

  /** Counters per operation name since start. */
  stats(): Record<string, OperationStats> {
    return Object.fromEntries([...this.#stats].map(([k, v]) => [k, { ...v }]));
  }

  async #measure<T>(op: string, fields: Record<string, unknown>, fn: () => Promise<T>): Promise<T> {
    const spawns = this.pool.spawns;
    const started = performance.now();
    let error: unknown;
    try {
      return await fn();
    } catch (err) {
      error = this.#failure(op, fields, err);
      throw error;
    } finally {
      this.#record(op, fields, started, spawns, error);
    }
  }

  /** What a failed operation reports: a database failure says which operation it stopped. */
  #failure(op: string, fields: Record<string, unknown>, err: unknown): unknown {
    return err instanceof MetadataError && err.sqlite ? databaseFailure(op, fields, err) : err;
  }

  /** Counts an operation and logs it (debug) with its duration and spawns. */
  #record(
    op: string,
    fields: Record<string, unknown>,
    started: number,
    spawns: number,
    error: unknown,
  ): void {
    const ms = performance.now() - started;
    const used = this.pool.spawns - spawns;
    const s = this.#stats.get(op) ?? { count: 0, spawns: 0, totalMs: 0 };
    s.count++;
    s.spawns += used;
    s.totalMs += ms;
    this.#stats.set(op, s);
    this.#log.debug("snapshot operation", {
      op,
      ...fields,
      spawns: used,
      ms: Math.round(ms * 10) / 10,
      error: error === undefined ? undefined : errorMessage(error),
    });
  }

  /** The Info of a record (read from the database for this call: nothing to copy). */
  #info(s: ListedSnapshot): Info {
    return listedInfo(s);
  }

  #mounts(s: SnapshotRecord): Mount[] {
    const device = this.#store.getDevice(s.thinId);
    const options: string[] = [];
    if (s.fsType === "xfs") options.push("nouuid");
    if (s.kind === "view") {
      options.push("ro");
      // a shared device is read-only: its journal cannot be replayed (nor needs to be)
      if (this.#sharedDevice(s)) options.push(...(NO_REPLAY[s.fsType] ?? []));
    } else if (this.#settings.onlineDiscard && s.fsType !== "ext2") options.push("discard");
    return [{
      type: s.fsType,
      source: this.pool.devicePath(device ?? { name: this.pool.deviceName(s.thinId) }),
      target: "",
      options,
    }];
  }

  #ready(key: string): SnapshotRecord {
    const s = this.#store.getSnapshot(key);
    if (!s || s.state !== "ready") throw new NotFoundError(`snapshot "${key}" does not exist`);
    return s;
  }

  /** Creates an active snapshot on top of committed `parent` ("" for none). */
  prepare(key: string, parent: string, labels: Record<string, string> = {}): Promise<Mount[]> {
    return this.#measure(
      "prepare",
      { key, parent },
      () => this.#create("active", key, parent, labels),
    );
  }

  /** Creates a read-only view of committed `parent` ("" for an empty filesystem). */
  view(key: string, parent: string, labels: Record<string, string> = {}): Promise<Mount[]> {
    return this.#measure("view", { key, parent }, () => this.#createView(key, parent, labels));
  }

  #checkNew(kind: Kind, key: string, parent: string): SnapshotRecord | undefined {
    if (this.#store.getSnapshot(key)) {
      throw new AlreadyExistsError(`snapshot "${key}" already exists`);
    }
    if (!parent) return undefined;
    const p = this.#store.getSnapshot(parent);
    if (!p || p.state !== "ready") {
      throw new NotFoundError(`parent snapshot "${parent}" does not exist`);
    }
    if (p.kind !== "committed") {
      throw new InvalidArgumentError(
        `cannot create ${
          KIND_WORD[kind]
        } snapshot "${key}": parent "${parent}" is not a committed snapshot`,
      );
    }
    return p;
  }

  async #create(
    kind: Kind,
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): Promise<Mount[]> {
    this.#open();
    await this.#undoStale(key);
    const p = this.#checkNew(kind, key, parent);
    await this.pool.checkHealth(`cannot create ${KIND_WORD[kind]} snapshot "${key}"`);
    const fsType = (p?.fsType ?? this.#settings.fsType) as FsType;
    const inheritedBytes = p?.sizeBytes ?? this.#settings.baseImageSize;
    // containerd.io/snapshot/max-size: a bigger device, its filesystem grown (Prepare only)
    const sizeBytes = kind !== "active" ? inheritedBytes : deviceSizeFor({
      labels,
      inheritedBytes,
      poolBytes: this.pool.dataBytes,
      what: `${KIND_WORD[kind]} snapshot "${key}"`,
    });
    const originId = p ? p.thinId : (await this.#template(fsType, inheritedBytes)).thinId;
    const created = this.#clock.now();
    const reserved = this.#store.transaction(() => {
      const again = this.#checkNew(kind, key, parent);
      const device = this.pool.reserve({
        origin: { kind: "snapshot", originId },
        sizeBytes,
        fsType,
      });
      const id = this.#store.insertSnapshot({
        key,
        kind,
        state: "creating",
        parentId: again?.id ?? null,
        thinId: device.thinId,
        fsType,
        sizeBytes,
        created,
        labels,
      });
      return { device, id };
    });
    this.#creating.add(reserved.id);
    try {
      let device: DeviceRecord;
      try {
        device = await this.pool.materialize(reserved.device);
        if (sizeBytes > inheritedBytes) await this.pool.growFilesystem(device);
      } catch (err) {
        await this.#undoCreate(reserved.id);
        throw await this.#explain(err, `cannot create ${KIND_WORD[kind]} snapshot "${key}"`);
      }
      try {
        this.#store.transaction(() => {
          this.#store.setDeviceState(device.thinId, "ready");
          this.#store.setSnapshotReady(reserved.id);
        });
      } catch (err) {
        await this.#undoCreate(reserved.id); // e.g. the metadata filesystem is full
        throw err;
      }
    } finally {
      this.#creating.delete(reserved.id);
    }
    return this.#mounts(this.#ready(key));
  }

  #template(fsType: FsType, sizeBytes: number): Promise<DeviceRecord> {
    return this.pool.template(fsType, this.#settings.fsOptions, sizeBytes).catch(async (err) => {
      throw await this.#explain(err, `cannot create the ${fsType} template device`);
    });
  }

  /**
   * Undoes a creation: deletes the device of a snapshot row still `creating` from the pool, then
   * drops the device row and the snapshot row in one write (`deleteDevice` takes `creating`
   * snapshot rows with it). When that write fails (the metadata filesystem full, say) both rows
   * stay `creating`, which every call ignores, and are undone by a retry of the key
   * ({@linkcode DevmapperSnapshotter.#undoStale}), by Cleanup or at the next start: the device
   * is gone from the pool at once either way. A device the pool cannot delete keeps its row
   * for the next start; the snapshot row goes. `strict`: a failure of the metadata database is
   * thrown instead of logged.
   */
  async #undoCreate(id: number, options: { strict?: boolean } = {}): Promise<void> {
    try {
      const s = this.#store.getSnapshotById(id);
      if (!s || s.state !== "creating") return;
      const device = this.#store.getDevice(s.thinId);
      try {
        // a `foreign` device is a create that failed: its id is not ours to delete
        if (device && device.state !== "foreign") await this.pool.destroy(device);
        else this.#store.deleteSnapshot(id);
      } catch (err) {
        if (err instanceof MetadataError) throw err;
        this.#log.warn("cannot undo a failed device; it is finished at the next start", {
          thin_id: device?.thinId,
          error: err,
        });
        this.#store.deleteSnapshot(id);
      }
    } catch (err) {
      if (options.strict) throw err;
      this.#log.warn(
        "cannot record the undo of a failed creation; a retry of the key, Cleanup or the " +
          "next start finishes it",
        { snapshot_id: id, error: err },
      );
    }
  }

  /**
   * A `creating` row for `key` that no call of this process is working on is what a creation
   * left whose undo could not be written: undone now, so that the retry can create the key.
   */
  async #undoStale(key: string): Promise<void> {
    const s = this.#store.getSnapshot(key);
    if (s?.state !== "creating" || this.#creating.has(s.id)) return;
    await this.#undoCreate(s.id, { strict: true });
  }

  /** Turns a device-mapper failure into a clear error, checking the pool's health. */
  async #explain(err: unknown, what: string): Promise<Error> {
    if (err instanceof SnapshotterError || err instanceof MetadataError) return err;
    if (!(err instanceof Error)) return err as Error;
    try {
      await this.pool.checkHealthNow();
    } catch (problem) {
      const message = `${what}: ${errorMessage(problem)}`;
      return problem instanceof ResourceExhaustedError
        ? new ResourceExhaustedError(message, { cause: err })
        : new UnavailableError(message, { cause: err });
    }
    if (isErrno(err, "ENOSPC")) {
      return new ResourceExhaustedError(
        `${what}: pool "${this.pool.poolName}" is out of space (no free data or metadata ` +
          `block for the new device)`,
        { cause: err },
      );
    }
    return new Error(`${what}: ${err.message}`, { cause: err });
  }

  /**
   * A view shares the device of committed `parent` (none: of the template), activated
   * read-only under its own name by the first view (one create) and only recorded for the
   * next ones (no device-mapper call). A parent still active read-write (committed while
   * mounted, its deferred removal pending: writes can reach it) is not shared: the view gets a
   * thin snapshot of its own, as every view did before.
   */
  async #createView(
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): Promise<Mount[]> {
    this.#open();
    await this.#undoStale(key);
    const p = this.#checkNew("view", key, parent);
    const what = `cannot create view snapshot "${key}"`;
    await this.pool.checkHealth(what);
    const fsType = (p?.fsType ?? this.#settings.fsType) as FsType;
    const device = p
      ? this.#store.getDevice(p.thinId)
      : await this.#template(fsType, this.#settings.baseImageSize);
    const shared = device !== undefined && await this.#shareTurn(device.thinId, async () => {
      if (this.#store.countViews(device.thinId) === 0) {
        const readOnly = await this.pool.activateReadOnly(device).catch(async (err) => {
          throw await this.#explain(err, what);
        });
        if (!readOnly) return false;
      }
      this.#idleShares.delete(device.thinId);
      try {
        this.#store.transaction(() => {
          const again = this.#checkNew("view", key, parent);
          this.#store.insertSnapshot({
            key,
            kind: "view",
            state: "ready",
            parentId: again?.id ?? null,
            thinId: device.thinId,
            fsType,
            sizeBytes: device.sizeBytes,
            created: this.#clock.now(),
            labels,
          });
        });
      } catch (err) {
        await this.#releaseShare(device);
        throw err;
      }
      return true;
    });
    if (shared) return this.#mounts(this.#ready(key));
    this.#log.info("view of a snapshot still open read-write: it gets a device of its own", {
      key,
      parent,
    });
    return await this.#create("view", key, parent, labels);
  }

  /**
   * Runs `fn` after every earlier turn on shared device `thinId` is done: the decision to
   * activate or deactivate it and the view rows that decision rests on go together.
   */
  async #shareTurn<T>(thinId: number, fn: () => Promise<T>): Promise<T> {
    const previous = this.#shareTurns.get(thinId) ?? Promise.resolve();
    const run = previous.then(fn);
    const done = run.then(() => {}, () => {});
    this.#shareTurns.set(thinId, done);
    try {
      return await run;
    } finally {
      if (this.#shareTurns.get(thinId) === done) this.#shareTurns.delete(thinId);
    }
  }

  /**
   * Deactivates shared `device` when no view uses it (in its turn). A failure is logged and
   * returns false: the device stays active, for a later Cleanup or the next start.
   */
  async #releaseShare(device: DeviceRecord): Promise<boolean> {
    if (this.#store.countViews(device.thinId) > 0) return true;
    try {
      await this.pool.deactivate(device);
      return true;
    } catch (error) {
      this.#log.warn("cannot deactivate a device no view uses; Cleanup or the next start does", {
        device: device.name,
        error,
      });
      return false;
    }
  }

  /** The device view `s` shares (its committed parent's or a template's); none of its own. */
  #sharedDevice(s: SnapshotRecord): DeviceRecord | undefined {
    if (s.kind !== "view") return undefined;
    const device = this.#store.getDevice(s.thinId);
    if (!device) return undefined;
    if (device.role === "template") return device;
    if (s.parentId === null) return undefined;
    return this.#store.getSnapshotById(s.parentId)?.thinId === s.thinId ? device : undefined;
  }

  /**
   * Removes view `s` that shares `device`. Removing the last one deactivates the device first
   * (a view still mounted refuses the removal, as its own device did); with `async_remove` that
   * is left to Cleanup, and Remove makes no device-mapper call.
   */
  #removeSharedView(
    key: string,
    check: () => SnapshotRecord,
    device: DeviceRecord,
  ): Promise<void> {
    return this.#shareTurn(device.thinId, async () => {
      check();
      const last = this.#store.countViews(device.thinId) <= 1;
      const now = last && !this.#settings.asyncRemove;
      if (now) {
        await this.#deactivateToRemove(key, device);
      }
      try {
        this.#store.transaction(() => this.#store.deleteSnapshot(check().id));
      } catch (err) {
        if (now) await this.pool.activateReadOnly(device).catch(() => {});
        throw err;
      }
      if (last && !now) this.#idleShares.add(device.thinId);
    });
  }

  /** The mounts of an active snapshot or view. */
  mounts(key: string): Promise<Mount[]> {
    return this.#measure("mounts", { key }, () => {
      this.#open();
      const s = this.#ready(key);
      if (s.kind === "committed") {
        throw new FailedPreconditionError(
          `snapshot "${key}" is committed: only active snapshots and views have mounts`,
        );
      }
      return Promise.resolve(this.#mounts(s));
    });
  }

  /** Commits active snapshot `key` as `name`. */
  commit(
    name: string,
    key: string,
    labels: Record<string, string> = {},
    parent = "",
  ): Promise<void> {
    return this.#measure("commit", { key, name }, async () => {
      this.#open();
      const check = () => {
        const s = this.#ready(key);
        if (s.kind !== "active") {
          throw new FailedPreconditionError(
            `cannot commit snapshot "${key}": it is a ${KIND_WORD[s.kind]} snapshot, not active`,
          );
        }
        if (parent && parent !== s.parentKey) {
          throw new InvalidArgumentError(
            `cannot commit snapshot "${key}" with parent "${parent}": its parent is "${s.parentKey}" and devmapper cannot rebase`,
          );
        }
        if (this.#store.getSnapshot(name)) {
          throw new AlreadyExistsError(`snapshot "${name}" already exists`);
        }
        return s;
      };
      const s = check();
      const device = this.#store.getDevice(s.thinId)!;
      const usageBytes = await this.#activeMappedBytes(device).catch(async (err) => {
        throw await this.#explain(err, `cannot commit snapshot "${key}"`);
      });
      const time = this.#clock.now();
      this.#store.transaction(() => {
        check();
        this.#store.commitSnapshot(s.id, { name, labels, time, usageBytes });
      });
      // The device is not needed until a child snapshots it. Deferred: a still-mounted
      // filesystem (containerd 1.6 commits while mounted) keeps working until unmounted.
      await this.pool.deactivate(device, { deferred: true }).catch((error) =>
        this.#log.warn("cannot deactivate committed device; retried at next start", {
          device: device.name,
          error,
        })
      );
    });
  }

  async #activeMappedBytes(device: DeviceRecord): Promise<number> {
    try {
      return await this.pool.mappedBytes(device);
    } catch (err) {
      if (!isErrno(err, "ENXIO") && !isErrno(err, "ENODEV")) throw err;
      await this.pool.activate(device); // deactivated by a crash between steps
      return await this.pool.mappedBytes(device);
    }
  }

  /** Removes a snapshot of any kind that has no children. */
  remove(key: string): Promise<void> {
    return this.#measure("remove", { key }, async () => {
      this.#open();
      const check = () => {
        const s = this.#ready(key);
        if (this.#store.hasChildren(s.id)) {
          throw new FailedPreconditionError(
            `cannot remove snapshot "${key}": it has children; remove them first`,
          );
        }
        return s;
      };
      const s = check();
      const shared = this.#sharedDevice(s);
      if (shared) return await this.#removeSharedView(key, check, shared);
      const device = this.#store.getDevice(s.thinId)!;
      if (!this.#settings.asyncRemove) {
        // a pool that cannot change keeps the snapshot whole: containerd's GC skips it
        // (FailedPrecondition) and Remove works again once the pool is repaired or extended
        await this.pool.checkDeletable(`cannot remove snapshot "${key}", it is kept`);
        await this.#deactivateToRemove(key, device);
      }
      try {
        this.#store.transaction(() => {
          const again = check();
          this.#store.deleteSnapshot(again.id);
          this.#store.setDeviceState(device.thinId, "deleting");
        });
      } catch (err) {
        if (s.kind !== "committed") await this.pool.activate(device).catch(() => {});
        throw err;
      }
      if (this.#settings.asyncRemove) return;
      await this.pool.destroy({ ...device, state: "deleting" }).catch((error) =>
        this.#log.warn("device of removed snapshot not deleted yet; Cleanup retries", {
          device: device.name,
          error,
        })
      );
    });
  }

  /** Deactivates `device` for the Remove of `key`: busy (still mounted) is FailedPrecondition. */
  async #deactivateToRemove(key: string, device: DeviceRecord): Promise<void> {
    try {
      await this.pool.deactivate(device);
    } catch (err) {
      if (isErrno(err, "EBUSY")) {
        throw new FailedPreconditionError(
          `cannot remove snapshot "${key}": device ${device.name} is busy (still mounted?)`,
          { cause: err },
        );
      }
      throw await this.#explain(err, `cannot remove snapshot "${key}"`);
    }
  }

  /** Info of a snapshot. */
  stat(key: string): Promise<Info> {
    return this.#measure("stat", { key }, () => {
      this.#open();
      return Promise.resolve(this.#info(this.#ready(key)));
    });
  }

  /** Updates labels as directed by field-mask `paths`. */
  update(info: Pick<Info, "name" | "labels"> & Partial<Info>, paths: string[]): Promise<Info> {
    return this.#measure("update", { key: info.name }, () => {
      this.#open();
      const s = this.#ready(info.name);
      const labels = applyUpdate(s.labels, { name: info.name, labels: info.labels, paths });
      const updated = this.#clock.now();
      this.#store.transaction(() => {
        const again = this.#ready(info.name);
        this.#store.updateLabels(again.id, labels, updated);
      });
      return Promise.resolve(this.#info(this.#ready(info.name)));
    });
  }

  /** Bytes used by the snapshot itself, excluding what its parent had at commit. */
  usage(key: string): Promise<Usage> {
    return this.#measure("usage", { key }, async () => {
      this.#open();
      const s = this.#ready(key);
      const parentBytes = s.parentId === null
        ? 0
        : this.#store.getSnapshotById(s.parentId)?.usageBytes ?? 0;
      if (this.#sharedDevice(s)) return { size: 0, inodes: 0 }; // writes nothing
      let bytes = s.usageBytes;
      if (s.kind !== "committed") {
        const name = this.#store.getDevice(s.thinId)?.name ?? this.pool.deviceName(s.thinId);
        bytes = await this.pool.usedBytes({ name });
      }
      return { size: Math.max(0, bytes - parentBytes), inodes: s.usageInodes };
    });
  }

  /** The pool's status, read now (refreshes what the health check before Prepare uses). */
  poolStatus(): Promise<PoolStatus> {
    return this.pool.poolStatus();
  }

  /** Snapshots matching `filter` (parsed once by the caller); none = all. */
  async list(filter?: Filter): Promise<Info[]> {
    const infos: Info[] = [];
    for await (const page of this.walk(filter)) infos.push(...page);
    return infos;
  }

  /**
   * Every snapshot matching `filter` (none = all), a page at a time in key order: memory holds
   * one page, whatever the number of snapshots. A snapshot created or removed during the walk
   * may or may not be in it, as in containerd's Walk.
   */
  async *walk(filter?: Filter, pageSize = WALK_PAGE): AsyncGenerator<Info[]> {
    yield* this.#pages({ rows: 0 }, pageSize, (after) => {
      const page = this.#store.listSnapshotsPage(after, pageSize);
      if (page.length === 0) return undefined;
      const infos = page.map((s) => this.#info(s));
      return {
        rows: page.length,
        lastKey: page[page.length - 1].key,
        page: filter ? infos.filter((info) => matchInfo(filter, info)) : infos,
      };
    });
  }

  /**
   * Every snapshot in containerd's wire form, a page at a time in key order, from the List
   * entries kept with the rows: each page one message joined by SQLite, or its entries apart
   * when it exceeds `options`' bounds. Like {@linkcode walk} otherwise.
   */
  async *walkEncoded(options: EncodedWalkOptions): AsyncGenerator<EncodedPage> {
    yield* this.#pages({ rows: 0, encoded: true }, options.pageSize, (after) => {
      const page = this.#store.listEncodedPage(after, {
        limit: options.pageSize,
        maxBytes: options.maxBytes,
        maxEntryBytes: options.maxEntryBytes,
      });
      return page && { rows: page.rows, lastKey: page.lastKey, page };
    });
  }

  /**
   * The pages `read` gives from after each page's last key, until one is short or none is left,
   * recorded as one `list` operation (rows counted in `fields`).
   */
  async *#pages<T>(
    fields: Record<string, unknown> & { rows: number },
    pageSize: number,
    read: (afterKey: string) => { rows: number; lastKey: string; page: T } | undefined,
  ): AsyncGenerator<T> {
    const started = performance.now();
    let error: unknown;
    try {
      for (let after = "";;) {
        this.#open();
        const next = read(after);
        if (next === undefined) return;
        fields.rows += next.rows;
        after = next.lastKey;
        yield next.page;
        if (next.rows < pageSize) return;
      }
    } catch (err) {
      error = this.#failure("list", fields, err);
      throw error;
    } finally {
      this.#record("list", fields, started, this.pool.spawns, error);
    }
  }

  /** Deletes devices of removed snapshots that are still in the pool. */
  cleanup(): Promise<void> {
    return this.#measure("cleanup", {}, async () => {
      this.#open();
      for (const s of this.#store.listSnapshots("creating")) {
        if (!this.#creating.has(s.id)) await this.#undoCreate(s.id); // see #undoStale
      }
      for (const thinId of [...this.#idleShares]) {
        const device = this.#store.getDevice(thinId);
        const released = !device || await this.#shareTurn(thinId, () => this.#releaseShare(device));
        if (released) this.#idleShares.delete(thinId);
      }
      const pending = this.#store.listDevices("deleting");
      if (pending.length === 0) return;
      const refusal = `cleanup cannot delete ${pending.length} device(s) of removed snapshots; ` +
        `they stay recorded for a later Cleanup or the next start`;
      await this.pool.checkDeletable(refusal);
      const failures: string[] = [];
      for (const device of pending) {
        try {
          await this.pool.destroy(device);
        } catch (err) {
          failures.push(`${device.name}: ${errorMessage(err)}`);
        }
      }
      if (failures.length > 0) {
        await this.pool.poolStatus().catch(() => {}); // turned read-only meanwhile?
        await this.pool.checkDeletable(refusal);
        throw new FailedPreconditionError(
          `cleanup could not remove ${failures.length} device(s): ${failures.join("; ")}`,
        );
      }
    });
  }

  /**
   * Finishes what a crash interrupted and brings device activation in line with the
   * records. Runs at start, before serving. Returns what it did.
   */
  reconcile(): Promise<ReconcileReport> {
    return this.#measure("reconcile", {}, async () => {
      // a pool that cannot change (read-only, failed) keeps what it holds until it can
      const deletionsRefused = await this.pool.checkDeletable("devices left for later").then(
        () => undefined,
        (err) => errorMessage(err),
      );
      const report = await reconcile({
        store: this.#store,
        pool: this.pool,
        settings: this.#settings,
        log: this.#log,
        deletionsRefused,
      });
      this.#log.info("reconciled metadata with the pool", { ...report });
      this.lastReconcile = report;
      return report;
    });
  }

  #open(): void {
    if (this.#closed) throw new UnavailableError("snapshotter is closed");
  }

  /** Waits for a background status read, then closes the database; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.pool.close();
    this.#store.close();
    this.#clock.close?.();
  }
}

/** Mount options that keep a read-only filesystem from replaying its journal, by fs type. */
const NO_REPLAY: Record<string, string[]> = { ext4: ["noload"], xfs: ["norecovery"] };

/**
 * A failure of the metadata database during `op` as the error the caller gets: what could not be
 * done, then the database's reason, with its class (`resource_exhausted` for a full filesystem).
 */
function databaseFailure(
  op: string,
  fields: Record<string, unknown>,
  err: MetadataError,
): SnapshotterError {
  const key = `"${fields.key}"`;
  const what: Record<string, string> = {
    prepare: `cannot create active snapshot ${key}`,
    view: `cannot create view snapshot ${key}`,
    mounts: `cannot get the mounts of snapshot ${key}`,
    usage: `cannot get the usage of snapshot ${key}`,
    list: "cannot list snapshots",
    cleanup: "cannot clean up",
    reconcile: "cannot reconcile the metadata with the pool",
  };
  const message = `${what[op] ?? `cannot ${op} snapshot ${key}`}: ${err.message}`;
  return err.kind === "resource_exhausted"
    ? new ResourceExhaustedError(message, { cause: err })
    : new SnapshotterError(err.kind, message, { cause: err });
}
