/// <reference lib="deno.worker" />
/**
 * A stand-in for the ioctl thread's worker (`src/dm/ioctl/worker.ts`) in host tests: it takes
 * the same messages, but each call is `recv(fd, buf, buf.length, 0)` on a datagram socket,
 * which blocks in the kernel until a datagram arrives, as a suspend blocks until its flush
 * completes; the request is ignored. The reply's value is the byte count received (the
 * datagram is in `buf`), or -1 with the errno.
 *
 * Messages in: `{ libcPath }` once, then `{ id, fd, request, buf }`; out: `{ id, value, errno,
 * buf }`.
 *
 * @module
 */
import { dlopenLibc, errnoOf, type LibcLibrary } from "../src/sys/libc.ts";

let lib: LibcLibrary<"recv" | "__errno_location"> | undefined;
self.onmessage = (event: MessageEvent) => {
  const data = event.data;
  if ("libcPath" in data) {
    lib = dlopenLibc(["recv", "__errno_location"], data.libcPath);
    return;
  }
  const { id, fd, buf } = data as { id: number; fd: number; buf: Uint8Array<ArrayBuffer> };
  const value = Number(lib!.symbols.recv(fd, buf, BigInt(buf.length), 0));
  const errno = value === -1 ? errnoOf(lib!.symbols) : 0;
  self.postMessage({ id, value, errno, buf }, [buf.buffer]);
};
