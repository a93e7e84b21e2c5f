/**
 * The `containerd.io/snapshot/max-size` label: the size, in bytes, a Prepare asks for the new
 * active snapshot's filesystem (containerd 2.x, `core/snapshots`: a decimal int64 string).
 *
 * Rules this module keeps (the snapshotter applies them before anything is created):
 * - absent, or an empty value (containerd never stores one: "" deletes a label): the size the
 *   snapshot would get anyway, its parent's or `base_image_size`;
 * - the value must be a decimal integer (an optional `+`, digits) greater than zero and at most
 *   int64's maximum, else `InvalidArgument` naming the label;
 * - the size is rounded down to whole 512-byte sectors (the unit of a device-mapper table): the
 *   label is a limit, so the device never gets more than it asks;
 * - a size above the pool's whole data space is refused (`InvalidArgument`): the device could
 *   never be filled;
 * - a size below the parent's (or the base image's) is refused (`InvalidArgument`): a filesystem
 *   is never shrunk, and keeping the bigger size would break the limit the caller set.
 *
 * @module
 */
import { InvalidArgumentError } from "../util/errors.ts";

/** The label's key. */
export const MAX_SIZE_LABEL = "containerd.io/snapshot/max-size";

/** Largest value of an int64, the label's type. */
const INT64_MAX = (1n << 63n) - 1n;

/** What {@linkcode deviceSizeFor} decides from. */
export interface SizeRequest {
  /** The new snapshot's labels. */
  labels: Readonly<Record<string, string>>;
  /** The size the snapshot gets without the label: its parent's, or `base_image_size`. */
  inheritedBytes: number;
  /** Bytes of the pool's data space (its thin-pool table's length); undefined when unknown. */
  poolBytes: number | undefined;
  /** What is being created, for messages: `active snapshot "k"`. */
  what: string;
}

/**
 * The virtual size, in bytes, of the new snapshot's thin device: `inheritedBytes` without the
 * label, else the label's size (see the module doc). Throws {@linkcode InvalidArgumentError}
 * for a value the rules refuse.
 */
export function deviceSizeFor(request: SizeRequest): number {
  const value = request.labels[MAX_SIZE_LABEL];
  if (value === undefined || value === "") return request.inheritedBytes;
  const refuse = (why: string) =>
    new InvalidArgumentError(
      `cannot create ${request.what}: label ${MAX_SIZE_LABEL}=${JSON.stringify(value)}: ${why}`,
    );
  if (!/^[+-]?[0-9]+$/.test(value)) {
    throw refuse("not a size in bytes (a decimal integer)");
  }
  const asked = BigInt(value);
  if (asked <= 0n) throw refuse("the size must be greater than zero");
  if (asked > INT64_MAX) throw refuse("the size is beyond int64");
  if (request.poolBytes !== undefined && asked > BigInt(request.poolBytes)) {
    throw refuse(
      `beyond what the pool can ever hold (${request.poolBytes} bytes of data space)`,
    );
  }
  const bytes = Number(asked / 512n) * 512;
  if (bytes < request.inheritedBytes) {
    throw refuse(
      `smaller than the ${request.inheritedBytes} bytes of the filesystem it starts from; ` +
        "a filesystem is never shrunk",
    );
  }
  return bytes;
}
