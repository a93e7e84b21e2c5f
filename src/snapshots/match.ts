/**
 * containerd's snapshot adaptor for filters: which value a field path names in a snapshot's
 * Info, so that the generic filter language (`src/filters/`) can match snapshots.
 *
 * @module
 */
import { type Filter, matchFields } from "../filters/filters.ts";
import type { Info, Kind } from "./types.ts";

const KINDS: ReadonlySet<Kind> = new Set<Kind>(["active", "view", "committed"]);

/**
 * containerd's snapshot adaptor: `kind` (`active`|`view`|`committed`), `name` and `parent`
 * (always present, possibly "") are looked up by the first path element alone (so
 * `name.x` is `name`); `labels.<k...>` is the label whose key is the remaining elements
 * joined with "." (absent when missing); everything else is absent.
 */
export function snapshotField(info: Info, fieldpath: readonly string[]): string | undefined {
  switch (fieldpath[0]) {
    case "kind":
      return KINDS.has(info.kind) ? info.kind : undefined;
    case "name":
      return info.name;
    case "parent":
      return info.parent ?? "";
    case "labels": {
      const labels = info.labels;
      const key = fieldpath.slice(1).join(".");
      return labels && Object.hasOwn(labels, key) ? labels[key] : undefined;
    }
    default:
      return undefined;
  }
}

/** Whether snapshot `info` matches `filter` (see {@linkcode snapshotField}). */
export function matchInfo(filter: Filter, info: Info): boolean {
  return matchFields(filter, (path) => snapshotField(info, path));
}
