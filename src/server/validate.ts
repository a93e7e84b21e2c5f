/**
 * Request validation, done once, before the snapshotter is called: a request that fails here is
 * answered InvalidArgument and changes nothing. The snapshotter trusts what passes (keys, labels,
 * field masks) and gets the List filters already parsed.
 *
 * @module
 */
import { errorKind, errorMessage, InvalidArgumentError } from "../util/errors.ts";
import { type Filter, parseFilters } from "../filters/filters.ts";
import { applyUpdate, utf8Length, validateKey, validateLabels } from "../snapshots/labels.ts";
import type {
  WireCommitRequest,
  WireKeyRequest,
  WireListRequest,
  WirePrepareRequest,
  WireUpdateRequest,
} from "./proto.ts";

/** Validated Prepare/View arguments. */
export interface CreateArgs {
  key: string;
  parent: string;
  labels: Record<string, string>;
}

/** Validated Commit arguments. */
export interface CommitArgs {
  name: string;
  key: string;
  labels: Record<string, string>;
  parent: string;
}

/** Validated Update arguments. */
export interface UpdateArgs {
  name: string;
  labels: Record<string, string>;
  paths: string[];
}

/** Prefix of field-mask paths naming one label. */
const LABEL_PATH_PREFIX = "labels.";

/** Checks a Prepare/View request. */
export function validateCreate(req: WirePrepareRequest): CreateArgs {
  validateKey(req.key, "key");
  if (req.parent !== "") validateKey(req.parent, "parent");
  const labels = req.labels ?? {};
  validateLabels(labels);
  return { key: req.key, parent: req.parent, labels };
}

/** Checks a request that only names a key. */
export function validateKeyRequest(req: WireKeyRequest): string {
  validateKey(req.key, "key");
  return req.key;
}

/** Checks a Commit request. */
export function validateCommit(req: WireCommitRequest): CommitArgs {
  validateKey(req.name, "name");
  validateKey(req.key, "key");
  if (req.parent) validateKey(req.parent, "parent");
  const labels = req.labels ?? {};
  validateLabels(labels);
  return { name: req.name, key: req.key, labels, parent: req.parent ?? "" };
}

/**
 * Checks an Update request: the target name, the labels, and every field-mask path (only
 * `labels` and `labels.<key>` may be updated; the label a path names must be a valid key).
 */
export function validateUpdate(req: WireUpdateRequest): UpdateArgs {
  const name = req.info?.name ?? "";
  validateKey(name, "name");
  const labels = req.info?.labels ?? {};
  const paths = req.update_mask?.paths ?? [];
  // the same rules the snapshotter applies, run on an empty map only to validate
  applyUpdate({}, { name, labels, paths });
  for (const path of paths) {
    if (!path.startsWith(LABEL_PATH_PREFIX)) continue;
    const label = path.slice(LABEL_PATH_PREFIX.length);
    if (label === "") {
      throw new InvalidArgumentError(
        `cannot update ${JSON.stringify(path)} field on snapshot ${JSON.stringify(name)}: ` +
          "empty label key",
      );
    }
    validateLabels({ [label]: Object.hasOwn(labels, label) ? labels[label] : "" });
  }
  return { name, labels, paths: [...paths] };
}

/**
 * Bound on the filter strings of one List request together, in bytes of UTF-8. containerd's
 * filters are a few dozen bytes; parsing takes time in proportion to their size, on the
 * server's one thread.
 */
export const MAX_LIST_FILTER_BYTES = 16 * 1024;

/**
 * A List request's filters, checked: parsed (no `~=` in them), or — when some contain `~=` —
 * left to be parsed and matched on a worker thread (`list_match.ts`), because compiling an
 * RE2 expression may take seconds.
 */
export type ListFilter = { filter: Filter } | { regexSources: string[] };

/**
 * Checks a List request's filters: their size, and their syntax unless they contain `~=` (the
 * worker reports those errors). The only parse of them a List does.
 */
export function validateList(req: WireListRequest): ListFilter {
  const filters = req.filters ?? [];
  const size = filters.reduce((n, f) => n + utf8Length(f), 0);
  if (size > MAX_LIST_FILTER_BYTES) {
    throw new InvalidArgumentError(
      `invalid filters: ${size} bytes is longer than the maximum of ${MAX_LIST_FILTER_BYTES} bytes`,
    );
  }
  if (filters.some((f) => f.includes("~="))) return { regexSources: [...filters] };
  try {
    return { filter: parseFilters(filters) };
  } catch (err) {
    if (errorKind(err) === "invalid_argument") throw err;
    throw new InvalidArgumentError(`invalid filters: ${errorMessage(err)}`, { cause: err });
  }
}
