/**
 * The systemd side of `sd_notify` for tests: a unix datagram socket bound at a path or an
 * abstract name (`@…`), read through libc (Deno FFI) without blocking the event loop.
 *
 * @module
 */
import { AF_UNIX, SOCK_DGRAM_CLOEXEC, unixAddress } from "../src/sys/notify.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;
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
  const lib = Deno.dlopen("libc.so.6", SYMBOLS);
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
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const n = Number(s.recv(fd, buffer, BigInt(buffer.length), MSG_DONTWAIT));
        if (n >= 0) return new TextDecoder().decode(buffer.subarray(0, n));
        if (Date.now() > deadline) throw new Error(`no notification at ${address}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    [Symbol.dispose]() {
      s.close(fd);
      lib.close();
    },
  };
}
