/**
 * A Worker module that serves the in-memory test double (whose `List` filters with `matchInfo`,
 * as `DevmapperSnapshotter.list` does) over the native gRPC transport. The server runs on its
 * own thread so that a client on another thread can still time out (gRPC deadline) when the
 * server's thread is stuck in a match.
 *
 * Protocol: post `{ address }` to start; the worker answers `{ socketPath }` once the socket
 * accepts calls, or `{ error }`. Post `"close"` for a graceful shutdown; it answers `"closed"`.
 *
 * @module
 */
import { type RunningServer, startServer } from "../src/server/server.ts";
import { memorySnapshotter } from "./memory_snapshotter.ts";

/** What the worker posts back. */
export type FilteringServerReply = { socketPath: string } | { error: string } | "closed";

const scope = self as unknown as Worker;
let server: RunningServer | undefined;

scope.onmessage = async (e: MessageEvent<{ address: string } | "close">) => {
  const reply = (message: FilteringServerReply) => scope.postMessage(message);
  if (e.data === "close") {
    await server?.close();
    reply("closed");
    return;
  }
  try {
    server = await startServer({
      transport: "native",
      address: e.data.address,
      snapshotter: memorySnapshotter(),
    });
    reply({ socketPath: server.socketPath });
  } catch (err) {
    reply({ error: String(err) });
  }
};
