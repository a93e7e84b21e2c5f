/**
 * The Snapshots server as the host tests of `src/server/` run it: {@linkcode startTestServer}
 * serves a snapshotter (usually the in-memory double) on a unix socket in a new temporary
 * directory, keeps every log line (debug and up), and hands out clients: one grpc-js client,
 * made at first use, and raw HTTP/2 clients.
 *
 * Disposing it closes the raw clients, then the grpc-js client, then the server (which closes
 * the snapshotter), then removes the directory.
 *
 * @module
 */
import { createLogger } from "../src/util/log.ts";
import type { Snapshotter } from "../src/snapshots/types.ts";
import { type RunningServer, type ServerOptions, startServer } from "../src/server/server.ts";
import { type RawClientOptions, RawH2Client } from "./h2_raw_client.ts";
import { connectSnapshots, type SnapshotsClient } from "./snapshots_client.ts";

/** Options for {@linkcode startTestServer}: those of the server but its address and logger. */
export interface TestServerOptions extends Partial<Omit<ServerOptions, "address" | "logger">> {
  /** The served snapshotter; the server's close closes it. */
  snapshotter: Snapshotter;
  /** Prefix of the temporary directory's name. */
  prefix: string;
  /** The socket's path inside the directory (default `s.sock`). */
  socket?: string;
}

/** A server of {@linkcode startTestServer}, its logs and its clients. */
export interface TestServer extends AsyncDisposable {
  /** The temporary directory. */
  readonly dir: string;
  /** The socket's path. */
  readonly path: string;
  readonly server: RunningServer;
  /** Every line the server logged. */
  readonly logs: string[];
  /** A grpc-js client of the socket (made at first use). */
  readonly client: SnapshotsClient;
  /** A connected raw HTTP/2 client after the handshake (with `settings`). */
  raw(settings?: [number, number][], options?: RawClientOptions): Promise<RawH2Client>;
  /** A connected raw HTTP/2 client, nothing sent. */
  bare(options?: RawClientOptions): Promise<RawH2Client>;
}

/** Starts the server of `o.snapshotter` on a socket in a new temporary directory. */
export async function startTestServer(o: TestServerOptions): Promise<TestServer> {
  const { prefix, socket = "s.sock", ...options } = o;
  const dir = await Deno.makeTempDir({ prefix });
  const path = `${dir}/${socket}`;
  const logs: string[] = [];
  let server: RunningServer;
  try {
    server = await startServer({
      ...options,
      address: path,
      logger: createLogger({ level: "debug", write: (l) => logs.push(l) }),
    });
  } catch (err) {
    Deno.removeSync(dir, { recursive: true });
    throw err;
  }
  let client: SnapshotsClient | undefined;
  const raws: RawH2Client[] = [];
  const bare = async (options?: RawClientOptions) => {
    const c = await RawH2Client.connect(path, options);
    raws.push(c);
    return c;
  };
  return {
    dir,
    path,
    server,
    logs,
    get client() {
      return client ??= connectSnapshots(path);
    },
    bare,
    async raw(settings = [], options) {
      const c = await bare(options);
      await c.handshake(settings);
      return c;
    },
    async [Symbol.asyncDispose]() {
      for (const c of raws) await c.close();
      client?.close();
      await server.close();
      // Synchronous on purpose: Deno 2.8's node:net (under the grpc-js client) closes a
      // socket's fd twice; an async recursive remove on another thread can get that fd
      // number for a directory in between, and Deno then panics in closedir (EBADF).
      Deno.removeSync(dir, { recursive: true });
    },
  };
}
