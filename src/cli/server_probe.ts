/**
 * Asking a running server how it is, for `status`: is something listening on the socket, and
 * what does a List call (containerd's own call, through `@grpc/grpc-js`) return, counted by
 * kind.
 *
 * Invariants:
 * - nothing listening (no socket file, or a stale one) is `down`, never an error; a socket that
 *   cannot be tried (permissions) is `unknown` with the reason;
 * - every call has a deadline: a server that accepts connections but does not answer is `up`
 *   with the failure, after at most `timeoutMs`;
 * - the client is closed before the probe returns, so it keeps nothing alive.
 *
 * @module
 */
import {
  type Client,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import { loadSnapshotsProto, type WireListResponse } from "../server/proto.ts";
import { isSocketLive } from "../util/socket_live.ts";
import { errorMessage } from "../util/errors.ts";

/** Default bound on the List call, ms. */
export const PROBE_TIMEOUT_MS = 10_000;

/** Snapshots by kind. */
export interface KindCounts {
  committed: number;
  active: number;
  view: number;
}

/** What {@linkcode probeServer} found. */
export type ServerProbe =
  | { state: "down" }
  /** Listening; `snapshots` when its List answered, `error` when it did not. */
  | { state: "up"; snapshots?: KindCounts; error?: string }
  /** The socket could not be tried. */
  | { state: "unknown"; error: string };

/** Options of {@linkcode probeServer}. */
export interface ProbeOptions {
  /** Bound on the List call (default {@linkcode PROBE_TIMEOUT_MS}). */
  timeoutMs?: number;
}

type StreamFn = (request: unknown, metadata: Metadata, options: { deadline: number }) => {
  on(event: string, listener: (arg: unknown) => void): void;
};

/** Counts the snapshots one List call streams. */
function listKinds(client: Client, timeoutMs: number): Promise<KindCounts> {
  return new Promise((resolve, reject) => {
    const metadata = new Metadata();
    metadata.set("containerd-namespace", "default");
    const list = (client as unknown as Record<string, StreamFn>).List.bind(client);
    const call = list({ filters: [] }, metadata, { deadline: Date.now() + timeoutMs });
    const counts: KindCounts = { committed: 0, active: 0, view: 0 };
    call.on("data", (m) => {
      for (const info of (m as WireListResponse).info) {
        if (info.kind === 1) counts.view++;
        else if (info.kind === 2) counts.active++;
        else if (info.kind === 3) counts.committed++;
      }
    });
    call.on("error", (err) => {
      const e = err as ServiceError;
      reject(new Error(`List failed: ${e.details || e.message}`, { cause: err }));
    });
    call.on("end", () => resolve(counts));
  });
}

/** Probes the server on the unix socket `path` (see the module doc). */
export async function probeServer(path: string, options: ProbeOptions = {}): Promise<ServerProbe> {
  try {
    if (!await isSocketLive(path)) return { state: "down" };
  } catch (err) {
    return { state: "unknown", error: `Cannot connect to "${path}": ${errorMessage(err)}` };
  }
  const proto = loadSnapshotsProto();
  const Ctor = makeGenericClientConstructor(proto.service, "Snapshots");
  const client = new Ctor(`unix://${path}`, credentials.createInsecure(), {
    "grpc.max_receive_message_length": 16 * 1024 * 1024,
  });
  try {
    const snapshots = await listKinds(client, options.timeoutMs ?? PROBE_TIMEOUT_MS);
    return { state: "up", snapshots };
  } catch (err) {
    return { state: "up", error: errorMessage(err) };
  } finally {
    client.close();
  }
}
