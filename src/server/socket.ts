/**
 * The unix socket the service listens on: address parsing, directory creation, stale-socket
 * replacement, permissions and removal.
 *
 * @module
 */
import { dirname } from "node:path";
import { SocketError } from "../util/socket_path.ts";
import { isSocketLive } from "../util/socket_live.ts";

export { MAX_SOCKET_PATH_BYTES, SocketError, socketPath } from "../util/socket_path.ts";
export { isSocketLive } from "../util/socket_live.ts";

/** Mode of the socket file: owner and group may connect. */
export const SOCKET_MODE = 0o660;
/** Mode of a socket directory this service creates. */
export const SOCKET_DIR_MODE = 0o711;
/**
 * Makes `path` ready to bind: creates its directory (mode 0711) when missing, removes a stale
 * socket (nothing listening), refuses a live socket or any non-socket file.
 *
 * @returns true when a stale socket was removed.
 */
export async function prepareSocketPath(path: string): Promise<boolean> {
  const dir = dirname(path);
  try {
    await Deno.mkdir(dir, { recursive: true, mode: SOCKET_DIR_MODE });
  } catch (err) {
    throw new SocketError(`Cannot create socket directory "${dir}": ${(err as Error).message}`, {
      cause: err,
    });
  }
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw new SocketError(`Cannot listen on "${path}": ${(err as Error).message}`, { cause: err });
  }
  if (!stat.isSocket) {
    throw new SocketError(`Cannot listen on "${path}": the path exists and is not a socket`);
  }
  if (await isSocketLive(path)) {
    throw new SocketError(
      `Cannot listen on "${path}": another server is already listening on this socket`,
    );
  }
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      throw new SocketError(`Cannot remove stale socket "${path}": ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  return true;
}

/**
 * Identity of a socket file (device, inode, modification time), to remove only the socket this
 * process made: inode numbers alone are reused at once on tmpfs.
 */
export interface SocketIdentity {
  dev: number;
  ino: number;
  mtimeMs: number;
}

function identityOf(stat: Deno.FileInfo): SocketIdentity {
  return { dev: stat.dev, ino: stat.ino ?? 0, mtimeMs: stat.mtime?.getTime() ?? 0 };
}

/** Sets the socket's mode and returns its identity. */
export async function finishSocket(path: string): Promise<SocketIdentity> {
  await Deno.chmod(path, SOCKET_MODE);
  return identityOf(await Deno.lstat(path));
}

/** Removes the socket at `path` if it is still the one identified by `id`. */
export async function removeSocket(path: string, id: SocketIdentity): Promise<void> {
  try {
    const stat = await Deno.lstat(path);
    const now = identityOf(stat);
    if (!stat.isSocket || now.dev !== id.dev || now.ino !== id.ino || now.mtimeMs !== id.mtimeMs) {
      return;
    }
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
