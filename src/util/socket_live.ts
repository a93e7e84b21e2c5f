/**
 * Whether a unix socket is served: a connect is tried and closed at once. Used before binding a
 * socket path that exists (the gRPC socket, the metrics socket), to tell a stale file from a
 * live server, and by `status`.
 *
 * Invariant: "nobody there" (refused, missing) is false; any other failure (e.g. no permission)
 * is thrown, never taken for a stale socket that may then be removed.
 *
 * @module
 */

/** True when something accepts connections on the unix socket at `path`. */
export async function isSocketLive(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "ECONNREFUSED" || err instanceof Deno.errors.ConnectionRefused) return false;
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
