/**
 * The metadata store: one SQLite database (`node:sqlite`) holding snapshots, their labels and
 * the thin devices behind them. Every multi-row change runs in one `BEGIN IMMEDIATE`
 * transaction; WAL with `synchronous=FULL` makes each committed transaction durable before
 * the device-mapper step that depends on it runs.
 *
 * All methods are synchronous: a transaction never spans an `await`, so no lock is ever held
 * across device-mapper work or a List stream.
 *
 * @module
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { MIGRATIONS, SCHEMA_VERSION } from "./schema.ts";
import type { Kind, Timestamp } from "../snapshots/types.ts";

/** What a device row is for. */
export type DeviceRole = "snapshot" | "template" | "foreign";
/** Lifecycle of a device row (see the schema). */
export type DeviceState = "creating" | "ready" | "deleting" | "foreign";
/** Lifecycle of a snapshot row. */
export type SnapshotState = "creating" | "ready";

/** A thin device this snapshotter owns (or an id it found taken: role `foreign`). */
export interface DeviceRecord {
  thinId: number;
  /** dm device name. */
  name: string;
  role: DeviceRole;
  state: DeviceState;
  /** Thin id it was snapshotted from; null for `create_thin`. */
  originId: number | null;
  sizeBytes: number;
  fsType: string;
  /** For templates: `<fs>|<options>|<size>`. */
  templateKey: string | null;
}

/** A snapshot row with its labels and parent key. */
export interface SnapshotRecord {
  id: number;
  key: string;
  kind: Kind;
  state: SnapshotState;
  parentId: number | null;
  /** "" when there is no parent. */
  parentKey: string;
  thinId: number;
  fsType: string;
  sizeBytes: number;
  created: Timestamp;
  updated: Timestamp;
  /** Mapped bytes of the device measured at commit (0 before). */
  usageBytes: number;
  usageInodes: number;
  labels: Record<string, string>;
}

/** Fields of a new snapshot row. */
export interface NewSnapshot {
  key: string;
  kind: Kind;
  state: SnapshotState;
  parentId: number | null;
  thinId: number;
  fsType: string;
  sizeBytes: number;
  created: Timestamp;
  labels: Record<string, string>;
}

/** Raised when the database cannot be opened or has an unknown schema. */
export class MetadataError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MetadataError";
  }
}

const KIND_CODE: Record<Kind, number> = { view: 1, active: 2, committed: 3 };
const CODE_KIND: Record<number, Kind> = { 1: "view", 2: "active", 3: "committed" };

type Row = Record<string, SQLInputValue>;

const SNAPSHOT_COLUMNS = `s.id, s.key, s.kind, s.state, s.parent_id, p.key AS parent_key,
  s.thin_id, s.fs_type, s.size_bytes, s.created_s, s.created_ns, s.updated_s, s.updated_ns,
  s.usage_bytes, s.usage_inodes`;

function toDevice(row: Row): DeviceRecord {
  return {
    thinId: Number(row.thin_id),
    name: String(row.name),
    role: row.role as DeviceRole,
    state: row.state as DeviceState,
    originId: row.origin_id === null ? null : Number(row.origin_id),
    sizeBytes: Number(row.size_bytes),
    fsType: String(row.fs_type),
    templateKey: row.template_key === null ? null : String(row.template_key),
  };
}

/** The metadata database. Open with {@linkcode openStore}. */
export class MetadataStore {
  readonly #db: DatabaseSync;
  /** Prepared statements by SQL text: each is compiled once, not on every call. */
  readonly #statements = new Map<string, StatementSync>();
  #closed = false;
  #depth = 0;

  /** Wraps an open database; use {@linkcode openStore}. */
  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  #sql(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  /**
   * Runs `fn` in one immediate transaction (nested calls join the outer one). `fn` must be
   * synchronous: the transaction commits when it returns and rolls back when it throws.
   */
  transaction<T>(fn: () => T): T {
    if (this.#depth > 0) return fn();
    this.#db.exec("BEGIN IMMEDIATE");
    this.#depth++;
    try {
      const result = fn();
      this.#db.exec("COMMIT");
      return result;
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw err;
    } finally {
      this.#depth--;
    }
  }

  /**
   * Takes the next thin id from the durable counter; never hands one out twice. Ids above
   * `maxId` (the pool's limit) are refused.
   */
  allocateThinId(maxId: number = Number.MAX_SAFE_INTEGER): number {
    return this.transaction(() => {
      const row = this.#sql("SELECT value FROM settings WHERE key = 'next_thin_id'")
        .get() as Row;
      const id = Number(row.value);
      if (id > maxId) {
        throw new MetadataError(`Cannot allocate a thin id: all ${maxId} ids used`);
      }
      this.#sql("UPDATE settings SET value = ? WHERE key = 'next_thin_id'").run(
        String(id + 1),
      );
      return id;
    });
  }

  /** The next thin id that {@linkcode allocateThinId} would return. */
  nextThinId(): number {
    const row = this.#sql("SELECT value FROM settings WHERE key = 'next_thin_id'")
      .get() as Row;
    return Number(row.value);
  }

  /** Inserts a device row. */
  insertDevice(device: DeviceRecord): void {
    this.#sql(
      `INSERT INTO devices (thin_id, name, role, state, origin_id, size_bytes, fs_type,
         template_key, created_s)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, unixepoch())`,
    ).run(
      device.thinId,
      device.name,
      device.role,
      device.state,
      device.originId,
      device.sizeBytes,
      device.fsType,
      device.templateKey,
    );
  }

  /** Sets a device's state. */
  setDeviceState(thinId: number, state: DeviceState): void {
    this.#sql("UPDATE devices SET state = ? WHERE thin_id = ?").run(state, thinId);
  }

  /** Records that `thinId` is used by someone else sharing the pool: it is never used here. */
  markDeviceForeign(thinId: number): void {
    this.#sql(
      `UPDATE devices SET role = 'foreign', state = 'foreign', name = name || '-foreign',
         template_key = NULL WHERE thin_id = ?`,
    ).run(thinId);
  }

  /** Points snapshots that use device `from` at device `to`. */
  repointSnapshots(from: number, to: number): void {
    this.#sql("UPDATE snapshots SET thin_id = ? WHERE thin_id = ?").run(to, from);
  }

  /** Deletes a device row. */
  deleteDevice(thinId: number): void {
    this.#sql("DELETE FROM devices WHERE thin_id = ?").run(thinId);
  }

  /** One device row. */
  getDevice(thinId: number): DeviceRecord | undefined {
    const row = this.#sql("SELECT * FROM devices WHERE thin_id = ?").get(thinId) as
      | Row
      | undefined;
    return row && toDevice(row);
  }

  /** The ready or in-progress template for `templateKey`. */
  getTemplate(templateKey: string): DeviceRecord | undefined {
    const row = this.#sql("SELECT * FROM devices WHERE template_key = ?").get(
      templateKey,
    ) as Row | undefined;
    return row && toDevice(row);
  }

  /** Device rows, optionally only those in `state`. */
  listDevices(state?: DeviceState): DeviceRecord[] {
    const rows = state === undefined
      ? this.#sql("SELECT * FROM devices ORDER BY thin_id").all()
      : this.#sql("SELECT * FROM devices WHERE state = ? ORDER BY thin_id").all(state);
    return (rows as Row[]).map(toDevice);
  }

  /** Inserts a snapshot row and its labels; returns the new id. */
  insertSnapshot(s: NewSnapshot): number {
    return this.transaction(() => {
      const result = this.#sql(
        `INSERT INTO snapshots (key, kind, state, parent_id, thin_id, fs_type, size_bytes,
           created_s, created_ns, updated_s, updated_ns)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        s.key,
        KIND_CODE[s.kind],
        s.state,
        s.parentId,
        s.thinId,
        s.fsType,
        s.sizeBytes,
        s.created.seconds,
        s.created.nanos,
        s.created.seconds,
        s.created.nanos,
      );
      const id = Number(result.lastInsertRowid);
      this.#writeLabels(id, s.labels);
      return id;
    });
  }

  #writeLabels(id: number, labels: Record<string, string>): void {
    this.#sql("DELETE FROM labels WHERE snapshot_id = ?").run(id);
    const insert = this.#sql(
      "INSERT INTO labels (snapshot_id, key, value) VALUES (?, ?, ?)",
    );
    for (const [k, v] of Object.entries(labels)) {
      if (v !== "") insert.run(id, k, v);
    }
  }

  #labels(id: number): Record<string, string> {
    const rows = this.#sql(
      "SELECT key, value FROM labels WHERE snapshot_id = ? ORDER BY key",
    ).all(id) as Row[];
    const labels: Record<string, string> = {};
    for (const r of rows) labels[String(r.key)] = String(r.value);
    return labels;
  }

  #toSnapshot(row: Row, labels?: Record<string, string>): SnapshotRecord {
    const id = Number(row.id);
    return {
      id,
      key: String(row.key),
      kind: CODE_KIND[Number(row.kind)],
      state: row.state as SnapshotState,
      parentId: row.parent_id === null ? null : Number(row.parent_id),
      parentKey: row.parent_key === null ? "" : String(row.parent_key),
      thinId: Number(row.thin_id),
      fsType: String(row.fs_type),
      sizeBytes: Number(row.size_bytes),
      created: { seconds: Number(row.created_s), nanos: Number(row.created_ns) },
      updated: { seconds: Number(row.updated_s), nanos: Number(row.updated_ns) },
      usageBytes: Number(row.usage_bytes),
      usageInodes: Number(row.usage_inodes),
      labels: labels ?? this.#labels(id),
    };
  }

  /** The snapshot with `key` (any state), or undefined. */
  getSnapshot(key: string): SnapshotRecord | undefined {
    const row = this.#sql(
      `SELECT ${SNAPSHOT_COLUMNS} FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
       WHERE s.key = ?`,
    ).get(key) as Row | undefined;
    return row && this.#toSnapshot(row);
  }

  /** The snapshot with internal `id`, or undefined. */
  getSnapshotById(id: number): SnapshotRecord | undefined {
    const row = this.#sql(
      `SELECT ${SNAPSHOT_COLUMNS} FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
       WHERE s.id = ?`,
    ).get(id) as Row | undefined;
    return row && this.#toSnapshot(row);
  }

  /** Snapshots in `state` (default: ready), with labels, in key order. */
  listSnapshots(state: SnapshotState = "ready"): SnapshotRecord[] {
    const rows = this.#sql(
      `SELECT ${SNAPSHOT_COLUMNS} FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
       WHERE s.state = ? ORDER BY s.key`,
    ).all(state) as Row[];
    const labelRows = this.#sql(
      `SELECT l.snapshot_id, l.key, l.value FROM labels l
       JOIN snapshots s ON s.id = l.snapshot_id WHERE s.state = ? ORDER BY l.key`,
    ).all(state) as Row[];
    const labels = new Map<number, Record<string, string>>();
    for (const r of labelRows) {
      const id = Number(r.snapshot_id);
      let l = labels.get(id);
      if (!l) labels.set(id, l = {});
      l[String(r.key)] = String(r.value);
    }
    return rows.map((row) => this.#toSnapshot(row, labels.get(Number(row.id)) ?? {}));
  }

  /** Marks a snapshot ready. */
  setSnapshotReady(id: number): void {
    this.#sql("UPDATE snapshots SET state = 'ready' WHERE id = ?").run(id);
  }

  /** True when another snapshot names `id` as parent. */
  hasChildren(id: number): boolean {
    return this.#sql("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1").get(id) !==
      undefined;
  }

  /** Turns an active snapshot into committed `name` with new labels and times. */
  commitSnapshot(
    id: number,
    change: { name: string; labels: Record<string, string>; time: Timestamp; usageBytes: number },
  ): void {
    this.transaction(() => {
      this.#sql(
        `UPDATE snapshots SET key = ?, kind = 3, created_s = ?, created_ns = ?, updated_s = ?,
           updated_ns = ?, usage_bytes = ? WHERE id = ?`,
      ).run(
        change.name,
        change.time.seconds,
        change.time.nanos,
        change.time.seconds,
        change.time.nanos,
        change.usageBytes,
        id,
      );
      this.#writeLabels(id, change.labels);
    });
  }

  /** Replaces a snapshot's labels and sets its updated time. */
  updateLabels(id: number, labels: Record<string, string>, updated: Timestamp): void {
    this.transaction(() => {
      this.#sql("UPDATE snapshots SET updated_s = ?, updated_ns = ? WHERE id = ?").run(
        updated.seconds,
        updated.nanos,
        id,
      );
      this.#writeLabels(id, labels);
    });
  }

  /** Deletes a snapshot row (labels go with it). */
  deleteSnapshot(id: number): void {
    this.#sql("DELETE FROM snapshots WHERE id = ?").run(id);
  }

  /** Snapshot rows that use thin device `thinId`. */
  snapshotIdsForDevice(thinId: number): number[] {
    return (this.#sql("SELECT id FROM snapshots WHERE thin_id = ?").all(thinId) as Row[])
      .map((r) => Number(r.id));
  }

  /** Closes the database; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#statements.clear();
    this.#db.close();
  }
}

/** Opens (creating and migrating as needed) the database at `path`. */
export function openStore(path: string): MetadataStore {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path);
  } catch (cause) {
    throw new MetadataError(`Cannot open metadata database "${path}": ${cause}`, { cause });
  }
  try {
    // One process owns the database (and so the devices it records) while it runs: the
    // first write takes an exclusive lock that is held until close or process death.
    db.exec("PRAGMA locking_mode = EXCLUSIVE");
    db.exec("PRAGMA busy_timeout = 2000");
    try {
      db.exec("PRAGMA journal_mode = WAL");
      db.exec("BEGIN IMMEDIATE");
      db.exec("COMMIT");
    } catch (cause) {
      throw new MetadataError(
        `Cannot open metadata database "${path}": it is in use by another process ` +
          `(another devmapper-snapshotter with the same root_path?)`,
        { cause },
      );
    }
    db.exec("PRAGMA synchronous = FULL");
    db.exec("PRAGMA foreign_keys = ON");
    const version = Number((db.prepare("PRAGMA user_version").get() as Row).user_version);
    if (version > SCHEMA_VERSION) {
      throw new MetadataError(
        `Cannot open metadata database "${path}": schema version ${version} is newer than ${SCHEMA_VERSION}`,
      );
    }
    for (let v = version; v < SCHEMA_VERSION; v++) {
      db.exec("BEGIN IMMEDIATE");
      try {
        db.exec(MIGRATIONS[v]);
        db.exec(`PRAGMA user_version = ${v + 1}`);
        db.exec("COMMIT");
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
    }
  } catch (cause) {
    db.close();
    if (cause instanceof MetadataError) throw cause;
    throw new MetadataError(`Cannot open metadata database "${path}": ${cause}`, { cause });
  }
  return new MetadataStore(db);
}
