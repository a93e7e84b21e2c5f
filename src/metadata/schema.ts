/**
 * The SQLite schema and its migrations. `PRAGMA user_version` holds the schema version;
 * migration N turns version N-1 into N inside one transaction.
 *
 * @module
 */

/** Ordered migrations; index i produces schema version i + 1. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
  ) STRICT;

  -- One row per thin device this snapshotter created in the pool. A row exists from before
  -- the pool is asked to create the device ("creating") until after the pool deleted it
  -- ("deleting" rows are finished by Cleanup or at the next start).
  CREATE TABLE devices (
    thin_id      INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    role         TEXT    NOT NULL CHECK (role IN ('snapshot', 'template', 'foreign')),
    state        TEXT    NOT NULL CHECK (state IN ('creating', 'ready', 'deleting', 'foreign')),
    origin_id    INTEGER,
    size_bytes   INTEGER NOT NULL,
    fs_type      TEXT    NOT NULL,
    template_key TEXT    UNIQUE,
    created_s    INTEGER NOT NULL
  ) STRICT;

  -- Snapshots. id is never reused (AUTOINCREMENT); a committed snapshot keeps the id and
  -- the device of the active snapshot it came from.
  CREATE TABLE snapshots (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT    NOT NULL UNIQUE,
    kind         INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),
    state        TEXT    NOT NULL CHECK (state IN ('creating', 'ready')),
    parent_id    INTEGER REFERENCES snapshots (id) ON DELETE RESTRICT,
    thin_id      INTEGER NOT NULL REFERENCES devices (thin_id),
    fs_type      TEXT    NOT NULL,
    size_bytes   INTEGER NOT NULL,
    created_s    INTEGER NOT NULL,
    created_ns   INTEGER NOT NULL,
    updated_s    INTEGER NOT NULL,
    updated_ns   INTEGER NOT NULL,
    usage_bytes  INTEGER NOT NULL DEFAULT 0,
    usage_inodes INTEGER NOT NULL DEFAULT 0
  ) STRICT;
  CREATE INDEX snapshots_parent ON snapshots (parent_id);

  CREATE TABLE labels (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    PRIMARY KEY (snapshot_id, key)
  ) STRICT, WITHOUT ROWID;

  INSERT INTO settings (key, value) VALUES ('next_thin_id', '1');
  `,
  // 2: the start and Cleanup read only what can need work (reconcile.ts): live snapshots by
  // kind, unfinished ones by state
  `
  CREATE INDEX snapshots_live ON snapshots (kind, state);
  CREATE INDEX snapshots_state ON snapshots (state);
  `,
  // 3: each snapshot's Info as a List entry (a ListSnapshotsResponse holding just it), written
  // with the row, so a List of everything sends bytes SQLite joins (store.ts fills it for the
  // rows already there)
  // ...and the snapshots of a device by index: deleting a device row made SQLite scan every
  // snapshot for the foreign key (snapshots.thin_id), 2 ms per Remove at 10,000 rows on the host
  `
  ALTER TABLE snapshots ADD COLUMN list_entry BLOB;
  CREATE INDEX snapshots_thin ON snapshots (thin_id);
  `,
];

/** The schema version this build writes. */
export const SCHEMA_VERSION: number = MIGRATIONS.length;
