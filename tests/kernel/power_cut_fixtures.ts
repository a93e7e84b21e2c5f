/**
 * Helpers of the power-cut test: the disk it records (one loop device under a `log-writes`
 * target, cut into the pool's metadata, the pool's data and the filesystem of `root_path`),
 * how many cuts and operations to make (the seeded choices are in tests/kernel/seeds.ts), and
 * the model that says, for a cut after a given log entry, which snapshots must exist, which
 * must not, and which may go either way.
 *
 * The model's rule: an operation whose `end` mark lies before the cut returned before the
 * power went, so its effect must be there; one whose `begin` mark lies after the cut had not
 * started, so its effect must not be; one in between may have happened or not, but never
 * half (a Commit leaves either the active key or the committed name, not both or neither).
 *
 * @module
 */
import { DmIoctl } from "../../src/dm/ioctl/ioctl.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import { createFormatter } from "../../src/pool/formatter.ts";
import { createLogger } from "../../src/util/log.ts";
import type { Kind } from "../../src/snapshots/types.ts";
import { sh } from "./fixtures.ts";

/** The device-mapper stack the server uses by default (DM ioctls), for tests. */
export function ioctlStack() {
  const logger = createLogger({ level: "error" });
  const runner = new DenoCommandRunner({ logger });
  return { logger, runner, dm: new DmIoctl({ logger }), formatter: createFormatter(runner) };
}

/** A positive integer from environment variable `name`, else `fallback`. */
export function countFromEnv(name: string, fallback: number): number {
  const text = Deno.env.get(name);
  if (text === undefined || text === "") return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`Cannot run the power-cut test: ${name}=${text} is not a positive integer`);
  }
  return n;
}

/** Where each part lives on the recorded disk, in 512-byte sectors. */
export const LAYOUT = {
  meta: { start: 0, sectors: 16 * 2048 },
  data: { start: 16 * 2048, sectors: 256 * 2048 },
  root: { start: 272 * 2048, sectors: 64 * 2048 },
  /** The whole disk. */
  sectors: 336 * 2048,
} as const;

/** dm names of the three parts of one disk. */
export interface Slices {
  meta: string;
  data: string;
  root: string;
}

/** Cuts the disk at `device` into the parts of {@linkcode LAYOUT} (linear targets). */
export async function createSlices(slices: Slices, device: string): Promise<void> {
  for (const part of ["meta", "data", "root"] as const) {
    const { start, sectors } = LAYOUT[part];
    await sh(
      "dmsetup",
      "create",
      slices[part],
      "--table",
      `0 ${sectors} linear ${device} ${start}`,
    );
  }
}

/** The thin-pool table on `slices`: 64 KiB blocks, no zeroing (as the test pools). */
export function poolTable(slices: Slices): string {
  return `0 ${LAYOUT.data.sectors} thin-pool /dev/mapper/${slices.meta} ` +
    `/dev/mapper/${slices.data} 128 32768 1 skip_block_zeroing`;
}

/** One line the worker printed. */
export interface WorkerEvent {
  n: number;
  phase: "begin" | "end";
  op: "prepare" | "write" | "commit" | "view" | "remove";
  key: string;
  /** Commit: the committed name. */
  name?: string;
  /** Prepare, view: the parent ("" for none). */
  parent?: string;
  /** Write, commit: the file written and its content. */
  file?: string;
  content?: string;
}

/** Parses the worker's stdout; checks the events are numbered 1, 2, 3, … */
export function parseEvents(stdout: string): WorkerEvent[] {
  const events = stdout.split("\n").filter((l) => l.startsWith("{")).map((l) =>
    JSON.parse(l) as WorkerEvent
  );
  events.forEach((e, i) => {
    if (e.n !== i + 1) throw new Error(`worker event ${i + 1} is numbered ${e.n}: ${e.op}`);
  });
  return events;
}

/** Where, in log entries, a snapshot's life begins and ends. */
export interface Lifecycle {
  name: string;
  kind: Kind;
  parent: string;
  /** Log index of the mark of the `begin`/`end` of the operation that creates it. */
  createBegin: number;
  createEnd: number;
  /** … of the operation that removes it, or commits it away (for an active key). */
  goneBegin: number;
  goneEnd: number;
  /** Log index of the `end` of the write into it (actives) or of the commit (committed). */
  contentFrom: number;
  file?: string;
  content?: string;
  /** For a committed name: the active key it came from; for an active: the name it became. */
  partner?: string;
}

/**
 * Lifecycles of every snapshot the worker touched; `markAt(n)` is the log index of mark
 * `ev-<n>`. Unreached ends are `Infinity`.
 */
export function lifecycles(
  events: WorkerEvent[],
  markAt: (n: number) => number,
): Map<string, Lifecycle> {
  const lives = new Map<string, Lifecycle>();
  const begins = new Map<string, WorkerEvent>();
  const born = (name: string, kind: Kind, parent: string, begin: number): Lifecycle => {
    const life: Lifecycle = {
      name,
      kind,
      parent,
      createBegin: begin,
      createEnd: Infinity,
      goneBegin: Infinity,
      goneEnd: Infinity,
      contentFrom: Infinity,
    };
    lives.set(name, life);
    return life;
  };
  for (const e of events) {
    const at = markAt(e.n);
    const id = `${e.op} ${e.key}`;
    if (e.phase === "begin") {
      begins.set(id, e);
      if (e.op === "prepare") born(e.key, "active", e.parent ?? "", at);
      if (e.op === "view") born(e.key, "view", e.parent ?? "", at);
      if (e.op === "commit" || e.op === "remove") lives.get(e.key)!.goneBegin = at;
      if (e.op === "commit") {
        const life = born(e.name!, "committed", lives.get(e.key)!.parent, at);
        life.file = e.file;
        life.content = e.content;
        life.partner = e.key;
        lives.get(e.key)!.partner = e.name;
      }
      continue;
    }
    if (!begins.delete(id)) throw new Error(`worker event ${e.n}: end of ${id} without begin`);
    const life = lives.get(e.key)!;
    if (e.op === "prepare" || e.op === "view") life.createEnd = at;
    if (e.op === "write") {
      life.contentFrom = at;
      life.file = e.file;
      life.content = e.content;
    }
    if (e.op === "commit" || e.op === "remove") life.goneEnd = at;
    if (e.op === "commit") {
      const committed = lives.get(e.name!)!;
      committed.createEnd = at;
      committed.contentFrom = at;
    }
  }
  return lives;
}

/** What a cut before log entry `cut` (the first `cut` entries survive) demands of `life`. */
export function expectation(life: Lifecycle, cut: number): "present" | "absent" | "either" {
  if (life.createEnd < cut && !(life.goneBegin < cut)) return "present";
  if (!(life.createBegin < cut) || life.goneEnd < cut) return "absent";
  return "either";
}
