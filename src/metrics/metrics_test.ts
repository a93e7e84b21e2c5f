import assert from "node:assert/strict";
import { DROPPED_DEFAULT_METRICS, type Inventory, Metrics, type PoolFigures } from "./metrics.ts";
import { METRIC_NAMES, METRIC_PREFIX, POOL_MODES, RECONCILE_ACTIONS } from "./names.ts";
import { parseExposition, samplesOf, valueOf } from "../../testing/prometheus_text.ts";

const N = METRIC_NAMES;

const POOL: PoolFigures = {
  dataUsedBytes: 3 * 65536,
  dataSizeBytes: 100 * 65536,
  metadataUsedBytes: 10 * 4096,
  metadataSizeBytes: 1024 * 4096,
  mode: "out_of_data_space",
  belowLowWater: { data: true, metadata: false },
  lowWaterCrossings: { data: 2, metadata: 0 },
  readAtMs: 1_700_000_000_500,
};

const INVENTORY: Inventory = {
  thinDevices: { creating: 0, ready: 5, deleting: 1, foreign: 0 },
  snapshots: { active: 2, view: 1, committed: 3 },
  templates: 1,
  thinIdsAllocated: 9,
};

Deno.test("metrics: RPCs and dm operations by their labels, with latency histograms", async () => {
  const m = new Metrics({ processMetrics: false });
  m.rpcDone("Prepare", "OK", 0.002);
  m.rpcDone("Prepare", "OK", 0.0004);
  m.rpcDone("Stat", "NOT_FOUND", 0.0001);
  m.dmDone("createThin", "ioctl", 0.001);
  m.dmDone("remove", "ioctl", 0.003, "EBUSY");
  m.dmDone("remove", "ioctl", 0.003);
  const e = parseExposition(await m.text());
  assert.equal(valueOf(e, N.rpcs, { method: "Prepare", code: "OK" }), 2);
  assert.equal(valueOf(e, N.rpcs, { method: "Stat", code: "NOT_FOUND" }), 1);
  assert.equal(valueOf(e, `${N.rpcDuration}_count`, { method: "Prepare", code: "OK" }), 2);
  const sum = valueOf(e, `${N.rpcDuration}_sum`, { method: "Prepare", code: "OK" });
  assert.ok(Math.abs(sum - 0.0024) < 1e-12, `sum ${sum}`);
  assert.equal(
    valueOf(e, `${N.rpcDuration}_bucket`, { method: "Prepare", code: "OK", le: "0.0005" }),
    1,
  );
  assert.equal(valueOf(e, N.dmOperations, { operation: "remove", backend: "ioctl" }), 2);
  assert.equal(valueOf(e, N.dmErrors, { operation: "remove", errno: "EBUSY" }), 1);
  assert.equal(samplesOf(e, N.dmErrors, { operation: "createThin" }).length, 0);
  assert.equal(e.types.get(N.rpcs), "counter");
  assert.equal(e.types.get(N.rpcDuration), "histogram");
  assert.equal(e.types.get(N.dmDuration), "histogram");
});

Deno.test("metrics: the pool, the database and the start are read from their sources at each scrape", async () => {
  const m = new Metrics({ processMetrics: false });
  let reads = 0;
  let pool: PoolFigures | undefined = undefined;
  m.watchPool(() => pool);
  m.watchInventory(() => {
    reads++;
    return INVENTORY;
  });
  let e = parseExposition(await m.text());
  assert.equal(reads, 1, "one database read per scrape");
  assert.equal(samplesOf(e, N.poolDataUsed).length, 0, "no pool figures before a status");
  assert.equal(samplesOf(e, N.poolMode).length, 0);
  pool = POOL;
  m.setReconciled({ deleted: 2, foreign: 1 });
  m.setBuildInfo({ version: "0.1.0", denoVersion: "2.8.3", transport: "native" });
  m.setBuildInfo({ dmBackend: "ioctl" });
  e = parseExposition(await m.text());
  assert.equal(reads, 2);
  assert.equal(valueOf(e, N.poolDataUsed), 3 * 65536);
  assert.equal(valueOf(e, N.poolDataSize), 100 * 65536);
  assert.equal(valueOf(e, N.poolMetadataUsed), 10 * 4096);
  assert.equal(valueOf(e, N.poolMetadataSize), 1024 * 4096);
  assert.equal(valueOf(e, N.poolStatusTime), 1_700_000_000.5);
  for (const mode of POOL_MODES) {
    assert.equal(valueOf(e, N.poolMode, { mode }), mode === "out_of_data_space" ? 1 : 0);
  }
  assert.equal(valueOf(e, N.poolBelowLowWater, { space: "data" }), 1);
  assert.equal(valueOf(e, N.poolBelowLowWater, { space: "metadata" }), 0);
  assert.equal(valueOf(e, N.poolLowWaterCrossings, { space: "data" }), 2);
  assert.equal(valueOf(e, N.thinDevices, { state: "ready" }), 5);
  assert.equal(valueOf(e, N.thinDevices, { state: "deleting" }), 1);
  assert.equal(valueOf(e, N.snapshots, { kind: "committed" }), 3);
  assert.equal(valueOf(e, N.snapshots, { kind: "view" }), 1);
  assert.equal(valueOf(e, N.templateDevices), 1);
  assert.equal(valueOf(e, N.thinIdsAllocated), 9);
  for (const action of RECONCILE_ACTIONS) {
    const expected = action === "deleted" ? 2 : action === "foreign" ? 1 : 0;
    assert.equal(valueOf(e, N.reconciled, { action }), expected, action);
  }
  assert.deepEqual(samplesOf(e, N.buildInfo)[0], {
    name: N.buildInfo,
    labels: { version: "0.1.0", deno_version: "2.8.3", dm_backend: "ioctl", transport: "native" },
    value: 1,
  });
});

Deno.test("metrics: a source that throws leaves out its metrics, not the scrape", async () => {
  const failures: string[] = [];
  const m = new Metrics({
    processMetrics: false,
    onSourceError: (source, err) => failures.push(`${source}: ${(err as Error).message}`),
  });
  m.watchPool(() => {
    throw new Error("pool gone");
  });
  m.watchInventory(() => {
    throw new Error("database is not open");
  });
  m.rpcDone("Stat", "OK", 0.001);
  const e = parseExposition(await m.text());
  assert.equal(valueOf(e, N.rpcs, { method: "Stat", code: "OK" }), 1);
  assert.equal(samplesOf(e, N.snapshots).length, 0);
  assert.equal(samplesOf(e, N.poolDataUsed).length, 0);
  assert.ok(failures.includes("inventory: database is not open"), failures.join("\n"));
  assert.ok(failures.includes("pool: pool gone"), failures.join("\n"));
});

Deno.test("metrics: every name of ours is prefixed, with its unit or _total", () => {
  for (const name of Object.values(METRIC_NAMES)) {
    assert.match(name, /^(devmapper_snapshotter_|process_)[a-z_]+$/);
    if (!name.startsWith(METRIC_PREFIX)) continue;
    const isCounter = name.endsWith("_total");
    const hasUnit = /_(seconds|bytes)$/.test(name);
    const isCount = /_(devices|snapshots|allocated|at_start|info|mode|low_water)$/.test(name);
    assert.ok(isCounter || hasUnit || isCount, name);
  }
});

/** Figures of this process from /proc/self, to judge prom-client's under Deno. */
async function procSelf() {
  const status = await Deno.readTextFile("/proc/self/status");
  const rssBytes = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024;
  const stat = (await Deno.readTextFile("/proc/self/stat")).split(") ")[1].split(" ");
  // fields after the command: state is field 3, so field n is at index n - 3
  const ticks = 100; // USER_HZ on Linux
  const cpuSeconds = (Number(stat[14 - 3]) + Number(stat[15 - 3])) / ticks;
  const btime = Number(/^btime (\d+)/m.exec(await Deno.readTextFile("/proc/stat"))![1]);
  const startSeconds = btime + Number(stat[22 - 3]) / ticks;
  let fds = 0;
  for await (const _ of Deno.readDir("/proc/self/fd")) fds++;
  const limits = await Deno.readTextFile("/proc/self/limits");
  const maxFds = Number(/^Max open files\s+(\d+)/m.exec(limits)![1]);
  return { rssBytes, cpuSeconds, startSeconds, fds, maxFds };
}

Deno.test({
  name: "metrics: the process metrics are right under Deno (checked against /proc/self)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const m = new Metrics();
    const before = await procSelf();
    const e = parseExposition(await m.text());
    const after = await procSelf();
    const rss = valueOf(e, N.processResidentMemory);
    assert.ok(rss > 0.7 * before.rssBytes && rss < 1.3 * after.rssBytes, `rss ${rss}`);
    const cpu = valueOf(e, N.processCpu);
    assert.ok(cpu >= before.cpuSeconds - 0.05 && cpu <= after.cpuSeconds + 0.05, `cpu ${cpu}`);
    const start = valueOf(e, N.processStartTime);
    assert.ok(
      Math.abs(start - before.startSeconds) < 0.02,
      `start ${start} ${before.startSeconds}`,
    );
    const fds = valueOf(e, N.processOpenFds);
    assert.ok(Math.abs(fds - before.fds) <= 3, `fds ${fds} vs ${before.fds}`);
    assert.equal(valueOf(e, N.processMaxFds), before.maxFds);
    for (const name of DROPPED_DEFAULT_METRICS) {
      assert.equal(samplesOf(e, name).length, 0, `${name} dropped`);
      assert.equal(e.types.has(name), false, `${name} dropped`);
    }
  },
});
