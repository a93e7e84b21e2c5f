/**
 * A List of everything sends the List entries the store keeps (`Snapshotter.walkEncoded`),
 * on both transports, with the real snapshotter on the in-memory device mapper: the same
 * snapshots as the object path (a filter that matches everything), batched as before, and
 * an Info too large for a message left out.
 */
import assert from "node:assert/strict";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import { memorySnapshotterOptions } from "../../testing/memory_snapshotter_options.ts";
import { startTestServer } from "../../testing/test_server.ts";
import { openSnapshotter } from "../snapshotter/snapshotter.ts";
import { sendEncoded } from "./handlers.ts";
import { EncodedMessage, loadSnapshotsProto, type WireListResponse } from "./proto.ts";
import { TRANSPORTS } from "./server.ts";
import { createLogger } from "../util/log.ts";
import { encodeListEntry, joinListEntries } from "../snapshots/info_wire.ts";
import type { EncodedPage, Info } from "../snapshots/types.ts";

for (const transport of TRANSPORTS) {
  Deno.test(`[${transport}] List of everything sends the kept encoded Infos: same snapshots, same batches`, async () => {
    const dm = new MemoryDeviceMapper();
    dm.createPool("pool", { dataBlocks: 1 << 16 });
    const rootPath = await Deno.makeTempDir({ prefix: "dmsnap-list-enc-" });
    try {
      const s = await openSnapshotter(memorySnapshotterOptions({ rootPath, poolName: "pool", dm }));
      const walkEncoded = s.walkEncoded.bind(s);
      let encodedWalks = 0;
      s.walkEncoded = (...args) => (encodedWalks++, walkEncoded(...args));
      await using srv = await startTestServer({ prefix: "dmsnap-le-", transport, snapshotter: s });
      let parent = "";
      for (let i = 0; i < 230; i++) {
        const key = `ns/${i}/extract ${i}`;
        await s.prepare(key, parent, { "containerd.io/snapshot.ref": `sha256:${i}` });
        await s.commit(`ns/${i}/sha256:${i}`, key, { "ünï": `${i} ☃` });
        parent = `ns/${i}/sha256:${i}`;
      }
      await s.prepare("ns/x/container", parent, { a: "b" });
      await s.view("ns/y/view", parent);
      const everything = await srv.client.list();
      const filtered = await srv.client.list(["name!=nothing-has-this-name"]);
      assert.equal(everything.infos.length, 232);
      assert.deepEqual(everything.infos, filtered.infos);
      assert.equal(everything.messages, 3); // 100 per message, as upstream
      assert.deepEqual(encodedWalks, 1, "the unfiltered List took the encoded path, alone");
    } finally {
      await Deno.remove(rootPath, { recursive: true });
    }
  });
}

Deno.test("sendEncoded: a whole page goes as it is; entries are batched, one too large left out", async () => {
  const info = (name: string, labelBytes = 0): Info => ({
    name,
    parent: "",
    kind: "committed",
    created: { seconds: 1, nanos: 0 },
    updated: { seconds: 1, nanos: 0 },
    labels: labelBytes ? { l: "v".repeat(labelBytes) } : {},
  });
  const infos = [info("a"), info("b", 600), info("c", 600), info("huge", 5000), info("d")];
  const entries = infos.map((i) => ({ key: i.name, entry: encodeListEntry(i) }));
  const pages = async function* (): AsyncGenerator<EncodedPage> {
    yield {
      rows: 2,
      lastKey: "b",
      message: joinListEntries(entries.slice(0, 2).map((e) => e.entry)),
    };
    yield { rows: 3, lastKey: "d", entries: entries.slice(2) };
  };
  const codec = loadSnapshotsProto().codec<WireListResponse>("ListSnapshotsResponse");
  const send = async (count: number) => {
    const sent: string[][] = [];
    const logs: string[] = [];
    await sendEncoded(pages(), {
      write: (m) => {
        assert.ok(m instanceof EncodedMessage);
        sent.push(codec.decode(m.bytes).info.map((i) => i.name));
        return Promise.resolve();
      },
      gone: () => undefined,
    }, {
      count,
      bytes: 1000,
      maxMessage: 4096,
      logger: createLogger({ write: (l) => logs.push(l) }),
    });
    return { sent, logs };
  };
  const { sent, logs } = await send(10);
  assert.deepEqual(sent, [["a", "b"], ["c", "d"]]);
  assert.equal(logs.length, 1);
  assert.match(logs[0], /its Info is larger than a message" key=huge bytes=\d+ max_bytes=4096/);
  // by count
  assert.deepEqual((await send(1)).sent, [["a", "b"], ["c"], ["d"]]);
});
