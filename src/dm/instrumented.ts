/**
 * A {@linkcode DeviceMapper} that records every operation of another in the metrics: its count
 * and latency by operation and backend, and its failures by errno.
 *
 * Invariants: the wrapped backend sees exactly the calls made, with the same arguments, and
 * its results and errors come back unchanged (only timed); `spawns` and `close` are the
 * backend's own. A failure whose error is not a {@linkcode DmError} with an errno counts as
 * errno `unknown`.
 *
 * @module
 */
import type { DeviceMapper } from "./types.ts";
import { DmError } from "./errors.ts";
import type { Metrics } from "../metrics/metrics.ts";

/** The operations of {@linkcode DeviceMapper}, each a metric's `operation` label. */
export const DM_OPERATIONS = [
  "version",
  "info",
  "infoAll",
  "isActive",
  "status",
  "statusAll",
  "table",
  "list",
  "create",
  "reload",
  "suspend",
  "resume",
  "remove",
  "message",
  "createThin",
  "createSnap",
  "deleteThin",
] as const satisfies readonly (keyof DeviceMapper)[];

type Operation = typeof DM_OPERATIONS[number];

/** errno of a failure, as the metric's `errno` label. */
export function errnoLabel(err: unknown): string {
  return err instanceof DmError && err.errno ? err.errno : "unknown";
}

/** `dm` with every operation recorded in `metrics` under `backend` (`ioctl`, `dmsetup`). */
export function instrumentDeviceMapper(
  dm: DeviceMapper,
  metrics: Metrics,
  backend: string,
): DeviceMapper {
  const timed = <K extends Operation>(operation: K): DeviceMapper[K] => {
    const method = dm[operation] as (...args: unknown[]) => Promise<unknown>;
    return (async (...args: unknown[]) => {
      const started = performance.now();
      try {
        const result = await method.apply(dm, args);
        metrics.dmDone(operation, backend, (performance.now() - started) / 1000);
        return result;
      } catch (err) {
        metrics.dmDone(operation, backend, (performance.now() - started) / 1000, errnoLabel(err));
        throw err;
      }
    }) as DeviceMapper[K];
  };
  const wrapped = Object.fromEntries(DM_OPERATIONS.map((op) => [op, timed(op)]));
  return Object.defineProperties(wrapped, {
    spawns: { get: () => dm.spawns, enumerable: true },
    close: { value: () => dm.close?.(), enumerable: true },
  }) as unknown as DeviceMapper;
}

/** Fails to type-check when {@linkcode DeviceMapper} gains an operation this module misses. */
type Unwrapped = Exclude<keyof DeviceMapper, Operation | "spawns" | "close">;
const _everyOperation: [Unwrapped] extends [never] ? true : Unwrapped = true;
