import assert from "node:assert/strict";
import { O_RDWR_CLOEXEC, openLibc } from "../../sys/libc.ts";
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
  } finally {
    thread.close();
    libc.close(fd);
  }
  await assert.rejects(thread.call(fd, TCGETS, new Uint8Array(8)), /closed/);
});
