/**
 * The thin-pool target messages both device-mapper backends send (`create_thin`,
 * `create_snap`, `delete`), with their id checks, and {@linkcode ThinPoolMessages}, which
 * sends them through a backend's `message`: every backend words them the same way.
 *
 * @module
 */
import { invalidArgument } from "./errors.ts";
import type { DeviceMapper } from "./types.ts";

/** Largest thin device id (24 bits). */
export const MAX_THIN_ID = 0xffffff;

/** Throws a `DmError` (EINVAL) unless `id` is a valid thin device id. */
export function checkThinId(id: number): void {
  if (!Number.isInteger(id) || id < 0 || id > MAX_THIN_ID) {
    throw invalidArgument(`Invalid thin device id ${id}: must be an integer 0..${MAX_THIN_ID}`);
  }
}

/** Throws a `DmError` (EINVAL) unless `sector` can address a target message. */
export function checkMessageSector(sector: number): void {
  if (!Number.isSafeInteger(sector) || sector < 0) {
    throw invalidArgument(`Invalid message sector ${sector}`);
  }
}

/** `create_thin <id>`. */
export function createThinMessage(id: number): string {
  checkThinId(id);
  return `create_thin ${id}`;
}

/** `create_snap <id> <originId>`. */
export function createSnapMessage(id: number, originId: number): string {
  checkThinId(id);
  checkThinId(originId);
  return `create_snap ${id} ${originId}`;
}

/** `delete <id>`. */
export function deleteThinMessage(id: number): string {
  checkThinId(id);
  return `delete ${id}`;
}

/**
 * The pool-message methods of a {@linkcode DeviceMapper}, sent through the backend's own
 * `message` at sector 0. Ids are checked before anything is sent.
 */
export abstract class ThinPoolMessages
  implements Pick<DeviceMapper, "createThin" | "createSnap" | "deleteThin"> {
  /** Sends a target message to device `name`; returns the target's reply. */
  abstract message(name: string, sector: number, message: string): Promise<string>;

  /** `create_thin <id>`; EEXIST when taken. */
  async createThin(pool: string, id: number): Promise<void> {
    await this.message(pool, 0, createThinMessage(id));
  }

  /** `create_snap <id> <originId>`; EEXIST when taken. */
  async createSnap(pool: string, id: number, originId: number): Promise<void> {
    await this.message(pool, 0, createSnapMessage(id, originId));
  }

  /** `delete <id>`; ENODATA when absent, EBUSY when active. */
  async deleteThin(pool: string, id: number): Promise<void> {
    await this.message(pool, 0, deleteThinMessage(id));
  }
}
