/**
 * A List that takes long must not hold the server: its matching yields to the event loop (or
 * runs on a worker, for `~=`), stops when its caller goes away, and has bounded inputs. Tested
 * on the matching functions and through the server (both transports, grpc-js client).
 */
import assert from "node:assert/strict";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { parseFilters } from "../filters/filters.ts";
import type { Info } from "../snapshots/types.ts";
import { memorySnapshotter } from "../../testing/memory_snapshotter.ts";
import { poll } from "../../testing/poll.ts";
import { startTestServer } from "../../testing/test_server.ts";
import { isServiceError, type SnapshotsClient } from "../../testing/snapshots_client.ts";
import {
  matchSliced,
  MatchStoppedError,
  MAX_REGEX_INSTRUCTIONS,
  RegexMatcher,
} from "./list_match.ts";
import { type Transport, TRANSPORTS } from "./server.ts";
import { MAX_LIST_FILTER_BYTES } from "./validate.ts";

const T = { seconds: 1, nanos: 0 };

function info(name: string, labels: Record<string, string> = {}): Info {
  return { name, parent: "", kind: "active", created: T, updated: T, labels };
}

/** Filter strings of about 16 KiB without `~=`: costly per snapshot, never matching. */
function heavyFilters(): string[] {
  const out: string[] = [];
  for (let n = 0; n < MAX_LIST_FILTER_BYTES - 64;) {
    const f = `labels.x==v${out.length},name!=n${out.length}`;
    out.push(f);
    n += f.length;
  }
  return out;
}

/** A `~=` expression that takes about half a second against 4,000 "a"s (7,003 instructions). */
const SLOW_REGEX = "labels.x~=(a|aa?){1000}$";

Deno.test("matchSliced: yields to the event loop between slices and stops when the caller is gone", async () => {
  const filter = parseFilters(heavyFilters());
  const infos = Array.from({ length: 8000 }, (_, i) => info(`k${i}`, { x: "y" }));
  // the longest the event loop went without running a timer, while matching
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  try {
    const started = performance.now();
    assert.deepEqual(await matchSliced(infos, filter, () => false), []);
    const took = performance.now() - started;
    assert.ok(took > 300, `matching took only ${took.toFixed(0)} ms: not a test of slicing`);
    // 10 ms slices, plus one snapshot's match and the timer's own lateness (on a busy host)
    assert.ok(longest < took / 3, `the event loop was held for ${longest.toFixed(0)} ms`);
    assert.ok(longest < 150, `the event loop was held for ${longest.toFixed(0)} ms`);
    let gone = false;
    setTimeout(() => gone = true, 20);
    await assert.rejects(matchSliced(infos, filter, () => gone), MatchStoppedError);
  } finally {
    clearInterval(timer);
  }
  // a cheap filter over few rows needs no yield and keeps the order
  const few = [info("a", { x: "1" }), info("b"), info("c", { x: "1" })];
  const matched = await matchSliced(few, parseFilters(["labels.x==1"]), () => false);
  assert.deepEqual(matched.map((i) => i.name), ["a", "c"]);
});

Deno.test("RegexMatcher: matches on a worker, in order; reports bad filters as InvalidArgument", async () => {
  const m = new RegexMatcher();
  const infos = [info("a1", { x: "abc" }), info("b"), info("a2", { x: "zzabc" })];
  const out = await m.match(["labels.x~=abc$", "name~=^b"], infos, () => false);
  assert.deepEqual(out.map((i) => i.name), ["a1", "b", "a2"]);
  await assert.rejects(m.match(["labels.x~=(a"], infos, () => false), {
    name: "InvalidArgumentError",
    message: /error parsing regexp: missing closing \)/,
  });
  await assert.rejects(m.match(['labels."x~=a'], infos, () => false), {
    name: "InvalidArgumentError",
    message: /filters: parse error/,
  });
  // three expressions of 7,003 instructions are over the budget of 20,000
  const three = Array.from({ length: 3 }, (_, i) => `labels.x${i}~=(a|aa?){1000}$`);
  await assert.rejects(m.match(three, infos, () => false), {
    name: "InvalidArgumentError",
    message: new RegExp(
      `the ~= expressions compile to 21009 instructions, more than the maximum of ` +
        `${MAX_REGEX_INSTRUCTIONS}`,
    ),
  });
  assert.equal(m.active, 0);
  await m.close(1000);
});

Deno.test("RegexMatcher: a stopped List ends its worker within one snapshot; Lists take turns", async () => {
  const m = new RegexMatcher({ maxWorkers: 1 });
  const slow = Array.from({ length: 40 }, (_, i) => info(`s${i}`, { x: "a".repeat(4000) }));
  let gone = false;
  const first = m.match([SLOW_REGEX], slow, () => gone);
  await poll(() => m.active === 1, "the first List to start matching");
  // the second waits for the one worker slot
  let secondDone = false;
  const second = m.match(["labels.x~=^a"], [info("q", { x: "a" })], () => false)
    .finally(() => secondDone = true);
  const started = performance.now();
  gone = true;
  await assert.rejects(first, MatchStoppedError);
  assert.equal((await second).length, 1);
  const took = performance.now() - started;
  assert.ok(secondDone);
  // 40 rows would take ~20 s; the stop is seen before the next row
  assert.ok(took < 5000, `the stopped worker held its slot for ${took.toFixed(0)} ms`);
  await poll(() => m.active === 0, "the workers to end");
  await m.close(1000);
});

// ---- through the server ----

function test(name: string, fn: (transport: Transport) => Promise<void>): void {
  for (const transport of TRANSPORTS) {
    Deno.test({
      name: `[${transport}] ${name}`,
      // grpc-js keeps its channel's timers a moment after close
      sanitizeOps: transport === "native",
      sanitizeResources: transport === "native",
      fn: () => fn(transport),
    });
  }
}

async function serving(transport: Transport, items: Info[]) {
  const s = memorySnapshotter();
  for (const i of items) s.infos.set(i.name, i);
  return Object.assign(
    await startTestServer({
      prefix: "dmsnap-listlong-",
      transport,
      snapshotter: s,
      shutdownTimeoutMs: 300,
    }),
    { s },
  );
}

/** Starts `list`, then times a Stat sent right after it; the List must still be running. */
async function statWhileListing(
  client: SnapshotsClient,
  list: Promise<unknown>,
): Promise<number> {
  let listDone = false;
  list.then(() => listDone = true, () => listDone = true);
  const started = performance.now();
  await client.stat("k0");
  const latency = performance.now() - started;
  assert.equal(listDone, false, "the List was still running when the Stat was answered");
  return latency;
}

test("a List with a costly filter over 40,000 snapshots does not hold other calls", async (transport) => {
  const items = Array.from({ length: 40_000 }, (_, i) => info(`k${i}`, { x: "nomatch" }));
  await using h = await serving(transport, items);
  const list = h.client.list(heavyFilters());
  const latency = await statWhileListing(h.client, list);
  const { infos } = await list;
  assert.deepEqual(infos, []);
  console.log(`[${transport}] Stat answered in ${latency.toFixed(1)} ms during a long List`);
  assert.ok(latency < 500, `Stat took ${latency.toFixed(0)} ms while the List ran`);
});

test("a List with a slow ~= filter runs on a worker: others are answered, cancelling stops it", async (transport) => {
  const items = Array.from({ length: 40 }, (_, i) => info(`k${i}`, { x: "a".repeat(4000) }));
  await using h = await serving(transport, items);
  const abort = new AbortController();
  const list = h.client.list([SLOW_REGEX], { signal: abort.signal });
  const latencies: number[] = [];
  for (let i = 0; i < 5; i++) latencies.push(await statWhileListing(h.client, list));
  console.log(
    `[${transport}] Stat latencies during a ~= List: ${latencies.map((l) => l.toFixed(1))} ms`,
  );
  assert.ok(Math.max(...latencies) < 500, `${latencies}`);
  abort.abort();
  const err = await list.then(() => undefined, (e) => e);
  assert.ok(isServiceError(err) && err.code === GrpcStatus.CANCELLED, String(err));
  await poll(() => h.logs.some((l) => l.includes("method=List")), "the List to end");
  assert.match(h.logs.find((l) => l.includes("method=List"))!, /code=CANCELLED/);
  // the worker saw the stop: closing does not wait for 40 half-second matches
  const started = performance.now();
  await h.server.close();
  assert.ok(performance.now() - started < 3000);
});

test("List: filters over 16 KiB are InvalidArgument before any parsing", async (transport) => {
  await using h = await serving(transport, [info("k0")]);
  const big = ["name==" + "x".repeat(MAX_LIST_FILTER_BYTES)];
  const err = await h.client.list(big).then(() => undefined, (e) => e);
  assert.ok(isServiceError(err));
  assert.equal(err.code, GrpcStatus.INVALID_ARGUMENT);
  assert.equal(
    err.details,
    `invalid filters: ${MAX_LIST_FILTER_BYTES + 6} bytes is longer than the maximum of ` +
      `${MAX_LIST_FILTER_BYTES} bytes: invalid argument`,
  );
  // the bound is on all of them together
  const many = Array.from({ length: 20 }, () => "name==" + "y".repeat(1000));
  assert.equal(
    (await h.client.list(many).then(() => undefined, (e) => e)).code,
    GrpcStatus.INVALID_ARGUMENT,
  );
  assert.deepEqual(h.s.calls, []);
});
