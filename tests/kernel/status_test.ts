/**
 * `main.ts status` against a real pool: with the server down (the database read read-only,
 * nothing written beside it), with `main.ts serve` running (snapshots from its List), and with
 * the pool below `min_free_space` and made read-only (exit 3).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { requireKernel, sh } from "./fixtures.ts";
import { createTestSnapshotter } from "./snapshot_fixtures.ts";
import { runMain, serveTestSnapshotter, writeServeConfig } from "./main_fixtures.ts";
import type { StatusReport } from "../../src/cli/status.ts";
import type { PoolStatus } from "../../src/dm/types.ts";
import { parseStatus } from "../../src/dm/parse.ts";

async function dirFiles(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const e of Deno.readDir(dir)) {
    out.set(e.name, (await Deno.stat(join(dir, e.name))).mtime!.getTime());
  }
  return out;
}

Deno.test("status: `main.ts status` on a real pool, server down and up; below min_free_space and read-only it exits 3", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  const s = t.snapshotter;
  await s.prepare("k/layer", "");
  await s.commit("k/base", "k/layer");
  await s.prepare("k/ctr", "k/base");
  await s.view("k/peek", "k/base");
  await s.close(); // a clean stop: the served process owns the pool from here
  const config = join(t.pool.dir, "config.toml");
  const socket = join(t.pool.dir, "srv", "s.sock");
  await writeServeConfig(config, {
    poolName: t.pool.name,
    rootPath: t.settings.rootPath,
    baseImageSize: "32MB",
  });
  const status = async (...flags: string[]) => {
    const r = await runMain(["status", "--config", config, "--address", socket, ...flags]);
    return { ...r, json: flags.includes("--json") ? JSON.parse(r.out) as StatusReport : undefined };
  };

  // server down: the database, read-only
  const files = await dirFiles(t.settings.rootPath);
  const down = await status("--json");
  assert.equal(down.code, 0, down.err + down.out);
  const [pool] = parseStatus(await sh("dmsetup", "status", t.pool.name)) as PoolStatus[];
  const block = 128 * 512;
  assert.deepEqual(down.json!.server, { address: socket, state: "down" });
  assert.equal(down.json!.pool?.mode, "read-write");
  assert.equal(down.json!.pool?.dataUsedBytes, pool.usedDataBlocks * block);
  assert.equal(down.json!.pool?.dataTotalBytes, 256 * 1024 * 1024);
  assert.equal(down.json!.pool?.metadataTotalBytes, 16 * 1024 * 1024);
  assert.deepEqual(down.json!.snapshots, { committed: 1, active: 1, view: 1, source: "database" });
  assert.deepEqual(down.json!.thinDevices, { total: 3, active: 2 });
  assert.equal(down.json!.templates, 1);
  assert.equal(down.json!.healthy, true);
  assert.deepEqual(await dirFiles(t.settings.rootPath), files, "nothing written or created");
  const human = await status();
  assert.equal(human.code, 0, human.err);
  assert.match(human.out, /^server {8}down, /m);
  assert.match(human.out, /^mode {10}read-write$/m);
  assert.match(human.out, /^snapshots {5}1 committed, 1 active, 1 view \(from the database\)$/m);

  // server up: its List
  const srv = await serveTestSnapshotter(t);
  try {
    const up = await status("--json");
    assert.equal(up.code, 0, up.err + up.out);
    assert.deepEqual(up.json!.server, { address: socket, state: "up" });
    assert.deepEqual(up.json!.snapshots, { committed: 1, active: 1, view: 1, source: "server" });
    assert.deepEqual(up.json!.thinDevices, { total: null, active: 2 });
    assert.equal(up.json!.templates, null);
    assert.deepEqual(up.json!.errors, []);
    const upHuman = await status();
    assert.match(upHuman.out, /^server {8}up, /m);
  } finally {
    const exit = await srv.stop();
    assert.equal(exit.code, 0, srv.log());
  }

  // below min_free_space: the pool is fine, new snapshots are refused
  const low = await status("--json", "--min-free-space", "99%");
  assert.equal(low.code, 3, low.out);
  assert.equal(low.json!.pool?.mode, "read-write");
  assert.equal(low.json!.pool?.problem?.state, "low_space");

  // read-only: the pool's table reloaded with the read_only feature
  const table = (await sh("dmsetup", "table", t.pool.name)).trim();
  const readOnly = table.replace(/ 1 skip_block_zeroing$/, " 2 skip_block_zeroing read_only");
  assert.notEqual(readOnly, table, table);
  await sh("dmsetup", "reload", t.pool.name, "--table", readOnly);
  await sh("dmsetup", "resume", t.pool.name);
  const ro = await status("--json");
  assert.equal(ro.code, 3, ro.out + ro.err);
  assert.equal(ro.json!.pool?.mode, "read_only");
  assert.equal(ro.json!.pool?.problem?.state, "read_only");
  assert.equal(ro.json!.healthy, false);
  const roHuman = await status();
  assert.equal(roHuman.code, 3);
  assert.match(roHuman.out, /^mode {10}read_only$/m);
  assert.match(
    roHuman.out,
    new RegExp(`^health {8}read_only: pool "${t.pool.name}" is read-only`, "m"),
  );
});
