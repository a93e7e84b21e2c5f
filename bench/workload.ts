/**
 * The benchmark workload, run inside the test kernel against one containerd that has both
 * the built-in devmapper snapshotter and our proxy snapshotter, each on its own pool. Every
 * operation goes through containerd's API with `ctr`, so both backends pay the same client
 * and daemon overhead; a `ctr version` baseline is measured and shown too.
 *
 * Process creations are counted with the kernel's fork counter (`processes` in
 * /proc/stat, which also counts threads): the per-operation figure is the median delta
 * minus the median delta of a no-op `ctr version`, so it approximates the spawns (plus any
 * threads) the snapshotter made for the operation.
 *
 * @module
 */
import type { Containerd } from "../tests/e2e/containerd.ts";
import { buildTestImage, type TestImage } from "../tests/e2e/image.ts";

/** Workload sizes. */
export interface WorkloadOptions {
  /** Length of the Prepare/Mounts/Commit chain and number of Views (default 20). */
  layers: number;
  /** How many `ctr run --rm` and image imports to time (default 3). */
  runs: number;
}

/** Samples of one operation. */
export interface OpSamples {
  ms: number[];
  forks: number[];
}

/** All samples of one snapshotter, by operation name (in workload order). */
export type WorkloadResult = Map<string, OpSamples>;

/** Operation names in the order they are reported. */
export const OPERATIONS: readonly string[] = [
  "ctr version (baseline)",
  "image import",
  "ctr run --rm",
  "prepare (no parent)",
  "prepare (child)",
  "mounts",
  "commit",
  "view",
  "update (label)",
  "stat (info)",
  "remove (metadata only)",
  "gc: backend removes (all 2n)",
];

/** The kernel's count of process (and thread) creations since boot. */
export async function forkCount(): Promise<number> {
  const m = /^processes (\d+)$/m.exec(await Deno.readTextFile("/proc/stat"));
  if (!m) throw new Error("Cannot count forks: no `processes` line in /proc/stat");
  return Number(m[1]);
}

/** Median of numbers (NaN for none). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Runs the workload on `snapshotter` through `ctd`; returns per-operation samples. */
export async function runWorkload(
  ctd: Containerd,
  snapshotter: string,
  options: WorkloadOptions & { image: TestImage; imageDir: string; log(m: string): void },
): Promise<WorkloadResult> {
  const result: WorkloadResult = new Map(OPERATIONS.map((op) => [op, { ms: [], forks: [] }]));
  const snap = ["snapshots", "--snapshotter", snapshotter];
  const measure = async (op: string, args: string[]) => {
    const f0 = await forkCount();
    const r = await ctd.ctr(args);
    const f1 = await forkCount();
    const samples = result.get(op)!;
    samples.ms.push(r.ms);
    samples.forks.push(f1 - f0);
    return r;
  };
  const gc = async (op?: string) => {
    const ref = `${options.image.ref}-gc`;
    await ctd.ctr(["images", "tag", options.image.ref, ref]);
    if (op) await measure(op, ["images", "rm", "--sync", ref]);
    else await ctd.ctr(["images", "rm", "--sync", ref]);
  };

  for (let i = 0; i < 5; i++) await measure("ctr version (baseline)", ["version"]);

  options.log(`[${snapshotter}] image import ×${options.runs}, ctr run ×${options.runs}`);
  for (let i = 0; i < options.runs; i++) {
    await measure("image import", [
      "images",
      "import",
      "--snapshotter",
      snapshotter,
      options.image.archive,
    ]);
    if (i < options.runs - 1) {
      // Re-import only re-unpacks if the image and its snapshots are gone.
      await ctd.ctr(["images", "rm", "--sync", options.image.ref]);
    }
  }
  for (let i = 0; i < options.runs; i++) {
    await measure("ctr run --rm", [
      "run",
      "--rm",
      "--snapshotter",
      snapshotter,
      options.image.ref,
      `bench-${snapshotter}-${i}`,
      "/bin/true",
    ]);
  }
  await gc();

  options.log(`[${snapshotter}] ${options.layers}-layer prepare/mounts/commit chain`);
  const key = (i: number) => `bench-active-${i}`;
  const name = (i: number) => `bench-layer-${i}`;
  const view = (i: number) => `bench-view-${i}`;
  for (let i = 0; i < options.layers; i++) {
    const parent = i === 0 ? [] : [name(i - 1)];
    await measure(i === 0 ? "prepare (no parent)" : "prepare (child)", [
      ...snap,
      "prepare",
      key(i),
      ...parent,
    ]);
    await measure("mounts", [...snap, "mounts", "/mnt", key(i)]);
    await measure("commit", [...snap, "commit", name(i), key(i)]);
  }
  options.log(`[${snapshotter}] ${options.layers} views with stat`);
  for (let i = 0; i < options.layers; i++) {
    await measure("view", [...snap, "view", view(i), name(i)]);
    // ctr gives views no gc.root label: without one the next collection would take them.
    await measure("update (label)", [...snap, "label", view(i), "containerd.io/gc.root=bench"]);
    await measure("stat (info)", [...snap, "info", view(i)]);
  }
  options.log(`[${snapshotter}] removing everything`);
  for (let i = 0; i < options.layers; i++) {
    await measure("remove (metadata only)", [...snap, "rm", view(i)]);
  }
  for (let i = options.layers - 1; i >= 0; i--) {
    await measure("remove (metadata only)", [...snap, "rm", name(i)]);
  }
  await gc("gc: backend removes (all 2n)");
  await ctd.ctr(["images", "rm", "--sync", options.image.ref]);
  return result;
}

/** Builds the image the benchmark imports and runs. */
export async function buildBenchImage(dir: string): Promise<TestImage> {
  return await buildTestImage({ dir, ref: "docker.io/library/dmsnap-bench:latest" });
}

/** Formats one results table (medians, ratio ours/built-in). */
export function formatTable(results: Record<string, WorkloadResult | undefined>): string {
  const builtin = results.builtin;
  const ours = results.ours;
  const baseline = (r?: WorkloadResult) => r ? median(r.get("ctr version (baseline)")!.forks) : NaN;
  const fmt = (n: number, digits = 0) => Number.isFinite(n) ? n.toFixed(digits) : "n/a";
  const rows = [[
    "operation",
    "n",
    "built-in ms",
    "ours ms",
    "ours/built-in",
    "built-in forks",
    "ours forks",
  ]];
  for (const op of OPERATIONS) {
    const b = builtin?.get(op);
    const o = ours?.get(op);
    const bm = median(b?.ms ?? []);
    const om = median(o?.ms ?? []);
    const isBaseline = op.startsWith("ctr version");
    const forks = (r: WorkloadResult | undefined, s: OpSamples | undefined) =>
      s && s.forks.length ? median(s.forks) - (isBaseline ? 0 : baseline(r)) : NaN;
    rows.push([
      op,
      String(Math.max(b?.ms.length ?? 0, o?.ms.length ?? 0)),
      fmt(bm),
      fmt(om),
      fmt(om / bm, 2),
      fmt(forks(builtin, b)),
      fmt(forks(ours, o)),
    ]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) =>
    r.map((cell, c) => c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])).join("  ")
  ).join("\n");
}
