/**
 * `deno task bench:scale`: how our snapshotter behaves with many snapshots. Boots the test
 * kernel once and, inside, runs our server (`main.ts serve`, root_path on ext4 on a loop
 * device, its own thin-pool) behind one containerd (proxy plugin `dmsnap`), and measures the
 * same figures twice (bench/scale_phase.ts):
 *
 * 1. with a small database: the 10 snapshots containerd knows (a chain of 8 committed layers,
 *    an active snapshot and a view, created through containerd's API);
 * 2. after `--snapshots N` more were created straight on our socket (chains of committed
 *    layers plus ~20 active snapshots and a few views, with containerd-like keys and labels;
 *    bench/scale_population.ts), which containerd does not know.
 *
 * Prints each figure for both, and the ratio large/small: start-up and reconciliation times
 * (median over restarts), RSS, List (direct and through containerd), Stat and Mounts latency,
 * Prepare/Commit/Remove latency and server CPU per call, fsyncs per operation (strace), and a
 * GC-like sequence. A script that prints numbers, not a test.
 *
 * Flags: `--snapshots <n>` (default 10000), `--chain <n>` (committed layers per chain, default
 * 10), `--active <n>` (default 20), `--views <n>` (default 5), `--restarts <n>` (default 5),
 * `--calls <n>` (Stats and Mounts timed, default 300), `--ops <n>` (Prepare+Commit pairs timed,
 * default 30), `--traced-ops <n>` (operations of each kind counted under strace, default 10;
 * 0 skips strace), `--no-warmup` (skip the unreported first pass over the small database, which
 * warms the guest: the first restarts of a run are the slowest).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { connectSnapshots, type SnapshotsClient } from "../testing/snapshots_client.ts";
import { removeTree, startContainerd } from "../tests/e2e/containerd.ts";
import { BASE_IMAGE_SIZE, PROXY_SNAPSHOTTER } from "../tests/e2e/environment.ts";
import { createTestPool } from "../tests/kernel/fixtures.ts";
import { connectContainerd, type ContainerdApi } from "./containerd_api.ts";
import { createExt4Loop } from "./ext4_loop.ts";
import { touchGuestMemory } from "./guest_memory.ts";
import { type Figure, type Fixture, measurePhase } from "./scale_phase.ts";
import {
  containerLabels,
  layerLabels,
  populate,
  type Population,
  randomHex,
} from "./scale_population.ts";
import { createScaleServer, type StartTiming } from "./scale_server.ts";
import { fmt, formatColumns, median } from "./stats.ts";
import { straceAvailable } from "./syscall_count.ts";
import { benchInKernel } from "./in_kernel.ts";
import { buildGolist } from "./golist.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    snapshots: { type: "string", default: "10000" },
    chain: { type: "string", default: "10" },
    active: { type: "string", default: "20" },
    views: { type: "string", default: "5" },
    restarts: { type: "string", default: "5" },
    calls: { type: "string", default: "300" },
    ops: { type: "string", default: "30" },
    "traced-ops": { type: "string", default: "10" },
    "no-warmup": { type: "boolean", default: false },
  },
});

/** containerd namespace of the snapshots containerd knows. */
const NAMESPACE = "bench-scale";

/** Layers in the chain containerd knows; with its active snapshot and view, 10 snapshots. */
const FIXTURE_LAYERS = 8;

/**
 * No automatic garbage collection in containerd during the run. containerd only walks a
 * snapshotter to collect after one of its snapshots left containerd's metadata, and nothing
 * here removes one through containerd; were it to walk ours, it would remove every snapshot
 * created straight on the socket (containerd does not know them).
 */
const NO_BACKGROUND_GC = {
  "io.containerd.gc.v1.scheduler": {
    mutation_threshold: 1_000_000,
    deletion_threshold: 1_000_000,
    pause_threshold: 0.000001,
  },
};

function intFlag(name: Exclude<keyof typeof values, "no-warmup">): number {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 0) {
    throw new Error(`Cannot use --${name} ${values[name]}: not a whole number ≥ 0`);
  }
  return n;
}

/** A committed chain, an active snapshot and a view, created through containerd's API. */
async function createFixture(api: ContainerdApi, client: SnapshotsClient): Promise<Fixture> {
  const call = (method: "Prepare" | "Commit" | "View", request: Record<string, unknown>) =>
    api.snapshots(method, PROXY_SNAPSHOTTER, request, { namespace: NAMESPACE });
  let parent = "";
  for (let i = 0; i < FIXTURE_LAYERS; i++) {
    const digest = randomHex();
    const key = `extract-${i} sha256:${digest}`;
    await call("Prepare", { key, parent, labels: layerLabels(digest) });
    await call("Commit", { name: `sha256:${digest}`, key, labels: layerLabels(digest) });
    parent = `sha256:${digest}`;
  }
  await call("Prepare", { key: "scale-rootfs", parent, labels: containerLabels("scale") });
  await call("View", { key: "scale-view", parent, labels: containerLabels("scale-view") });
  const { infos } = await client.list();
  const tip = infos.find((i) => i.kind === "committed" && i.name.endsWith(`/${parent}`));
  const active = infos.find((i) => i.kind === "active");
  if (!tip || !active || infos.length !== FIXTURE_LAYERS + 2) {
    throw new Error(
      `Cannot find containerd's snapshots on our server: it lists ${infos.length} ` +
        `(${infos.map((i) => i.name).join(", ")})`,
    );
  }
  return { tip: tip.name, active: active.name, count: infos.length };
}

/** Medians of the first and last `window` values. */
function ends(ms: readonly number[]): { window: number; first: number; last: number } {
  const window = Math.max(1, Math.min(500, Math.floor(ms.length / 4)));
  return { window, first: median(ms.slice(0, window)), last: median(ms.slice(-window)) };
}

function populationReport(p: Population): string[] {
  const pr = ends(p.prepareMs);
  const co = ends(p.commitMs);
  const s = p.totalMs / 1000;
  return [
    `Population: ${p.committed} committed layers (chains of ${values.chain}), ${p.active} ` +
    `active, ${p.views} views, created straight on the socket one call at a time in ` +
    `${s.toFixed(0)} s (${((p.committed + p.active + p.views) / s).toFixed(1)} snapshots/s).`,
    `  Prepare (child) median ms, first ${pr.window} vs last ${pr.window}: ` +
    `${fmt(pr.first, 2)} → ${fmt(pr.last, 2)} (×${fmt(pr.last / pr.first, 2)})`,
    `  Commit median ms, first ${co.window} vs last ${co.window}: ` +
    `${fmt(co.first, 2)} → ${fmt(co.last, 2)} (×${fmt(co.last / co.first, 2)})`,
  ];
}

/** The two passes side by side, one table per section. */
function figuresReport(small: Figure[], large: Figure[], labels: [string, string]): string[] {
  const out: string[] = [];
  let rows: string[][] = [];
  let section = "";
  const flush = () => {
    if (rows.length > 1) out.push("", section, formatColumns(rows));
  };
  small.forEach((a, i) => {
    const b = large[i];
    if (!b || b.name !== a.name) {
      throw new Error(`Cannot line up the passes: "${a.name}" vs "${b?.name}"`);
    }
    if (a.section !== section) {
      flush();
      section = a.section;
      rows = [["figure", labels[0], labels[1], "ratio"]];
    }
    rows.push([a.name, fmt(a.value, a.digits), fmt(b.value, b.digits), fmt(b.value / a.value, 2)]);
  });
  flush();
  return out;
}

function firstStartLine(t: StartTiming): string {
  return `First start on a fresh root_path (new database): \`serving\` after ` +
    `${fmt(t.servingMs, 0)} ms (reconciliation ${fmt(t.reconcileMs, 1)} ms).`;
}

async function inKernel(): Promise<void> {
  const started = performance.now();
  const count = intFlag("snapshots");
  const log = (m: string) => console.log(`  ${m}`);
  const traced = intFlag("traced-ops") > 0 && await straceAvailable() ? intFlag("traced-ops") : 0;
  log(`touched ${await touchGuestMemory()} MiB of guest memory once (see guest_memory.ts)`);
  const dir = await Deno.makeTempDir({ dir: "/run", prefix: "scale-" });
  await using _dir = { [Symbol.asyncDispose]: () => removeTree(dir) }; // disposed last
  await using root = await createExt4Loop(dir, 512);
  log(`root_path on ext4 on ${root.device}`);
  await using pool = await createTestPool({ dataMb: 1024, metaMb: 64, prefix: "scale" });
  log(`created thin-pool ${pool.name}`);
  await using server = await createScaleServer({
    dir: `${dir}/dmsnap`,
    poolName: pool.name,
    rootPath: `${root.mountPoint}/root`,
    baseImageSize: BASE_IMAGE_SIZE,
  });
  const firstStart = await server.start();
  log(`our server is serving on ${server.socket}`);
  await using ctd = await startContainerd({
    dir: `${dir}/containerd`,
    proxySnapshotters: { [PROXY_SNAPSHOTTER]: server.socket },
    pluginSettings: NO_BACKGROUND_GC,
  });
  log(`containerd is listening on ${ctd.address}`);
  const api = connectContainerd(ctd.address);
  const client = connectSnapshots(server.socket);
  try {
    const fixture = await createFixture(api, client);
    log(`containerd created ${fixture.count} snapshots on our server`);
    const ctx = {
      server,
      ctd,
      api,
      namespace: NAMESPACE,
      fixture,
      restarts: intFlag("restarts"),
      calls: intFlag("calls"),
      ops: intFlag("ops"),
      tracedOps: traced,
      log,
    };
    if (!values["no-warmup"]) {
      log(`warm-up pass (not reported): ${fixture.count} snapshots`);
      await measurePhase(ctx);
    }
    log(`pass 1: ${fixture.count} snapshots`);
    const small = await measurePhase(ctx);
    log(`creating ${count} snapshots straight on the socket`);
    const population = await populate({
      client,
      count,
      chainLength: intFlag("chain"),
      active: intFlag("active"),
      views: intFlag("views"),
      namespace: "default",
      log,
    });
    log(`pass 2: ${count + fixture.count} snapshots`);
    const large = await measurePhase(ctx);

    const out = (s = "") => console.log(s);
    out();
    out(firstStartLine(firstStart));
    for (const line of populationReport(population)) out(line);
    const labels: [string, string] = [`${fixture.count} rows`, `${count + fixture.count} rows`];
    for (const line of figuresReport(small, large, labels)) out(line);
    out();
    out("Notes:");
    out(
      `- ratio = ${labels[1]} / ${labels[0]}. Latencies are client-side round trips from this ` +
        "(grpc-js) process on the guest's one CPU; server CPU is utime+stime of the server " +
        "process (/proc/<pid>/stat, 10 ms ticks, summed over the calls and divided by their " +
        "number).",
    );
    out(
      "- containerd lists only what its metadata holds (the 10 snapshots it created): its " +
        "List is its own bolt DB walk plus one backend Stat per snapshot, so it is comparable " +
        "across the passes (same 10 snapshots, larger backend), not with the direct List. " +
        "containerd's garbage collection, in contrast, lists everything the backend has " +
        "(the direct List row) whenever one of its snapshots of ours was removed.",
    );
    out(
      values["no-warmup"]
        ? "- No warm-up pass (--no-warmup): the first pass pays for a cold guest."
        : "- A first pass over the small database ran before and is not reported: it warms " +
          "the guest (the first restarts of a run are the slowest). Most of the guest's memory " +
          "was touched once before anything ran (bench/guest_memory.ts).",
    );
    out(
      traced > 0
        ? `- fsyncs: strace -f -c -e trace=fsync,fdatasync -p <server> around ${traced} calls ` +
          "of each kind (strace slows the calls; they are not timed)."
        : "- fsyncs: not counted (strace unavailable or --traced-ops 0).",
    );
    out(
      "- root_path is ext4 on a loop device backed by a file on the guest's tmpfs: fsync " +
        "reaches ext4's journal and the loop device, not a disk, so the counts are real and " +
        "their cost is not.",
    );
    out(`\nbench took ${((performance.now() - started) / 1000).toFixed(0)} s inside the kernel`);
  } finally {
    client.close();
    api.close();
  }
}

if (import.meta.main) {
  await benchInKernel({
    script: "bench/scale.ts",
    what: "the scale benchmark",
    timeoutMs: 4 * 60 * 60_000,
    measure: inKernel,
    prepare: buildGolist,
  });
}
