import assert from "node:assert/strict";
import { memorySnapshotter } from "../testing/memory_snapshotter.ts";
import { connectSnapshots } from "../testing/snapshots_client.ts";
import { startServer } from "../src/server/server.ts";
import { populate, populationShape } from "./scale_population.ts";

Deno.test("populationShape: committed layers, then active snapshots, then views", () => {
  assert.deepEqual(populationShape(100, { active: 20, views: 5 }), {
    committed: 75,
    active: 20,
    views: 5,
  });
  assert.deepEqual(populationShape(21, { active: 20, views: 5 }), {
    committed: 1,
    active: 20,
    views: 0,
  });
  assert.deepEqual(populationShape(3, { active: 20, views: 5 }), {
    committed: 1,
    active: 2,
    views: 0,
  });
});

Deno.test("populate creates exactly the snapshots asked for, in chains, with labels", async () => {
  const dir = await Deno.makeTempDir({ prefix: "scale-pop-" });
  const server = await startServer({ address: `${dir}/s.sock`, snapshotter: memorySnapshotter() });
  const client = connectSnapshots(`${dir}/s.sock`);
  try {
    const lines: string[] = [];
    const p = await populate({
      client,
      count: 30,
      chainLength: 4,
      active: 3,
      views: 2,
      namespace: "ns",
      log: (m) => lines.push(m),
      progressEveryMs: 0,
    });
    assert.deepEqual([p.committed, p.active, p.views], [25, 3, 2]);
    assert.equal(p.prepareMs.length, 25);
    assert.equal(p.commitMs.length, 25);
    assert.equal(lines.length, 25, "one progress line per layer at progressEveryMs 0");
    const { infos } = await client.list();
    assert.equal(infos.length, 30);
    const kinds = (k: string) => infos.filter((i) => i.kind === k).length;
    assert.deepEqual([kinds("committed"), kinds("active"), kinds("view")], [25, 3, 2]);
    for (const info of infos) assert.match(info.name, /^ns\/\d+\//);
    const byName = new Map(infos.map((i) => [i.name, i]));
    const depth = (name: string): number => {
      const parent = byName.get(name)!.parent;
      return parent ? 1 + depth(parent) : 1;
    };
    const committed = infos.filter((i) => i.kind === "committed");
    assert.equal(Math.max(...committed.map((i) => depth(i.name))), 4, "chains of 4 layers");
    assert.equal(committed.filter((i) => i.parent === "").length, 7, "ceil(25 / 4) chains");
    for (const info of committed) {
      assert.match(info.labels["containerd.io/snapshot.ref"], /^sha256:[0-9a-f]{64}$/);
      assert.ok(info.labels["containerd.io/gc.root"]);
    }
  } finally {
    client.close();
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
