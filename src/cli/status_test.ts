import assert from "node:assert/strict";
import { join } from "node:path";
import type { Config } from "../config/config.ts";
import type { PoolStatus } from "../dm/types.ts";
import { type DevmapperSnapshotter, openSnapshotter } from "../snapshotter/snapshotter.ts";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import { memorySnapshotterOptions } from "../../testing/memory_snapshotter_options.ts";
import { defaultConfig } from "../../testing/config_fixtures.ts";
import { startTestServer } from "../../testing/test_server.ts";
import { type CliOptions, runCli } from "./cli.ts";
import { runStatus, type StatusReport } from "./status.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_UNHEALTHY } from "./usage.ts";

const POOL = "statuspool";

/** A root with a database of 1 committed, 1 active and 1 view snapshot on a memory pool. */
async function fixture(): Promise<{ dm: MemoryDeviceMapper; root: string } & AsyncDisposable> {
  const root = await Deno.makeTempDir({ prefix: "dmsnap-status-" });
  const dm = new MemoryDeviceMapper();
  dm.createPool(POOL);
  const s = await open(dm, root);
  await s.prepare("layer", "");
  await s.commit("base", "layer");
  await s.prepare("container", "base");
  await s.view("peek", "base");
  await s.close();
  return {
    dm,
    root,
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  };
}

function open(dm: MemoryDeviceMapper, root: string): Promise<DevmapperSnapshotter> {
  return openSnapshotter(memorySnapshotterOptions({ rootPath: root, poolName: POOL, dm }));
}

function config(root: string, o: Partial<Config> = {}): Config {
  return { ...defaultConfig(POOL), rootPath: root, address: join(root, "s.sock"), ...o };
}

interface Run {
  code: number;
  out: string;
  err: string;
}

/** `status` of `c` on `dm`, flags `--json` or none. */
async function status(
  dm: MemoryDeviceMapper,
  c: Config,
  o: { json?: boolean; probeTimeoutMs?: number } = {},
): Promise<Run> {
  let out = "";
  let err = "";
  const args = [
    "--pool-name",
    c.poolName,
    "--root-path",
    c.rootPath,
    "--address",
    c.address,
    "--min-free-space",
    freeSpaceFlag(c),
  ];
  if (o.json) args.push("--json");
  const code = await runStatus(args, {
    stdout: (t) => (out += t),
    stderr: (t) => (err += t),
    defaultConfigPath: "/nonexistent/devmapper-snapshotter.toml",
    logWrite: () => {},
    deviceMapper: () => dm,
    probeTimeoutMs: o.probeTimeoutMs,
  });
  return { code, out, err };
}

function freeSpaceFlag(c: Config): string {
  const f = c.minFreeSpace;
  return "percent" in f ? `${f.percent}%` : String(f.bytes);
}

async function report(dm: MemoryDeviceMapper, c: Config, probeTimeoutMs?: number) {
  const r = await status(dm, c, { json: true, probeTimeoutMs });
  return { ...r, report: JSON.parse(r.out) as StatusReport };
}

async function dirEntries(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

Deno.test("status, server down: the pool from dm, snapshots, devices and templates from the database read-only", async () => {
  await using f = await fixture();
  const before = await dirEntries(f.root);
  const { code, report: r, err } = await report(f.dm, config(f.root));
  assert.equal(code, EXIT_OK, err);
  assert.equal(err, "");
  const usage = f.dm.poolUsage(POOL);
  const block = f.dm.blockBytes(POOL);
  assert.deepEqual(r, {
    healthy: true,
    server: { address: join(f.root, "s.sock"), state: "down" },
    pool: {
      name: POOL,
      mode: "read-write",
      needsCheck: false,
      dataUsedBytes: usage.usedDataBlocks * block,
      dataTotalBytes: usage.totalDataBlocks * block,
      metadataUsedBytes: usage.usedMetadataBlocks * 4096,
      metadataTotalBytes: usage.totalMetadataBlocks * 4096,
      blockBytes: block,
      transactionId: 0,
      minFreeSpace: "10%",
      problem: null,
    },
    snapshots: { committed: 1, active: 1, view: 1, source: "database" },
    // the template, the committed layer's device (the view maps it too), the active one's
    thinDevices: { total: 3, active: 2 },
    templates: 1,
    database: { path: join(f.root, "metadata.db"), read: true },
    errors: [],
  });
  assert.equal(f.dm.thinDevices(POOL).length, 2, "the active snapshot's and the view's");
  assert.deepEqual(await dirEntries(f.root), before, "nothing created beside the database");

  const human = await status(f.dm, config(f.root));
  assert.equal(human.code, EXIT_OK);
  const rows = human.out.trimEnd().split("\n");
  assert.deepEqual(rows.map((l) => l.split(/\s{2,}/)[0]), [
    "server",
    "pool",
    "mode",
    "data",
    "metadata",
    "health",
    "snapshots",
    "thin devices",
    "templates",
  ]);
  const column = rows[0].indexOf("down");
  for (const row of rows) assert.ok(/^\S/.test(row.slice(column)) && row[column - 1] === " ", row);
  assert.match(human.out, /^server {8}down, \S+s\.sock$/m);
  assert.match(human.out, /^mode {10}read-write$/m);
  assert.match(human.out, /^data {10}\d+(\.\d)?[KMG]iB of 256MiB used \(\d+\.\d%\)$/m);
  assert.match(human.out, /^health {8}ok \(min_free_space 10%\)$/m);
  assert.match(human.out, /^snapshots {5}1 committed, 1 active, 1 view \(from the database\)$/m);
  assert.match(human.out, /^thin devices {2}3, 2 active$/m);
  assert.match(human.out, /^templates {5}1$/m);
});

Deno.test("status: an unhealthy pool exits 3 with its mode and the reason", async () => {
  await using f = await fixture();
  const cases: [PoolStatus["mode"], boolean, string, string][] = [
    ["ro", false, "read_only", "read_only"],
    ["out_of_data_space", false, "out_of_data_space", "out_of_data_space"],
    ["rw", true, "needs_check", "needs_check"],
    ["fail", false, "fail", "failed"],
  ];
  for (const [mode, needsCheck, shown, state] of cases) {
    f.dm.setPoolMode(POOL, mode, needsCheck);
    const { code, report: r } = await report(f.dm, config(f.root));
    assert.equal(code, EXIT_UNHEALTHY, shown);
    assert.equal(r.healthy, false);
    assert.equal(r.pool?.mode, shown);
    assert.equal(r.pool?.problem?.state, state);
    assert.match(r.pool!.problem!.message, new RegExp(`pool "${POOL}"`));
    assert.deepEqual(r.snapshots, { committed: 1, active: 1, view: 1, source: "database" });
    const human = await status(f.dm, config(f.root));
    assert.equal(human.code, EXIT_UNHEALTHY);
    assert.match(human.out, new RegExp(`^mode +${shown}$`, "m"));
    assert.match(human.out, new RegExp(`^health +${state}: pool "${POOL}"`, "m"));
  }
  f.dm.setPoolMode(POOL, undefined);
  assert.equal((await status(f.dm, config(f.root))).code, EXIT_OK, "healthy again");
});

Deno.test("status: a read-write pool below min_free_space exits 3 (low_space)", async () => {
  await using f = await fixture();
  const { code, report: r } = await report(
    f.dm,
    config(f.root, { minFreeSpace: { bytes: 1024 ** 3 } }), // more than the 256 MiB pool
  );
  assert.equal(code, EXIT_UNHEALTHY);
  assert.equal(r.pool?.mode, "read-write");
  assert.equal(r.pool?.minFreeSpace, "1GiB");
  assert.equal(r.pool?.problem?.state, "low_space");
  assert.match(r.pool!.problem!.message, /low on data( and metadata)? space/);
  const off = await report(f.dm, config(f.root, { minFreeSpace: { bytes: 0 } }));
  assert.equal(off.code, EXIT_OK, "min_free_space 0: the guard is off");
});

Deno.test("status, server up: snapshots from its List; the database it holds is not needed", async () => {
  await using f = await fixture();
  const s = await open(f.dm, f.root); // holds the database, as the server process does
  await using server = await startTestServer({ snapshotter: s, prefix: "dmsnap-status-srv-" });
  await s.prepare("another", "base");
  const c = config(f.root, { address: server.path });
  const { code, report: r, err } = await report(f.dm, c);
  assert.equal(code, EXIT_OK, err);
  assert.deepEqual(r.server, { address: server.path, state: "up" });
  assert.deepEqual(r.snapshots, { committed: 1, active: 2, view: 1, source: "server" });
  assert.deepEqual(r.thinDevices, { total: null, active: 3 });
  assert.equal(r.templates, null);
  assert.deepEqual(r.database, { path: join(f.root, "metadata.db"), read: false });
  assert.deepEqual(r.errors, []);
  const human = await status(f.dm, c);
  assert.match(human.out, /^server {8}up, /m);
  assert.match(human.out, /^snapshots {5}1 committed, 2 active, 1 view \(from the server\)$/m);
  assert.match(
    human.out,
    /^thin devices {2}3 active; total unknown \(the running server holds the database\)$/m,
  );
  assert.match(human.out, /^templates {5}unknown \(the running server holds the database\)$/m);
});

Deno.test("status: a server that does not answer, holding the database, exits 1 with both reasons", async () => {
  await using f = await fixture();
  const s = await open(f.dm, f.root); // holds the database
  const address = join(f.root, "hung.sock");
  const listener = Deno.listen({ transport: "unix", path: address });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn); // accepts, never answers
  })();
  try {
    const { code, report: r } = await report(f.dm, config(f.root, { address }), 300);
    assert.equal(code, EXIT_FAILURE);
    assert.equal(r.server.state, "up");
    assert.match(r.server.error!, /List failed/);
    assert.equal(r.snapshots, null);
    assert.equal(r.database.read, false);
    assert.match(r.database.error!, /in use: a running devmapper-snapshotter holds it/);
    assert.equal(r.errors.length, 2);
    assert.equal(r.pool?.mode, "read-write", "the pool is still reported");
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const c of held) c.close();
    await s.close();
  }
});

Deno.test("status: a missing database is an error naming it (exit 1), and is not created", async () => {
  const root = await Deno.makeTempDir({ prefix: "dmsnap-status-" });
  try {
    const dm = new MemoryDeviceMapper();
    dm.createPool(POOL);
    const r = await status(dm, config(root), { json: true });
    assert.equal(r.code, EXIT_FAILURE);
    const db = join(root, "metadata.db");
    const message = `Cannot read metadata database "${db}": it is missing (has the server run ` +
      `with root_path "${root}"?); nothing was created`;
    const parsed = JSON.parse(r.out) as StatusReport;
    assert.deepEqual(parsed.database, { path: db, read: false, error: message });
    assert.deepEqual(parsed.errors, [message]);
    assert.equal(parsed.snapshots, null);
    assert.equal(parsed.pool?.mode, "read-write");
    assert.equal(r.err, `devmapper-snapshotter: status: ${message}\n`);
    assert.deepEqual(await dirEntries(root), [], "nothing created");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("status: a missing pool is an error (exit 1); the database is still read", async () => {
  await using f = await fixture();
  const r = await report(new MemoryDeviceMapper(), config(f.root));
  assert.equal(r.code, EXIT_FAILURE);
  assert.equal(r.report.pool, null);
  assert.deepEqual(r.report.errors, [`Cannot open pool "${POOL}": no such device`]);
  assert.equal(r.report.snapshots?.source, "database");
  assert.match(r.err, /status: Cannot open pool "statuspool": no such device/);
});

Deno.test("status through the command line: help, usage errors, --json", async () => {
  let out = "";
  let err = "";
  const o: CliOptions = {
    stdout: (t) => (out += t),
    stderr: (t) => (err += t),
    defaultConfigPath: "/nonexistent/devmapper-snapshotter.toml",
    logWrite: () => {},
  };
  assert.equal(await runCli(["status", "--help"], o), EXIT_OK);
  assert.match(out, /^Usage: devmapper-snapshotter status/);
  assert.match(out, /Exit status: 0 healthy; 3 the pool cannot take new snapshots/);
  out = "";
  assert.equal(await runCli(["help", "status"], o), EXIT_OK);
  assert.match(out, /^Usage: devmapper-snapshotter status/);
  out = "";
  assert.equal(await runCli(["--help"], o), EXIT_OK);
  assert.match(out, /^ {2}status {11}show the pool/m);
  assert.equal(await runCli(["status", "extra"], o), 2);
  assert.match(err, /status: unexpected argument 'extra'/);
  assert.equal(await runCli(["status", "--pool-name", "p", "--log-format", "x"], o), 2);

  await using f = await fixture();
  out = "";
  const code = await runCli(
    [
      "status",
      "--pool-name",
      POOL,
      "--root-path",
      f.root,
      "--address",
      `${f.root}/s.sock`,
      "--json",
    ],
    { ...o, deviceMapper: () => f.dm },
  );
  assert.equal(code, EXIT_OK, err);
  assert.equal(JSON.parse(out).snapshots.committed, 1);
});
