/**
 * Bad input on the gRPC socket against the real snapshotter in the test kernel: strings that
 * are not UTF-8 and keys far over the limit are InvalidArgument; labels whose total would make
 * a snapshot unlistable are refused on Prepare, Commit and Update (the merged result); a List
 * that takes long holds neither other calls nor shutdown (in-process, and `main.ts serve` on
 * SIGTERM); and what 12 unfinished 15 MiB requests make `main.ts serve` hold in memory.
 * Latencies, exit times and RSS figures are printed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { connectSnapshots, isServiceError } from "../../testing/snapshots_client.ts";
import { grpcError } from "../../testing/grpc_error.ts";
import {
  grpcMessage,
  grpcRequestHeaders,
  headersFrame,
  RawH2Client,
} from "../../testing/h2_raw_client.ts";
import { rssBytes } from "../../testing/memory_server_process.ts";
import { poll } from "../../testing/poll.ts";
import { serverConnections } from "../../testing/socket_peers.ts";
import { startServer } from "../../src/server/server.ts";
import { SNAPSHOTS_SERVICE } from "../../src/server/proto.ts";
import { MAX_LABEL_SIZE, MAX_LABELS_TOTAL_SIZE } from "../../src/snapshots/labels.ts";
import { createLogger } from "../../src/util/log.ts";
import { requireKernel } from "./fixtures.ts";
import { serveTestSnapshotter } from "./main_fixtures.ts";
import { createTestSnapshotter } from "./snapshot_fixtures.ts";

const MiB = 1024 * 1024;
/** A `~=` expression that takes a good part of a second per 4,000-"a" label. */
const SLOW_REGEX = "labels.x~=(a|aa?){1000}$";

function fullLabels(n: number, prefix = "l"): Record<string, string> {
  const labels: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const key = `${prefix}${i.toString().padStart(2, "0")}`;
    labels[key] = "v".repeat(MAX_LABEL_SIZE - key.length);
  }
  return labels;
}

Deno.test("server_bad_input: not UTF-8, 64 KiB keys and labels over 64 KiB are refused by the real server", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  const server = await startServer({
    address: join(t.pool.dir, "run", "s.sock"),
    snapshotter: t.snapshotter,
  });
  const c = connectSnapshots(server.socketPath);
  try {
    // (a) a lone surrogate is sent as bytes that are not UTF-8
    const utf8 = await grpcError(c.prepare("k/\ud800"), "surrogate key");
    assert.equal(utf8.code, GrpcStatus.INVALID_ARGUMENT, utf8.details);
    assert.match(utf8.details, /field "key" is not valid UTF-8/);
    // (b) a 64 KiB key: the error arrives, with the key shortened
    const long = await grpcError(c.stat("k".repeat(65_536)), "64 KiB key");
    assert.equal(long.code, GrpcStatus.INVALID_ARGUMENT, long.details.slice(0, 300));
    assert.ok(long.details.length < 400);
    assert.deepEqual((await c.list()).infos, [], "nothing was created");

    // (d) 16 labels of 4 KiB are the bound: accepted, and listed
    const sixteen = fullLabels(16);
    await c.prepare("k/full", "", sixteen);
    assert.deepEqual((await c.stat("k/full")).labels, sixteen);
    const seventeen = fullLabels(17);
    const total = `total size of keys and values (${17 * MAX_LABEL_SIZE} bytes) greater than ` +
      `maximum size (${MAX_LABELS_TOTAL_SIZE} bytes)`;
    for (
      const [what, call] of [
        ["prepare", () => c.prepare("k/more", "", seventeen)],
        ["commit", () => c.commit("k/committed", "k/full", seventeen)],
      ] as const
    ) {
      const e = await grpcError(call(), what);
      assert.equal(e.code, GrpcStatus.INVALID_ARGUMENT, e.details);
      assert.match(e.details, new RegExp(total.replace(/[()]/g, "\\$&")));
    }
    // Update: the request is small, the merged labels are not
    const merged = await grpcError(
      c.update("k/full", { extra: "x" }, ["labels.extra"]),
      "update",
    );
    assert.equal(merged.code, GrpcStatus.INVALID_ARGUMENT, merged.details);
    assert.match(merged.details, /Invalid labels of snapshot "k\/full" after the update: total/);
    assert.deepEqual((await c.stat("k/full")).labels, sixteen, "unchanged");
    // removing a label and adding a smaller one is fine
    const swapped = await c.update("k/full", { l15: "", small: "s" }, [
      "labels.l15",
      "labels.small",
    ]);
    assert.equal(Object.keys(swapped.labels).length, 16);
    const { infos } = await c.list();
    assert.deepEqual(infos.map((i) => i.name), ["k/full"]);
    await c.remove("k/full");
  } finally {
    c.close();
    await server.close();
  }
});

Deno.test("server_bad_input: a long ~= List on the real snapshotter holds neither other calls nor close()", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  const logs: string[] = [];
  const server = await startServer({
    address: join(t.pool.dir, "run", "s.sock"),
    snapshotter: t.snapshotter,
    logger: createLogger({ level: "debug", write: (l) => logs.push(l) }),
    shutdownTimeoutMs: 500,
  });
  const c = connectSnapshots(server.socketPath);
  let closed = false;
  try {
    for (let i = 0; i < 16; i++) await c.prepare(`s/${i}`, "", { x: "a".repeat(4000) });
    const started = performance.now();
    let listDone = false;
    const list = c.list([SLOW_REGEX]).finally(() => listDone = true).then(
      () => "answered",
      (e) => e,
    );
    const latencies: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await c.stat("s/0");
      latencies.push(performance.now() - t0);
    }
    assert.equal(listDone, false, "the List still runs");
    console.log(`Stat latencies during a ~= List: ${latencies.map((l) => l.toFixed(1))} ms`);
    assert.ok(Math.max(...latencies) < 3000, `${latencies}`); // one CPU in the test kernel
    // close() does not wait for the List beyond its timeout
    const t0 = performance.now();
    await server.close();
    closed = true;
    const closeMs = performance.now() - t0;
    console.log(
      `close() took ${closeMs.toFixed(0)} ms (timeout 500 ms), ` +
        `${(performance.now() - started).toFixed(0)} ms into the List`,
    );
    assert.ok(closeMs < 3000, `close took ${closeMs.toFixed(0)} ms`);
    const outcome = await list;
    assert.ok(isServiceError(outcome), `the List: ${outcome}`);
    assert.ok(logs.some((l) => l.includes("did not finish in time")));
  } finally {
    c.close();
    if (!closed) await server.close();
  }
  t.snapshotter = await t.reopen(); // close() closed it; disposal closes an open one
});

Deno.test("server_bad_input: `main.ts serve` ends on SIGTERM within its shutdown timeout during a long List", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  await t.snapshotter.close(); // the served process owns the pool from here
  const serve = await serveTestSnapshotter(t);
  const c = connectSnapshots(serve.socket);
  try {
    for (let i = 0; i < 20; i++) await c.prepare(`s/${i}`, "", { x: "a".repeat(4000) });
    const list = c.list([SLOW_REGEX]).then(() => "answered", (e) => e);
    const t0 = performance.now();
    await c.stat("s/0");
    const statMs = performance.now() - t0;
    const { code, ms } = await serve.stop();
    console.log(
      `serve: a Stat took ${statMs.toFixed(1)} ms during a ~= List; exit ${ms.toFixed(0)} ms ` +
        `after SIGTERM (shutdown timeout 10000 ms)`,
    );
    assert.ok(statMs < 3000, `a Stat took ${statMs.toFixed(0)} ms`);
    assert.equal(code, 0, serve.log());
    assert.ok(ms < 13_000, `exit took ${ms.toFixed(0)} ms`);
    await list;
  } finally {
    c.close();
  }
  t.snapshotter = await t.reopen();
  for (let i = 0; i < 20; i++) await t.snapshotter.remove(`s/${i}`);
});

Deno.test("server_bad_input: 12 unfinished 15 MiB requests grow `main.ts serve` by about one body", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  await t.snapshotter.close();
  const serve = await serveTestSnapshotter(t);
  const c = await RawH2Client.connect(serve.socket);
  try {
    await c.handshake();
    await c.barrier();
    const before = await rssBytes(serve.pid);
    const body = grpcMessage(new Uint8Array(15 * MiB)).subarray(0, 15 * MiB + 4); // unfinished
    const ids = Array.from({ length: 12 }, (_, i) => 1 + 2 * i);
    await c.send(
      ...ids.map((id) => headersFrame(id, grpcRequestHeaders(`/${SNAPSHOTS_SERVICE}/Prepare`))),
    );
    const sent = new Map(ids.map((id) => [id, 0]));
    for (let progress = true; progress;) {
      progress = false;
      for (const id of ids) {
        const next = await c.sendAvailable(id, body, sent.get(id)!);
        if (next !== sent.get(id)) progress = true;
        sent.set(id, next);
      }
      await c.barrier(60_000);
    }
    const during = await rssBytes(serve.pid);
    const total = [...sent.values()].reduce((a, b) => a + b, 0);
    await c.close();
    await poll(async () => await serverConnections(serve.socket) === 0, "the server to close");
    const after = await rssBytes(serve.pid);
    const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
    console.log(
      `serve RSS before ${mb(before)}, with 12 unfinished 15 MiB requests (${mb(total)} sent) ` +
        `${mb(during)} (+${mb(during - before)}), after ${mb(after)} (+${mb(after - before)})`,
    );
    assert.ok(total <= 15 * MiB + 5 + 12 * 65_535, `${total} bytes were let in`);
    assert.ok(during - before < 64 * MiB, `RSS grew by ${mb(during - before)}`);
  } finally {
    if (!c.eof) await c.close().catch(() => {});
    const { code } = await serve.stop();
    assert.equal(code, 0, serve.log());
  }
  t.snapshotter = await t.reopen();
});
