import assert from "node:assert/strict";
import { encodeInfo, encodeListEntry, joinListEntries } from "./info_wire.ts";
import type { Info } from "./types.ts";
import { loadSnapshotsProto, type WireInfo, type WireListResponse } from "../server/proto.ts";
import { infoFromWire, infoToWire } from "../server/convert.ts";

const proto = loadSnapshotsProto();
const infoCodec = proto.codec<WireInfo>("Info");
const listCodec = proto.codec<WireListResponse>("ListSnapshotsResponse");

const INFOS: Info[] = [
  {
    name: "k8s.io/12/sha256:" + "a".repeat(64),
    parent: "k8s.io/11/sha256:" + "b".repeat(64),
    kind: "committed",
    created: { seconds: 1_764_000_000, nanos: 123_456_789 },
    updated: { seconds: 1_764_000_001, nanos: 1 },
    labels: { "containerd.io/gc.root": "2026-11-30T12:00:00Z", "ünïcode ☃": "välue 😀" },
  },
  {
    name: "x",
    parent: "",
    kind: "active",
    created: { seconds: 0, nanos: 0 },
    updated: { seconds: -62_135_596_800, nanos: 999_999_999 },
    labels: {},
  },
  { ...base("v"), kind: "view", labels: { ["k".repeat(300)]: "v".repeat(70_000) } },
];

function base(name: string): Info {
  return {
    name,
    parent: "p",
    kind: "view",
    created: { seconds: 2 ** 40, nanos: 5 },
    updated: { seconds: 2 ** 40, nanos: 6 },
    labels: {},
  };
}

Deno.test("info wire: an encoded Info decodes, with containerd's proto, to the Info", () => {
  for (const info of INFOS) {
    const decoded = infoFromWire(infoCodec.decode(encodeInfo(info)));
    assert.deepEqual(decoded, info);
    // and to what the server's own encoding of it decodes to
    assert.deepEqual(decoded, infoFromWire(infoCodec.decode(infoCodec.encode(infoToWire(info)))));
  }
});

Deno.test("info wire: List entries end to end are one ListSnapshotsResponse holding them all", () => {
  const entries = INFOS.map(encodeListEntry);
  for (const [i, entry] of entries.entries()) {
    assert.deepEqual(listCodec.decode(entry).info.map(infoFromWire), [INFOS[i]]);
  }
  assert.deepEqual(listCodec.decode(joinListEntries(entries)).info.map(infoFromWire), INFOS);
  assert.deepEqual(listCodec.decode(joinListEntries([])).info, []);
});
