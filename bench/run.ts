/**
 * `deno task bench`: boots the test kernel once and, inside, runs one containerd with both
 * its built-in devmapper snapshotter and our proxy snapshotter (`dmsnap`), each on its own
 * fresh thin-pool and in its own namespace, and compares them:
 *
 * - the snapshot workload (bench/workload.ts) through containerd's Snapshots API on its gRPC
 *   socket — containerd's metadata layer plus the snapshotter, no `ctr` process per call;
 * - `ctr images import` and `ctr run --rm` wall times.
 *
 * Prints median and p90 per operation, the ratio ours/built-in, process creations per call
 * (/proc/stat; an estimate), the processes our server spawned (from its debug log, exact),
 * where our time goes (handler vs. the rest), memory, and a verdict per operation.
 *
 * Flags: `--layers <n>` (chain length and number of views, default 20), `--rounds <n>`
 * (snapshot-workload rounds, default 4, after one small warm-up round), `--runs <n>` (imports
 * and container runs per snapshotter, default 5), `--lists <n>` (List calls per round,
 * default 3), `--no-write` (skip writing a file through a mount of each active snapshot),
 * `--grpc-transport <native|grpc-js>` (our server's gRPC implementation, default native),
 * `--server-log-level <level>` (default debug; trace adds each spawn's command and time, at
 * some cost to ours; info or above loses the server-side figures), `--metrics-cycles <n>`
 * (call cycles per round of the metrics phase, default 150: per-call cost of our server with
 * `--metrics-address` off and on, bench/metrics_cost.ts).
 * A script that prints numbers, not a test.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { connectSnapshots } from "../testing/snapshots_client.ts";
import { BUILTIN_SNAPSHOTTER, PROXY_SNAPSHOTTER, startE2eEnv } from "../tests/e2e/environment.ts";
import { buildTestImage } from "../tests/e2e/image.ts";
import { serveArgs } from "../tests/e2e/snapshotter_server.ts";
import { connectContainerd } from "./containerd_api.ts";
import {
  addRoundTotals,
  breakdownTable,
  BUILTIN,
  mainTable,
  OURS,
  ROUND_TOTAL,
  slowerExplanations,
} from "./report.ts";
import { attributeByTime, parseLog, summarize, type Window } from "./server_log.ts";
import { fmt, median, percentile } from "./stats.ts";
import { spawnProbe } from "./spawn_probe.ts";
import {
  type BenchContext,
  ctrRound,
  type Results,
  type Sample,
  SIZE_LABEL_OPS,
  sizeLabelRound,
  SNAPSHOT_OPS,
  snapshotRound,
  type Target,
} from "./workload.ts";
import { benchInKernel } from "./in_kernel.ts";
import { measureMetricsCost, metricsCostTable } from "./metrics_cost.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    layers: { type: "string", default: "20" },
    rounds: { type: "string", default: "4" },
    runs: { type: "string", default: "5" },
    lists: { type: "string", default: "3" },
    "no-write": { type: "boolean", default: false },
    "server-log-level": { type: "string", default: "debug" },
    "grpc-transport": { type: "string", default: "native" },
    "metrics-cycles": { type: "string", default: "150" },
  },
});

/**
 * containerd 1.6 collects garbage shortly after any deletion (deletion_threshold 0), after
 * 100 other metadata changes, and then periodically while deletions are pending. Backend
 * removals would then run in the background during whichever call came next. These settings
 * push all automatic collections out of the run; the workload collects synchronously (lease
 * delete with `sync`), so "remove" is containerd's metadata only and "gc" is every backend
 * Remove.
 */
const NO_BACKGROUND_GC = {
  "io.containerd.gc.v1.scheduler": {
    mutation_threshold: 1_000_000,
    deletion_threshold: 1_000_000,
    pause_threshold: 0.000001,
  },
};

/** Where our server serves `/metrics` in the metrics phase (inside the test kernel). */
const METRICS_ADDRESS = "127.0.0.1:19478";

const TARGETS: readonly Target[] = [
  { label: BUILTIN, snapshotter: BUILTIN_SNAPSHOTTER, namespace: "bench-builtin" },
  { label: OURS, snapshotter: PROXY_SNAPSHOTTER, namespace: "bench-dmsnap" },
];

/** Where our server's stderr (its log) goes: beside its config file. */
function serverLogPath(configPath: string): string {
  return join(dirname(configPath), "server-stderr.log");
}

async function rssKib(pid: number | undefined): Promise<number> {
  if (pid === undefined) return NaN;
  const m = /^VmRSS:\s+(\d+) kB/m.exec(await Deno.readTextFile(`/proc/${pid}/status`));
  return m ? Number(m[1]) : NaN;
}

/** A gRPC hop with no containerd: Stats of missing keys sent straight to our server. */
async function directHop(socket: string, n: number): Promise<{ ms: number[]; windows: Window[] }> {
  const client = connectSnapshots(socket);
  const ms: number[] = [];
  const windows: Window[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const start = Date.now();
      const t0 = performance.now();
      const found = await client.stat(`bench-direct-missing-${i}`).then(() => true, () => false);
      ms.push(performance.now() - t0);
      windows.push({ start, end: Date.now() });
      if (found) throw new Error(`bench-direct-missing-${i} exists on our server`);
    }
  } finally {
    client.close();
  }
  return { ms, windows };
}

/**
 * Attributes our server's log lines to the measured calls by time (see server_log.ts): sets
 * `server` on every sample of ours. Returns the RPCs our server answered during built-in
 * calls (should be none), those outside every measured call (untimed steps: warm-up,
 * `ctr images rm --sync`, …), and the handler times of the direct hops.
 */
async function attachServerWork(
  results: Results,
  logPath: string,
  direct: Window[],
): Promise<{ strays: number; outside: number; directHandler: number[] }> {
  const tagged: { window: Window; label: string; sample?: Sample }[] = [];
  for (const [label, byOp] of results) {
    for (const samples of byOp.values()) {
      for (const s of samples) {
        if (Number.isFinite(s.start)) tagged.push({ window: s, label, sample: s });
      }
    }
  }
  for (const window of direct) tagged.push({ window, label: "direct" });
  tagged.sort((a, b) => a.window.start - b.window.start);
  const { perWindow, outside } = attributeByTime(
    parseLog(await Deno.readTextFile(logPath)),
    tagged.map((t) => t.window),
  );
  let strays = 0;
  const directHandler: number[] = [];
  tagged.forEach((t, i) => {
    const work = summarize(perWindow[i]);
    if (t.label === OURS && t.sample) t.sample.server = work;
    else if (t.label === "direct") directHandler.push(work.handlerMs);
    else strays += work.rpcs;
  });
  return { strays, outside: summarize(outside).rpcs, directHandler };
}

async function inKernel(): Promise<void> {
  const started = performance.now();
  const layers = Number(values.layers);
  const rounds = Number(values.rounds);
  const runs = Number(values.runs);
  const lists = Number(values.lists);
  const serverLogLevel = values["server-log-level"];
  const log = (m: string) => console.log(`  ${m}`);
  /** Our server's `--metrics-address` at its next (re)start; none for the workload. */
  let metricsAddress: string | undefined;
  const imageDir = await Deno.makeTempDir({ prefix: "bench-image-" });
  const mountDir = await Deno.makeTempDir({ prefix: "bench-mnt-" });
  const image = await buildTestImage({ dir: imageDir, ref: "docker.io/library/dmsnap-bench:1" });
  await using env = await startE2eEnv({
    builtin: true,
    proxy: true,
    log,
    containerdPluginSettings: NO_BACKGROUND_GC,
    // The server's log goes straight to a file: through the harness's pipe, every line
    // would wake this process (on the guest's one CPU) while the next call is being timed.
    serverCommand: (config, socket) => [
      "sh",
      "-c",
      `exec "$0" "$@" 2>>"${serverLogPath(config)}"`,
      Deno.execPath(),
      ...serveArgs(config, socket),
      "--log-level",
      serverLogLevel,
      "--grpc-transport",
      values["grpc-transport"],
      ...(metricsAddress ? ["--metrics-address", metricsAddress] : []),
    ],
  });
  log("spawn-cost probe: dmsetup version from Deno and from sh");
  const probeBefore = await spawnProbe(10);
  const memory: string[] = [];
  memory.push(`containerd RSS idle: ${await rssKib(env.ctd.pid)} KiB`);
  memory.push(`our server RSS idle: ${await env.server!.rssKib()} KiB`);
  const api = connectContainerd(env.ctd.address);
  const results: Results = new Map();
  const ctx: BenchContext = {
    api,
    results,
    mountDir: values["no-write"] ? undefined : mountDir,
    log,
    thinIds: (t) => env.contexts[t.snapshotter]!.thinIds(),
  };
  try {
    log(`ctr phase: images import ×${runs} and run --rm ×${runs} per snapshotter, alternating`);
    await ctrRound(ctx, env.ctd, TARGETS, { runs, image });
    log("warm-up round (3 layers, not counted)");
    const rss: string[] = [];
    const readRss = async () => {
      rss.push(`${await env.server!.rssKib()}/${await rssKib(env.ctd.pid)}`);
    };
    await readRss();
    await snapshotRound(ctx, TARGETS, { layers: 3, round: null, lists: 1 });
    for (let r = 0; r < rounds; r++) {
      log(`snapshot round ${r + 1}/${rounds}: ${layers} layers, ${layers} views, ${lists} lists`);
      await snapshotRound(ctx, TARGETS, { layers, round: r, lists });
      await readRss();
    }
    memory.push(
      `RSS (KiB) ours/containerd after the ctr phase, then after each round: ${rss.join(", ")}`,
    );
    log(`max-size phase: ${2 * rounds} pairs of child Prepares, without and with the label`);
    await sizeLabelRound(ctx, TARGETS, { runs: 2 * rounds });
  } finally {
    api.close();
  }
  memory.push(`our server RSS after the workload: ${await env.server!.rssKib()} KiB`);
  memory.push(`containerd RSS after the workload: ${await rssKib(env.ctd.pid)} KiB`);
  log("direct hop: 20 Stats of missing keys straight to our server's socket");
  const direct = await directHop(env.server!.socket, 20);
  const serverLogged = serverLogLevel === "debug" || serverLogLevel === "trace";
  const { strays, outside, directHandler } = serverLogged
    ? await attachServerWork(results, serverLogPath(env.server!.configPath), direct.windows)
    : { strays: 0, outside: 0, directHandler: [] };
  log("spawn-cost probe: dmsetup version from Deno and from sh");
  const probeAfter = await spawnProbe(10);
  log("metrics phase: direct calls to our server with --metrics-address off and on, alternating");
  const metricsCost = await measureMetricsCost({
    socket: env.server!.socket,
    metricsAddress: METRICS_ADDRESS,
    restart: async (address) => {
      metricsAddress = address;
      await env.server!.restart();
    },
  }, { cycles: Number(values["metrics-cycles"]), log });
  addRoundTotals(results);

  const out = (s = "") => console.log(s);
  out(
    `\nResults: ${rounds} rounds × (${layers}-layer chain + ${layers} views + ${lists} lists + ` +
      `${2 * layers} removes + 1 GC) per snapshotter; ctr ops ×${runs}. Times in ms.\n`,
  );
  out(mainTable(results));
  out();
  out(
    "Thin devices each View adds to its pool (thin ids before and after a round's views, " +
      "per view; one figure per round): " +
      TARGETS.map((t) => `${t.label} ${ctx.thinDevicesPerView?.get(t.label)?.join(", ") ?? "?"}`)
        .join("; "),
  );
  out();
  out(
    "containerd.io/snapshot/max-size (2× base_image_size) on Prepare of a child, median ms " +
      "without / with the label (added latency): " + TARGETS.map((t) => {
        const ms = (op: string) => median((results.get(t.label)?.get(op) ?? []).map((s) => s.ms));
        const plain = ms(SIZE_LABEL_OPS.plain);
        const grown = ms(SIZE_LABEL_OPS.grown);
        return `${t.label} ${fmt(plain)} / ${fmt(grown)} (+${fmt(grown - plain)})`;
      }).join("; ") + " — the built-in devmapper ignores the label; ours grows the filesystem.",
  );
  out();
  out(
    "Metrics: per-call cost of our server with --metrics-address off and on (direct calls, " +
      "no containerd; rounds alternate off, on, off, on, the server restarted for each; " +
      "while on, /metrics is scraped every second). Times in ms:",
  );
  out(metricsCostTable(metricsCost));
  out(
    `${metricsCost.scrapes.length} scrapes while on: median ${
      fmt(median(metricsCost.scrapes), 2)
    } ms, p90 ${fmt(percentile(metricsCost.scrapes, 90), 2)} ms, ` +
      `${metricsCost.expositionBytes} bytes each.`,
  );
  out();
  out("Where our time goes (medians, from our server's debug log; one row per operation):");
  out(breakdownTable(results));
  out();
  const slower = slowerExplanations(results);
  out(
    slower.length ? "Operations where ours is slower than the built-in:" : "Ours is never slower.",
  );
  for (const line of slower) out(line);
  out();
  out("Notes:");
  out(
    `- "${SNAPSHOT_OPS.floor}": containerd answers from its own DB without calling any ` +
      "snapshotter; it is the client + containerd floor every snapshot op pays. Its ratio, " +
      `like "${SNAPSHOT_OPS.remove}"'s and "ctr version"'s (identical work for both), shows ` +
      "how far from 1.00 noise, and background work left by the previous call (e.g. a " +
      "process finishing after it answered), move a ratio.",
  );
  out(
    "- forks: /proc/stat `processes` delta around the call (processes AND threads created " +
      "anywhere in the guest): for the built-in, an estimate of its dmsetup/mkfs spawns. " +
      "ours spawns: the exact count our server logged (`spawns=` per snapshot operation).",
  );
  out(
    `- "${SNAPSHOT_OPS.remove}": containerd's Remove only drops its metadata; the devices are ` +
      `removed by containerd's GC, timed in "${SNAPSHOT_OPS.gc}" (one per round and ` +
      "snapshotter: the lease holding everything is deleted with sync=true; GC mark/sweep of " +
      "containerd's DB, then backend List + Remove of every snapshot).",
  );
  out(
    `- "${ROUND_TOTAL}" sums one round's snapshot ops per snapshotter (the floor excluded).`,
  );
  out(
    `- Our server serves gRPC with the ${values["grpc-transport"]} transport ` +
      "(--grpc-transport native|grpc-js).",
  );
  out(
    `- Our server runs with --log-level ${serverLogLevel}: at debug it writes two log lines ` +
      "per backend RPC (to a file on tmpfs, batched after the answer), a cost only ours pays here" +
      (serverLogLevel === "trace" ? "; at trace one more per spawn." : "."),
  );
  out(
    "- Each step alternates between the snapshotters (who goes first alternates too); " +
      (values["no-write"]
        ? "no file was written through mounts."
        : "a small file is written through a real mount of every active snapshot before its " +
          "Mounts/Usage/Commit (untimed, identical for both)."),
  );
  out(
    "- Cost of one gRPC hop in this guest, without containerd: a Stat of a missing key sent " +
      `by this (grpc-js) process straight to our server's socket takes ` +
      `${fmt(median(direct.ms), 2)} ms (median of ${direct.ms.length}), of which ` +
      `${fmt(median(directHandler), 2)} ms in our handler. Crossing processes is ` +
      "expensive in user-mode Linux (every context switch is a host-level switch), so each " +
      "extra hop weighs far more here than on real hardware.",
  );
  out(
    `- Cost of one spawn of \`dmsetup version\` (median of ${probeBefore.n}), before / after ` +
      `the workload: ${fmt(probeBefore.denoMs, 1)} / ${fmt(probeAfter.denoMs, 1)} ms from ` +
      "this Deno process (Deno.Command, piped output, as our server's runner does) vs " +
      `${fmt(probeBefore.shMs, 1)} / ${fmt(probeAfter.shMs, 1)} ms from sh (fork+exec in a ` +
      "loop); the built-in spawns dmsetup from Go (not measurable separately here).",
  );
  if (serverLogged) {
    out(
      "- Our server's log lines are attributed to calls by time (nothing is sent to it between " +
        `calls); ${outside} RPC(s) it answered fell outside every measured call (untimed ` +
        "steps: the warm-up round, `ctr images rm --sync` between imports).",
    );
  }
  if (strays > 0) {
    out(`- WARNING: our server answered ${strays} RPC(s) during built-in calls.`);
  }
  out();
  out(memory.join("\n"));
  out(`\nbench took ${((performance.now() - started) / 1000).toFixed(0)} s inside the kernel`);
  await Deno.remove(imageDir, { recursive: true });
  await Deno.remove(mountDir, { recursive: true }).catch(() => {});
}

if (import.meta.main) {
  await benchInKernel({
    script: "bench/run.ts",
    what: "the benchmark",
    timeoutMs: 20 * 60_000,
    measure: inKernel,
  });
}
