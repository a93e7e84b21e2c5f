import assert from "node:assert/strict";
import {
  type Clock,
  type ClockBackend,
  compareTimestamps,
  createClock,
  nowTimestamp,
  timestampFromDate,
  timestampToString,
} from "./clock.ts";
import type { Timestamp } from "../snapshots/types.ts";

function toNs(t: Timestamp): bigint {
  return BigInt(t.seconds) * 1_000_000_000n + BigInt(t.nanos);
}

function assertWellFormed(t: Timestamp): void {
  assert.ok(Number.isInteger(t.seconds), `seconds ${t.seconds}`);
  assert.ok(Number.isInteger(t.nanos) && t.nanos >= 0 && t.nanos < 1e9, `nanos ${t.nanos}`);
}

/** Asserts `clock.now()` lies within the Date.now() samples around it (ms floor semantics). */
function assertNearDateNow(clock: Clock, samples = 200): void {
  for (let i = 0; i < samples; i++) {
    const before = Date.now();
    const t = clock.now();
    const after = Date.now();
    assertWellFormed(t);
    const ms = Number(toNs(t) / 1_000_000n);
    // A few ms of slack for the calibrated backend; ffi is exact.
    assert.ok(ms >= before - 2 && ms <= after + 2, `${ms} not in [${before}, ${after}]`);
  }
}

function assertNonDecreasing(clock: Clock, calls: number): void {
  let prev = clock.now();
  for (let i = 0; i < calls; i++) {
    const t = clock.now();
    assertWellFormed(t);
    assert.ok(compareTimestamps(prev, t) <= 0, `${JSON.stringify(prev)} > ${JSON.stringify(t)}`);
    prev = t;
  }
}

for (const backend of ["ffi", "calibrated"] as const) {
  Deno.test(`clock(${backend}): near Date.now(), well formed, non-decreasing over 10k calls`, () => {
    using clock = createClock({ backend });
    assert.equal(clock.backend, backend);
    assertNearDateNow(clock);
    assertNonDecreasing(clock, 10_000);
  });

  Deno.test(`clock(${backend}): sub-millisecond resolution`, () => {
    using clock = createClock({ backend });
    const seen = new Set<number>();
    for (let i = 0; i < 50; i++) {
      seen.add(clock.now().nanos % 1_000_000);
      const until = performance.now() + 0.03;
      while (performance.now() < until) { /* 30 µs apart */ }
    }
    // Millisecond-only clocks would give a single value (0).
    assert.ok(seen.size > 10, `only ${seen.size} distinct sub-ms parts`);
  });
}

Deno.test("clock: calibrated agrees with clock_gettime to well under 100 µs", async () => {
  using ffi = createClock({ backend: "ffi" });
  let worst = 0n;
  for (let round = 0; round < 5; round++) {
    using cal = createClock({ backend: "calibrated" });
    for (let i = 0; i < 20; i++) {
      const a = toNs(ffi.now());
      const b = toNs(cal.now());
      const c = toNs(ffi.now());
      const err = b < a ? a - b : b > c ? b - c : 0n;
      if (err > worst) worst = err;
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  assert.ok(worst < 100_000n, `calibrated clock off by ${worst} ns`);
});

Deno.test("clock: calibrated re-calibration keeps it correct and non-decreasing", async () => {
  using clock = createClock({ backend: "calibrated", recalibrateMs: 0.01 });
  assertNonDecreasing(clock, 100);
  await new Promise((r) => setTimeout(r, 5));
  assertNearDateNow(clock, 20);
});

Deno.test("clock: auto prefers ffi when permitted", () => {
  using clock = createClock();
  assert.equal(clock.backend, "ffi");
  assertNearDateNow(clock);
});

Deno.test("clock: bad libc → ffi throws, auto falls back to calibrated", () => {
  assert.throws(
    () => createClock({ backend: "ffi", libc: "libdoes-not-exist.so.42" }),
    /^Error: Cannot open the FFI clock: /,
  );
  using clock = createClock({ libc: "libdoes-not-exist.so.42" });
  assert.equal(clock.backend, "calibrated");
  assertNearDateNow(clock);
});

Deno.test("clock: without --allow-ffi, auto uses the calibrated clock", async () => {
  const script = `
    import { createClock } from ${JSON.stringify(new URL("./clock.ts", import.meta.url).href)};
    using clock = createClock();
    const before = Date.now();
    const t = clock.now();
    console.log(JSON.stringify({ backend: clock.backend, t, before }));
    try { createClock({ backend: "ffi" }); console.log("ffi opened"); }
    catch (e) { console.log("ffi refused: " + e.message); }
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-check", "--allow-read", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const writer = out.stdin.getWriter();
  await writer.write(new TextEncoder().encode(script));
  await writer.close();
  const { code, stdout, stderr } = await out.output();
  const text = new TextDecoder().decode(stdout);
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  const [first, second] = text.trim().split("\n");
  const parsed = JSON.parse(first) as { backend: ClockBackend; t: Timestamp; before: number };
  assert.equal(parsed.backend, "calibrated");
  assertWellFormed(parsed.t);
  assert.ok(Math.abs(Number(toNs(parsed.t) / 1_000_000n) - parsed.before) < 50);
  assert.match(second, /^ffi refused: Cannot open the FFI clock: /);
});

Deno.test("clock: an OS clock stepping back never makes now() go backwards", () => {
  const script: Timestamp[] = [
    { seconds: 100, nanos: 5 },
    { seconds: 100, nanos: 7 },
    { seconds: 99, nanos: 999_999_999 }, // stepped back
    { seconds: 100, nanos: 7 }, // equal to the last
    { seconds: 100, nanos: 6 },
    { seconds: 100, nanos: 8 },
    { seconds: 101, nanos: 0 },
  ];
  let i = 0;
  using clock = createClock({ read: () => script[i++] });
  assert.equal(clock.backend, "custom");
  const got = script.map(() => clock.now());
  assert.deepEqual(got, [
    { seconds: 100, nanos: 5 },
    { seconds: 100, nanos: 7 },
    { seconds: 100, nanos: 7 },
    { seconds: 100, nanos: 7 },
    { seconds: 100, nanos: 7 },
    { seconds: 100, nanos: 8 },
    { seconds: 101, nanos: 0 },
  ]);
  // Results are copies: mutating one does not affect the clock.
  got[6].seconds = 0;
  i = 3;
  assert.deepEqual(clock.now(), { seconds: 101, nanos: 0 });
});

Deno.test("clock: close is idempotent and now() afterwards throws", () => {
  for (const backend of ["ffi", "calibrated"] as const) {
    const clock = createClock({ backend });
    clock.now();
    clock.close();
    clock.close();
    clock[Symbol.dispose]();
    assert.throws(() => clock.now(), /^Error: Cannot read the clock: it is closed$/);
  }
  assert.throws(() => createClock({ recalibrateMs: 0 }), RangeError);
});

Deno.test("clock: nowTimestamp is a one-shot reading", () => {
  const before = Date.now();
  const t = nowTimestamp();
  const after = Date.now();
  assertWellFormed(t);
  const ms = Number(toNs(t) / 1_000_000n);
  assert.ok(ms >= before - 2 && ms <= after + 2);
});

Deno.test("clock: compareTimestamps", () => {
  const cases: Array<[Timestamp, Timestamp, -1 | 0 | 1]> = [
    [{ seconds: 1, nanos: 0 }, { seconds: 1, nanos: 0 }, 0],
    [{ seconds: 1, nanos: 0 }, { seconds: 1, nanos: 1 }, -1],
    [{ seconds: 1, nanos: 999_999_999 }, { seconds: 2, nanos: 0 }, -1],
    [{ seconds: 2, nanos: 0 }, { seconds: 1, nanos: 999_999_999 }, 1],
    [{ seconds: -1, nanos: 5 }, { seconds: 0, nanos: 0 }, -1],
    [{ seconds: 5, nanos: 9 }, { seconds: 5, nanos: 8 }, 1],
  ];
  for (const [a, b, want] of cases) {
    assert.equal(compareTimestamps(a, b), want, `${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
    assert.equal(compareTimestamps(b, a), -want || 0);
  }
});

Deno.test("clock: timestampToString is RFC 3339 UTC with nine digits", () => {
  const cases: Array<[Timestamp, string]> = [
    [{ seconds: 0, nanos: 0 }, "1970-01-01T00:00:00.000000000Z"],
    [{ seconds: 1, nanos: 1 }, "1970-01-01T00:00:01.000000001Z"],
    [{ seconds: 1_700_000_000, nanos: 123_456_789 }, "2023-11-14T22:13:20.123456789Z"],
    [{ seconds: 1_714_979_289, nanos: 1000 }, "2024-05-06T07:08:09.000001000Z"],
    [{ seconds: -1, nanos: 500_000_000 }, "1969-12-31T23:59:59.500000000Z"],
    [{ seconds: 253_402_300_799, nanos: 999_999_999 }, "9999-12-31T23:59:59.999999999Z"],
  ];
  for (const [ts, want] of cases) assert.equal(timestampToString(ts), want);
  // Agrees with Date for millisecond values; Date.parse understands it.
  for (const ms of [0, 1, 999, 1_234_567_890_123, -86_400_001]) {
    const s = timestampToString(timestampFromDate(new Date(ms)));
    assert.equal(s.slice(0, 23) + "Z", new Date(ms).toISOString());
    assert.equal(Date.parse(s), ms);
  }
  for (const nanos of [-1, 1e9, 0.5, NaN]) {
    assert.throws(() => timestampToString({ seconds: 0, nanos }), RangeError);
  }
  assert.throws(() => timestampToString({ seconds: 1e15, nanos: 0 }), RangeError);
});

Deno.test("clock: timestampFromDate", () => {
  assert.deepEqual(timestampFromDate(new Date(0)), { seconds: 0, nanos: 0 });
  assert.deepEqual(timestampFromDate(new Date(1_700_000_000_123)), {
    seconds: 1_700_000_000,
    nanos: 123_000_000,
  });
  assert.deepEqual(timestampFromDate(new Date(-1)), { seconds: -1, nanos: 999_000_000 });
  assert.throws(() => timestampFromDate(new Date(NaN)), RangeError);
});
