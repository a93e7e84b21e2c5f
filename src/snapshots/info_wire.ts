/**
 * An {@linkcode Info} in containerd's wire form (`containerd.services.snapshots.v1.Info`), and as
 * a List entry: a `ListSnapshotsResponse` holding that one Info. The metadata store keeps each
 * snapshot's entry beside its row; entries put end to end are a `ListSnapshotsResponse` holding
 * them all (a repeated field's elements concatenate), so a List sends a page as SQLite joins it:
 * no object and no encoding per snapshot per List.
 *
 * Invariants: the bytes decode, with containerd's proto, to the same Info as the server's own
 * encoding of it (info_wire_test.ts checks it); timestamps are always present (containerd 1.6
 * decodes them as non-nullable), empty strings and zero numbers are left out as proto3 does.
 *
 * Field numbers (proto/containerd/services/snapshots/v1/snapshots.proto): Info name 1, parent 2,
 * kind 3, created_at 4, updated_at 5, labels 6 (map entries: key 1, value 2);
 * google.protobuf.Timestamp seconds 1, nanos 2.
 *
 * @module
 */
import protobuf from "protobufjs";
import type { Info, Kind, Timestamp } from "./types.ts";

/** Wire numbers of the kinds (containerd: view 1, active 2, committed 3). */
const KIND_NUMBER: Readonly<Record<Kind, number>> = { view: 1, active: 2, committed: 3 };

/** A tag: field number and wire type (0 varint, 2 length-delimited). */
const tag = (field: number, wireType: 0 | 2) => (field << 3) | wireType;

function timestamp(w: protobuf.Writer, field: number, t: Timestamp): void {
  w.uint32(tag(field, 2)).fork();
  if (t.seconds !== 0) w.uint32(tag(1, 0)).int64(t.seconds);
  if (t.nanos !== 0) w.uint32(tag(2, 0)).int32(t.nanos);
  w.ldelim();
}

/** `info` encoded as a `containerd.services.snapshots.v1.Info` message. */
export function encodeInfo(info: Info): Uint8Array {
  const w = protobuf.Writer.create();
  if (info.name !== "") w.uint32(tag(1, 2)).string(info.name);
  if (info.parent !== "") w.uint32(tag(2, 2)).string(info.parent);
  w.uint32(tag(3, 0)).int32(KIND_NUMBER[info.kind]);
  timestamp(w, 4, info.created);
  timestamp(w, 5, info.updated);
  for (const [key, value] of Object.entries(info.labels)) {
    w.uint32(tag(6, 2)).fork();
    if (key !== "") w.uint32(tag(1, 2)).string(key);
    if (value !== "") w.uint32(tag(2, 2)).string(value);
    w.ldelim();
  }
  return w.finish();
}

/**
 * `info` as a List entry: a `ListSnapshotsResponse` holding just it (field 1, the Info as a
 * length-delimited element). Entries put end to end make the response holding them all.
 */
export function encodeListEntry(info: Info): Uint8Array {
  const body = encodeInfo(info);
  return protobuf.Writer.create().uint32(tag(1, 2)).bytes(body).finish();
}

/** `entries` (see {@linkcode encodeListEntry}) end to end: one `ListSnapshotsResponse`. */
export function joinListEntries(entries: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const entry of entries) total += entry.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const entry of entries) {
    out.set(entry, at);
    at += entry.length;
  }
  return out;
}
