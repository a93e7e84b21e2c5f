/**
 * A Prepare whose origin cannot be flushed: the origin (committed while mounted, so still
 * active) holds more dirty data than the pool has space, the pool queues writes when full
 * (`queue_if_no_space`), so the suspend around `create_snap`, which freezes and flushes the
 * origin's filesystem, waits in the kernel until the pool gets space. The Prepare must answer
 * an Unavailable error within the suspend timeout while other calls keep answering; once the
 * pool gets space (a snapshot removed: the pool's commit requeues the waiting writes) the
 * origin must be resumed, a retried Prepare must work and see all of the origin's data, and
 * the pool's thin ids must be exactly the store's devices. Run for both dm backends.
 */
import assert from "node:assert/strict";
import { requireKernel, sh } from "./fixtures.ts";
import { createTestPool } from "./fixtures.ts";
import { mountAll, realStack, testSettings, unmount, withMount } from "./snapshot_fixtures.ts";
import { openSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { SUSPEND_TIMEOUT_MS } from "../../src/pool/thin_pool.ts";
import { DmIoctl } from "../../src/dm/ioctl/ioctl.ts";
import type { DeviceMapper } from "../../src/dm/types.ts";
import { errorKind } from "../../src/util/errors.ts";
import { poll } from "../../testing/poll.ts";

const MiB = 1024 * 1024;
/** Data the origin holds dirty when it is snapshotted, and the pool's free space then. */
const DIRTY_MB = 40;
const FREE_MB = 16;

/** `dm`, with every resume recorded (name, time). */
function recordingResumes(dm: DeviceMapper, resumes: Array<{ name: string; at: number }>) {
  return new Proxy(dm, {
    get(target, prop) {
      if (prop === "resume") {
        return async (name: string) => {
          await target.resume(name);
          resumes.push({ name, at: performance.now() });
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** The slowest of each kind of call, ms, and when it started (ms after `since`). */
class Latencies {
  readonly max: Record<string, number> = {};
  readonly at: Record<string, number> = {};
  constructor(readonly since: number) {}
  async time<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await fn();
    } finally {
      const ms = Math.round(performance.now() - started);
      if (ms >= (this.max[what] ?? 0)) {
        this.max[what] = ms;
        this.at[what] = Math.round(started - this.since);
      }
    }
  }
}

for (const backend of ["ioctl", "dmsetup"] as const) {
  Deno.test(`suspend timeout: a Prepare whose origin cannot flush on a full pool fails in time, other calls answer, and the origin is resumed with nothing lost (${backend})`, async () => {
    requireKernel();
    const noSpaceTimeout = Number(
      (await Deno.readTextFile("/sys/module/dm_thin_pool/parameters/no_space_timeout")).trim(),
    );
    assert.ok(
      noSpaceTimeout === 0 || noSpaceTimeout >= 30,
      `dm-thin's no_space_timeout (${noSpaceTimeout} s) would fail the queued writes mid-test`,
    );
    await using pool = await createTestPool({ dataMb: 96 }); // queue_if_no_space
    const stack = realStack();
    const real = backend === "ioctl" ? new DmIoctl() : stack.dm; // closed with the snapshotter
    const resumes: Array<{ name: string; at: number }> = [];
    const s = await openSnapshotter({
      ...testSettings(pool, { baseImageSize: 256 * MiB }),
      ...stack,
      dm: recordingResumes(real, resumes),
    });
    const mounted: string[] = [];
    try {
      const dir = await mountAll(await s.prepare("a-tmp", ""));
      mounted.push(dir);
      await s.prepare("other", "");
      await s.prepare("spare", ""); // never written: removing it frees no block
      // fill the pool but FREE_MB through another device, written past the page cache
      const filler = (await s.prepare("filler", ""))[0].source;
      const status = await s.poolStatus();
      const blockBytes = (status.length * 512) / status.totalDataBlocks;
      const fill = status.totalDataBlocks - status.usedDataBlocks - (FREE_MB * MiB) / blockBytes;
      await sh(
        "dd",
        "if=/dev/zero",
        `of=${filler}`,
        `bs=${blockBytes}`,
        `count=${fill}`,
        "oflag=direct",
      );
      // more dirty data in the origin than the pool has space: only a flush writes it
      await sh("dd", "if=/dev/urandom", `of=${dir}/big`, "bs=1M", `count=${DIRTY_MB}`);
      const checksum = (await sh("sha256sum", `${dir}/big`)).split(" ")[0];
      await s.commit("a", "a-tmp"); // still mounted: the origin stays active
      const origin = s.pool.deviceName(s.pool.store.getSnapshot("a")!.thinId);
      const before = await s.poolStatus();
      assert.equal(before.mode, "rw", "the pool is healthy when the Prepare starts");
      assert.ok(
        (before.totalDataBlocks - before.usedDataBlocks) * blockBytes < DIRTY_MB * MiB,
        "the origin's dirty data does not fit in the pool",
      );
      const thinIdOf = (key: string) => s.pool.store.getSnapshot(key)!.thinId;
      const devicesBefore = s.pool.store.listDevices().map((d) => d.thinId);
      const gone = [thinIdOf("spare"), thinIdOf("filler")];

      // the Prepare: its suspend waits in the kernel for a flush the full pool queues
      const started = performance.now();
      const prepare = s.prepare("b", "a").then(
        () => ({ error: undefined, ms: performance.now() - started }),
        (error) => ({ error: error as Error, ms: performance.now() - started }),
      );
      let answer: Awaited<typeof prepare> | undefined;
      prepare.then((a) => (answer = a));
      const latencies = new Latencies(started);
      const otherDevice = s.pool.deviceName(thinIdOf("other"));
      const poolModes = new Set<string>();
      let removedSpare = false;
      await poll(
        async () => {
          await latencies.time("Stat", () => s.stat("other"));
          await latencies.time("List", () => s.list());
          await latencies.time("Usage", () => s.usage("other"));
          const mode = (await sh("dmsetup", "status", pool.name)).split(" ")[7];
          poolModes.add(mode);
          if (!removedSpare && mode === "out_of_data_space") {
            await latencies.time("Remove", () => s.remove("spare"));
            // another device's suspend: it must not wait behind the one stuck in the kernel
            await latencies.time("suspend+resume of another device", async () => {
              await real.suspend(otherDevice);
              await real.resume(otherDevice);
            });
            removedSpare = true;
          }
          return answer;
        },
        "the Prepare to answer",
        { timeoutMs: SUSPEND_TIMEOUT_MS + 20_000, intervalMs: 100 },
      );
      const { error, ms } = answer!;
      console.log(
        `suspend timeout (${backend}): Prepare answered in ${Math.round(ms)} ms: ${error}; ` +
          `slowest other calls meanwhile (ms): ${JSON.stringify(latencies.max)}, started at ` +
          `(ms into the Prepare): ${JSON.stringify(latencies.at)}`,
      );
      assert.ok(error, "the Prepare fails");
      assert.equal(errorKind(error), "unavailable", String(error));
      assert.equal(error.name, "SuspendTimeoutError");
      assert.match(error.message, new RegExp(`Cannot snapshot active device "${origin}"`));
      assert.match(error.message, new RegExp(`pool "${pool.name}" is out of data space`));
      assert.ok(ms >= SUSPEND_TIMEOUT_MS - 10 && ms < SUSPEND_TIMEOUT_MS + 3000, `${ms} ms`);
      assert.ok(poolModes.has("out_of_data_space"), `the pool filled up: ${[...poolModes]}`);
      assert.ok(removedSpare, "Remove and another suspend ran while the Prepare waited");
      for (const [what, max] of Object.entries(latencies.max)) {
        assert.ok(max < 1000, `${what} answered in ${max} ms while the suspend waited`);
      }
      await assert.rejects(s.stat("b"), /does not exist/);
      assert.deepEqual(s.pool.store.listDevices("creating"), [], "no half-made child row");
      assert.ok(!resumes.some((r) => r.name === origin), "the origin is not resumed yet");

      // space for the pool: removing the filler frees its blocks, the pool's commit requeues
      // the queued writes, the flush completes and so does the suspend; then the origin resumes
      const freedAt = performance.now();
      await latencies.time("Remove (filler)", () => s.remove("filler"));
      const resumed = await poll(
        () => resumes.find((r) => r.name === origin),
        "the origin to be resumed after its late suspend",
        { timeoutMs: 30_000 },
      );
      console.log(
        `suspend timeout (${backend}): origin resumed ${Math.round(resumed.at - freedAt)} ms ` +
          `after the pool got space`,
      );
      assert.match(await sh("dmsetup", "info", origin), /State:\s+ACTIVE/);

      // a retry works and sees all of the origin's data
      const child = await s.prepare("b", "a");
      const copied = await withMount(
        child,
        async (b) => (await sh("sha256sum", `${b}/big`)).split(" ")[0],
      );
      assert.equal(copied, checksum, "the child has the origin's data, all of it flushed");
      assert.match(await sh("dmsetup", "info", origin), /State:\s+ACTIVE/);

      // no thin id leaked or lost: the pool holds exactly the store's devices, which are those
      // from before, less the two removed, plus the retried child
      const byId = (a: number, b: number) => a - b;
      const rows = s.pool.store.listDevices().map((d) => d.thinId).sort(byId);
      assert.deepEqual(await pool.thinIds(), rows);
      const expected = devicesBefore.filter((id) => !gone.includes(id)).concat(thinIdOf("b"));
      assert.deepEqual(rows, expected.sort(byId));
    } finally {
      for (const dir of mounted) await unmount(dir).catch(() => {});
      await s.close();
    }
  });
}
