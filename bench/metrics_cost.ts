/**
 * What the metrics cost per call: the same direct calls to our server (no containerd) with
 * `--metrics-address` off and on, alternating (off, on, off, on) so drift in the guest falls on
 * both, and with metrics on a scraper fetching `/metrics` every second, as a tight Prometheus
 * would. Each round restarts the server with or without the flag.
 *
 * The calls: Stat of an existing and of a missing key (the gRPC path and the database only),
 * and a Prepare / Usage / Remove cycle on a child of a committed snapshot (device-mapper
 * operations: create_snap, activation, status, deactivation, delete), so both recording sites,
 * the RPC boundary and the device-mapper decorator, are on the measured path.
 *
 * @module
 */
import { connectSnapshots } from "../testing/snapshots_client.ts";
import { fmt, formatColumns, median, percentile } from "./stats.ts";

/** The calls measured, in the order of a cycle. */
export const METRICS_COST_OPS = [
  "Stat",
  "Stat (missing)",
  "Prepare (child)",
  "Usage",
  "Remove",
] as const;

type Op = typeof METRICS_COST_OPS[number];

/** Times per call (ms) by operation, for one setting. */
export type OpTimes = Map<Op, number[]>;

/** What {@linkcode measureMetricsCost} measured. */
export interface MetricsCost {
  off: OpTimes;
  on: OpTimes;
  /** Scrapes made while metrics were on, and their durations (ms). */
  scrapes: number[];
  /** Size of the last exposition, bytes. */
  expositionBytes: number;
}

/** How the phase reaches and restarts our server. */
export interface MetricsCostTarget {
  /** The server's gRPC socket. */
  socket: string;
  /** Restarts the server, with the metrics endpoint at `address` or without one. */
  restart(metricsAddress: string | undefined): Promise<void>;
  /** Where the endpoint listens when on (`HOST:PORT`). */
  metricsAddress: string;
}

async function round(socket: string, cycles: number, prefix: string, times: OpTimes) {
  const client = connectSnapshots(socket);
  const timed = async (op: Op, fn: () => Promise<unknown>) => {
    const t0 = performance.now();
    await fn();
    times.get(op)!.push(performance.now() - t0);
  };
  try {
    await client.prepare(`${prefix}-base-active`);
    await client.commit(`${prefix}-base`, `${prefix}-base-active`);
    for (let i = 0; i < cycles; i++) {
      const key = `${prefix}-child-${i}`;
      await timed("Stat", () => client.stat(`${prefix}-base`));
      await timed("Stat (missing)", () => client.stat(`${prefix}-missing-${i}`).catch(() => {}));
      await timed("Prepare (child)", () => client.prepare(key, `${prefix}-base`));
      await timed("Usage", () => client.usage(key));
      await timed("Remove", () => client.remove(key));
    }
    await client.remove(`${prefix}-base`);
  } finally {
    client.close();
  }
}

/** Runs `rounds` × (off, on) rounds of `cycles` call cycles against `target`. */
export async function measureMetricsCost(
  target: MetricsCostTarget,
  { rounds = 2, cycles = 150, log = (_: string) => {} } = {},
): Promise<MetricsCost> {
  const fresh = (): OpTimes => new Map(METRICS_COST_OPS.map((op) => [op, []]));
  const result: MetricsCost = { off: fresh(), on: fresh(), scrapes: [], expositionBytes: 0 };
  for (let r = 0; r < rounds; r++) {
    for (const on of [false, true]) {
      log(`metrics ${on ? "on" : "off"}, round ${r + 1}/${rounds}: ${cycles} call cycles`);
      await target.restart(on ? target.metricsAddress : undefined);
      let scraper: ReturnType<typeof setInterval> | undefined;
      let scraping: Promise<void> = Promise.resolve();
      if (on) {
        const scrape = async () => {
          const t0 = performance.now();
          const res = await fetch(`http://${target.metricsAddress}/metrics`);
          const text = await res.text();
          if (res.status !== 200) throw new Error(`scrape answered ${res.status}: ${text}`);
          result.scrapes.push(performance.now() - t0);
          result.expositionBytes = text.length;
        };
        await scrape(); // the endpoint is up before the calls start
        scraper = setInterval(() => {
          scraping = scraping.then(scrape);
        }, 1000);
      }
      try {
        await round(
          target.socket,
          cycles,
          `metrics-cost-${r}-${on ? "on" : "off"}`,
          result[on ? "on" : "off"],
        );
      } finally {
        clearInterval(scraper);
        await scraping;
      }
    }
  }
  await target.restart(undefined);
  return result;
}

/** The report: per operation, median and p90 with metrics off and on, and on/off. */
export function metricsCostTable(cost: MetricsCost): string {
  const rows = [["op", "n", "off med", "on med", "on/off", "off p90", "on p90"]];
  let offTotal = 0;
  let onTotal = 0;
  for (const op of METRICS_COST_OPS) {
    const off = cost.off.get(op)!;
    const on = cost.on.get(op)!;
    offTotal += median(off);
    onTotal += median(on);
    rows.push([
      op,
      String(Math.min(off.length, on.length)),
      fmt(median(off), 2),
      fmt(median(on), 2),
      fmt(median(on) / median(off), 2),
      fmt(percentile(off, 90), 2),
      fmt(percentile(on, 90), 2),
    ]);
  }
  rows.push([
    "cycle (sum of medians)",
    "",
    fmt(offTotal, 2),
    fmt(onTotal, 2),
    fmt(onTotal / offTotal, 2),
    "",
    "",
  ]);
  return formatColumns(rows);
}
