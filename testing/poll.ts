/**
 * Waiting in tests for a condition that nothing announces: {@linkcode poll} checks it until it
 * holds and hands back what it returned, or fails saying what was awaited.
 *
 * Invariants:
 * - the condition is checked at once, then every `intervalMs`, and always once more after the
 *   time limit has passed, so a slow timer never fails a condition that holds;
 * - it holds when it returns (or resolves to) a truthy value, and that value is returned;
 * - it is never called again while a previous (async) check is still running;
 * - an exception from the condition ends the wait at once (it is a failure, not a "not yet");
 * - on timeout a {@linkcode PollTimeoutError} says what was awaited, for how long, and `detail`.
 *
 * Where the code under test can announce a state (a promise, an event, an HTTP/2 PING's ACK
 * after the frames before it), wait for that instead: polling is for state read from outside
 * (sysfs, `/proc`, logs, a child process's output).
 *
 * ```ts
 * const line = await poll(() => logs.find((l) => l.includes("serving")), "the server to serve");
 * ```
 *
 * @module
 */

/** Options for {@linkcode poll}. */
export interface PollOptions {
  /** How long to wait before failing, in ms (default 5000). */
  timeoutMs?: number;
  /** Pause between two checks, in ms (default 10). */
  intervalMs?: number;
  /** Appended to the timeout message (e.g. a log tail); read only when the wait fails. */
  detail?: () => string | Promise<string>;
}

/** A condition did not hold within its time limit. */
export class PollTimeoutError extends Error {
  /** What was awaited, as given to {@linkcode poll}. */
  readonly what: string;
  /** The time limit in ms. */
  readonly timeoutMs: number;

  /** Creates the error. */
  constructor(what: string, timeoutMs: number, detail?: string) {
    super(`Timed out after ${timeoutMs} ms waiting for ${what}${detail ? `: ${detail}` : ""}`);
    this.name = "PollTimeoutError";
    this.what = what;
    this.timeoutMs = timeoutMs;
  }
}

type Falsy = false | 0 | 0n | "" | null | undefined;

/**
 * Checks `condition` until it returns a truthy value and resolves with that value; rejects
 * with a {@linkcode PollTimeoutError} naming `what` ("waiting for <what>") when it does not
 * hold within `timeoutMs`. Return an object or `true` where 0 or "" would be a valid result.
 */
export async function poll<T>(
  condition: () => T | Promise<T>,
  what: string,
  options: PollOptions = {},
): Promise<Exclude<T, Falsy>> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const intervalMs = options.intervalMs ?? 10;
  const start = performance.now();
  for (;;) {
    const value = await condition();
    if (value) return value as Exclude<T, Falsy>;
    const elapsed = performance.now() - start;
    if (elapsed >= timeoutMs) {
      throw new PollTimeoutError(what, timeoutMs, await options.detail?.());
    }
    const pause = Math.min(intervalMs, timeoutMs - elapsed);
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}

/**
 * `undefined` for a {@linkcode PollTimeoutError}, anything else rethrown: `await poll(…)
 * .catch(timedOut)` is a wait whose time limit is an answer rather than a failure (a check
 * that something does *not* happen within that time, or a count that settles as far as it
 * will).
 */
export function timedOut(err: unknown): undefined {
  if (err instanceof PollTimeoutError) return undefined;
  throw err;
}
