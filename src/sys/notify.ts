/**
 * systemd's readiness protocol (`sd_notify(3)`): with `Type=notify`, systemd passes a datagram
 * socket in `$NOTIFY_SOCKET` and waits for `READY=1` before it starts the units ordered after
 * this one — containerd, which connects to our socket as soon as it starts. The message goes
 * out through libc's `socket`/`sendto` (Deno FFI, `libc.ts`): Deno has no stable unix datagram
 * sockets. libc is opened for each notification and closed after it (a process sends few).
 *
 * ```ts
 * notifySystemd("READY=1\nSTATUS=serving"); // false when not started by systemd
 * ```
 *
 * @module
 */

import { dlopenLibc, errnoOf, type LibcLibrary, strerrorOf } from "./libc.ts";

/** The libc functions sending a notification binds. */
const FUNCTIONS = ["socket", "sendto", "close", "strerror", "__errno_location"] as const;

/** `AF_UNIX`. */
export const AF_UNIX = 1;
/** `SOCK_DGRAM | SOCK_CLOEXEC`. */
export const SOCK_DGRAM_CLOEXEC = 2 | 0o2000000;
const MSG_NOSIGNAL = 0x4000;
/** Size of `sockaddr_un.sun_path`. */
const SUN_PATH_BYTES = 108;

/** Why a notification was not delivered. */
export class NotifyError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NotifyError";
  }
}

/**
 * A `sockaddr_un` for `path`, and its length: a leading `@` names an abstract socket (first
 * byte NUL, no terminator), as systemd writes it in `$NOTIFY_SOCKET`.
 */
export function unixAddress(path: string): { address: Uint8Array<ArrayBuffer>; length: number } {
  const abstract = path.startsWith("@");
  const name = new TextEncoder().encode(abstract ? path.slice(1) : path);
  const pathBytes = name.length + 1; // the NUL of an abstract name, or a path's terminator
  if (path.length <= (abstract ? 1 : 0) || pathBytes > SUN_PATH_BYTES) {
    throw new NotifyError(`Cannot notify "${path}": not a unix socket address`);
  }
  const address = new Uint8Array(2 + SUN_PATH_BYTES);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(name, abstract ? 3 : 2);
  return { address, length: 2 + pathBytes };
}

/**
 * Sends `state` (e.g. `"READY=1"`, `"STOPPING=1"`, `"STATUS=…"`, newline-separated) to the
 * socket in `$NOTIFY_SOCKET` (or `options.socket`). Returns false when there is none, true
 * when the datagram was sent; throws a {@linkcode NotifyError} when sending failed.
 */
export function notifySystemd(
  state: string,
  options: { socket?: string; libc?: string } = {},
): boolean {
  const socket = options.socket ?? Deno.env.get("NOTIFY_SOCKET");
  if (!socket) return false;
  const { address, length } = unixAddress(socket);
  let lib: LibcLibrary<typeof FUNCTIONS[number]>;
  try {
    lib = dlopenLibc(FUNCTIONS, options.libc);
  } catch (err) {
    throw new NotifyError(`Cannot notify "${socket}": ${(err as Error).message}`, { cause: err });
  }
  try {
    const s = lib.symbols;
    const failure = (call: string) =>
      new NotifyError(`Cannot notify "${socket}": ${call}: ${strerrorOf(s, errnoOf(s))}`);
    const fd = s.socket(AF_UNIX, SOCK_DGRAM_CLOEXEC, 0);
    if (fd < 0) throw failure("socket");
    try {
      const message = new TextEncoder().encode(state);
      const sent = s.sendto(fd, message, BigInt(message.length), MSG_NOSIGNAL, address, length);
      if (Number(sent) < 0) throw failure("sendto");
    } finally {
      s.close(fd);
    }
    return true;
  } finally {
    lib.close();
  }
}
