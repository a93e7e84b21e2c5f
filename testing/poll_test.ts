import assert from "node:assert/strict";
import { poll, PollTimeoutError, timedOut } from "./poll.ts";

Deno.test("poll: resolves with the condition's first truthy value", async () => {
  let n = 0;
  const value = await poll(() => ++n >= 3 && { n }, "n to reach 3", { intervalMs: 1 });
  assert.deepEqual(value, { n: 3 });
  assert.equal(await poll(() => "at once", "a string"), "at once");
  assert.equal(await poll(() => Promise.resolve(7), "an async condition"), 7);
});

Deno.test("poll: a timeout names what was awaited, the limit and the detail", async () => {
  let checks = 0;
  const err = await poll(
    () => {
      checks++;
      return false;
    },
    "the impossible",
    { timeoutMs: 30, intervalMs: 5, detail: () => "last log line" },
  )
    .then(() => assert.fail("resolved"), (e: unknown) => e);
  assert.ok(err instanceof PollTimeoutError);
  assert.equal(err.name, "PollTimeoutError");
  assert.equal(err.message, "Timed out after 30 ms waiting for the impossible: last log line");
  assert.equal(err.what, "the impossible");
  assert.ok(checks >= 2, `${checks} checks`);
});

Deno.test("poll: the condition is checked once more when the limit has passed", async () => {
  // the first check fails, the pause is cut to the 1 ms limit, and the check after it counts
  let checks = 0;
  const value = await poll(() => ++checks === 2, "the second check", {
    timeoutMs: 1,
    intervalMs: 50,
  });
  assert.equal(value, true);
  assert.equal(checks, 2);
});

Deno.test("poll: an exception from the condition ends the wait at once", async () => {
  let checks = 0;
  await assert.rejects(
    poll(() => {
      checks++;
      throw new RangeError("broken");
    }, "anything"),
    RangeError,
  );
  assert.equal(checks, 1);
});

Deno.test("poll: an async condition is never checked twice at the same time", async () => {
  let running = 0;
  let overlapped = false;
  let checks = 0;
  await poll(
    async () => {
      overlapped ||= running > 0;
      running++;
      await new Promise((r) => setTimeout(r, 15));
      running--;
      return ++checks === 4;
    },
    "four slow checks",
    { intervalMs: 1 },
  );
  assert.equal(overlapped, false);
});

Deno.test("poll: timedOut turns a timeout into undefined and rethrows anything else", async () => {
  assert.equal(await poll(() => false, "nothing", { timeoutMs: 5 }).catch(timedOut), undefined);
  assert.equal(await poll(() => 3, "three").catch(timedOut), 3);
  await assert.rejects(
    poll(() => {
      throw new RangeError("broken");
    }, "anything").catch(timedOut),
    RangeError,
  );
});
