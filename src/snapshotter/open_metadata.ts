/**
 * Opening the metadata database at start, without ever silently replacing it.
 *
 * A damaged database is refused by {@linkcode openStore} with its reason. A database that is
 * missing or empty would start an empty snapshotter: right on a first start, wrong when the
 * database was lost while the pool still holds this instance's devices (their snapshots would
 * vanish from containerd's view and the devices would stay unmanaged). So a missing or empty
 * database is created only when no active device of this instance is in the pool, or when the
 * operator says so (`allow_new_metadata`).
 *
 * Which active devices are this instance's: every device this snapshotter activates carries the
 * dm UUID `DMSNAP-<16 hex digits of sha256(root_path, pool)>-<thin id>`
 * ({@linkcode deviceUuidPrefix}). The UUID lives in the kernel, not in the database, so it
 * survives the database's loss; it is derived from the `root_path` (and pool), which the
 * operator keeps when the database is lost or wiped, so it needs nothing stored; and it differs
 * between two instances on one shared pool (two `root_path`s), whose device *names* share the
 * `<pool>-dms-` prefix: a second instance legitimately starts empty next to the first one's
 * active devices. An active device named like ours without any UUID (activated by a version
 * that set none, or by hand) cannot be told apart and counts as ours: refusing once, with the
 * flag as the way out, is better than hiding snapshots. Inactive devices (committed snapshots)
 * are not visible to this check: only the pool's metadata knows them.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import type { DeviceMapper } from "../dm/types.ts";
import {
  MetadataError,
  type MetadataStore,
  NoMetadataError,
  openStore,
} from "../metadata/store.ts";
import { type Logger, silentLogger } from "../util/log.ts";

/** Start of the dm UUID of every device this program activates. */
export const DEVICE_UUID_TAG = "DMSNAP-";

/** At most this many device names are listed in the refusal. */
const LISTED = 5;

/**
 * The dm UUID prefix of the devices the instance with `rootPath` activates on pool `poolName`:
 * `DMSNAP-<first 16 hex digits of sha256(absolute root_path NUL pool)>-`; a device's UUID is
 * this prefix followed by its thin id.
 */
export function deviceUuidPrefix(rootPath: string, poolName: string): string {
  const hash = createHash("sha256").update(`${resolve(rootPath)}\0${poolName}`).digest("hex");
  return `${DEVICE_UUID_TAG}${hash.slice(0, 16)}-`;
}

/** What {@linkcode openMetadata} needs. */
export interface OpenMetadataOptions {
  /** Directory of `metadata.db`. */
  rootPath: string;
  poolName: string;
  dm: DeviceMapper;
  /** `allow_new_metadata`: start with a new database even over active devices of ours. */
  allowNewMetadata?: boolean;
  logger?: Logger;
}

/** An active device of this instance found while its database is missing or empty. */
export interface OrphanDevice {
  name: string;
  /** Its dm UUID; absent when it has none (it cannot be told apart, so it counts). */
  uuid?: string;
}

/**
 * Active devices on `poolName` that belong to the instance whose UUIDs start with `uuidPrefix`:
 * named `<pool>-dms-<thin id>` and carrying that prefix, or no UUID at all. Sorted by name.
 */
export async function activeDevicesOf(
  dm: DeviceMapper,
  poolName: string,
  uuidPrefix: string,
): Promise<OrphanDevice[]> {
  const namePrefix = `${poolName}-dms-`;
  const found: OrphanDevice[] = [];
  for (const info of (await dm.infoAll()).values()) {
    if (!info.name.startsWith(namePrefix)) continue;
    if (!/^[1-9][0-9]*$/.test(info.name.slice(namePrefix.length))) continue;
    if (!info.uuid) found.push({ name: info.name });
    else if (info.uuid.startsWith(uuidPrefix)) found.push({ name: info.name, uuid: info.uuid });
  }
  return found.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

/**
 * Opens `<rootPath>/metadata.db` (see the module doc): an existing database as
 * {@linkcode openStore} does; a missing or empty one only when no active device of this
 * instance is in the pool or `allowNewMetadata` is set, else a {@linkcode MetadataError}
 * (`failed_precondition`) naming the devices and the way out.
 */
export async function openMetadata(options: OpenMetadataOptions): Promise<MetadataStore> {
  const path = join(options.rootPath, "metadata.db");
  let reason: "missing" | "empty";
  try {
    return openStore(path, { create: false });
  } catch (err) {
    if (!(err instanceof NoMetadataError)) throw err;
    reason = err.reason;
  }
  const prefix = deviceUuidPrefix(options.rootPath, options.poolName);
  const ours = await activeDevicesOf(options.dm, options.poolName, prefix);
  if (ours.length > 0) {
    const names = ours.slice(0, LISTED).map((d) => d.uuid ? d.name : `${d.name} (no UUID)`);
    const more = ours.length > LISTED ? ` and ${ours.length - LISTED} more` : "";
    const count = `${ours.length} active device${ours.length === 1 ? "" : "s"}`;
    if (!options.allowNewMetadata) {
      throw new MetadataError(
        `Cannot open metadata database "${path}": it is ${reason}, but pool ` +
          `"${options.poolName}" has ${count} of this root_path (${names.join(", ")}${more}): ` +
          `starting empty would hide their snapshots from containerd. Restore metadata.db ` +
          `from a backup, or start empty anyway with --allow-new-metadata ` +
          `(allow_new_metadata = true): those devices are then left alone`,
        { kind: "failed_precondition" },
      );
    }
    (options.logger ?? silentLogger()).warn(
      "metadata database is new while devices of this root_path are active " +
        "(allow_new_metadata): they are left alone, their thin ids skipped",
      { path, reason, devices: ours.map((d) => d.name) },
    );
  }
  return openStore(path);
}
