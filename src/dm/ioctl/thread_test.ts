import assert from "node:assert/strict";
import { dlopenLibc, O_RDWR_CLOEXEC, openLibc } from "../../sys/libc.ts";
import { AF_UNIX, notifySystemd, SOCK_DGRAM_CLOEXEC, unixAddress } from "../../sys/notify.ts";
import { poll } from "../../../testing/poll.ts";
import { IoctlThread } from "./thread.ts";

const TCGETS = 0x5401n;
const ENOTTY = 25;

Deno.test("ioctl thread: the call runs on the worker and its errno comes back from there", async () => {
  using libc = openLibc();
  const fd = libc.open("/dev/null", O_RDWR_CLOEXEC).value;
  assert.ok(fd >= 0);
  const thread = new IoctlThread();
  try {
    // /dev/null is no terminal: TCGETS fails with ENOTTY, set on the worker's thread
    const buf = new Uint8Array(64).fill(7);
    const results = await Promise.all([1, 2, 3].map(() => thread.call(fd, TCGETS, buf)));
    for (const r of results) assert.deepEqual(r, { value: -1, errno: ENOTTY });
    assert.deepEqual(buf, new Uint8Array(64).fill(7), "the buffer is copied back intact");
    assert.equal(thread.threads, 1, "the workers started for calls made together end but one");
    for (let i = 0; i < 3; i++) await thread.call(fd, TCGETS, buf);
    assert.equal(thread.threads, 1, "calls one after the other share one worker");
  } finally {
    thread.close();
    libc.close(fd);
  }
  await assert.rejects(thread.call(fd, TCGETS, new Uint8Array(8)), /closed/);
});

/**
 * Datagram sockets bound at abstract addresses: a call of the blocking worker on one of them
 * stays in the kernel (in recv) until {@linkcode Sockets.release} sends it a datagram.
 */
interface Sockets extends Disposable {
  fds: number[];
  release(index: number, text: string): void;
}

function bindSockets(count: number): Sockets {
  const lib = dlopenLibc(["socket", "bind", "close"]);
  const s = lib.symbols;
  const prefix = `@dmsnap-thread-test-${crypto.randomUUID()}`;
  const fds: number[] = [];
  const close = () => {
    for (const fd of fds) s.close(fd);
    lib.close();
  };
  for (let i = 0; i < count; i++) {
    const fd = s.socket(AF_UNIX, SOCK_DGRAM_CLOEXEC, 0);
    const { address, length } = unixAddress(`${prefix}-${i}`);
    if (fd < 0 || s.bind(fd, address, length) !== 0) {
      if (fd >= 0) s.close(fd);
      close();
      throw new Error("cannot bind a datagram socket");
    }
    fds.push(fd);
  }
  return {
    fds,
    release: (index, text) => assert.ok(notifySystemd(text, { socket: `${prefix}-${index}` })),
    [Symbol.dispose]: close,
  };
}

const BLOCKING_WORKER = new URL("../../../testing/blocking_ioctl_worker.ts", import.meta.url);

/** Settles to the call's result or error, and records when it has. */
function track<T>(promise: Promise<T>) {
  const state: { done: boolean; value?: T; error?: unknown } = { done: false };
  promise.then(
    (value) => Object.assign(state, { done: true, value }),
    (error) => Object.assign(state, { done: true, error }),
  );
  return state;
}

const text = (buf: Uint8Array, n: number) => new TextDecoder().decode(buf.subarray(0, n));

Deno.test("ioctl thread: a call blocked in the kernel holds its own worker, never the calls after it", async () => {
  using sockets = bindSockets(3);
  const thread = new IoctlThread({ workerUrl: BLOCKING_WORKER });
  try {
    const stuckBuf = new Uint8Array(16);
    const stuck = track(thread.call(sockets.fds[0], 0n, stuckBuf));
    // while the first call waits in the kernel, later calls run on other workers
    for (const i of [1, 2]) {
      const buf = new Uint8Array(16);
      const later = track(thread.call(sockets.fds[i], 0n, buf));
      sockets.release(i, `call ${i}`);
      await poll(() => later.done, `call ${i} to return while call 0 is blocked`);
      assert.deepEqual(later.value, { value: 6, errno: 0 });
      assert.equal(text(buf, 6), `call ${i}`);
    }
    assert.equal(stuck.done, false, "call 0 is still blocked");
    assert.equal(thread.inFlight, 1);
    assert.equal(thread.threads, 2, "the blocked worker and one idle worker");
    sockets.release(0, "late");
    await poll(() => stuck.done, "the blocked call to return once released");
    assert.deepEqual(stuck.value, { value: 4, errno: 0 });
    assert.equal(text(stuckBuf, 4), "late");
    assert.equal(thread.threads, 1, "one idle worker is kept, the other ends");
  } finally {
    thread.close();
  }
});

Deno.test("ioctl thread: past maxThreads blocked calls, a call is refused at once; close rejects a blocked call", async () => {
  using sockets = bindSockets(2);
  const thread = new IoctlThread({ workerUrl: BLOCKING_WORKER, maxThreads: 1 });
  const stuck = track(thread.call(sockets.fds[0], 0n, new Uint8Array(8)));
  try {
    const refused = track(thread.call(sockets.fds[1], 0n, new Uint8Array(8)));
    await poll(() => refused.done, "the call past maxThreads to be refused at once");
    assert.match(
      String(refused.error),
      /Cannot start an ioctl thread: 1 ioctls are still blocked in the kernel/,
    );
  } finally {
    thread.close();
  }
  await poll(() => stuck.done, "the blocked call to be rejected by close");
  assert.match(String(stuck.error), /IoctlThread is closed/);
  assert.equal(thread.threads, 0);
  sockets.release(0, "x"); // lets the terminated worker's recv return
});
