/**
 * What a client can make the native server buffer, measured on a server process
 * (`testing/memory_server.ts`) through its resident memory: 12 streams that each declare a
 * 15 MiB request and send all the flow control lets them, never finishing. The server opens a
 * stream's window beyond the initial 64 KiB only out of one 16 MiB reservation per connection,
 * so it holds about one such body, not twelve. The figures are printed.
 */
import assert from "node:assert/strict";
import {
  grpcMessage,
  grpcRequestHeaders,
  headersFrame,
  RawH2Client,
} from "../../../testing/h2_raw_client.ts";
import { spawnMemoryServer } from "../../../testing/memory_server_process.ts";
import { poll } from "../../../testing/poll.ts";
import { serverConnections } from "../../../testing/socket_peers.ts";
import { SNAPSHOTS_SERVICE } from "../proto.ts";

const MiB = 1024 * 1024;
const STREAMS = 12;
const BODY = 15 * MiB;
/** Growth allowed while the 12 bodies are held: one body, windows, and allocator slack. */
const MAX_GROWTH = 64 * MiB;

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

Deno.test({
  name: "native: 12 unfinished 15 MiB requests on one connection hold about one body in memory",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "dmsnap-buffer-" });
    try {
      await using server = await spawnMemoryServer(`${dir}/s.sock`, ["--items", "0"]);
      const c = await RawH2Client.connect(server.socketPath);
      await c.handshake();
      // let the server settle after start (JIT, first connection)
      await c.barrier();
      const before = await server.rssBytes();

      const path = `/${SNAPSHOTS_SERVICE}/Prepare`;
      // a Prepare whose one message declares 15 MiB; the last byte is never sent
      const body = grpcMessage(new Uint8Array(BODY));
      const ids = Array.from({ length: STREAMS }, (_, i) => 1 + 2 * i);
      await c.send(...ids.map((id) => headersFrame(id, grpcRequestHeaders(path))));
      const sent = new Map(ids.map((id) => [id, 0]));
      // send everything the windows allow, until a round sends nothing more; the PING barrier
      // makes sure every WINDOW_UPDATE the server sent in answer has arrived
      for (let progress = true; progress;) {
        progress = false;
        for (const id of ids) {
          const limit = body.subarray(0, body.length - 1);
          const next = await c.sendAvailable(id, limit, sent.get(id)!);
          if (next !== sent.get(id)) progress = true;
          sent.set(id, next);
        }
        await c.barrier(30_000);
      }
      const during = await server.rssBytes();
      const total = [...sent.values()].reduce((a, b) => a + b, 0);

      await c.close();
      await poll(
        async () => await serverConnections(server.socketPath) === 0,
        "the server to close",
      );
      const after = await server.rssBytes();
      console.log(
        `RSS before ${mb(before)}, with ${STREAMS} unfinished ${BODY / MiB} MiB requests ` +
          `(${mb(total)} sent) ${mb(during)} (+${mb(during - before)}), after they closed ` +
          `${mb(after)} (+${mb(after - before)})`,
      );
      assert.ok(
        total <= BODY + STREAMS * 65_535 + 5,
        `the server let ${total} bytes in: more than one body and the initial windows`,
      );
      assert.ok(
        during - before < MAX_GROWTH,
        `RSS grew by ${mb(during - before)} (limit ${mb(MAX_GROWTH)})`,
      );
      assert.ok(!server.exited(), server.log());
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
