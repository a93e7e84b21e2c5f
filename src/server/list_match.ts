/**
 * Matching a List's snapshots against its filters without stopping the rest of the server.
 *
 * The server is one thread: a List that matched thousands of snapshots in one synchronous loop
 * would hold every other call, and SIGTERM, until it finished. So:
 *
 * - filters without `~=` (presence, `==`, `!=`: cheap per snapshot, and their number is bounded
 *   by the size of the request's filters) are matched here in slices of at most
 *   {@linkcode MATCH_SLICE_MS}, yielding to the event loop between slices; a List nobody waits
 *   for any more (cancelled, past its deadline, cut off at shutdown) stops at the next slice;
 * - filters with `~=` are parsed and matched on a worker thread ({@linkcode RegexMatcher}):
 *   compiling an RE2 expression of the largest size Go allows takes seconds, and matching one
 *   against a 4 KiB label up to ~20 ns per program instruction and character, however linear.
 *   The worker checks a shared stop flag before each snapshot; the expressions of one List may
 *   have at most {@linkcode MAX_REGEX_INSTRUCTIONS} program instructions in all, which bounds
 *   the time per snapshot (about 2 s at worst on a 4 KiB value, milliseconds for usual ones),
 *   so a stopped List ends its worker soon; at most {@linkcode MAX_MATCH_WORKERS} such Lists
 *   match at once, others wait for a turn (a worker cannot be killed mid-loop: Deno's
 *   `Worker.terminate()` does not stop a thread that does not yield).
 *
 * @module
 */
import type { Filter } from "../filters/filters.ts";
import { matchInfo } from "../snapshots/match.ts";
import type { Info } from "../snapshots/types.ts";
import { InvalidArgumentError, SnapshotterError } from "../util/errors.ts";
import type { MatchReply, MatchRequest } from "./list_match_worker.ts";

/** Longest stretch of matching on the server's thread between two yields to the event loop. */
export const MATCH_SLICE_MS = 10;

/** Bound on the RE2 program instructions of all `~=` expressions of one List. */
export const MAX_REGEX_INSTRUCTIONS = 20_000;

/** Lists with `~=` filters matching at the same time (each on a worker thread). */
export const MAX_MATCH_WORKERS = 2;

/** How often a waiting List checks whether anyone still waits for it. */
const GONE_CHECK_MS = 20;

/** Whether nobody waits for the List any more. */
export type Gone = () => boolean;

/** A List whose caller went away while it was matching. */
export class MatchStoppedError extends Error {
  /** Creates the error. */
  constructor() {
    super("List stopped: nobody waits for it any more");
    this.name = "MatchStoppedError";
  }
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Time slices of one List: work runs for {@linkcode MATCH_SLICE_MS}, then yields to the event
 * loop, across however many pages and calls the List makes.
 */
export class Slices {
  #start = performance.now();
  readonly #sliceMs: number;

  /** Slices of `sliceMs`. */
  constructor(sliceMs = MATCH_SLICE_MS) {
    this.#sliceMs = sliceMs;
  }

  /**
   * Yields to the event loop when the current slice is used up.
   *
   * @throws {MatchStoppedError} when `gone()` turns true at the yield
   */
  async next(gone: Gone): Promise<void> {
    if (performance.now() - this.#start < this.#sliceMs) return;
    await yieldToEventLoop();
    if (gone()) throw new MatchStoppedError();
    this.#start = performance.now();
  }

  /** True when the current slice is used up. */
  get due(): boolean {
    return performance.now() - this.#start >= this.#sliceMs;
  }
}

/**
 * The Infos matching `filter` (a filter without `~=`), in order, matched in the time slices of
 * `slices` (one List's: they carry over from page to page) with a yield to the event loop
 * between them.
 *
 * @throws {MatchStoppedError} when `gone()` turns true at a yield
 */
export async function matchSliced(
  infos: readonly Info[],
  filter: Filter,
  gone: Gone,
  slices: Slices = new Slices(),
): Promise<Info[]> {
  const out: Info[] = [];
  for (const info of infos) {
    if (slices.due) await slices.next(gone);
    if (matchInfo(filter, info)) out.push(info);
  }
  return out;
}

/** Options of {@linkcode RegexMatcher}. */
export interface RegexMatcherOptions {
  /** Workers at once (default {@linkcode MAX_MATCH_WORKERS}). */
  maxWorkers?: number;
  /** Instruction budget (default {@linkcode MAX_REGEX_INSTRUCTIONS}). */
  maxInstructions?: number;
  /** The worker module (default `list_match_worker.ts` beside this one). */
  workerUrl?: string | URL;
}

interface Running {
  stop: Int32Array;
  done: Promise<void>;
}

/** Runs `~=` filters on worker threads, a bounded number at a time. */
export class RegexMatcher {
  readonly #maxWorkers: number;
  readonly #maxInstructions: number;
  readonly #workerUrl: string;
  readonly #running = new Set<Running>();
  readonly #waiting: (() => void)[] = [];
  #closed = false;

  /** Creates the matcher; workers start per List. */
  constructor(options: RegexMatcherOptions = {}) {
    this.#maxWorkers = Math.max(1, options.maxWorkers ?? MAX_MATCH_WORKERS);
    this.#maxInstructions = options.maxInstructions ?? MAX_REGEX_INSTRUCTIONS;
    this.#workerUrl = String(
      options.workerUrl ?? new URL("./list_match_worker.ts", import.meta.url),
    );
  }

  /** Lists matching on a worker now. */
  get active(): number {
    return this.#running.size;
  }

  /**
   * The Infos matching the filter strings `sources`, in order.
   *
   * @throws {InvalidArgumentError} for a malformed filter or expressions over the budget
   * @throws {MatchStoppedError} when `gone()` turns true first
   */
  async match(sources: readonly string[], infos: readonly Info[], gone: Gone): Promise<Info[]> {
    await this.#turn(gone);
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const reply = Promise.withResolvers<MatchReply>();
    const worker = new Worker(this.#workerUrl, { type: "module" });
    worker.onmessage = (e: MessageEvent<MatchReply>) => reply.resolve(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      reply.resolve({
        error: { kind: "unknown", message: `List filter worker failed: ${e.message}` },
      });
    };
    const running: Running = {
      stop,
      done: reply.promise.then(() => {}, () => {}).finally(() => {
        worker.terminate();
        this.#running.delete(running);
        this.#waiting.shift()?.();
      }),
    };
    this.#running.add(running);
    const request: MatchRequest = {
      sources: [...sources],
      rows: infos.map(({ name, parent, kind, labels }) => ({ name, parent, kind, labels })),
      stop,
      maxInstructions: this.#maxInstructions,
    };
    worker.postMessage(request);
    // the caller is told at once when it goes away; the worker stops at its next snapshot
    const stopped = Promise.withResolvers<MatchReply>();
    const timer = setInterval(() => {
      if (!gone()) return;
      Atomics.store(stop, 0, 1);
      stopped.resolve({ stopped: true });
    }, GONE_CHECK_MS);
    let answer: MatchReply;
    try {
      answer = await Promise.race([reply.promise, stopped.promise]);
    } finally {
      clearInterval(timer);
    }
    if ("stopped" in answer) throw new MatchStoppedError();
    if ("error" in answer) {
      const { kind, message } = answer.error;
      if (kind === "invalid_argument") throw new InvalidArgumentError(message);
      throw new SnapshotterError(kind, message);
    }
    return Array.from(answer.matched, (i) => infos[i]);
  }

  /**
   * Asks every worker to stop and waits up to `timeoutMs` for them to end; Lists waiting for
   * a turn are let through (they stop at once: their callers are gone by then).
   */
  async close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    for (const r of this.#running) Atomics.store(r.stop, 0, 1);
    for (const wake of this.#waiting.splice(0)) wake();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([...this.#running].map((r) => r.done)),
      new Promise((resolve) => timer = setTimeout(resolve, timeoutMs)),
    ]);
    clearTimeout(timer);
  }

  /** Waits for a free worker slot (FIFO). */
  async #turn(gone: Gone): Promise<void> {
    while (!this.#closed && this.#running.size >= this.#maxWorkers) {
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#waiting.push(resolve);
      const check = setInterval(() => {
        if (gone()) resolve();
      }, GONE_CHECK_MS);
      await promise;
      clearInterval(check);
      const i = this.#waiting.indexOf(resolve);
      if (i >= 0) this.#waiting.splice(i, 1);
      if (gone()) {
        // a slot this waiter was woken for goes to the next one
        if (this.#running.size < this.#maxWorkers) this.#waiting.shift()?.();
        throw new MatchStoppedError();
      }
    }
    if (this.#closed || gone()) throw new MatchStoppedError();
  }
}
