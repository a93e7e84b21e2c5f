/**
 * Turns the benchmark's samples into the printed report: the main table (median and p90 per
 * operation for both snapshotters, ratio ours/built-in, forks, our server's spawns, verdict),
 * a breakdown of where our time goes (from our server's log), and an explanation of every
 * operation where ours is slower.
 *
 * @module
 */
import { CTR_OPS, type Results, type Sample, SNAPSHOT_OPS } from "./workload.ts";
import { fmt, formatColumns, median, percentile } from "./stats.ts";

/** Labels of the two targets in the report. */
export const BUILTIN = "built-in";
/** Label of our snapshotter. */
export const OURS = "ours";

/** Report row name for one whole round's summed time. */
export const ROUND_TOTAL = "whole round (sum of the ops above)";

function samplesOf(results: Results, label: string, op: string): Sample[] {
  return results.get(label)?.get(op) ?? [];
}

/** Adds, per target, one sample per round: the sum of that round's snapshot-op times. */
export function addRoundTotals(results: Results): void {
  const ops = Object.values(SNAPSHOT_OPS).filter((op) => op !== SNAPSHOT_OPS.floor);
  for (const [, byOp] of results) {
    const perRound = new Map<number, number>();
    for (const op of ops) {
      for (const s of byOp.get(op) ?? []) {
        perRound.set(s.round, (perRound.get(s.round) ?? 0) + s.ms);
      }
    }
    byOp.set(
      ROUND_TOTAL,
      [...perRound].map(([round, ms]) => ({ ms, forks: NaN, round, start: NaN, end: NaN })),
    );
  }
}

function verdict(ratio: number): string {
  if (!Number.isFinite(ratio)) return "n/a";
  if (ratio <= 0.5) return "≤0.5 (meets next target)";
  if (ratio <= 1.0) return "≤1.0 ok";
  return "SLOWER >1.0";
}

/** Operations in report order. */
export function reportOps(): string[] {
  return [...Object.values(SNAPSHOT_OPS), ROUND_TOTAL, ...Object.values(CTR_OPS)];
}

/** The main table. */
export function mainTable(results: Results): string {
  const rows: string[][] = [[
    "operation",
    "n",
    "built-in med",
    "p90",
    "ours med",
    "p90",
    "ours/built-in",
    "forks b-in",
    "forks ours",
    "ours spawns",
    "verdict",
  ]];
  for (const op of reportOps()) {
    const b = samplesOf(results, BUILTIN, op);
    const o = samplesOf(results, OURS, op);
    if (b.length === 0 && o.length === 0) continue;
    const bm = median(b.map((s) => s.ms));
    const om = median(o.map((s) => s.ms));
    const ratio = om / bm;
    const spawns = o.filter((s) => s.server).map((s) => s.server!.spawns);
    const isRef = op === SNAPSHOT_OPS.floor || op === CTR_OPS.version;
    rows.push([
      op,
      String(Math.max(b.length, o.length)),
      fmt(bm, 2),
      fmt(percentile(b.map((s) => s.ms), 90), 2),
      fmt(om, 2),
      fmt(percentile(o.map((s) => s.ms), 90), 2),
      fmt(ratio, 2),
      fmt(median(b.map((s) => s.forks)), 0),
      fmt(median(o.map((s) => s.forks)), 0),
      spawns.length ? fmt(median(spawns), 0) : "n/a",
      isRef ? "(reference)" : verdict(ratio),
    ]);
  }
  return formatColumns(rows);
}

interface Breakdown {
  op: string;
  ours: number;
  builtin: number;
  floorB: number;
  floorO: number;
  rpcs: number;
  methods: string;
  handler: number;
  opMs: number;
  outside: number;
  traced: boolean;
  spawnMs: number;
  commands: string;
}

function breakdowns(results: Results): Breakdown[] {
  const floorB = median(samplesOf(results, BUILTIN, SNAPSHOT_OPS.floor).map((s) => s.ms));
  const floorO = median(samplesOf(results, OURS, SNAPSHOT_OPS.floor).map((s) => s.ms));
  const out: Breakdown[] = [];
  for (const op of reportOps()) {
    if (op === ROUND_TOTAL) continue;
    const o = samplesOf(results, OURS, op).filter((s) => s.server);
    if (o.length === 0) continue;
    const mostCommon = (pick: (s: Sample) => string) => {
      const seen = new Map<string, number>();
      for (const s of o) seen.set(pick(s), (seen.get(pick(s)) ?? 0) + 1);
      return [...seen].sort((a, b) => b[1] - a[1])[0][0] || "-";
    };
    out.push({
      op,
      ours: median(o.map((s) => s.ms)),
      builtin: median(samplesOf(results, BUILTIN, op).map((s) => s.ms)),
      floorB,
      floorO,
      rpcs: median(o.map((s) => s.server!.rpcs)),
      methods: mostCommon((s) => s.server!.methods),
      handler: median(o.map((s) => s.server!.handlerMs)),
      opMs: median(o.map((s) => s.server!.opMs)),
      outside: median(o.map((s) => s.ms - s.server!.handlerMs)),
      traced: o.some((s) => s.server!.tracedSpawns > 0),
      spawnMs: median(o.map((s) => s.server!.spawnMs)),
      commands: mostCommon((s) => s.server!.commands),
    });
  }
  return out;
}

/** Where our time goes, per operation, from our server's log. */
export function breakdownTable(results: Results): string {
  const rows: string[][] = [[
    "operation (ours)",
    "backend RPCs",
    "methods (most common)",
    "server handler ms",
    "snapshotter op ms",
    "client RTT ms",
    "RTT − handler",
    "built-in RTT − floor",
  ]];
  const all = breakdowns(results);
  const traced = all.some((b) => b.traced);
  if (traced) rows[0].push("spawn ms (trace)", "spawned (most common)");
  for (const b of all) {
    rows.push([
      b.op,
      fmt(b.rpcs, 0),
      b.methods,
      fmt(b.handler, 2),
      fmt(b.opMs, 2),
      fmt(b.ours, 2),
      fmt(b.outside, 2),
      fmt(b.builtin - b.floorB, 2),
    ]);
    if (traced) rows[rows.length - 1].push(fmt(b.spawnMs, 2), b.commands);
  }
  return formatColumns(rows);
}

/** One explanation line per snapshot operation where ours is slower than the built-in. */
export function slowerExplanations(results: Results): string[] {
  const lines: string[] = [];
  for (const b of breakdowns(results)) {
    if (!(b.ours / b.builtin > 1.0) || b.op === SNAPSHOT_OPS.floor || b.op === CTR_OPS.version) {
      continue;
    }
    if (b.op === CTR_OPS.import || b.op === CTR_OPS.run) {
      lines.push(
        `- ${b.op}: ours ${fmt(b.ours, 2)} ms vs built-in ${fmt(b.builtin, 2)} ms ` +
          `(ratio ${fmt(b.ours / b.builtin, 2)}, difference ${fmt(b.ours - b.builtin, 2)} ms). ` +
          `Our server's handlers took ${fmt(b.handler, 2)} ms over ${fmt(b.rpcs, 0)} backend ` +
          `RPC(s) (${b.methods}; snapshotter ${fmt(b.opMs, 2)} ms); the other ` +
          `${fmt(b.outside, 2)} ms are ctr, containerd (content, unpack, runc) and the gRPC ` +
          "hops. The built-in's share of its time is not observable from outside containerd.",
      );
      continue;
    }
    const ourBackend = b.ours - b.floorO;
    const theirBackend = b.builtin - b.floorB;
    const hop = ourBackend - b.handler;
    lines.push(
      `- ${b.op}: ours ${fmt(b.ours, 2)} ms vs built-in ${fmt(b.builtin, 2)} ms ` +
        `(ratio ${fmt(b.ours / b.builtin, 2)}). Above containerd's floor (a Stat that never ` +
        `reaches a snapshotter: ${fmt(b.floorO, 2)} / ${fmt(b.floorB, 2)} ms) ours costs ` +
        `${fmt(ourBackend, 2)} ms: ${fmt(b.handler, 2)} ms in our server's handlers ` +
        `(${fmt(b.rpcs, 0)} backend RPC(s): ${b.methods}; snapshotter ${fmt(b.opMs, 2)} ms` +
        (b.traced ? `, of which spawns ${fmt(b.spawnMs, 2)} ms: ${b.commands}` : "") + ") and " +
        `${fmt(hop, 2)} ms in containerd's proxy client + the unix-socket gRPC hop + our gRPC ` +
        `stack outside the handler; the in-process built-in costs ${fmt(theirBackend, 2)} ms ` +
        "above the floor.",
    );
  }
  return lines;
}
