/**
 * The systemd side of `sd_notify` for tests: a unix datagram socket bound at a path or an
 * abstract name (`@…`), read through libc (Deno FFI) without blocking the event loop.
 *
 * @module
 */
import { dlopenLibc } from "../src/sys/libc.ts";
import { AF_UNIX, SOCK_DGRAM_CLOEXEC, unixAddress } from "../src/sys/notify.ts";
import { poll } from "./poll.ts";

const MSG_DONTWAIT = 0x40;

/** A bound datagram socket that collects what is sent to it. */
export interface NotifyReceiver extends Disposable {
  /** The address to put in `NOTIFY_SOCKET`. */
  readonly address: string;
  /** Waits for the next datagram (or throws after `timeoutMs`). */
  next(timeoutMs?: number): Promise<string>;
}

/** Binds a receiver at `address` (a path, or `@name` for an abstract socket). */
export function bindNotifyReceiver(address: string): NotifyReceiver {
  const lib = dlopenLibc(["socket", "bind", "recv", "close"]);
  const s = lib.symbols;
  const fd = s.socket(AF_UNIX, SOCK_DGRAM_CLOEXEC, 0);
  const { address: sockaddr, length } = unixAddress(address);
  if (fd < 0 || s.bind(fd, sockaddr, length) !== 0) {
    if (fd >= 0) s.close(fd);
    lib.close();
    throw new Error(`cannot bind a datagram socket at ${address}`);
  }
  const buffer = new Uint8Array(4096);
  return {
    address,
    async next(timeoutMs = 10_000) {
      const received = await poll(
        () => {
          const n = Number(s.recv(fd, buffer, BigInt(buffer.length), MSG_DONTWAIT));
          return n >= 0 && { text: new TextDecoder().decode(buffer.subarray(0, n)) };
        },
        `a notification at ${address}`,
        { timeoutMs },
      );
      return received.text;
    },
    [Symbol.dispose]() {
      s.close(fd);
      lib.close();
    },
  };
}
