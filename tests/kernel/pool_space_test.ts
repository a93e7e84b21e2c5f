/**
 * A thin-pool running out of space never takes the node down, against the real kernel:
 *
 * - a pool filled to 100% data from inside a mounted snapshot, in `queue_if_no_space` (the
 *   writer blocks) and `error_if_no_space` (the writer fails): through the real server every
 *   RPC keeps answering (Stat, List, Usage, Remove of another snapshot, Cleanup) and Prepare is
 *   refused with ResourceExhausted, before and after a restart on the full pool; removing
 *   snapshots (with discard_blocks) or extending the pool makes it read-write again. The answer
 *   latencies are printed;
 * - a pool with the smallest metadata device LVM allows (2 MiB) filled with thin devices: the
 *   guard refuses Prepare naming metadata, removals make room; filled completely, the pool
 *   turns read-only: Remove and Cleanup say why and keep everything, `serve` starts on it
 *   (degraded, logged at error level) instead of exiting, and extending the metadata device
 *   makes it read-write again.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { connectSnapshots, type SnapshotsClient } from "../../testing/snapshots_client.ts";
import { grpcError } from "../../testing/grpc_error.ts";
import { poll } from "../../testing/poll.ts";
import { type RunningServer, startServer } from "../../src/server/server.ts";
import { createLogger } from "../../src/util/log.ts";
import { parsePoolParams } from "../../src/dm/parse.ts";
import type { PoolStatus } from "../../src/dm/types.ts";
import { spaceLimits } from "../../src/pool/health.ts";
import { DmIoctl } from "../../src/dm/ioctl/ioctl.ts";
import {
  type DevmapperSnapshotter,
  openSnapshotter,
  type SnapshotterSettings,
} from "../../src/snapshotter/snapshotter.ts";
import { createTestPool, requireKernel, sh, shTry, type TestPool } from "./fixtures.ts";
import { spawnServe, writeServeConfig } from "./main_fixtures.ts";
import { mountAll, realStack, testSettings, unmount, withMount } from "./snapshot_fixtures.ts";

const MiB = 1024 * 1024;
/** "Within about a second": the bound every answer on a full pool must keep, ms. */
const ANSWER_BOUND_MS = 1500;

/** The pool's status, read with `dmsetup` (independent of the code under test). */
async function dmPoolStatus(name: string): Promise<PoolStatus> {
  const m = /^(\d+) (\d+) thin-pool (.*)$/.exec(await sh("dmsetup", "status", name));
  assert.ok(m, `thin-pool status of ${name}`);
  return parsePoolParams(Number(m[1]), Number(m[2]), m[3]);
}

/** The pool's table line with `sectors` of data and `features` (as fixtures.ts makes it). */
function poolTable(pool: TestPool, sectors: number, features: string[]): string {
  return `0 ${sectors} thin-pool ${pool.metaLoop} ${pool.dataLoop} 128 32768 ${features.length} ${
    features.join(" ")
  }`;
}

/** Loads `table` into the pool and swaps it in (suspend + resume), as lvextend does. */
async function reloadPool(pool: TestPool, table: string): Promise<void> {
  await sh("dmsetup", "reload", pool.name, "--table", table);
  await sh("dmsetup", "suspend", pool.name);
  await sh("dmsetup", "resume", pool.name);
}

/** Answer latencies of RPCs, by label. */
class Latencies {
  readonly ms: Record<string, number> = {};
  /** Runs `fn`, records how long it took, and checks it answered within the bound. */
  async time<T>(label: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await fn();
    } finally {
      const ms = Math.round(performance.now() - started);
      this.ms[label] = ms;
      assert.ok(ms < ANSWER_BOUND_MS, `${label} answered in ${ms} ms (bound ${ANSWER_BOUND_MS})`);
    }
  }
}

/** A snapshotter served over a socket, with its log lines kept. */
class Served {
  s!: DevmapperSnapshotter;
  server!: RunningServer;
  c!: SnapshotsClient;
  readonly logs: string[] = [];
  readonly socket: string;
  readonly #settings: SnapshotterSettings;

  constructor(pool: TestPool, settings: SnapshotterSettings) {
    this.socket = join(pool.dir, "run", "s.sock");
    this.#settings = settings;
  }

  /** Opens the snapshotter (DM ioctls, as `dm_backend = "auto"` does) and serves it. */
  async start(): Promise<void> {
    const logger = createLogger({ level: "info", write: (l) => this.logs.push(l) });
    const dm = new DmIoctl({ logger });
    this.s = await openSnapshotter({ ...this.#settings, ...realStack(), dm, logger });
    this.server = await startServer({ address: this.socket, snapshotter: this.s, logger });
    this.c = connectSnapshots(this.socket);
  }

  async stop(): Promise<void> {
    this.c?.close();
    await this.server?.close();
    await this.s?.close();
  }

  /** Log lines matching `re`. */
  logged(re: RegExp): string[] {
    return this.logs.filter((l) => re.test(l));
  }
}

for (const errorIfNoSpace of [false, true]) {
  const mode = errorIfNoSpace ? "error_if_no_space" : "queue_if_no_space";
  Deno.test(`pool space: a pool full to 100% data (${mode}) keeps the server answering; freeing or adding space recovers`, async () => {
    requireKernel();
    // 64 MiB of data under 128 MiB devices: a writer in one snapshot fills the pool
    await using pool = await createTestPool({ dataMb: 64, errorIfNoSpace });
    const srv = new Served(
      pool,
      testSettings(pool, {
        baseImageSize: 128 * MiB,
        discardBlocks: true,
        minFreeSpace: { percent: 10 },
      }),
    );
    await srv.start();
    let writer: Deno.ChildProcess | undefined;
    let writerDone = false;
    let fillDir: string | undefined;
    const lat = new Latencies();
    try {
      const fill = await srv.c.prepare("default/1/fill", "");
      const other = await srv.c.prepare("default/2/other", "");
      await withMount(
        other,
        (dir) => sh("dd", "if=/dev/zero", `of=${dir}/data`, "bs=1M", "count=8", "conv=fsync"),
      );
      // the same calls on the healthy pool, for comparison
      await srv.c.prepare("default/8/healthy", "");
      await lat.time("healthy: Usage", () => srv.c.usage("default/8/healthy"));
      await lat.time("healthy: Remove", () => srv.c.remove("default/8/healthy"));
      fillDir = await mountAll(fill);
      writer = new Deno.Command("dd", {
        args: ["if=/dev/zero", `of=${fillDir}/big`, "bs=1M", "oflag=direct"],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const writerStatus = writer.status.then((s) => (writerDone = true, s));
      const full = await poll(
        async () => {
          const st = await dmPoolStatus(pool.name);
          return st.mode === "out_of_data_space" && st;
        },
        "the pool to run out of data space",
        { timeoutMs: 120_000, intervalMs: 100 },
      );
      assert.equal(full.usedDataBlocks, full.totalDataBlocks);
      if (errorIfNoSpace) {
        const status = await writerStatus;
        assert.notEqual(status.code, 0, "the writer's writes fail at once");
      }

      // every RPC answers; creations are refused by the guard
      const answer = async (when: string) => {
        // a status read now: the guard trusts a healthy status up to a second old, and the
        // pool may have filled within the last second
        await srv.s.poolStatus();
        await lat.time(`${when}: Stat`, () => srv.c.stat("default/1/fill"));
        await lat.time(`${when}: List`, () => srv.c.list());
        await lat.time(`${when}: Usage`, () => srv.c.usage("default/1/fill"));
        const refused = await lat.time(
          `${when}: Prepare (refused)`,
          () => grpcError(srv.c.prepare(`default/9/${when}`, "")),
        );
        assert.equal(refused.code, GrpcStatus.RESOURCE_EXHAUSTED, refused.details);
        assert.match(
          refused.details,
          new RegExp(
            `^cannot create active snapshot "default/9/${when}": pool "${pool.name}" is out of ` +
              `data space \\(1024/1024 data blocks used; writes to its devices ${
                errorIfNoSpace ? "fail" : "wait"
              }\\): remove unused images and snapshots .*: resource exhausted$`,
          ),
        );
      };
      await answer("full");
      assert.equal(
        srv.logged(/level=warn msg="pool is out of data space: serving reads and removals only"/)
          .length,
        1,
        srv.logs.join("\n"),
      );

      // a restart on the full pool serves (degraded), and says so at error level
      await srv.stop();
      await srv.start();
      assert.equal(
        srv.logged(/level=error msg="pool is out of data space: serving reads and removals only"/)
          .length,
        1,
        srv.logs.join("\n"),
      );
      await answer("restarted");
      assert.equal(writerDone, errorIfNoSpace, "queued writes wait until space comes back");
      await lat.time("full: Remove (another snapshot)", () => srv.c.remove("default/2/other"));
      await lat.time("full: Cleanup", () => srv.c.cleanup());

      if (errorIfNoSpace) {
        // freeing space: remove what holds it (discard_blocks gives its blocks back at once)
        await unmount(fillDir);
        fillDir = undefined;
        await lat.time("Remove (the full snapshot)", () => srv.c.remove("default/1/fill"));
      } else {
        // adding space: grow the data file, the loop device and the pool table, as lvextend would
        writer.kill("SIGKILL"); // dies once its queued write completes
        await sh("truncate", "-s", "128M", join(pool.dir, "data"));
        await sh("losetup", "-c", pool.dataLoop);
        await reloadPool(pool, poolTable(pool, 128 * 2048, ["skip_block_zeroing"]));
        await writerStatus;
      }
      const back = await dmPoolStatus(pool.name);
      assert.equal(back.mode, "rw", "the pool is read-write again");
      // the guard lifts by itself: no restart, no waiting for a status cache
      const after = await lat.time(
        "recovered: Prepare",
        () => srv.c.prepare("default/4/after", ""),
      );
      await withMount(after, async (dir) => {
        await Deno.writeTextFile(`${dir}/hello`, "space is back\n");
        assert.equal(await Deno.readTextFile(`${dir}/hello`), "space is back\n");
      });
      assert.ok(
        srv.logged(/level=info msg="pool is healthy again/).length >= 1,
        srv.logs.join("\n"),
      );
      console.log(`answer latencies on a full pool (${mode}), ms: ${JSON.stringify(lat.ms)}`);
    } finally {
      if (writer && !writerDone) {
        writer.kill("SIGKILL");
        // queued writes are released by switching the pool to error_if_no_space
        await shTry(
          "dmsetup",
          "reload",
          pool.name,
          "--table",
          poolTable(pool, (await dmPoolStatus(pool.name)).length, [
            "skip_block_zeroing",
            "error_if_no_space",
          ]),
        );
        await shTry("dmsetup", "suspend", pool.name);
        await shTry("dmsetup", "resume", pool.name);
        await writer.status;
      }
      if (fillDir) await unmount(fillDir).catch(() => {});
      await srv.stop();
    }
  });
}

/**
 * Creates raw thin ids (another pool user's) from `next` on while `more()` says so, one
 * `create_thin` message each; returns the next free id and the error that stopped it, if any.
 */
async function createThins(
  dm: DmIoctl,
  pool: string,
  next: number,
  more: () => Promise<boolean>,
): Promise<{ next: number; error?: unknown }> {
  for (;;) {
    if (!await more()) return { next };
    try {
      await dm.createThin(pool, next);
    } catch (error) {
      return { next, error };
    }
    next++;
  }
}

Deno.test("pool space: metadata nearly full is refused by the guard; full, the pool turns read-only and nothing is lost", async () => {
  requireKernel();
  // the smallest metadata device LVM allows: 2 MiB = 512 blocks
  await using pool = await createTestPool({ metaMb: 2 });
  using raw = new DmIoctl();
  const settings = testSettings(pool, { minFreeSpace: { percent: 10 } });
  const srv = new Served(pool, settings);
  await srv.start();
  const freeMetadata = async () => {
    const st = await dmPoolStatus(pool.name);
    return st.totalMetadataBlocks - st.usedMetadataBlocks;
  };
  try {
    await srv.c.prepare("default/1/base-tmp", "");
    await srv.c.commit("default/2/base", "default/1/base-tmp");
    const limit = spaceLimits(await dmPoolStatus(pool.name), { percent: 10 }).metadataBlocks;
    assert.equal(limit, 128, "a quarter of 512 blocks: the kernel's low-water mark");
    // snapshots whose writes give them metadata of their own (a snapshot alone shares its
    // origin's mapping tree and costs almost nothing)
    const made: string[] = [];
    for (let i = 0; i < 8; i++) {
      const key = `default/3/m${i}`;
      const [m] = await srv.c.prepare(key, "default/2/base");
      await sh(
        "dd",
        "if=/dev/urandom",
        `of=${m.source}`,
        "bs=64K",
        "count=4",
        `seek=${64 * i}`,
        "oflag=direct",
      );
      made.push(key);
    }
    // raw thin devices (another pool user) bring free metadata below the limit
    let { next, error } = await createThins(
      raw,
      pool.name,
      100_000,
      async () => await freeMetadata() >= limit,
    );
    assert.equal(error, undefined, String(error));
    const low = await dmPoolStatus(pool.name);
    assert.equal(low.mode, "rw", "the pool itself is still fine");
    await srv.s.poolStatus(); // what the once-a-second refresh reads
    const refused = await grpcError(srv.c.prepare("default/4/refused", "default/2/base"));
    assert.equal(refused.code, GrpcStatus.RESOURCE_EXHAUSTED, refused.details);
    assert.match(
      refused.details,
      new RegExp(
        `^cannot create active snapshot "default/4/refused": pool "${pool.name}" is low on ` +
          `metadata space: metadata ${low.usedMetadataBlocks}/512 blocks used, [\\d.]+% free, ` +
          "metadata keeps 128 blocks \\(25%\\) free .*lvextend --poolmetadatasize.*: " +
          "resource exhausted$",
      ),
    );
    assert.equal(srv.logged(/level=warn msg="pool is low on metadata space/).length, 1);
    // removals make room; the guard lifts by itself
    for (const key of made) await srv.c.remove(key);
    const room = await freeMetadata();
    assert.ok(room >= limit, `${room} metadata blocks free after the removals`);
    await srv.c.prepare("default/5/kept", "default/2/base");

    // fill the metadata completely: the kernel turns the pool read-only
    ({ next, error } = await createThins(raw, pool.name, next, () => Promise.resolve(true)));
    assert.ok(error, "a create_thin fails at last");
    const ro = await dmPoolStatus(pool.name);
    assert.equal(ro.mode, "ro", `${error}: ${JSON.stringify(ro)}`);
    await srv.s.poolStatus();
    const rm = await grpcError(srv.c.remove("default/5/kept"));
    assert.equal(rm.code, GrpcStatus.FAILED_PRECONDITION, rm.details);
    assert.match(
      rm.details,
      new RegExp(
        `^cannot remove snapshot "default/5/kept", it is kept: pool "${pool.name}" is read-only ` +
          "\\(metadata \\d+/512 blocks used\\): the kernel accepts no change to it; if its " +
          "metadata is full, extend the metadata device .*: failed precondition$",
      ),
    );
    const create = await grpcError(srv.c.prepare("default/6/x", "default/2/base"));
    assert.equal(create.code, GrpcStatus.UNAVAILABLE, create.details);
    assert.equal((await srv.c.stat("default/5/kept")).kind, "active");
    assert.equal(srv.logged(/level=error msg="pool is read-only: serving reads only/).length, 1);
    await srv.stop();

    // `serve` starts on the read-only pool instead of exiting: degraded, logged at error level
    const config = join(pool.dir, "config.toml");
    await writeServeConfig(config, settings);
    const served = await spawnServe({
      config,
      socket: join(pool.dir, "serve", "s.sock"),
      timeoutMs: 60_000,
    });
    try {
      assert.match(
        served.log(),
        /level=error msg="pool is read-only: serving reads only; new snapshots and removals are refused"/,
      );
      const c = connectSnapshots(served.socket);
      try {
        const lat = new Latencies();
        await lat.time("Stat", () => c.stat("default/5/kept"));
        await lat.time("List", () => c.list());
        await lat.time("Usage", () => c.usage("default/5/kept"));
        const again = await lat.time(
          "Remove (refused)",
          () => grpcError(c.remove("default/5/kept")),
        );
        assert.equal(again.code, GrpcStatus.FAILED_PRECONDITION, again.details);
        assert.match(again.details, /is read-only/);
        const prepare = await lat.time(
          "Prepare (refused)",
          () => grpcError(c.prepare("default/6/y", "")),
        );
        assert.equal(prepare.code, GrpcStatus.UNAVAILABLE, prepare.details);
        await lat.time("Cleanup", () => c.cleanup());
        console.log(
          `answer latencies of \`serve\` started on a read-only pool, ms: ${
            JSON.stringify(lat.ms)
          }`,
        );
      } finally {
        c.close();
      }
    } finally {
      assert.equal((await served.stop()).code, 0, served.log());
    }

    // async Remove only marks: it works; Cleanup says why it cannot delete, and keeps the row
    const asyncSrv = new Served(pool, { ...settings, asyncRemove: true });
    await asyncSrv.start();
    try {
      await asyncSrv.c.remove("default/5/kept");
      const clean = await grpcError(asyncSrv.c.cleanup());
      assert.equal(clean.code, GrpcStatus.FAILED_PRECONDITION, clean.details);
      assert.match(
        clean.details,
        new RegExp(
          "^cleanup cannot delete 1 device\\(s\\) of removed snapshots; they stay recorded for " +
            `a later Cleanup or the next start: pool "${pool.name}" is read-only`,
        ),
      );
      assert.equal(asyncSrv.s.pool.store.listDevices("deleting").length, 1);
    } finally {
      await asyncSrv.stop();
    }
    // a restart still on the read-only pool leaves the device for later
    await srv.start();
    assert.equal(srv.s.lastReconcile!.postponed.length, 1, JSON.stringify(srv.s.lastReconcile));
    await srv.stop();

    // extending the metadata device makes the pool read-write again; the next start finishes
    await sh("truncate", "-s", "4M", join(pool.dir, "meta"));
    await sh("losetup", "-c", pool.metaLoop);
    await reloadPool(pool, poolTable(pool, 256 * 2048, ["skip_block_zeroing"]));
    const extended = await dmPoolStatus(pool.name);
    assert.equal(extended.mode, "rw", JSON.stringify(extended));
    assert.equal(extended.totalMetadataBlocks, 1024);
    await srv.start();
    assert.equal(srv.s.lastReconcile!.deleted.length, 1, JSON.stringify(srv.s.lastReconcile));
    assert.deepEqual(srv.s.pool.store.listDevices("deleting"), []);
    await srv.c.prepare("default/7/after", "default/2/base");
  } finally {
    await srv.stop();
  }
});
