/**
 * Threads for the ioctls that may block: a suspend waits until the filesystem on the device
 * is frozen and its dirty data written, which can take seconds under write load, and for ever
 * when the writes cannot complete (a full thin-pool in `queue_if_no_space` mode). Made on the
 * main thread, it would stop every other call the server is answering.
 *
 * Invariants:
 * - a call runs on a worker that has no other call in flight: a call stuck in the kernel (which
 *   nothing can cancel) holds its worker, never the calls after it; those get another worker;
 * - the common path is one worker, started at the first call and kept while idle; a worker
 *   started because the others were busy ends once its call returns (at most one stays idle);
 * - at most `maxThreads` calls are in flight; one more is refused at once rather than queued
 *   behind calls that may never return;
 * - {@linkcode IoctlThread.close} rejects every call in flight and terminates the workers (a
 *   worker blocked in the kernel goes away when its call returns).
 *
 * @module
 */
import type { CallResult } from "../../sys/libc.ts";

/** Options for {@linkcode IoctlThread}. */
export interface IoctlThreadOptions {
  /** libc to load on each worker (default `libc.so.6`). */
  libcPath?: string;
  /** Calls in flight at most, each on its own worker (default 16, min 1). */
  maxThreads?: number;
  /**
   * Module of the worker (default `./worker.ts`); tests give one that speaks the same messages
   * but blocks in a call of their choosing.
   */
  workerUrl?: string | URL;
}

/** A call waiting for its worker's reply. */
interface Pending {
  resolve(result: CallResult): void;
  reject(err: Error): void;
  buf: Uint8Array;
}

/** One worker and the call it runs, if any. */
interface Thread {
  worker: Worker;
  pending: Pending | undefined;
}

/** Runs ioctl(2) calls on worker threads, each call on a worker of its own. */
export class IoctlThread {
  readonly #libcPath: string;
  readonly #maxThreads: number;
  readonly #workerUrl: string;
  /** Every live worker: idle ones have no pending call. */
  readonly #threads = new Set<Thread>();
  #closed = false;

  /** Creates the pool of threads; the first worker starts at the first call. */
  constructor(options: IoctlThreadOptions = {}) {
    this.#libcPath = options.libcPath ?? "libc.so.6";
    this.#maxThreads = Math.max(1, options.maxThreads ?? 16);
    this.#workerUrl = String(options.workerUrl ?? new URL("./worker.ts", import.meta.url));
  }

  /** Workers alive now, idle or busy (for tests and diagnostics). */
  get threads(): number {
    return this.#threads.size;
  }

  /** Calls in flight now (for tests and diagnostics). */
  get inFlight(): number {
    let n = 0;
    for (const t of this.#threads) if (t.pending) n++;
    return n;
  }

  /**
   * `ioctl(fd, request, buf)` on an idle worker (a new one when all are busy). The kernel's reply
   * is copied back into `buf`; resolves with the return value and, when it is -1, the errno.
   * Rejects at once when `maxThreads` calls are in flight already.
   */
  call(fd: number, request: bigint, buf: Uint8Array): Promise<CallResult> {
    if (this.#closed) return Promise.reject(new Error("IoctlThread is closed"));
    let thread = [...this.#threads].find((t) => !t.pending);
    if (!thread) {
      if (this.#threads.size >= this.#maxThreads) {
        return Promise.reject(
          new Error(
            `Cannot start an ioctl thread: ${this.#threads.size} ioctls are still blocked in the kernel`,
          ),
        );
      }
      thread = this.#start();
    }
    const { promise, resolve, reject } = Promise.withResolvers<CallResult>();
    thread.pending = { resolve, reject, buf };
    const copy = buf.slice(); // transferred to the worker; `buf` stays usable here
    thread.worker.postMessage({ id: 1, fd, request, buf: copy }, [copy.buffer]);
    return promise;
  }

  #start(): Thread {
    const worker = new Worker(this.#workerUrl, { type: "module" });
    const thread: Thread = { worker, pending: undefined };
    worker.onmessage = (event: MessageEvent) => {
      const { value, errno, buf } = event.data;
      const pending = thread.pending;
      thread.pending = undefined;
      if (!pending) return;
      pending.buf.set(buf);
      pending.resolve({ value, errno });
      // keep one idle worker for the next call; end the ones started while others were busy
      const idle = [...this.#threads].filter((t) => !t.pending).length;
      if (idle > 1) this.#end(thread);
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      thread.pending?.reject(new Error(`ioctl worker failed: ${event.message}`));
      thread.pending = undefined;
      this.#end(thread);
    };
    worker.postMessage({ libcPath: this.#libcPath });
    this.#threads.add(thread);
    return thread;
  }

  #end(thread: Thread): void {
    this.#threads.delete(thread);
    thread.worker.terminate();
  }

  /** Stops the workers; calls still in flight are rejected. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = new Error("IoctlThread is closed");
    for (const thread of [...this.#threads]) {
      thread.pending?.reject(err);
      thread.pending = undefined;
      this.#end(thread);
    }
  }
}
