/**
 * The metadata store: one SQLite database (`node:sqlite`) holding snapshots, their labels and
 * the thin devices behind them. Every multi-row change runs in one `BEGIN IMMEDIATE`
 * transaction; WAL with `synchronous=FULL` makes each committed transaction durable before
 * the device-mapper step that depends on it runs.
 *
 * All methods are synchronous: a transaction never spans an `await`, so no lock is ever held
 * across device-mapper work or a List stream.
 *
 * Failures of the database itself (its filesystem full, read-only or failing, the file damaged
 * or locked) are thrown as {@linkcode MetadataError}s that name the file, the SQLite result code
 * and what to do, with the containerd error class in `kind` (`resource_exhausted` for a full
 * filesystem, `unavailable` for the rest); every other error (a constraint, a bug) passes
 * unchanged. A failed transaction is always rolled back completely: when SQLite already rolled it
 * back itself (it does after SQLITE_FULL, SQLITE_IOERR and others), no ROLLBACK is sent, so the
 * cause is never masked by "no transaction is active".
 *
 * {@linkcode openStore} refuses a database it cannot trust, each with its own reason: not a
 * database, damaged (`PRAGMA quick_check` at every open, its first findings quoted; a truncated
 * file says so), in use by another process (only when SQLite reports it locked), unreadable. A
 * missing or empty database is created, unless the caller asks to decide first
 * (`create: false` throws {@linkcode NoMetadataError}).
 *
 * @module
 */
import { closeSync, openSync, readFileSync, readSync, realpathSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { MIGRATIONS, SCHEMA_VERSION } from "./schema.ts";
import { encodeListEntry } from "../snapshots/info_wire.ts";
import type { EncodedInfo, EncodedPage, Info, Kind, Timestamp } from "../snapshots/types.ts";
import type { ErrorKind } from "../util/errors.ts";

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

/**
 * The query of {@linkcode MetadataStore.listSnapshotsPage}: keys after `?`, at most `?` rows. The
 * state test is kept off the index (`+s.state`): on `snapshots_state` SQLite would read every
 * ready row after the key and sort them for each page (a walk of 10,000 rows: 80 ms, not 30).
 */
export const LIST_PAGE_SQL: string =
  `SELECT s.key, p.key AS parent_key, s.kind, s.created_s, s.created_ns, s.updated_s,
     s.updated_ns,
     (SELECT json_group_object(l.key, l.value) FROM labels l WHERE l.snapshot_id = s.id)
       AS labels_json
   FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
   WHERE s.key > ? AND +s.state = 'ready' ORDER BY s.key LIMIT ?`;

/** A snapshot's Info as SQLite gathers it (labels by `json_group_object`); add a WHERE clause. */
const INFO_ROW_SQL = `SELECT s.id, s.key, p.key AS parent_key, s.kind, s.created_s, s.created_ns,
    s.updated_s, s.updated_ns,
    (SELECT json_group_object(l.key, l.value) FROM labels l WHERE l.snapshot_id = s.id)
      AS labels_json
  FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`;

/** A row of {@linkcode INFO_ROW_SQL} or {@linkcode LIST_PAGE_SQL}: what a List shows of it. */
function listedFromRow(row: Row): ListedSnapshot {
  return {
    key: String(row.key),
    parentKey: row.parent_key === null ? "" : String(row.parent_key),
    kind: CODE_KIND[Number(row.kind)],
    created: { seconds: Number(row.created_s), nanos: Number(row.created_ns) },
    updated: { seconds: Number(row.updated_s), nanos: Number(row.updated_ns) },
    labels: JSON.parse(String(row.labels_json)),
  };
}

/** The Info of a listed snapshot (containerd's names: `name`, `parent`). */
export function listedInfo(s: ListedSnapshot): Info {
  const { key, parentKey, kind, created, updated, labels } = s;
  return { name: key, parent: parentKey, kind, created, updated, labels };
}

/** A row of {@linkcode INFO_ROW_SQL} as a List entry (`encodeListEntry`). */
function encodeInfoRow(row: Row): Uint8Array {
  return encodeListEntry(listedInfo(listedFromRow(row)));
}

/**
 * Fills `list_entry` of every snapshot (schema 3): its Info as a List entry, written with the
 * row in each transaction that changes it (`MetadataStore.#encodeInfo`) and here for rows
 * written before.
 */
function fillEncodedInfos(db: DatabaseSync): void {
  const update = db.prepare("UPDATE snapshots SET list_entry = ? WHERE id = ?");
  for (const row of db.prepare(INFO_ROW_SQL).iterate() as Iterable<Row>) {
    update.run(encodeInfoRow(row), Number(row.id));
  }
}

/** What a migration to version N needs done beyond its SQL (in the same transaction). */
const MIGRATION_STEPS: Readonly<Record<number, (db: DatabaseSync) => void>> = {
  3: fillEncodedInfos,
};

/**
 * The first query of {@linkcode MetadataStore.listEncodedPage}: the List entries of a page of
 * ready snapshots (keys after `?`, at most `?`) joined by SQLite into one message, with its
 * last key, its rows and its largest entry. `group_concat` joins blobs byte for byte; its
 * `ORDER BY` keeps key order.
 */
export const LIST_MESSAGE_SQL: string = `SELECT
    CAST(group_concat(list_entry, '' ORDER BY key) AS BLOB) AS message, max(key) AS last_key,
    count(*) AS n, max(length(list_entry)) AS largest
  FROM (SELECT key, list_entry FROM snapshots s
    WHERE s.key > ? AND +s.state = 'ready' ORDER BY s.key LIMIT ?)`;

/** The same page's entries one by one, for a page that is not sent whole. */
export const LIST_ENTRIES_SQL: string = `SELECT s.key, s.list_entry FROM snapshots s
  WHERE s.key > ? AND +s.state = 'ready' ORDER BY s.key LIMIT ?`;

/** What a List needs of a snapshot (see {@linkcode MetadataStore.listSnapshotsPage}). */
export type ListedSnapshot = Pick<
  SnapshotRecord,
  "key" | "parentKey" | "kind" | "created" | "updated" | "labels"
>;

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

/**
 * The primary SQLite result codes the store tells apart (https://sqlite.org/rescode.html): the
 * database's file or filesystem failing, as opposed to a statement's own error.
 */
export const SQLITE_CODES = {
  SQLITE_PERM: 3,
  SQLITE_BUSY: 5,
  SQLITE_LOCKED: 6,
  SQLITE_READONLY: 8,
  SQLITE_IOERR: 10,
  SQLITE_CORRUPT: 11,
  SQLITE_FULL: 13,
  SQLITE_CANTOPEN: 14,
  SQLITE_NOTADB: 26,
} as const;

/** Name of one of {@linkcode SQLITE_CODES}. */
export type SqliteCode = keyof typeof SQLITE_CODES;

/**
 * `sqlite3_errstr()` of each code. Deno's `node:sqlite` sets `errcode` on the errors of
 * statements but not on those of `exec()` or of opening (they carry only this text).
 */
const ERRSTR: Readonly<Record<string, SqliteCode>> = {
  "access permission denied": "SQLITE_PERM",
  "database is locked": "SQLITE_BUSY",
  "database table is locked": "SQLITE_LOCKED",
  "attempt to write a readonly database": "SQLITE_READONLY",
  "disk I/O error": "SQLITE_IOERR",
  "database disk image is malformed": "SQLITE_CORRUPT",
  "database or disk is full": "SQLITE_FULL",
  "unable to open database file": "SQLITE_CANTOPEN",
  "file is not a database": "SQLITE_NOTADB",
};

/**
 * The {@linkcode SqliteCode} of a `node:sqlite` error: from its `errcode` (primary code, the
 * low 8 bits of an extended one) when it has one, else from its message. Undefined for any other
 * error, and for SQLite errors of other codes (constraints, syntax).
 */
export function sqliteCode(err: unknown): SqliteCode | undefined {
  if (!(err instanceof Error) || (err as { code?: unknown }).code !== "ERR_SQLITE_ERROR") {
    return undefined;
  }
  const errcode = (err as { errcode?: unknown }).errcode;
  if (typeof errcode === "number") {
    const primary = errcode & 0xff;
    return (Object.keys(SQLITE_CODES) as SqliteCode[]).find((k) => SQLITE_CODES[k] === primary);
  }
  // opening appends the path: "unable to open database file: /x/metadata.db"
  const text = Object.keys(ERRSTR).find((t) =>
    err.message === t || err.message.startsWith(`${t}: `)
  );
  if (text) return ERRSTR[text];
  if (err.message.startsWith("malformed database schema")) return "SQLITE_CORRUPT";
  return undefined;
}

/**
 * Raised when the database cannot be opened, has an unknown schema, or its file or filesystem
 * fails (see the module doc). `kind` is the containerd error class; `sqlite` the result code.
 */
export class MetadataError extends Error {
  /** The containerd error class (`src/util/errors.ts` reads it). */
  readonly kind: ErrorKind;
  /** The SQLite result code behind it, when there is one. */
  readonly sqlite: SqliteCode | undefined;
  /** Creates the error. */
  constructor(
    message: string,
    options?: ErrorOptions & { kind?: ErrorKind; sqlite?: SqliteCode },
  ) {
    super(message, options);
    this.name = "MetadataError";
    this.kind = options?.kind ?? "unknown";
    this.sqlite = options?.sqlite;
  }
}

/**
 * {@linkcode openStore} with `create: false` found no database to open: the file is `missing`,
 * or `empty` (no bytes, or a header and no schema). Nothing was written.
 */
export class NoMetadataError extends MetadataError {
  /** Why there is no database. */
  readonly reason: "missing" | "empty";
  /** The database's path. */
  readonly path: string;
  /** Creates the error. */
  constructor(path: string, reason: "missing" | "empty") {
    super(`Cannot open metadata database "${path}": it is ${reason}`, {
      kind: "failed_precondition",
    });
    this.name = "NoMetadataError";
    this.path = path;
    this.reason = reason;
  }
}

/** Where the README explains what to do with a database that cannot be trusted. */
const DAMAGED_HELP = `restore it from a backup, or see "Damaged metadata database" in the README`;

/**
 * The mount point of the filesystem holding `path` (the longest mount point in
 * `/proc/self/mountinfo` that contains it), or its directory when that cannot be read.
 */
export function mountPointOf(path: string): string {
  let dir = dirname(resolve(path));
  try {
    dir = realpathSync(dir);
  } catch {
    // the directory as given
  }
  let text: string;
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return dir;
  }
  let best = "";
  for (const line of text.split("\n")) {
    const field = line.split(" ")[4];
    if (!field) continue;
    const point = field.replace(
      /\\([0-7]{3})/g,
      (_, octal) => String.fromCharCode(parseInt(octal, 8)),
    );
    const inside = dir === point || dir.startsWith(point === "/" ? "/" : `${point}/`);
    if (inside && point.length > best.length) best = point;
  }
  return best || dir;
}

/**
 * Why a database failed with `code`, as a predicate of "the metadata database X ..." (or "it
 * ..."), with its containerd error class. `doing` is what was attempted: "read" or "written".
 */
function failureReason(
  code: SqliteCode,
  sqliteMessage: string,
  path: string,
  doing: "read" | "written",
): { reason: string; kind: ErrorKind } {
  const detail = `${code}: ${sqliteMessage}`;
  switch (code) {
    case "SQLITE_FULL":
      return {
        kind: "resource_exhausted",
        reason: `cannot be written: its filesystem is full (SQLITE_FULL): free space on ${
          mountPointOf(path)
        }`,
      };
    case "SQLITE_READONLY":
      return {
        kind: "unavailable",
        reason:
          `cannot be written: it is read-only (${detail}): make ${
            mountPointOf(path)
          } writable (the kernel remounts a filesystem read-only after an I/O error: see dmesg) ` +
          `and the file writable by the snapshotter`,
      };
    case "SQLITE_IOERR":
      return {
        kind: "unavailable",
        reason: `cannot be ${doing} (${detail}): see the kernel log (dmesg) for errors of the ` +
          `disk holding ${mountPointOf(path)}`,
      };
    case "SQLITE_CORRUPT":
      return { kind: "unavailable", reason: `is damaged (${detail}): ${DAMAGED_HELP}` };
    case "SQLITE_NOTADB":
      return {
        kind: "unavailable",
        reason: `is not a SQLite database (${detail}): its header is garbled or it is ` +
          `another kind of file; ${DAMAGED_HELP}`,
      };
    case "SQLITE_BUSY":
    case "SQLITE_LOCKED":
      return {
        kind: "unavailable",
        reason: "is in use by another process (another devmapper-snapshotter with the same " +
          "root_path?)",
      };
    case "SQLITE_CANTOPEN":
    case "SQLITE_PERM":
      return {
        kind: "unavailable",
        reason: `is unreadable (${detail}): it must be a regular file the snapshotter can read ` +
          `and write, in a directory it can write`,
      };
  }
}

/**
 * What the header of the file at `path` says about truncation: a sentence when the file is
 * shorter than the pages its header records (when that count is valid), else undefined.
 */
function truncation(path: string): string | undefined {
  let bytes: Uint8Array;
  let size: number;
  try {
    size = statSync(path).size;
    bytes = new Uint8Array(100);
    const fd = openSync(path, "r");
    try {
      if (readSync(fd, bytes, 0, 100, 0) < 100) return undefined;
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
  if (new TextDecoder().decode(bytes.subarray(0, 15)) !== "SQLite format 3") {
    return undefined;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const rawPageSize = view.getUint16(16);
  const pageSize = rawPageSize === 1 ? 65536 : rawPageSize;
  const pages = view.getUint32(28);
  // the page count is valid only when "version-valid-for" matches the change counter
  if (pages === 0 || view.getUint32(92) !== view.getUint32(24)) return undefined;
  const expected = pages * pageSize;
  if (size >= expected) return undefined;
  return `the file is truncated: it has ${size} bytes, its header records ${pages} pages of ` +
    `${pageSize} bytes (${expected} bytes)`;
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

/** What {@linkcode MetadataStore.counts} returns. */
export interface StoreCounts {
  /** Ready snapshots by kind. */
  snapshots: Record<Kind, number>;
  /** Ready template devices. */
  templates: number;
  /** Thin ids handed out since the database was created. */
  thinIdsAllocated: number;
  /** The highest thin id of a device row (0 when none): where {@linkcode MetadataStore.countDevices} ends. */
  maxThinId: number;
}

/** The metadata database. Open with {@linkcode openStore}. */
export class MetadataStore {
  readonly #db: DatabaseSync;
  /** Path of the database file (for messages). */
  readonly path: string;
  /** Prepared statements by SQL text: each is compiled once, not on every call. */
  readonly #statements = new Map<string, StatementSync>();
  #closed = false;
  #depth = 0;

  /** Wraps an open, migrated database at `path`; use {@linkcode openStore}. */
  constructor(db: DatabaseSync, path: string) {
    this.#db = db;
    this.path = path;
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
   * A failure of the database itself (see {@linkcode sqliteCode}) as a {@linkcode MetadataError}
   * naming the file and what to do; any other error unchanged.
   */
  #failure(err: unknown, doing: "read" | "written"): unknown {
    if (err instanceof MetadataError) return err;
    const code = sqliteCode(err);
    if (!code) return err;
    const sqliteMessage = (err as Error).message;
    const { reason, kind } = failureReason(code, sqliteMessage, this.path, doing);
    return new MetadataError(`the metadata database ${this.path} ${reason}`, {
      cause: err,
      kind,
      sqlite: code,
    });
  }

  /** Runs a read; a failure of the database becomes a {@linkcode MetadataError}. */
  #read<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw this.#failure(err, "read");
    }
  }

  /**
   * Runs `fn` in one immediate transaction (nested calls join the outer one). `fn` must be
   * synchronous: the transaction commits when it returns and rolls back when it throws. A
   * failure of the database (in `fn` or at COMMIT) is thrown as a {@linkcode MetadataError};
   * either way nothing of the transaction is left.
   *
   * `durable: false` commits without waiting for the disk (`synchronous = NORMAL` for this
   * commit: no fsync): a power cut may undo the transaction, until the next durable commit,
   * which writes the log it follows in, makes it durable too. Only for a write whose loss the
   * next start repairs by itself.
   */
  transaction<T>(fn: () => T, options: { durable?: boolean } = {}): T {
    if (this.#depth > 0) return fn();
    const lazy = options.durable === false;
    try {
      if (lazy) this.#db.exec("PRAGMA synchronous = NORMAL");
      this.#db.exec("BEGIN IMMEDIATE");
    } catch (err) {
      if (lazy) this.#restoreSynchronous();
      throw this.#failure(err, "written");
    }
    this.#depth++;
    try {
      const result = fn();
      this.#db.exec("COMMIT");
      return result;
    } catch (err) {
      throw this.#rollback(this.#failure(err, "written"));
    } finally {
      this.#depth--;
      if (lazy) this.#restoreSynchronous();
    }
  }

  /** Back to `synchronous = FULL` (openStore's setting) after a commit that is not durable. */
  #restoreSynchronous(): void {
    this.#db.exec("PRAGMA synchronous = FULL");
  }

  /**
   * Rolls back after `err`, returning the error to throw. SQLite rolls a transaction back by
   * itself after some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY at COMMIT or in a
   * statement): then there is nothing to roll back, and a ROLLBACK would only throw "cannot
   * rollback - no transaction is active" in place of the cause.
   */
  #rollback(err: unknown): unknown {
    if (!this.#db.isTransaction) return err;
    try {
      this.#db.exec("ROLLBACK");
      return err;
    } catch (rollbackError) {
      // the connection still holds the transaction: nothing more can be written through it
      const failure = this.#failure(rollbackError, "written");
      return new MetadataError(
        `${errorText(err)}; and rolling it back failed too (${
          errorText(failure)
        }): restart the snapshotter`,
        { cause: err, kind: "unavailable", sqlite: sqliteCode(rollbackError) },
      );
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
    return this.#read(() => {
      const row = this.#sql("SELECT value FROM settings WHERE key = 'next_thin_id'")
        .get() as Row;
      return Number(row.value);
    });
  }

  /**
   * What the database holds, for the metrics, from indexes only (no table is read, so it
   * stays cheap with many snapshots: 7 ms at 100,000): ready snapshots by kind (the
   * `(kind, state)` index), ready templates (the `template_key` index) and the thin ids handed
   * out. Device rows by state need a pass over the table: {@linkcode countDevices}.
   */
  counts(): StoreCounts {
    return this.#read(() => {
      const snapshots: Record<Kind, number> = { active: 0, view: 0, committed: 0 };
      const count = this.#sql(
        "SELECT COUNT(*) AS n FROM snapshots WHERE kind = ? AND state = 'ready'",
      );
      for (const kind of Object.keys(snapshots) as Kind[]) {
        snapshots[kind] = Number((count.get(KIND_CODE[kind]) as Row).n);
      }
      // `>= ''` (every text) lets SQLite take the index, which `IS NOT NULL` does not
      const templates = this.#sql(
        "SELECT COUNT(*) AS n FROM devices WHERE template_key >= '' AND state = 'ready'",
      ).get() as Row;
      const next = this.#sql("SELECT value FROM settings WHERE key = 'next_thin_id'").get() as Row;
      const max = this.#sql("SELECT MAX(thin_id) AS id FROM devices").get() as Row;
      return {
        snapshots,
        templates: Number(templates.n),
        thinIdsAllocated: Number(next.value) - 1,
        maxThinId: Number(max.id ?? 0),
      };
    });
  }

  /**
   * Device rows by state among thin ids in `(afterId, upToId]`: a range of the table, so a
   * caller can count a large table a slice at a time without holding the thread.
   */
  countDevices(afterId: number, upToId: number): Record<DeviceState, number> {
    return this.#read(() => {
      const devices: Record<DeviceState, number> = {
        creating: 0,
        ready: 0,
        deleting: 0,
        foreign: 0,
      };
      const rows = this.#sql(
        "SELECT state, COUNT(*) AS n FROM devices WHERE thin_id > ? AND thin_id <= ? " +
          "GROUP BY state",
      ).all(afterId, upToId) as Row[];
      for (const row of rows) devices[String(row.state) as DeviceState] = Number(row.n);
      return devices;
    });
  }

  /** Inserts a device row. */
  insertDevice(device: DeviceRecord): void {
    this.transaction(() =>
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
      )
    );
  }

  /** Sets a device's state. */
  setDeviceState(thinId: number, state: DeviceState): void {
    this.transaction(() =>
      this.#sql("UPDATE devices SET state = ? WHERE thin_id = ?").run(state, thinId)
    );
  }

  /** Records that `thinId` is used by someone else sharing the pool: it is never used here. */
  markDeviceForeign(thinId: number): void {
    this.transaction(() =>
      this.#sql(
        `UPDATE devices SET role = 'foreign', state = 'foreign', name = name || '-foreign',
           template_key = NULL WHERE thin_id = ?`,
      ).run(thinId)
    );
  }

  /** Points snapshots that use device `from` at device `to`. */
  repointSnapshots(from: number, to: number): void {
    this.transaction(() =>
      this.#sql("UPDATE snapshots SET thin_id = ? WHERE thin_id = ?").run(to, from)
    );
  }

  /**
   * Deletes a device row, and in the same transaction the `creating` snapshot rows that use it:
   * a snapshot whose creation is undone goes with its device, so undoing a failed creation is
   * one write, all or nothing (retried as a whole when it fails). `durable: false` (see
   * {@linkcode transaction}) for a row already `deleting`: lost at a power cut, the row is
   * `deleting` again and the next start finishes it (its thin id is gone: nothing to do).
   */
  deleteDevice(thinId: number, options: { durable?: boolean } = {}): void {
    this.transaction(() => {
      this.#sql("DELETE FROM snapshots WHERE thin_id = ? AND state = 'creating'").run(thinId);
      this.#sql("DELETE FROM devices WHERE thin_id = ?").run(thinId);
    }, options);
  }

  /** One device row. */
  getDevice(thinId: number): DeviceRecord | undefined {
    return this.#read(() => {
      const row = this.#sql("SELECT * FROM devices WHERE thin_id = ?").get(thinId) as
        | Row
        | undefined;
      return row && toDevice(row);
    });
  }

  /** The ready or in-progress template for `templateKey`. */
  /** Ready template devices (found through the unique index on `template_key`, not a scan). */
  listTemplates(): DeviceRecord[] {
    return this.#read(() =>
      (this.#sql(
        "SELECT * FROM devices WHERE template_key IS NOT NULL AND state = 'ready'",
      ).all() as Row[]).map(toDevice)
    );
  }

  getTemplate(templateKey: string): DeviceRecord | undefined {
    return this.#read(() => {
      const row = this.#sql("SELECT * FROM devices WHERE template_key = ?").get(
        templateKey,
      ) as Row | undefined;
      return row && toDevice(row);
    });
  }

  /** Device rows, optionally only those in `state`. */
  listDevices(state?: DeviceState): DeviceRecord[] {
    return this.#read(() => {
      const rows = state === undefined
        ? this.#sql("SELECT * FROM devices ORDER BY thin_id").all()
        : this.#sql("SELECT * FROM devices WHERE state = ? ORDER BY thin_id").all(state);
      return (rows as Row[]).map(toDevice);
    });
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
    this.#encodeInfo(id); // labels are written last by every change of what an Info holds
  }

  /** Writes snapshot `id`'s encoded Info from its row (within the caller's transaction). */
  #encodeInfo(id: number): void {
    const row = this.#sql(`${INFO_ROW_SQL} WHERE s.id = ?`).get(id) as Row;
    this.#sql("UPDATE snapshots SET list_entry = ? WHERE id = ?").run(encodeInfoRow(row), id);
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
    return this.#getSnapshotWhere("key", key);
  }

  /** The snapshot with internal `id`, or undefined. */
  getSnapshotById(id: number): SnapshotRecord | undefined {
    return this.#getSnapshotWhere("id", id);
  }

  /** The snapshot (any state, with its labels) whose unique `column` is `value`, or undefined. */
  #getSnapshotWhere(column: "key" | "id", value: string | number): SnapshotRecord | undefined {
    return this.#read(() => {
      const row = this.#sql(
        `SELECT ${SNAPSHOT_COLUMNS} FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
         WHERE s.${column} = ?`,
      ).get(value) as Row | undefined;
      return row && this.#toSnapshot(row);
    });
  }

  /** Snapshots in `state` (default: ready), with labels, in key order. */
  listSnapshots(state: SnapshotState = "ready"): SnapshotRecord[] {
    return this.#read(() => this.#listSnapshots(state));
  }

  #listSnapshots(state: SnapshotState): SnapshotRecord[] {
    const rows = this.#sql(
      `SELECT ${SNAPSHOT_COLUMNS} FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
       WHERE s.state = ? ORDER BY s.key`,
    ).all(state) as Row[];
    const labelRows = this.#sql(
      `SELECT l.snapshot_id, l.key, l.value FROM labels l
       WHERE l.snapshot_id IN (SELECT id FROM snapshots WHERE state = ?) ORDER BY l.key`,
    ).all(state) as Row[];
    return this.#withLabels(rows, labelRows);
  }

  /** Snapshot records of `rows`, each with its labels from `labelRows` (all of them). */
  #withLabels(rows: Row[], labelRows: Row[]): SnapshotRecord[] {
    const labels = new Map<number, Record<string, string>>();
    for (const r of labelRows) {
      const id = Number(r.snapshot_id);
      let l = labels.get(id);
      if (!l) labels.set(id, l = {});
      l[String(r.key)] = String(r.value);
    }
    return rows.map((row) => this.#toSnapshot(row, labels.get(Number(row.id)) ?? {}));
  }

  /**
   * The devices of ready active snapshots and views, with the key of the snapshot on each: what
   * must be active. One indexed query (`snapshots_live`), no labels: the cost of a start
   * follows the number of live snapshots, not of all rows. `shared`: a view on the device of
   * its committed parent or of a template (no device of its own), which is active read-only.
   */
  listLiveDevices(): { key: string; device: DeviceRecord; shared: boolean }[] {
    return this.#read(() =>
      (this.#sql(
        `SELECT s.key AS snapshot_key,
           (s.kind = 1 AND (d.role = 'template' OR p.thin_id = s.thin_id)) AS shared_view, d.*
         FROM snapshots s JOIN devices d ON d.thin_id = s.thin_id
           LEFT JOIN snapshots p ON p.id = s.parent_id
         WHERE s.kind IN (1, 2) AND s.state = 'ready'`,
      ).all() as Row[]).map((row) => ({
        key: String(row.snapshot_key),
        device: toDevice(row),
        shared: Number(row.shared_view) === 1,
      }))
    );
  }

  /**
   * One page of ready snapshots in key order, with what a List needs of each: at most `limit`,
   * with keys after `afterKey` ("" for the first page). One query on the unique key index, the
   * labels of each row gathered by SQLite (`json_group_object`), so a walk of every snapshot
   * holds one page in memory at a time and builds one object per row.
   */
  listSnapshotsPage(afterKey: string, limit: number): ListedSnapshot[] {
    return this.#read(() =>
      (this.#sql(LIST_PAGE_SQL).all(afterKey, limit) as Row[]).map(listedFromRow)
    );
  }

  /**
   * A page of ready snapshots in key order (keys after `afterKey`, at most `o.limit`) in wire
   * form, from the List entries kept with the rows: one `ListSnapshotsResponse` joined by
   * SQLite when it is at most `o.maxBytes` bytes and no entry is over `o.maxEntryBytes`, else
   * the entries apart. Undefined past the last snapshot. No object per snapshot either way but
   * for a page of entries.
   */
  listEncodedPage(
    afterKey: string,
    o: { limit: number; maxBytes: number; maxEntryBytes: number },
  ): EncodedPage | undefined {
    return this.#read(() => {
      const page = this.#sql(LIST_MESSAGE_SQL).get(afterKey, o.limit) as Row;
      const rows = Number(page.n);
      if (rows === 0) return undefined;
      const lastKey = String(page.last_key);
      const message = page.message as Uint8Array;
      if (message.length <= o.maxBytes && Number(page.largest) <= o.maxEntryBytes) {
        return { rows, lastKey, message };
      }
      const entries: EncodedInfo[] = (this.#sql(LIST_ENTRIES_SQL).all(afterKey, o.limit) as Row[])
        .map((row) => ({ key: String(row.key), entry: row.list_entry as Uint8Array }));
      return { rows, lastKey, entries };
    });
  }

  /** Marks a snapshot ready. */
  setSnapshotReady(id: number): void {
    this.transaction(() => this.#sql("UPDATE snapshots SET state = 'ready' WHERE id = ?").run(id));
  }

  /** True when another snapshot names `id` as parent. */
  hasChildren(id: number): boolean {
    return this.#read(() =>
      this.#sql("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1").get(id) !== undefined
    );
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
    this.transaction(() => this.#sql("DELETE FROM snapshots WHERE id = ?").run(id));
  }

  /**
   * Ready views on thin device `thinId`: the views sharing a committed snapshot's or a
   * template's device (a view with a device of its own is the only snapshot on it). Found
   * through the `snapshots_live` index: a scan of the views, not of every row.
   */
  countViews(thinId: number): number {
    return this.#read(() =>
      Number(
        (this.#sql(
          "SELECT count(*) AS n FROM snapshots WHERE kind = 1 AND state = 'ready' AND thin_id = ?",
        ).get(thinId) as Row).n,
      )
    );
  }

  /** Snapshot rows that use thin device `thinId`. */
  snapshotIdsForDevice(thinId: number): number[] {
    return this.#read(() =>
      (this.#sql("SELECT id FROM snapshots WHERE thin_id = ?").all(thinId) as Row[])
        .map((r) => Number(r.id))
    );
  }

  /** Closes the database; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#statements.clear();
    this.#db.close();
  }
}

/** Options of {@linkcode openStore}. */
export interface OpenStoreOptions {
  /**
   * Create the database when the file is missing or empty (default true). False throws a
   * {@linkcode NoMetadataError} instead, having written nothing, so that the caller can decide
   * whether starting empty is safe.
   */
  create?: boolean;
}

/** At most this many findings of `PRAGMA quick_check` are quoted in an error. */
const QUICK_CHECK_LINES = 3;

/**
 * Opens the database at `path`: takes its exclusive lock, checks it with `PRAGMA quick_check`
 * and migrates it to {@linkcode SCHEMA_VERSION} (creating it when missing or empty, unless
 * `options.create` is false). Throws a {@linkcode MetadataError} with the reason it cannot be
 * used (see the module doc).
 */
export function openStore(path: string, options: OpenStoreOptions = {}): MetadataStore {
  const create = options.create ?? true;
  const what = `Cannot open metadata database "${path}"`;
  const missing = !fileExists(path);
  if (missing && !create) throw new NoMetadataError(path, "missing");
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path);
  } catch (cause) {
    throw openFailure(what, path, cause);
  }
  try {
    // One process owns the database (and so the devices it records) while it runs: the
    // first write takes an exclusive lock that is held until close or process death.
    db.exec("PRAGMA locking_mode = EXCLUSIVE");
    db.exec("PRAGMA busy_timeout = 2000");
    const version = Number((db.prepare("PRAGMA user_version").get() as Row).user_version);
    const empty = version === 0 &&
      Number((db.prepare("SELECT count(*) AS n FROM sqlite_schema").get() as Row).n) === 0;
    if (empty && !create) throw new NoMetadataError(path, missing ? "missing" : "empty");
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("BEGIN IMMEDIATE");
    db.exec("COMMIT");
    // FULL: the WAL is fsynced at every COMMIT, so a transaction is on disk before the
    // device-mapper step that relies on it. With NORMAL, commits not yet checkpointed are lost
    // at a power cut: tests/kernel/power_cut_test.ts then finds lost snapshots and leaked ids.
    db.exec("PRAGMA synchronous = FULL");
    db.exec("PRAGMA foreign_keys = ON");
    if (version > SCHEMA_VERSION) {
      throw new MetadataError(
        `${what}: schema version ${version} is newer than ${SCHEMA_VERSION}`,
        { kind: "failed_precondition" },
      );
    }
    if (!empty) quickCheck(db, what, path);
    for (let v = version; v < SCHEMA_VERSION; v++) {
      db.exec("BEGIN IMMEDIATE");
      try {
        db.exec(MIGRATIONS[v]);
        MIGRATION_STEPS[v + 1]?.(db);
        db.exec(`PRAGMA user_version = ${v + 1}`);
        db.exec("COMMIT");
      } catch (err) {
        if (db.isTransaction) db.exec("ROLLBACK");
        throw err;
      }
    }
  } catch (cause) {
    db.close();
    throw openFailure(what, path, cause);
  }
  return new MetadataStore(db, path);
}

function fileExists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return false;
    throw new MetadataError(
      `Cannot open metadata database "${path}": it is unreadable (${errorText(err)})`,
      { cause: err, kind: "unavailable" },
    );
  }
}

/**
 * `PRAGMA quick_check` (the integrity check without the index-content cross-checks; see the
 * README for its cost): throws with its first findings when it finds the database damaged.
 */
function quickCheck(db: DatabaseSync, what: string, path: string): void {
  const rows = db.prepare(`PRAGMA quick_check(${QUICK_CHECK_LINES + 1})`).all() as Row[];
  const lines = rows.flatMap((r) => String(Object.values(r)[0]).split("\n"))
    .filter((line) => line !== "" && !line.startsWith("*** in database"));
  if (lines.length === 1 && lines[0] === "ok") return;
  const shown = lines.slice(0, QUICK_CHECK_LINES).join("; ");
  const more = lines.length > QUICK_CHECK_LINES ? "; and more" : "";
  const truncated = truncation(path);
  throw new MetadataError(
    `${what}: it is damaged: PRAGMA quick_check found: ${shown}${more}${
      truncated ? `; ${truncated}` : ""
    }; ${DAMAGED_HELP}`,
    { kind: "unavailable", sqlite: "SQLITE_CORRUPT" },
  );
}

/** The error for `cause`, thrown while opening: its reason when SQLite's code tells one. */
function openFailure(what: string, path: string, cause: unknown): MetadataError {
  if (cause instanceof MetadataError) return cause;
  const code = sqliteCode(cause);
  if (!code) return new MetadataError(`${what}: ${errorText(cause)}`, { cause });
  const sqliteMessage = (cause as Error).message;
  let { reason, kind } = failureReason(code, sqliteMessage, path, "read");
  if (code === "SQLITE_CORRUPT") {
    const truncated = truncation(path);
    if (truncated) reason = reason.replace(`: ${DAMAGED_HELP}`, `: ${truncated}; ${DAMAGED_HELP}`);
  }
  return new MetadataError(`${what}: it ${reason}`, { cause, kind, sqlite: code });
}

/** `message` of any thrown value. */
function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
