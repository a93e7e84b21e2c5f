/**
 * Types shared by the snapshotter core and the gRPC service: containerd's snapshot model.
 *
 * @module
 */

/** Snapshot kinds (containerd's numbering on the wire: view 1, active 2, committed 3). */
export type Kind = "view" | "active" | "committed";

import type { Filter } from "../filters/filters.ts";
import type { Timestamp } from "../sys/clock.ts";

export type { Timestamp };

/** containerd's `snapshots.Info`. */
export interface Info {
  /** The key the caller used. */
  name: string;
  /** Parent key, "" for none. */
  parent: string;
  kind: Kind;
  created: Timestamp;
  updated: Timestamp;
  /** Labels; never contains empty values. */
  labels: Record<string, string>;
}

/** containerd's `types.Mount`. */
export interface Mount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** Result of Usage. */
export interface Usage {
  /** Bytes used by the snapshot itself (never negative). */
  size: number;
  /** Inodes used, 0 when unknown. */
  inodes: number;
}

/** A snapshot's key and its List entry (`src/snapshots/info_wire.ts`). */
export interface EncodedInfo {
  key: string;
  /** A `ListSnapshotsResponse` holding just this snapshot's Info. */
  entry: Uint8Array;
}

/**
 * A page of snapshots in key order, in wire form: one `ListSnapshotsResponse` holding them all
 * when it fits the bounds asked for, otherwise each entry apart (for the caller to batch, and to
 * leave out one too large for any message).
 */
export type EncodedPage =
  | { rows: number; lastKey: string; message: Uint8Array }
  | { rows: number; lastKey: string; entries: EncodedInfo[] };

/** Bounds of {@linkcode Snapshotter.walkEncoded}. */
export interface EncodedWalkOptions {
  /** Snapshots per page (and so per whole message). */
  pageSize: number;
  /** A page is one message only when it is at most this many bytes... */
  maxBytes: number;
  /** ...and none of its entries is larger than this. */
  maxEntryBytes: number;
}

/** containerd's snapshotter contract, as the gRPC service calls it. */
export interface Snapshotter {
  prepare(key: string, parent: string, labels?: Record<string, string>): Promise<Mount[]>;
  view(key: string, parent: string, labels?: Record<string, string>): Promise<Mount[]>;
  mounts(key: string): Promise<Mount[]>;
  /** `parent` is HEAD's optional rebase parent; "" when not given. */
  commit(
    name: string,
    key: string,
    labels?: Record<string, string>,
    parent?: string,
  ): Promise<void>;
  remove(key: string): Promise<void>;
  stat(key: string): Promise<Info>;
  /** Applies `info.labels` to snapshot `info.name` as directed by the field-mask `paths`. */
  update(info: Pick<Info, "name" | "labels"> & Partial<Info>, paths: string[]): Promise<Info>;
  usage(key: string): Promise<Usage>;
  /**
   * Snapshots matching `filter`: containerd filter strings parsed once, by the caller
   * (`parseFilters` of `src/filters/`); none = every snapshot.
   */
  list(filter?: Filter): Promise<Info[]>;
  /**
   * The same snapshots a page at a time (containerd's Walk), so that a caller streaming them
   * never holds them all.
   */
  walk(filter?: Filter): AsyncIterable<Info[]>;
  /**
   * Every snapshot, a page at a time in key order, already in wire form: for a List of
   * everything, sent as it is. Optional: without it such a List encodes what `walk` gives.
   */
  walkEncoded?(options: EncodedWalkOptions): AsyncIterable<EncodedPage>;
  cleanup(): Promise<void>;
  /** Idempotent. */
  close(): Promise<void>;
}
