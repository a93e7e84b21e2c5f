/**
 * What every transport (`native/`, `grpc_js.ts`) shares with `server.ts`, which picks one: the
 * message size limit and the shape of a listening transport. Imports nothing, so a transport
 * never depends on the module that loads it.
 *
 * @module
 */

/** Largest message accepted or sent (containerd's client uses 16 MiB). */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** A listening transport, reduced to what shutdown needs. */
export interface Listening {
  /**
   * Waits up to `timeoutMs` for in-flight calls, then cuts off whatever is left. Resolves
   * true when everything finished in time.
   */
  drain(timeoutMs: number): Promise<boolean>;
  /** Stops at once. */
  force(): void;
}
