/**
 * SIGTERM ends a server process within its shutdown timeout whatever a call is doing: waiting
 * for something that never comes, or a List that would take many seconds (on the server's
 * thread in slices, or on a worker for `~=`). The server is `testing/memory_server.ts` (the
 * real `serve` path) in a child process, with a 1 s shutdown timeout; exit times are printed.
 */
import assert from "node:assert/strict";
import { spawnMemoryServer } from "../../testing/memory_server_process.ts";
import { poll } from "../../testing/poll.ts";
import { serverConnections } from "../../testing/socket_peers.ts";
import { connectSnapshots, isServiceError } from "../../testing/snapshots_client.ts";
import { MAX_LIST_FILTER_BYTES } from "./validate.ts";

const SHUTDOWN_TIMEOUT_MS = 1000;
/** Beyond the timeout: cancelling the calls, closing, exiting. */
const EXIT_MARGIN_MS = 1500;

/** Runs `start` (calls that keep the server busy) on a fresh server, then SIGTERM. */
async function sigtermWhile(
  name: string,
  serverArgs: string[],
  start: (client: ReturnType<typeof connectSnapshots>) => Promise<unknown>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-shutdown-" });
  try {
    await using server = await spawnMemoryServer(`${dir}/s.sock`, [
      "--shutdown-timeout-ms",
      String(SHUTDOWN_TIMEOUT_MS),
      ...serverArgs,
    ]);
    const client = connectSnapshots(server.socketPath);
    try {
      const busy = start(client).then(() => "answered", (e) => e);
      // the call has reached the server (sent first on the connection), and others are
      // still answered meanwhile
      await poll(async () => await serverConnections(server.socketPath) > 0, "the connection");
      const t0 = performance.now();
      await client.stat("base");
      const statMs = performance.now() - t0;
      const { code, ms } = await server.signal("SIGTERM");
      console.log(
        `${name}: a Stat took ${statMs.toFixed(1)} ms meanwhile; the server exited ` +
          `${ms.toFixed(0)} ms after SIGTERM (timeout ${SHUTDOWN_TIMEOUT_MS} ms)`,
      );
      assert.ok(statMs < 1000, `a Stat took ${statMs.toFixed(0)} ms while the call ran`);
      assert.equal(code, 0, server.log());
      assert.ok(ms < SHUTDOWN_TIMEOUT_MS + EXIT_MARGIN_MS, `exit took ${ms.toFixed(0)} ms`);
      const outcome = await busy;
      assert.ok(isServiceError(outcome), `the busy call: ${outcome}`);
      assert.match(server.log(), /did not finish in time/);
      await assert.rejects(Deno.lstat(server.socketPath), Deno.errors.NotFound);
    } finally {
      client.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "shutdown: SIGTERM with a call that never ends exits within the shutdown timeout",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => sigtermWhile("a call that never ends", ["--items", "1"], (c) => c.prepare("hang-1")),
});

Deno.test({
  name: "shutdown: SIGTERM during a ~= List of many seconds exits within the shutdown timeout",
  sanitizeResources: false,
  sanitizeOps: false,
  // 40 snapshots × ~0.3 s each: 12 s of matching, on a worker
  fn: () =>
    sigtermWhile(
      "a ~= List",
      ["--items", "40", "--label-bytes", "4000"],
      (c) => c.list(["labels.x~=(a|aa?){1000}$"]),
    ),
});

Deno.test({
  name: "shutdown: SIGTERM during a long List on the server's thread exits within the timeout",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => {
    const filters: string[] = [];
    for (let n = 0; n < MAX_LIST_FILTER_BYTES - 64;) {
      const f = `labels.x==v${filters.length},name!=n${filters.length}`;
      filters.push(f);
      n += f.length;
    }
    // 40,000 snapshots × ~70 µs: about 3 s of matching, in 10 ms slices
    return sigtermWhile("a long List", ["--items", "40000"], (c) => c.list(filters));
  },
});
