/**
 * Fills our snapshotter with many snapshots shaped like what containerd leaves behind, sent
 * straight to its socket: chains of committed layers (Prepare of an `extract-…` key on the
 * previous layer, then Commit as `sha256:…`), a few active snapshots on chain tips (container
 * root filesystems) and a few views, all with labels like containerd's. Keys look like the
 * ones containerd's metadata layer gives a proxy snapshotter: `<namespace>/<id>/<key>`.
 *
 * Invariants: every Prepare is committed before the next one starts (one call at a time); the
 * population counts exactly `count` snapshots when it resolves; the client-side time of every
 * Prepare and Commit is kept, in order, so the cost of a call can be compared between an
 * almost empty and a full database.
 *
 * @module
 */
import type { SnapshotsClient } from "../testing/snapshots_client.ts";

/** Options for {@linkcode populate}. */
export interface PopulateOptions {
  client: SnapshotsClient;
  /** Snapshots to create in all. */
  count: number;
  /** Committed layers per chain (the last chain may be shorter). */
  chainLength: number;
  /** Active snapshots (on chain tips) among `count`. */
  active: number;
  /** Views (of committed layers) among `count`. */
  views: number;
  /** Key namespace, the first part of every key. */
  namespace: string;
  /** Progress lines. */
  log(message: string): void;
  /** Print progress every this many ms (default 15 s). */
  progressEveryMs?: number;
}

/** What {@linkcode populate} did. */
export interface Population {
  committed: number;
  active: number;
  views: number;
  /** Client-side ms of every Prepare of a layer, in order. */
  prepareMs: number[];
  /** Client-side ms of every Commit, in order. */
  commitMs: number[];
  /** Wall time of the whole population (ms). */
  totalMs: number;
}

/** A random lowercase hex string of `bytes` bytes (a digest's look). */
export function randomHex(bytes = 32): string {
  const raw = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Labels like those containerd's unpacker and CRI put on a layer snapshot: a GC root
 * timestamp, the chain id it is referenced by, and the layer digest passed to the snapshotter.
 */
export function layerLabels(digest: string): Record<string, string> {
  return {
    "containerd.io/gc.root": new Date().toISOString(),
    "containerd.io/snapshot.ref": `sha256:${digest}`,
    "containerd.io/snapshot/cri.layer-digest": `sha256:${randomHex()}`,
  };
}

/** Labels like those of a container's root filesystem or a view. */
export function containerLabels(container: string): Record<string, string> {
  return {
    "containerd.io/gc.ref.content.l.0": `sha256:${randomHex()}`,
    "containerd.io/gc.root": new Date().toISOString(),
    "bench/container": container,
  };
}

/** How many of `count` snapshots are committed, active and views. */
export function populationShape(
  count: number,
  wanted: { active: number; views: number },
): { committed: number; active: number; views: number } {
  const committed = Math.max(1, count - wanted.active - wanted.views);
  const rest = count - committed;
  const active = Math.min(wanted.active, rest);
  return { committed, active, views: Math.max(0, rest - active) };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Creates the snapshots; resolves with the timings once all exist. */
export async function populate(options: PopulateOptions): Promise<Population> {
  const { client, namespace, log } = options;
  const shape = populationShape(options.count, options);
  const every = options.progressEveryMs ?? 15_000;
  const started = performance.now();
  let lastReport = started;
  let id = 0;
  const key = (k: string) => `${namespace}/${++id}/${k}`;
  const prepareMs: number[] = [];
  const commitMs: number[] = [];
  const tips: string[] = [];
  const committed: string[] = [];
  let parent = "";
  for (let i = 0; i < shape.committed; i++) {
    if (i % options.chainLength === 0) {
      if (parent) tips.push(parent);
      parent = "";
    }
    const digest = randomHex();
    const active = key(`extract-${Date.now()}${randomHex(4)} sha256:${digest}`);
    const name = key(`sha256:${digest}`);
    prepareMs.push(await timed(() => client.prepare(active, parent, layerLabels(digest))));
    commitMs.push(await timed(() => client.commit(name, active, layerLabels(digest))));
    committed.push(name);
    parent = name;
    const now = performance.now();
    if (now - lastReport >= every) {
      lastReport = now;
      const s = (now - started) / 1000;
      const rate = (i + 1) / s;
      log(
        `populated ${i + 1}/${shape.committed} committed layers in ${s.toFixed(0)} s ` +
          `(${rate.toFixed(1)} layers/s, about ${
            ((shape.committed - i - 1) / rate).toFixed(0)
          } s to go)`,
      );
    }
  }
  tips.push(parent);
  for (let i = 0; i < shape.active; i++) {
    const container = `scale-container-${i}`;
    await client.prepare(key(container), tips[i % tips.length], containerLabels(container));
  }
  for (let i = 0; i < shape.views; i++) {
    const view = `scale-view-${i}`;
    const of = committed[Math.floor(Math.random() * committed.length)];
    await client.view(key(view), of, containerLabels(view));
  }
  return { ...shape, prepareMs, commitMs, totalMs: performance.now() - started };
}
