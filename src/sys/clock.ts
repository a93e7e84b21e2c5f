/**
 * Wall-clock time with nanosecond precision, for snapshot `created`/`updated` stamps.
 *
 * containerd's conformance suite checks that a snapshot's `Created` lies between two
 * `time.Now()` samples the client takes around the call, so millisecond `Date.now()` is not
 * enough. Two backends:
 *
 * - `ffi`: `clock_gettime(CLOCK_REALTIME)` from libc through FFI (`libc.ts`; needs
 *   `--allow-ffi`; about 0.1 µs per call). Exact.
 * - `calibrated`: pairs a `Date.now()` tick edge (found by spinning until the millisecond
 *   changes) with `performance.now()`, and derives wall time from the monotonic clock. It
 *   re-calibrates when the last calibration is older than `recalibrateMs`, and whenever the
 *   derived time disagrees with `Date.now()` by more than a millisecond (a wall-clock step).
 *   Accurate to a few microseconds right after calibration; between calibrations it drifts with
 *   the NTP slew rate (at most 0.5 ms/s, usually far less). A calibration busy-waits for up to
 *   1 ms.
 *
 * Every clock is non-decreasing: when the OS clock returns a value earlier than the previous
 * one (it was stepped back), {@linkcode Clock.now} returns the previous value again, so equal
 * consecutive timestamps are possible and a large backward step freezes the clock until the
 * OS clock catches up.
 *
 * @module
 */

import { DEFAULT_LIBC, dlopenLibc } from "./libc.ts";

/** A wall-clock instant with nanosecond precision, as in `google.protobuf.Timestamp`. */
export interface Timestamp {
  /** Whole seconds since the Unix epoch (UTC). */
  seconds: number;
  /** 0..999,999,999. */
  nanos: number;
}

const NS_PER_SECOND = 1_000_000_000;
const NS_PER_MS = 1_000_000;
/** Widest accepted uncertainty of a calibration tick edge, in ms. */
const MAX_EDGE_WINDOW_MS = 0.02;

/** Which clock source a {@linkcode Clock} reads (`custom`: {@linkcode ClockOptions.read}). */
export type ClockBackend = "ffi" | "calibrated" | "custom";

/** A nanosecond wall clock. Create with {@linkcode createClock}; close when done. */
export interface Clock {
  /** The source in use. */
  readonly backend: ClockBackend;
  /**
   * Current UTC wall-clock time. Never earlier than the previous result of this clock.
   * @throws {Error} after {@linkcode Clock.close}
   */
  now(): Timestamp;
  /** Releases the libc handle (ffi backend). Idempotent. */
  close(): void;
  /** Same as {@linkcode Clock.close}, for `using`. */
  [Symbol.dispose](): void;
}

/** Options for {@linkcode createClock}. */
export interface ClockOptions {
  /**
   * `"auto"` (default): ffi when `--allow-ffi` is granted and libc loads, else calibrated.
   * `"ffi"`: ffi or throw. `"calibrated"`: never touch FFI.
   */
  backend?: "auto" | ClockBackend;
  /** Calibrated backend: maximum age of a calibration in ms (default 1000). */
  recalibrateMs?: number;
  /** ffi backend: the libc to open (default `"libc.so.6"`). */
  libc?: string;
  /**
   * A raw wall-clock reading to use instead of either backend (e.g. a scripted source in
   * tests); the clock still applies the non-decreasing rule. `backend` is then `"custom"`.
   */
  read?: () => Timestamp;
}

/** A source of raw wall-clock readings (not yet made monotonic). */
interface Source {
  read(): Timestamp;
  close(): void;
}

const CLOCK_REALTIME = 0;

function ffiGranted(): boolean {
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}

/** `clock_gettime(CLOCK_REALTIME)` through libc; `struct timespec` is two 64-bit fields. */
function openFfiSource(libc: string): Source {
  if (!(Deno.build.arch === "x86_64" || Deno.build.arch === "aarch64")) {
    throw new Error(
      `Cannot use clock_gettime via FFI: unsupported architecture ${Deno.build.arch}`,
    );
  }
  const lib = dlopenLibc(["clock_gettime"], libc);
  const spec = new BigInt64Array(2);
  let open = true;
  const read = (): Timestamp => {
    const rc = lib.symbols.clock_gettime(CLOCK_REALTIME, spec);
    if (rc !== 0) throw new Error(`clock_gettime(CLOCK_REALTIME) failed with ${rc}`);
    return { seconds: Number(spec[0]), nanos: Number(spec[1]) };
  };
  read(); // fail here, not on first use
  return {
    read,
    close() {
      if (open) {
        open = false;
        lib.close();
      }
    },
  };
}

/** Wall time as `Date.now()` tick edge + elapsed `performance.now()`. */
function openCalibratedSource(recalibrateMs: number): Source {
  /** Wall ms at the tick edge and the monotonic reading taken there. */
  let baseMs = 0;
  let basePerf = 0;

  const calibrate = (): void => {
    // Spin until the millisecond changes. Each Date.now() call is bracketed by monotonic
    // readings, so the edge lies between the previous call and this one; its estimate is the
    // middle of the gap between them. A window wider than MAX_EDGE_WINDOW_MS (the thread was
    // preempted) is discarded and the next edge is used. Bounded in case Date.now() is frozen.
    let prevMs = Date.now();
    let prevBefore = performance.now();
    let prevAfter = prevBefore;
    const deadline = prevBefore + 50;
    for (;;) {
      const before = performance.now();
      const ms = Date.now();
      const after = performance.now();
      if (ms !== prevMs) {
        const good = after - prevBefore <= MAX_EDGE_WINDOW_MS;
        if (good || after > deadline) {
          baseMs = ms;
          basePerf = (prevAfter + before) / 2;
          return;
        }
      }
      prevMs = ms;
      prevBefore = before;
      prevAfter = after;
      if (after > deadline + 50) {
        // Date.now() does not advance; use what we have.
        baseMs = ms;
        basePerf = after;
        return;
      }
    }
  };

  const derive = (perf: number): Timestamp => {
    const elapsedNs = Math.round((perf - basePerf) * NS_PER_MS);
    const seconds = Math.floor(baseMs / 1000);
    return normalize(seconds, (baseMs - seconds * 1000) * NS_PER_MS + elapsedNs);
  };

  calibrate();
  return {
    read() {
      const perf = performance.now();
      const wallMs = Date.now();
      if (perf - basePerf > recalibrateMs) {
        calibrate();
        return derive(performance.now());
      }
      const t = derive(perf);
      // Date.now() is floor(wall ms); a derived time outside [wallMs - 1, wallMs + 2) ms means
      // the wall clock was stepped or the monotonic clock drifted: calibrate again.
      const derivedMs = t.seconds * 1000 + t.nanos / NS_PER_MS;
      if (derivedMs < wallMs - 1 || derivedMs >= wallMs + 2) {
        calibrate();
        return derive(performance.now());
      }
      return t;
    },
    close() {},
  };
}

function normalize(seconds: number, nanos: number): Timestamp {
  const carry = Math.floor(nanos / NS_PER_SECOND);
  return { seconds: seconds + carry, nanos: nanos - carry * NS_PER_SECOND };
}

/**
 * Creates a clock. With the default `backend: "auto"` it uses FFI when permitted and libc can
 * be opened, and the calibrated clock otherwise.
 *
 * @throws {Error} with `backend: "ffi"` when FFI is not permitted or libc cannot be loaded
 */
export function createClock(options: ClockOptions = {}): Clock {
  const wanted = options.backend ?? "auto";
  const recalibrateMs = options.recalibrateMs ?? 1000;
  if (!(recalibrateMs > 0)) throw new RangeError("recalibrateMs must be positive");
  let source: Source | undefined;
  let backend: ClockBackend = "calibrated";
  if (options.read) {
    source = { read: options.read, close() {} };
    backend = "custom";
  } else if (wanted === "ffi" || (wanted === "auto" && ffiGranted())) {
    try {
      source = openFfiSource(options.libc ?? DEFAULT_LIBC);
      backend = "ffi";
    } catch (err) {
      if (wanted === "ffi") {
        throw new Error(`Cannot open the FFI clock: ${(err as Error).message}`, { cause: err });
      }
    }
  }
  source ??= openCalibratedSource(recalibrateMs);

  const src = source;
  let last: Timestamp = { seconds: -Infinity, nanos: 0 };
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    src.close();
  };
  return {
    backend,
    now(): Timestamp {
      if (closed) throw new Error("Cannot read the clock: it is closed");
      const t = src.read();
      if (compareTimestamps(t, last) < 0) return { ...last };
      last = t;
      return { ...t };
    },
    close,
    [Symbol.dispose]: close,
  };
}

/**
 * One reading of the wall clock without keeping a clock: opens the best backend, reads it and
 * closes it. Costs up to 1 ms when FFI is not available (calibration) and gives no ordering
 * guarantee between calls; long-lived code should keep a {@linkcode createClock} instance.
 */
export function nowTimestamp(): Timestamp {
  using clock = createClock();
  return clock.now();
}

/** -1, 0 or 1 as `a` is earlier than, equal to or later than `b`. */
export function compareTimestamps(a: Timestamp, b: Timestamp): -1 | 0 | 1 {
  if (a.seconds !== b.seconds) return a.seconds < b.seconds ? -1 : 1;
  if (a.nanos !== b.nanos) return a.nanos < b.nanos ? -1 : 1;
  return 0;
}

/**
 * RFC 3339 in UTC with exactly nine fractional digits, e.g. `2024-05-06T07:08:09.000001000Z`
 * (Go's `RFC3339Nano` would trim trailing zeros; this form sorts lexically).
 *
 * @throws {RangeError} for a timestamp outside `Date`'s range or with nanos outside 0..999999999
 */
export function timestampToString(ts: Timestamp): string {
  if (!Number.isInteger(ts.nanos) || ts.nanos < 0 || ts.nanos >= NS_PER_SECOND) {
    throw new RangeError(`Invalid timestamp nanos ${ts.nanos}`);
  }
  const iso = new Date(ts.seconds * 1000).toISOString(); // throws RangeError when out of range
  return `${iso.slice(0, -5)}.${String(ts.nanos).padStart(9, "0")}Z`;
}

/**
 * The timestamp of a `Date` (millisecond precision: nanos is a multiple of 1,000,000).
 *
 * @throws {RangeError} for an invalid date
 */
export function timestampFromDate(date: Date): Timestamp {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new RangeError("Invalid date");
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * NS_PER_MS };
}
