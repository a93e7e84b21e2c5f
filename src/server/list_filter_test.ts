/**
 * `List` with a `~=` filter through the real server (native transport) and a grpc-js client:
 * a pattern that makes a backtracking engine take exponential time (`(a+)+$`) against a label
 * of ~4,000 characters (near containerd's 4 KiB limit) must get its answer, and the right one.
 *
 * The server runs on a Worker (testing/filtering_server_worker.ts), so a server thread stuck in
 * a match shows here as the call's gRPC deadline passing instead of a test that never ends.
 */
import assert from "node:assert/strict";
import { connectSnapshots, isServiceError } from "../../testing/snapshots_client.ts";
import type { FilteringServerReply } from "../../testing/filtering_server_worker.ts";

/** Generous: RE2 answers in milliseconds; a backtracking engine would not answer at all. */
const DEADLINE_MS = 5_000;

interface ServerOnWorker {
  socketPath: string;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts the server on a Worker; disposing shuts it down (or ends the thread if stuck). */
async function serverOnWorker(address: string): Promise<ServerOnWorker> {
  const worker = new Worker(
    new URL("../../testing/filtering_server_worker.ts", import.meta.url).href,
    { type: "module" },
  );
  let next = Promise.withResolvers<FilteringServerReply>();
  worker.onmessage = (e: MessageEvent<FilteringServerReply>) => next.resolve(e.data);
  worker.onerror = (e) => {
    e.preventDefault();
    next.reject(new Error(`Server worker failed: ${e.message}`));
  };
  worker.postMessage({ address });
  const started = await next.promise;
  if (typeof started !== "object" || !("socketPath" in started)) {
    worker.terminate();
    throw new Error(`Cannot start the server: ${JSON.stringify(started)}`);
  }
  return {
    socketPath: started.socketPath,
    async [Symbol.asyncDispose]() {
      next = Promise.withResolvers<FilteringServerReply>();
      worker.postMessage("close");
      // A thread stuck in a match never answers: give it the deadline, then end it.
      const timer = setTimeout(() => next.resolve("closed"), DEADLINE_MS);
      try {
        await next.promise;
      } finally {
        clearTimeout(timer);
        worker.terminate();
      }
    },
  };
}

Deno.test("List: ~= with nested repetition on a 4,000-character label answers (RE2, linear time)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-listre-" });
  try {
    await using server = await serverOnWorker(`${dir}/s.sock`);
    const client = connectSnapshots(server.socketPath);
    try {
      const deadline = () => Date.now() + DEADLINE_MS;
      await client.prepare("miss", "", { x: "a".repeat(3999) + "b" }, { deadline: deadline() });
      await client.prepare("hit", "", { x: "a".repeat(4000) }, { deadline: deadline() });
      await client.prepare("none", "", {}, { deadline: deadline() });
      const list = async (filter: string) => {
        try {
          const { infos } = await client.list([filter], { deadline: deadline() });
          return infos.map((i) => i.name).sort();
        } catch (err) {
          if (isServiceError(err)) assert.fail(`List ${filter}: ${err.code} ${err.details}`);
          throw err;
        }
      };
      assert.deepEqual(await list("labels.x~=(a+)+$"), ["hit"]);
      assert.deepEqual(await list("labels.x~=(a|aa)+$"), ["hit"]);
      // Absent label: the search runs on "".
      assert.deepEqual(await list("labels.x~=^(a*)*$"), ["hit", "none"]);
      assert.deepEqual(await list("labels.x~=(a+)+b$"), ["miss"]);
    } finally {
      client.close();
    }
  } finally {
    // Synchronous, as in server_test.ts (Deno's node:net closes a socket's fd twice).
    Deno.removeSync(dir, { recursive: true });
  }
});
