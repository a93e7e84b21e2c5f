/**
 * Counting what the metadata database holds (snapshots by kind, thin devices, templates)
 * through a read-only connection of its own, for `devmapper-snapshotter status` while the
 * server is down. Independent of {@linkcode MetadataStore}: the server's store is never opened
 * here, and nothing here can change the database.
 *
 * Invariants:
 * - the database is never created, migrated or written: a missing file is a
 *   {@linkcode NoMetadataError} before SQLite is asked anything, and every connection is opened
 *   read-only;
 * - a database a server holds is refused, not waited for: the server takes an exclusive lock
 *   for as long as it runs (`locking_mode = EXCLUSIVE`, see `store.ts`), so the read fails at
 *   once with a {@linkcode MetadataError} whose `sqlite` is `SQLITE_BUSY`;
 * - no file appears beside a database that was closed cleanly: without a `-wal` file (the
 *   server removes it at close) every committed transaction is in the main file, which is read
 *   as immutable (no locks, no `-wal`/`-shm` files). With a `-wal` file left by a server that
 *   died, SQLite needs its `-shm` index to read the WAL and creates it (the database and the
 *   WAL are only read); a server starting later ignores it.
 *
 * @module
 */
import { statSync } from "node:fs";
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { SCHEMA_VERSION } from "./schema.ts";
import { MetadataError, NoMetadataError, sqliteCode } from "./store.ts";

/** What {@linkcode readMetadataSummary} counts. */
export interface MetadataSummary {
  /** Ready snapshots by kind (snapshots being created are in `creating`). */
  snapshots: { committed: number; active: number; view: number };
  /** Snapshot rows whose creation has not finished (a crash or a call in flight). */
  creatingSnapshots: number;
  /** Thin devices this snapshotter owns (rows of role snapshot or template, any state). */
  thinDevices: number;
  /** Ready template devices (the formatted bases of parentless snapshots). */
  templates: number;
  /** Devices whose deletion is not finished (`async_remove` waits for Cleanup). */
  deletingDevices: number;
  /** The database's schema version. */
  schemaVersion: number;
}

/** How long to wait for a lock another reader holds briefly (ms); a server's is never released. */
const BUSY_TIMEOUT_MS = 100;

type Row = Record<string, SQLInputValue>;

function exists(path: string, what: string): boolean {
  try {
    statSync(path);
    return true;
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return false;
    throw new MetadataError(`${what}: it is unreadable (${(err as Error).message})`, {
      cause: err,
      kind: "unavailable",
    });
  }
}

/** A `file:` URI for `path` with `query` (SQLite URI filenames; `?` and `#` escaped). */
function fileUri(path: string, query: string): string {
  const escaped = path.replace(
    /[%?#]/g,
    (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
  return `file:${escaped}?${query}`;
}

/**
 * Counts the contents of the database at `path` without changing it (see the module doc).
 * Throws {@linkcode NoMetadataError} when the file is missing or holds no schema, and
 * {@linkcode MetadataError} when it cannot be read: held by a running server (`sqlite` is
 * `SQLITE_BUSY`), damaged, not a database, or of a newer schema than this build knows.
 */
export function readMetadataSummary(path: string): MetadataSummary {
  const what = `Cannot read metadata database "${path}"`;
  if (!exists(path, what)) throw new NoMetadataError(path, "missing");
  const withWal = exists(`${path}-wal`, what);
  let db: DatabaseSync | undefined;
  try {
    db = withWal
      ? new DatabaseSync(path, { readOnly: true })
      : new DatabaseSync(fileUri(path, "mode=ro&immutable=1"), { readOnly: true });
    // Deno's node:sqlite ignores the `timeout` option (it waits 5 s); the pragma is obeyed
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    const one = (sql: string) => db!.prepare(sql).get() as Row;
    const version = Number(one("PRAGMA user_version").user_version);
    if (version === 0) throw new NoMetadataError(path, "empty");
    if (version > SCHEMA_VERSION) {
      throw new MetadataError(
        `${what}: schema version ${version} is newer than ${SCHEMA_VERSION} (a newer ` +
          `devmapper-snapshotter wrote it)`,
        { kind: "failed_precondition" },
      );
    }
    const kinds = { view: 0, active: 0, committed: 0 };
    let creatingSnapshots = 0;
    const byKind = db.prepare("SELECT kind, state, count(*) AS n FROM snapshots GROUP BY 1, 2")
      .all() as Row[];
    for (const row of byKind) {
      const n = Number(row.n);
      if (row.state !== "ready") creatingSnapshots += n;
      else if (row.kind === 1) kinds.view += n;
      else if (row.kind === 2) kinds.active += n;
      else if (row.kind === 3) kinds.committed += n;
    }
    const devices = one(
      `SELECT count(*) AS total,
              count(*) FILTER (WHERE role = 'template' AND state = 'ready') AS templates,
              count(*) FILTER (WHERE state = 'deleting') AS deleting
         FROM devices WHERE role != 'foreign'`,
    );
    return {
      snapshots: kinds,
      creatingSnapshots,
      thinDevices: Number(devices.total),
      templates: Number(devices.templates),
      deletingDevices: Number(devices.deleting),
      schemaVersion: version,
    };
  } catch (err) {
    if (err instanceof MetadataError) throw err;
    const code = sqliteCode(err);
    const reason = code === "SQLITE_BUSY" || code === "SQLITE_LOCKED"
      ? "it is in use: a running devmapper-snapshotter holds it (ask the server instead)"
      : code === "SQLITE_NOTADB"
      ? "it is not a SQLite database"
      : code === "SQLITE_CORRUPT"
      ? "it is damaged"
      : `it is unreadable`;
    throw new MetadataError(`${what}: ${reason} (${(err as Error).message})`, {
      cause: err,
      kind: "unavailable",
      sqlite: code,
    });
  } finally {
    db?.close();
  }
}
