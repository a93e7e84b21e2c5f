/**
 * Conversions between the snapshotter's types (`src/types.ts`) and wire messages.
 *
 * @module
 */
import type { Info, Kind, Mount, Timestamp, Usage } from "../snapshots/types.ts";
import type { WireInfo, WireMount, WireTimestamp, WireUsageResponse } from "./proto.ts";

/** Wire numbers of the snapshot kinds (containerd: view 1, active 2, committed 3). */
export const KIND_NUMBER: Readonly<Record<Kind, number>> = { view: 1, active: 2, committed: 3 };

/** The kind with wire number `n`; throws on 0 (UNKNOWN) or an undefined number. */
export function kindFromNumber(n: number): Kind {
  switch (n) {
    case 1:
      return "view";
    case 2:
      return "active";
    case 3:
      return "committed";
  }
  throw new Error(`Cannot decode snapshot kind: unknown kind number ${n}`);
}

/** A decoded 64-bit integer (decimal string or number) as an exact JS number. */
export function int64ToNumber(value: string | number | null | undefined, what: string): number {
  if (value === null || value === undefined || value === "") return 0;
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isSafeInteger(n) || (typeof value === "string" && String(n) !== value)) {
    throw new RangeError(`Cannot decode ${what}: ${value} is not an exact integer`);
  }
  return n;
}

/** Timestamp → wire. */
export function timestampToWire(t: Timestamp): WireTimestamp {
  return { seconds: t.seconds, nanos: t.nanos };
}

/** Wire → Timestamp (absent = epoch). */
export function timestampFromWire(t: WireTimestamp | null | undefined): Timestamp {
  if (!t) return { seconds: 0, nanos: 0 };
  return { seconds: int64ToNumber(t.seconds, "timestamp seconds"), nanos: t.nanos ?? 0 };
}

/** Info → wire; timestamps are always present (containerd 1.6 decodes them as non-nullable). */
export function infoToWire(info: Info): WireInfo {
  return {
    name: info.name,
    parent: info.parent,
    kind: KIND_NUMBER[info.kind],
    created_at: timestampToWire(info.created),
    updated_at: timestampToWire(info.updated),
    labels: info.labels,
  };
}

/** Wire → Info (for clients). Throws on an UNKNOWN kind. */
export function infoFromWire(info: WireInfo): Info {
  return {
    name: info.name,
    parent: info.parent,
    kind: kindFromNumber(info.kind),
    created: timestampFromWire(info.created_at),
    updated: timestampFromWire(info.updated_at),
    labels: { ...info.labels },
  };
}

/** Mount → wire. */
export function mountToWire(m: Mount): WireMount {
  return { type: m.type, source: m.source, target: m.target, options: [...m.options] };
}

/** Wire → Mount. */
export function mountFromWire(m: WireMount): Mount {
  return { type: m.type, source: m.source, target: m.target, options: [...m.options] };
}

/** Usage → wire. */
export function usageToWire(u: Usage): WireUsageResponse {
  return { size: u.size, inodes: u.inodes };
}

/** Wire → Usage. */
export function usageFromWire(u: WireUsageResponse): Usage {
  return {
    size: int64ToNumber(u.size, "usage size"),
    inodes: int64ToNumber(u.inodes, "usage inodes"),
  };
}
