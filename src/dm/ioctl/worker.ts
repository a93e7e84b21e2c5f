/// <reference lib="deno.worker" />
/**
 * A worker behind {@linkcode IoctlThread}: makes ioctl(2) calls off the main thread and reads
 * `errno` on the thread that made them (it is thread-local). The file descriptor is the main
 * thread's: descriptors belong to the process. It gets one call at a time, so a call blocked in
 * the kernel holds this worker only.
 *
 * Messages in: `{ libcPath }` once, then `{ id, fd, request, buf }`; out: `{ id, value, errno,
 * buf }` (the buffer, filled in by the kernel, is transferred back and forth).
 *
 * @module
 */
import { type Libc, openLibc } from "../../sys/libc.ts";

let libc: Libc | undefined;
self.onmessage = (event: MessageEvent) => {
  const data = event.data;
  if ("libcPath" in data) {
    libc = openLibc(data.libcPath);
    return;
  }
  const { id, fd, request, buf } = data as {
    id: number;
    fd: number;
    request: bigint;
    buf: Uint8Array<ArrayBuffer>;
  };
  const result = libc!.ioctl(fd, request, buf);
  self.postMessage({ id, value: result.value, errno: result.errno, buf }, [buf.buffer]);
};
