/**
 * A thread for the ioctls that may block: a suspend waits until the filesystem on the device
 * is frozen and its dirty data written, which can take seconds under write load. Made on the
 * main thread, it would stop every other call the server is answering. The worker
 * (`ioctl_worker.ts`) starts at the first call.
 *
 * @module
 */
import type { CallResult } from "../../sys/libc.ts";

interface Pending {
  resolve(result: CallResult): void;
  reject(err: Error): void;
  buf: Uint8Array;
}

/** Runs ioctl(2) calls on a worker thread, one at a time, in order. */
export class IoctlThread {
  readonly #libcPath: string;
  #worker: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  #next = 1;
  #closed = false;

  /** Creates the thread (the worker starts at the first call) with libc from `libcPath`. */
  constructor(libcPath = "libc.so.6") {
    this.#libcPath = libcPath;
  }

  /**
   * `ioctl(fd, request, buf)` on the worker. The kernel's reply is copied back into `buf`;
   * resolves with the return value and, when it is -1, the errno.
   */
  call(fd: number, request: bigint, buf: Uint8Array): Promise<CallResult> {
    if (this.#closed) return Promise.reject(new Error("IoctlThread is closed"));
    const worker = this.#start();
    const id = this.#next++;
    const { promise, resolve, reject } = Promise.withResolvers<CallResult>();
    this.#pending.set(id, { resolve, reject, buf });
    const copy = buf.slice(); // transferred to the worker; `buf` stays usable here
    worker.postMessage({ id, fd, request, buf: copy }, [copy.buffer]);
    return promise;
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(new URL("./worker.ts", import.meta.url).href, {
      type: "module",
    });
    worker.onmessage = (event: MessageEvent) => {
      const { id, value, errno, buf } = event.data;
      const pending = this.#pending.get(id);
      if (!pending) return;
      this.#pending.delete(id);
      pending.buf.set(buf);
      pending.resolve({ value, errno });
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.#fail(new Error(`ioctl worker failed: ${event.message}`));
    };
    worker.postMessage({ libcPath: this.#libcPath });
    this.#worker = worker;
    return worker;
  }

  #fail(err: Error): void {
    for (const pending of this.#pending.values()) pending.reject(err);
    this.#pending.clear();
    this.#worker?.terminate();
    this.#worker = undefined;
  }

  /** Stops the worker; calls still pending are rejected. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#fail(new Error("IoctlThread is closed"));
  }
}
