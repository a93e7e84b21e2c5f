/**
 * Label and snapshot-key rules as containerd applies them: label size limits, the removal of
 * empty label values, the field-mask semantics of `Update` (containerd's `storage` package) and
 * the validation of snapshot keys, parents and names.
 *
 * Every function is pure. Label records are built with `Object.fromEntries` and read with
 * `Object.hasOwn`, so keys such as `__proto__` or `constructor` are ordinary labels.
 *
 * @module
 */

import { InvalidArgumentError } from "../util/errors.ts";
import { quote } from "../util/quote.ts";

/** containerd's limit on the UTF-8 size of one label's key plus its value, in bytes. */
export const MAX_LABEL_SIZE = 4096;

/**
 * Limit on the labels of one snapshot together: the UTF-8 size of every key plus every value,
 * in bytes (containerd bounds each label, not their sum). 64 KiB is 16 labels at the per-label
 * maximum, many times what containerd and its CRI plugin set (a handful of short labels; the
 * longest, `containerd.io/snapshot/cri.image-layers`, is itself cut to 4 KiB). With it, the
 * largest Info (two 4 KiB keys, 64 KiB of labels, and per label at most 16 bytes of protobuf
 * framing even when all 32 Ki labels are one-byte keys and values) stays far below the 16 MiB
 * gRPC message limit, so every snapshot accepted can be returned by Stat and by List.
 */
export const MAX_LABELS_TOTAL_SIZE = 64 * 1024;

/** Limit on the UTF-8 size of a snapshot key, parent or name, in bytes. */
export const MAX_KEY_SIZE = 4096;

/** A label map: key → value. */
export type Labels = Record<string, string>;

/**
 * Number of bytes `s` takes in UTF-8. A lone surrogate counts as 3 bytes, as `TextEncoder`
 * encodes it (U+FFFD).
 */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else {
        n += 3;
      }
    } else n += 3;
  }
  return n;
}

/** Total UTF-8 size of the keys and values of `labels`, in bytes. */
export function labelsSize(labels: Readonly<Labels>): number {
  let n = 0;
  for (const [key, value] of Object.entries(labels)) {
    n += utf8Length(key) + (typeof value === "string" ? utf8Length(value) : 0);
  }
  return n;
}

function tooLarge(size: number): string {
  return `total size of keys and values (${size} bytes) greater than maximum size ` +
    `(${MAX_LABELS_TOTAL_SIZE} bytes)`;
}

/**
 * Checks labels as containerd's metadata layer does before it calls a snapshotter: every key
 * is non-empty, every value is a string, and key plus value take at most
 * {@linkcode MAX_LABEL_SIZE} bytes of UTF-8. Empty values are allowed (they mean "no label").
 * `undefined` is accepted as "no labels". All keys and values together take at most
 * {@linkcode MAX_LABELS_TOTAL_SIZE} bytes (empty values count too: they are in the request).
 *
 * @throws {InvalidArgumentError} naming the first offending key, e.g.
 *   `Invalid label "k": key and value length (5000 bytes) greater than maximum size (4096 bytes)`,
 *   or the total: `Invalid labels: total size of keys and values (70000 bytes) greater than
 *   maximum size (65536 bytes)`.
 */
export function validateLabels(labels: Readonly<Labels> | undefined): void {
  if (labels === undefined) return;
  if (labels === null || typeof labels !== "object" || Array.isArray(labels)) {
    throw new InvalidArgumentError("Invalid labels: expected a map of strings");
  }
  let total = 0;
  for (const [key, value] of Object.entries(labels)) {
    if (key === "") {
      throw new InvalidArgumentError("Invalid label: the key must not be empty");
    }
    if (typeof value !== "string") {
      throw new InvalidArgumentError(`Invalid label ${quote(key)}: the value must be a string`);
    }
    const size = utf8Length(key) + utf8Length(value);
    if (size > MAX_LABEL_SIZE) {
      throw new InvalidArgumentError(
        `Invalid label ${quote(key)}: key and value length (${size} bytes) greater than ` +
          `maximum size (${MAX_LABEL_SIZE} bytes)`,
      );
    }
    total += size;
  }
  if (total > MAX_LABELS_TOTAL_SIZE) {
    throw new InvalidArgumentError(`Invalid labels: ${tooLarge(total)}`);
  }
}

/**
 * A copy of `labels` without the entries whose value is "" (containerd never stores empty
 * values: writing "" deletes a label). `undefined` gives `{}`. The input is not modified.
 */
export function cleanLabels(labels: Readonly<Labels> | undefined): Labels {
  if (labels === undefined) return {};
  return Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ""));
}

/** What an `Update` request asks for (`info.name`, `info.labels`, `update_mask.paths`). */
export interface LabelUpdate {
  /** The snapshot's name; used in error messages only. */
  name: string;
  /** The labels given in the request (`info.labels`); `undefined` = none. */
  labels: Readonly<Labels> | undefined;
  /** The field-mask paths, in order; empty = replace all labels. */
  paths: readonly string[];
}

/**
 * The labels a snapshot has after an `Update`, following containerd's `storage` package:
 *
 * - `paths` empty: the result is `update.labels`.
 * - `"labels"`: replace the whole map with `update.labels`.
 * - `"labels.<k>"`: set label `<k>` to `update.labels[<k>]`, or delete it when the request
 *   does not carry it (or carries ""). `<k>` is everything after the first `labels.`, so
 *   `labels.containerd.io/gc.root` addresses the key `containerd.io/gc.root`.
 * - any other path (`parent`, `name`, `kind`, `created_at`, `Labels`, ...):
 *   {@linkcode InvalidArgumentError} `cannot update "<path>" field on snapshot "<name>"`.
 *
 * Paths are applied in order. The given labels are checked with {@linkcode validateLabels}.
 * Every path and label is checked before anything is computed, so a rejected update has no
 * partial effect (and the function never modifies its arguments). The result never contains
 * empty values, and takes at most {@linkcode MAX_LABELS_TOTAL_SIZE} bytes — unless it is no
 * larger than `stored` (labels stored before the bound existed can still be removed).
 *
 * @param stored the snapshot's current labels
 * @throws {InvalidArgumentError} for an unsupported path, an invalid label, or a result over
 *   the total bound: `Invalid labels of snapshot "x" after the update: total size of keys and
 *   values (70000 bytes) greater than maximum size (65536 bytes)`
 */
export function applyUpdate(stored: Readonly<Labels>, update: LabelUpdate): Labels {
  for (const path of update.paths) {
    if (path !== "labels" && !path.startsWith("labels.")) {
      throw new InvalidArgumentError(
        `cannot update ${JSON.stringify(path)} field on snapshot ${JSON.stringify(update.name)}`,
      );
    }
  }
  validateLabels(update.labels);
  const given = update.labels ?? {};
  if (update.paths.length === 0) return cleanLabels(given);

  const result = new Map<string, string>(Object.entries(stored));
  for (const path of update.paths) {
    if (path === "labels") {
      result.clear();
      for (const [k, v] of Object.entries(given)) result.set(k, v);
      continue;
    }
    const key = path.slice("labels.".length);
    result.set(key, Object.hasOwn(given, key) ? given[key] : "");
  }
  return checkTotal(Object.fromEntries([...result].filter(([, v]) => v !== "")), stored, update);
}

/** `labels` when within the total bound or no larger than `stored`; else throws. */
function checkTotal(labels: Labels, stored: Readonly<Labels>, update: LabelUpdate): Labels {
  const size = labelsSize(labels);
  if (size <= MAX_LABELS_TOTAL_SIZE || size <= labelsSize(stored)) return labels;
  throw new InvalidArgumentError(
    `Invalid labels of snapshot ${quote(update.name)} after the update: ${tooLarge(size)}`,
  );
}

/** What a snapshot key is used as, for {@linkcode validateKey}'s messages and rules. */
export type KeyRole = "key" | "parent" | "name";

/**
 * Checks a snapshot key, parent or (committed) name: at most {@linkcode MAX_KEY_SIZE} bytes of
 * UTF-8 and no NUL character; it must be non-empty, except that a `parent` may be "" (it means
 * "no parent").
 *
 * @param what the role of `key`, used in the message and for the empty-parent rule
 * @throws {InvalidArgumentError} e.g. `Invalid snapshot key "": must not be empty`
 */
export function validateKey(key: string, what: KeyRole): void {
  if (typeof key !== "string") {
    throw new InvalidArgumentError(`Invalid snapshot ${what}: expected a string`);
  }
  if (key === "") {
    if (what === "parent") return;
    throw new InvalidArgumentError(`Invalid snapshot ${what} "": must not be empty`);
  }
  const size = utf8Length(key);
  if (size > MAX_KEY_SIZE) {
    throw new InvalidArgumentError(
      `Invalid snapshot ${what} ${quote(key)}: ${size} bytes is longer than the maximum of ` +
        `${MAX_KEY_SIZE} bytes`,
    );
  }
  if (key.includes("\0")) {
    throw new InvalidArgumentError(
      `Invalid snapshot ${what} ${quote(key)}: must not contain a NUL character`,
    );
  }
}
