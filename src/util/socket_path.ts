/**
 * Unix socket addresses: the filesystem path of `unix:///abs`, `unix:/abs`, `unix:rel` or a bare
 * path. Pure string work (no filesystem access), shared by the config layer, which checks the
 * `address` key, and the server, which binds the socket.
 *
 * A path returned by {@linkcode socketPath} is absolute, has no NUL byte and fits `sun_path`.
 *
 * @module
 */
import { isAbsolute, resolve } from "node:path";

/** Longest socket path the kernel accepts (`sun_path` is 108 bytes incl. the NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/** The socket cannot be used. */
export class SocketError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SocketError";
  }
}

/**
 * The filesystem path of a socket address: `unix:///abs`, `unix:/abs`, `unix:rel` or a bare
 * path; relative paths resolve against the working directory. Throws a
 * {@linkcode SocketError} on anything else.
 */
export function socketPath(address: string): string {
  let path = address;
  if (path.startsWith("unix://")) path = path.slice("unix://".length);
  else if (path.startsWith("unix:")) path = path.slice("unix:".length);
  else if (/^[a-z][a-z0-9+.-]*:/i.test(path) && !path.startsWith("./")) {
    throw new SocketError(`Cannot use address "${address}": only unix sockets are supported`);
  }
  if (path === "") throw new SocketError(`Cannot use address "${address}": empty socket path`);
  if (path.includes("\0")) {
    throw new SocketError(`Cannot use address ${JSON.stringify(address)}: contains a NUL byte`);
  }
  const abs = isAbsolute(path) ? path : resolve(path);
  const bytes = new TextEncoder().encode(abs).length;
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    throw new SocketError(
      `Cannot use address "${address}": socket path is ${bytes} bytes, the limit is ${MAX_SOCKET_PATH_BYTES}`,
    );
  }
  return abs;
}
