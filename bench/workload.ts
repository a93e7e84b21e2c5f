/**
 * The benchmark workloads, run inside the test kernel against one containerd that has both
 * the built-in devmapper snapshotter and our proxy snapshotter, each on its own pool and in
 * its own namespace.
 *
 * - {@linkcode snapshotRound}: the snapshot workload through containerd's Snapshots API over
 *   its gRPC socket (no process spawned by the client): a chain of Prepare/Mounts/Usage/Commit
 *   (with a file written through a real mount of every active snapshot, untimed), Views with
 *   Stat/Update/Usage, List, then every Remove (containerd's metadata only) and the garbage
 *   collection that removes the devices (a lease deleted with `sync`). Both snapshotters do
 *   every step alternately, the one going first alternating too, so drift hits both alike.
 * - {@linkcode ctrRound}: `ctr images import` and `ctr run --rm` wall times, alternating.
 *
 * @module
 */
import type { ServiceError } from "@grpc/grpc-js";
import type { Containerd } from "../tests/e2e/containerd.ts";
import type { TestImage } from "../tests/e2e/image.ts";
import type { WireMount } from "../src/server/proto.ts";
import { type ContainerdApi, responseMounts } from "./containerd_api.ts";
import type { ServerWork } from "./server_log.ts";

/** One snapshotter under test. */
export interface Target {
  /** Short name in the report: "built-in" or "ours". */
  label: string;
  /** containerd's name of the snapshotter ("devmapper", "dmsnap"). */
  snapshotter: string;
  /** containerd namespace the target's images and snapshots live in. */
  namespace: string;
}

/** One measured call. */
export interface Sample {
  /** Wall time of the call as the client saw it. */
  ms: number;
  /** Kernel process+thread creations during the call (/proc/stat `processes` delta). */
  forks: number;
  /** Workload round (-1 for the ctr phase). */
  round: number;
  /** Wall clock (ms since the epoch) just before and just after the call. */
  start: number;
  end: number;
  /** What our server did for the call (filled in from its log afterwards). */
  server?: ServerWork;
}

/** Samples per operation name, per target label. */
export type Results = Map<string, Map<string, Sample[]>>;

/** Operation names, in report order, with the one-line meaning printed under the table. */
export const SNAPSHOT_OPS = {
  floor: "no-op: Stat of a missing key",
  prepareBase: "prepare (no parent)",
  prepareChild: "prepare (child)",
  mounts: "mounts",
  usageActive: "usage (active)",
  commit: "commit",
  view: "view",
  stat: "stat",
  update: "update (labels)",
  usageCommitted: "usage (committed)",
  list: "list",
  remove: "remove (containerd metadata only)",
  gc: "gc: lease delete, sync (2n backend removes)",
} as const;

/** ctr-driven operations. */
export const CTR_OPS = {
  version: "ctr version (spawn baseline)",
  import: "ctr images import",
  run: "ctr run --rm /bin/true",
} as const;

/** Everything a measurement needs. */
export interface BenchContext {
  api: ContainerdApi;
  results: Results;
  /** Directory to mount active snapshots on; none: no write through a mount. */
  mountDir?: string;
  log(message: string): void;
  /** Thin ids in a target's pool (read untimed); given, the thin devices per View are kept. */
  thinIds?(t: Target): Promise<number[]>;
  /** Thin devices each View added to its pool, one figure per round, by target label. */
  thinDevicesPerView?: Map<string, number[]>;
}

/** The kernel's count of process (and thread) creations since boot. */
export async function forkCount(): Promise<number> {
  const m = /^processes (\d+)$/m.exec(await Deno.readTextFile("/proc/stat"));
  if (!m) throw new Error("Cannot count forks: no `processes` line in /proc/stat");
  return Number(m[1]);
}

/** Runs `fn`, timing it and counting forks; records the sample unless `round` is null. */
async function measure<T>(
  ctx: BenchContext,
  target: Target,
  op: string,
  round: number | null,
  fn: () => Promise<T>,
): Promise<T> {
  const f0 = await forkCount();
  const start = Date.now();
  const t0 = performance.now();
  const value = await fn();
  const ms = performance.now() - t0;
  const end = Date.now();
  const f1 = await forkCount();
  if (round !== null) {
    const byOp = ctx.results.get(target.label) ?? new Map<string, Sample[]>();
    ctx.results.set(target.label, byOp);
    const samples = byOp.get(op) ?? [];
    byOp.set(op, samples);
    samples.push({ ms, forks: f1 - f0, round, start, end });
  }
  return value;
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Mounts `mounts[0]` on `dir`, writes a small file, unmounts (identical for both targets). */
async function writeThroughMount(mounts: WireMount[], dir: string, text: string): Promise<void> {
  const m = mounts[0];
  if (!m) throw new Error("Cannot write through the mount: Prepare returned no mount");
  const opts = m.options.length ? ["-o", m.options.join(",")] : [];
  await run("mount", ["-t", m.type, ...opts, m.source, dir]);
  try {
    await Deno.writeTextFile(`${dir}/bench-${crypto.randomUUID()}.txt`, text.repeat(64));
  } finally {
    await run("umount", [dir]);
  }
}

function isNotFound(err: unknown): boolean {
  return ((err as Error).cause as ServiceError | undefined)?.code === 5;
}

/** Both targets, the first going first when `i` is even. */
function alternate(targets: readonly Target[], i: number): readonly Target[] {
  return i % 2 === 0 ? targets : [...targets].reverse();
}

/**
 * One round of the snapshot workload on every target (`round` null: a warm-up, not
 * recorded). Everything is created under a lease, removed, then collected by deleting the
 * lease with `sync` — one target at a time, so each collection only removes that target's
 * devices.
 */
export async function snapshotRound(
  ctx: BenchContext,
  targets: readonly Target[],
  options: { layers: number; round: number | null; lists: number },
): Promise<void> {
  const { layers, round } = options;
  const tag = round === null ? "warm" : `r${round}`;
  const shift = round ?? 0;
  const key = (i: number) => `${tag}-active-${i}`;
  const name = (i: number) => `${tag}-layer-${i}`;
  const view = (i: number) => `${tag}-view-${i}`;
  const lease = `bench-${tag}`;
  const api = ctx.api;
  for (const t of targets) await api.createLease(lease, { namespace: t.namespace });
  const m = (t: Target, op: string, fn: () => Promise<unknown>) => measure(ctx, t, op, round, fn);
  const call = (
    t: Target,
    method: Parameters<ContainerdApi["snapshots"]>[0],
    request: Record<string, unknown>,
  ) => api.snapshots(method, t.snapshotter, request, { namespace: t.namespace, lease });

  for (let i = 0; i < layers; i++) {
    for (const t of alternate(targets, i + shift)) {
      await m(t, SNAPSHOT_OPS.floor, async () => {
        try {
          await call(t, "Stat", { key: `${tag}-missing-${i}` });
        } catch (err) {
          if (!isNotFound(err)) throw err;
          return;
        }
        throw new Error(`Stat of a missing key succeeded on ${t.label}`);
      });
      const prepareOp = i === 0 ? SNAPSHOT_OPS.prepareBase : SNAPSHOT_OPS.prepareChild;
      const prepared = await m(
        t,
        prepareOp,
        () => call(t, "Prepare", { key: key(i), parent: i === 0 ? "" : name(i - 1), labels: {} }),
      );
      if (ctx.mountDir) {
        await writeThroughMount(
          responseMounts(prepared as Record<string, unknown>),
          ctx.mountDir,
          `${t.label} ${tag} layer ${i}\n`,
        );
      }
      await m(t, SNAPSHOT_OPS.mounts, () => call(t, "Mounts", { key: key(i) }));
      await m(t, SNAPSHOT_OPS.usageActive, () => call(t, "Usage", { key: key(i) }));
      await m(
        t,
        SNAPSHOT_OPS.commit,
        () => call(t, "Commit", { name: name(i), key: key(i), labels: {} }),
      );
    }
  }
  const thinBefore = new Map<string, number>();
  for (const t of ctx.thinIds ? targets : []) {
    thinBefore.set(t.label, (await ctx.thinIds!(t)).length);
  }
  for (let i = 0; i < layers; i++) {
    for (const t of alternate(targets, i + shift)) {
      await m(
        t,
        SNAPSHOT_OPS.view,
        () => call(t, "View", { key: view(i), parent: name(i), labels: {} }),
      );
      await m(t, SNAPSHOT_OPS.stat, () => call(t, "Stat", { key: view(i) }));
      // One label only containerd keeps, one it passes on to the snapshotter.
      await m(t, SNAPSHOT_OPS.update, () =>
        call(t, "Update", {
          info: {
            name: view(i),
            labels: { "bench/owner": "bench", "containerd.io/snapshot/bench": `${tag}-${i}` },
          },
          update_mask: { paths: ["labels.bench/owner", "labels.containerd.io/snapshot/bench"] },
        }));
      await m(t, SNAPSHOT_OPS.usageCommitted, () => call(t, "Usage", { key: name(i) }));
    }
  }
  for (const t of ctx.thinIds && round !== null ? targets : []) {
    const added = (await ctx.thinIds!(t)).length - thinBefore.get(t.label)!;
    const per = ctx.thinDevicesPerView ??= new Map();
    per.set(t.label, [...per.get(t.label) ?? [], added / layers]);
  }
  for (let j = 0; j < options.lists; j++) {
    for (const t of alternate(targets, j + shift)) {
      await m(t, SNAPSHOT_OPS.list, async () => {
        const { infos } = await api.list(t.snapshotter, { namespace: t.namespace });
        if (infos.length !== 2 * layers) {
          throw new Error(`List on ${t.label} returned ${infos.length}, not ${2 * layers}`);
        }
      });
    }
  }
  for (const t of alternate(targets, shift)) {
    for (let i = 0; i < layers; i++) {
      await m(t, SNAPSHOT_OPS.remove, () => call(t, "Remove", { key: view(i) }));
    }
    for (let i = layers - 1; i >= 0; i--) {
      await m(t, SNAPSHOT_OPS.remove, () => call(t, "Remove", { key: name(i) }));
    }
    await m(t, SNAPSHOT_OPS.gc, () => api.deleteLease(lease, { namespace: t.namespace }, true));
  }
}

/**
 * `ctr images import` and `ctr run --rm` wall times, `runs` each per target, alternating.
 * Between imports the image is removed with `--sync` (untimed) so each import unpacks again.
 * Leaves no image behind.
 */
export async function ctrRound(
  ctx: BenchContext,
  ctd: Containerd,
  targets: readonly Target[],
  options: { runs: number; image: TestImage },
): Promise<void> {
  const ctr = (t: Target, args: string[]) => ctd.ctr(args, { namespace: t.namespace });
  for (let i = 0; i < 5; i++) {
    for (const t of targets) await measure(ctx, t, CTR_OPS.version, -1, () => ctr(t, ["version"]));
  }
  for (let k = 0; k < options.runs; k++) {
    for (const t of alternate(targets, k)) {
      await measure(ctx, t, CTR_OPS.import, -1, () =>
        ctr(t, [
          "images",
          "import",
          "--snapshotter",
          t.snapshotter,
          options.image.archive,
        ]));
      if (k < options.runs - 1) {
        await ctr(t, ["images", "rm", "--sync", options.image.ref]);
      }
    }
  }
  for (let k = 0; k < options.runs; k++) {
    for (const t of alternate(targets, k)) {
      await measure(ctx, t, CTR_OPS.run, -1, () =>
        ctr(t, [
          "run",
          "--rm",
          "--snapshotter",
          t.snapshotter,
          options.image.ref,
          `bench-${t.snapshotter}-${k}`,
          "/bin/true",
        ]));
    }
  }
  for (const t of targets) {
    await ctr(t, ["images", "rm", "--sync", options.image.ref]);
  }
}

/**
 * The `containerd.io/snapshot/max-size` phase's operations: a child of a committed layer
 * Prepared without the label and with it (twice the e2e `base_image_size` of 64 MiB, so ours
 * grows the filesystem; the built-in devmapper of containerd 1.6 ignores the label). Kept out
 * of {@linkcode SNAPSHOT_OPS}: the main rounds and their totals stay as they were.
 */
export const SIZE_LABEL_OPS = {
  plain: "prepare (child, no label)",
  grown: "prepare (child, max-size 2× base)",
} as const;

/** The label's value in the max-size phase: twice the e2e base image size (64 MiB). */
const GROWN_BYTES = 128 * 1024 * 1024;

/**
 * The max-size phase: on one committed layer per target, `runs` pairs of child Prepares without
 * and with the label, alternating targets and which of the pair goes first; each child is
 * removed (untimed) before the next. Everything lives under its own lease, deleted with `sync`
 * at the end (untimed), so the main rounds see none of it.
 */
export async function sizeLabelRound(
  ctx: BenchContext,
  targets: readonly Target[],
  options: { runs: number },
): Promise<void> {
  const api = ctx.api;
  const lease = "bench-size";
  const call = (
    t: Target,
    method: Parameters<ContainerdApi["snapshots"]>[0],
    request: Record<string, unknown>,
  ) => api.snapshots(method, t.snapshotter, request, { namespace: t.namespace, lease });
  for (const t of targets) {
    await api.createLease(lease, { namespace: t.namespace });
    await call(t, "Prepare", { key: "size-base-work", parent: "", labels: {} });
    await call(t, "Commit", { name: "size-base", key: "size-base-work", labels: {} });
  }
  for (let k = 0; k < options.runs; k++) {
    for (const t of alternate(targets, k)) {
      const pair = [
        { op: SIZE_LABEL_OPS.plain, labels: {} },
        {
          op: SIZE_LABEL_OPS.grown,
          labels: { "containerd.io/snapshot/max-size": String(GROWN_BYTES) },
        },
      ];
      for (const { op, labels } of k % 2 === 0 ? pair : pair.reverse()) {
        const key = `size-${k}-${op === SIZE_LABEL_OPS.plain ? "plain" : "grown"}`;
        await measure(
          ctx,
          t,
          op,
          k,
          () => call(t, "Prepare", { key, parent: "size-base", labels }),
        );
        await call(t, "Remove", { key });
      }
    }
  }
  for (const t of targets) {
    await call(t, "Remove", { key: "size-base" });
    await api.deleteLease(lease, { namespace: t.namespace }, true);
  }
}
