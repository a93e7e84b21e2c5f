/**
 * Host tests of the pool manager's snapshot of an active origin whose suspend does not finish
 * (its flush cannot complete, e.g. a full pool in queue_if_no_space mode), on the in-memory
 * device mapper: the suspend is held "in the kernel" until the test releases it. The kernel
 * version, with a really full pool, is `tests/kernel/suspend_timeout_test.ts`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type SuspendTimeoutError, ThinPool } from "./thin_pool.ts";
import { type MetadataStore, openStore } from "../metadata/store.ts";
import { errorKind } from "../util/errors.ts";
import type { DeviceMapper } from "../dm/types.ts";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import { createMemoryFormatter } from "../../testing/memory_formatter.ts";
import { poll } from "../../testing/poll.ts";

const POOL = "tp";
const MiB = 1024 * 1024;
const TIMEOUT_MS = 200;

/** What a suspend held in the kernel does once released. */
type Outcome = "suspend" | "fail" | "suspend, then fail";

/**
 * The in-memory device mapper, whose suspends are held while `hold` is set: each waits for it,
 * then takes effect, fails without effect (the flush failed), or takes effect and fails all the
 * same (dmsetup killed at its time limit after the kernel suspended the device).
 */
class HeldSuspends {
  readonly mem = new MemoryDeviceMapper();
  readonly dm: DeviceMapper;
  hold: { promise: Promise<void>; release(): void; outcome: Outcome } | undefined;
  /** Suspends asked for, by device name, held or not. */
  readonly asked: string[] = [];

  constructor() {
    this.mem.createPool(POOL);
    const suspend = async (name: string, options?: { noLockfs?: boolean }) => {
      this.asked.push(name);
      const hold = this.hold;
      if (!hold) return await this.mem.suspend(name, options);
      await hold.promise;
      if (hold.outcome === "fail") throw new Error("injected: the flush failed");
      await this.mem.suspend(name, options);
      if (hold.outcome === "suspend, then fail") throw new Error("injected: dmsetup timed out");
    };
    this.dm = new Proxy(this.mem, {
      get: (target, prop) => {
        if (prop === "suspend") return suspend;
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }

  holdSuspends(outcome: Outcome = "suspend"): void {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.hold = { promise, release: resolve, outcome };
  }

  /** Lets the held suspends end; later ones run at once. */
  release(): void {
    this.hold?.release();
    this.hold = undefined;
  }

  /** The suspends and resumes of `device` that took effect or failed, in order. */
  suspendsOf(device: string): string[] {
    return this.mem.calls
      .filter((c) => c.name === device && (c.op === "suspend" || c.op === "resume"))
      .map((c) => c.op);
  }

  /** The create_snap messages sent so far. */
  get createSnaps(): number {
    return this.mem.calls.filter((c) => c.op === "createSnap").length;
  }
}

interface World extends AsyncDisposable {
  dm: HeldSuspends;
  store: MetadataStore;
  pool: ThinPool;
  /** The active origin's dm name and thin id. */
  origin: { name: string; thinId: number };
}

async function world(): Promise<World> {
  const dir = await Deno.makeTempDir({ prefix: "thin_pool_test_" });
  const dm = new HeldSuspends();
  const store = openStore(join(dir, "metadata.db"));
  const pool = new ThinPool({
    dm: dm.dm,
    store,
    poolName: POOL,
    formatter: createMemoryFormatter(dm.mem),
    suspendTimeoutMs: TIMEOUT_MS,
  });
  // an active origin, as after a Commit while it is mounted
  const reserved = store.transaction(() =>
    pool.reserve({ origin: { kind: "empty" }, sizeBytes: 8 * MiB, fsType: "ext4" })
  );
  const origin = await pool.materialize(reserved);
  store.setDeviceState(origin.thinId, "ready");
  dm.mem.write(origin.name, 0, "origin data");
  dm.mem.openDevice(origin.name);
  return {
    dm,
    store,
    pool,
    origin: { name: origin.name, thinId: origin.thinId },
    async [Symbol.asyncDispose]() {
      dm.release();
      await pool.close();
      store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Reserves a snapshot of the origin, as Prepare does. */
function reserveChild(w: World) {
  return w.store.transaction(() =>
    w.pool.reserve({
      origin: { kind: "snapshot", originId: w.origin.thinId },
      sizeBytes: 8 * MiB,
      fsType: "ext4",
    })
  );
}

/** A promise's outcome, recorded when it settles, and how long it took. */
function track<T>(promise: Promise<T>) {
  const started = performance.now();
  const state: { done: boolean; ms: number; value?: T; error?: unknown } = { done: false, ms: 0 };
  const settle = (fields: Partial<typeof state>) =>
    Object.assign(state, fields, { done: true, ms: performance.now() - started });
  promise.then((value) => settle({ value }), (error) => settle({ error }));
  return state;
}

/** Waits (bounded: a snapshot that never answers fails the test) until `state` settles. */
async function settled<S extends { done: boolean }>(state: S, what: string): Promise<S> {
  await poll(() => state.done, what, { timeoutMs: TIMEOUT_MS * 10 });
  return state;
}

/** Waits until the origin has been resumed after its last suspend. */
async function resumed(w: World): Promise<void> {
  await poll(async () => {
    const ops = w.dm.suspendsOf(w.origin.name);
    return ops.lastIndexOf("resume") > ops.lastIndexOf("suspend") &&
      (await w.dm.mem.info(w.origin.name))?.suspended === false;
  }, "the origin to be resumed");
}

Deno.test("thin pool: a suspend that does not finish in time fails the snapshot, creates nothing, and the origin is resumed when it ends", async () => {
  await using w = await world();
  w.dm.holdSuspends();
  const child = reserveChild(w);
  const snapshot = await settled(track(w.pool.materialize(child)), "the snapshot to give up");
  const err = snapshot.error as SuspendTimeoutError;
  assert.ok(err, "the snapshot fails");
  assert.equal(err.name, "SuspendTimeoutError");
  assert.equal(errorKind(err), "unavailable");
  assert.equal(err.device, w.origin.name);
  assert.match(
    err.message,
    new RegExp(
      `^Cannot snapshot active device "${w.origin.name}": its suspend did not finish within ` +
        `${TIMEOUT_MS} ms, so its filesystem could not be flushed; pool "${POOL}" is read-write ` +
        `\\(\\d+/4096 data blocks used, queue_if_no_space: writes wait for space\\)\\. ` +
        `Nothing was created; the device is resumed when the suspend ends: retry later$`,
    ),
  );
  assert.ok(
    snapshot.ms >= TIMEOUT_MS - 5 && snapshot.ms < TIMEOUT_MS + 1000,
    `answered in ${snapshot.ms} ms`,
  );
  // create_snap was never sent: the pool has no such thin id, and the reserved row is dropped
  // at once (nothing is deleted from the pool: the id was never asked for)
  assert.equal(w.dm.createSnaps, 0);
  assert.ok(!w.dm.mem.thinIds(POOL).includes(child.thinId));
  assert.equal(w.store.getDevice(child.thinId), undefined);
  assert.deepEqual(w.store.listDevices().map((d) => d.thinId), [w.origin.thinId]);
  assert.deepEqual(w.dm.mem.thinIds(POOL), [w.origin.thinId]);

  // meanwhile the pool answers everything else
  assert.equal((await w.pool.poolStatus()).mode, "rw");
  assert.ok(await w.pool.usedBytes({ name: w.origin.name }) > 0);

  // the suspend ends in the kernel: the origin must not stay suspended
  assert.deepEqual(w.dm.suspendsOf(w.origin.name), [], "the suspend is held, nothing resumed");
  w.dm.release();
  await resumed(w);
  assert.deepEqual(w.dm.suspendsOf(w.origin.name), ["suspend", "resume"]);

  // a retry works and sees the origin's data
  const retry = await w.pool.materialize(reserveChild(w));
  assert.equal(w.dm.mem.readThinText(POOL, retry.thinId, 0), "origin data");
  assert.deepEqual(w.dm.mem.unsafeSnapshots, [], "every snapshot was of a suspended origin");
  assert.equal((await w.dm.mem.info(w.origin.name))?.suspended, false);
});

Deno.test("thin pool: a late suspend that fails, even after suspending the device, still gets the origin resumed", async () => {
  for (const outcome of ["fail", "suspend, then fail"] as const) {
    await using w = await world();
    w.dm.holdSuspends(outcome);
    const snapshot = await settled(track(w.pool.materialize(reserveChild(w))), outcome);
    assert.equal((snapshot.error as Error)?.name, "SuspendTimeoutError", outcome);
    w.dm.release();
    await resumed(w);
    assert.equal((await w.dm.mem.info(w.origin.name))?.suspended, false, outcome);
  }
});

Deno.test("thin pool: a snapshot of an origin whose earlier suspend is still in the kernel waits within its own bound, never suspends meanwhile, and works once it has ended", async () => {
  await using w = await world();
  w.dm.holdSuspends();
  const first = await settled(track(w.pool.materialize(reserveChild(w))), "the first to give up");
  assert.equal((first.error as Error)?.name, "SuspendTimeoutError");

  // the suspend is still held: the next snapshot gives up in its own time, asking no suspend
  const second = await settled(track(w.pool.materialize(reserveChild(w))), "the second to give up");
  const err = second.error as SuspendTimeoutError;
  assert.equal(err?.name, "SuspendTimeoutError");
  assert.match(err.message, /an earlier snapshot's suspend of it has not finished within 200 ms/);
  assert.ok(second.ms >= TIMEOUT_MS - 5 && second.ms < TIMEOUT_MS + 1000, `${second.ms} ms`);
  assert.deepEqual(w.dm.asked, [w.origin.name], "one suspend asked for, the held one");

  // the third is waiting when the held suspend ends: the origin is resumed, then snapshotted
  const third = track(w.pool.materialize(reserveChild(w)));
  w.dm.release();
  await settled(third, "the third snapshot");
  assert.equal(third.error, undefined, String(third.error));
  assert.deepEqual(w.dm.suspendsOf(w.origin.name), [
    "suspend", // the held one
    "resume",
    "suspend",
    "resume",
  ]);
  assert.deepEqual(w.dm.mem.unsafeSnapshots, []);
  assert.equal(
    w.dm.mem.readThinText(POOL, (third.value as { thinId: number }).thinId, 0),
    "origin data",
  );
});

Deno.test("thin pool: close waits for the resume of an origin whose suspend is still in the kernel", async () => {
  await using w = await world();
  w.dm.holdSuspends();
  await settled(track(w.pool.materialize(reserveChild(w))), "the snapshot to give up");
  const closing = track(w.pool.close());
  assert.equal(closing.done, false);
  w.dm.release();
  await settled(closing, "close");
  assert.equal((await w.dm.mem.info(w.origin.name))?.suspended, false);
});
