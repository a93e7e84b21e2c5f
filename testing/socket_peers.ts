/**
 * What a unix-socket server holds open, read from `/proc/net/unix` (Linux): a socket the
 * server accepted carries the listening socket's path and stays listed, connected, until the
 * server closes it, whatever the client did. So a test can wait until the server has noticed
 * that a client went away (and closed its side) instead of sleeping.
 *
 * @module
 */

/** `St` of a connected socket in `/proc/net/unix` (SS_CONNECTED). */
const CONNECTED = "03";

/**
 * How many connections the server listening at `path` has accepted and not yet closed.
 * Counts every process's sockets bound to that path, so one server per path is assumed.
 */
export async function serverConnections(path: string): Promise<number> {
  const table = await Deno.readTextFile("/proc/net/unix");
  let n = 0;
  // Num RefCount Protocol Flags Type St Inode Path
  for (const line of table.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[5] === CONNECTED && fields.slice(7).join(" ") === path) n++;
  }
  return n;
}
