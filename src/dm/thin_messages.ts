/**
 * The thin-pool target messages both device-mapper backends send (`create_thin`,
 * `create_snap`, `delete`), with their id checks.
 *
 * @module
 */
import { DmError } from "./errors.ts";

/** Largest thin device id (24 bits). */
export const MAX_THIN_ID = 0xffffff;

/** Throws a {@linkcode DmError} (EINVAL) unless `id` is a valid thin device id. */
export function checkThinId(id: number): void {
  if (!Number.isInteger(id) || id < 0 || id > MAX_THIN_ID) {
    throw new DmError({
      command: [],
      exitCode: -1,
      stderr: "",
      errno: "EINVAL",
      message: `Invalid thin device id ${id}: must be an integer 0..${MAX_THIN_ID}`,
    });
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
