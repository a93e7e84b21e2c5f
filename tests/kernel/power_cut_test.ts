/**
 * Power cuts, simulated the way filesystems are tested: record every write of one churn with
 * dm-log-writes, then replay the log up to many cut points and "reboot" on each: only what
 * was durable at the cut survives.
 *
 * One disk (a loop device on the guest's tmpfs) under one `log-writes` target holds the
 * pool's metadata, the pool's data and an ext4 filesystem with `root_path` (the SQLite
 * database), cut into three linear devices, so one log orders the writes of all three (as on
 * a host whose pool and root filesystem share a disk). A worker (`power_cut_worker.ts`) churns
 * Prepare / write a file / Commit / View / Remove, marking the log before each operation
 * starts and after it returns, and printing the same events on its stdout (outside the
 * recorded disk). The replayer is checked first: the whole log replayed gives the recorded
 * disk byte for byte.
 *
 * For each cut, the first `k` log entries are replayed onto a file (sparse, all zeros at
 * first, as the recorded disk was). Its three parts are seen through loop devices and
 * non-persistent dm-snapshots, so whatever the reboot writes lands in a throwaway store and
 * the replay goes on from the same bytes for the next cut. The reboot: `thin_check` on the
 * metadata (must be clean) and `e2fsck -p` on the root filesystem (journal replay; `e2fsck -n`
 * must then find it clean), the thin-pool table loaded, the filesystem mounted, the snapshotter
 * opened (it reconciles). Then: every snapshot whose Prepare/View/Commit returned before the
 * cut is there, of the right kind and parent; none whose Remove returned, or whose creation had
 * not begun, is; an interrupted Commit left exactly one of key and name; no snapshot or device
 * row is left half-done; exactly the active snapshots and views are active; files written
 * before the cut read back (through a View for committed snapshots, a read-only mount of the
 * active device otherwise: the newest of each kind and one more at random per cut); after the
 * snapshotter closed and the pool is gone, `thin_check` is clean again and every thin id in the
 * metadata (`thin_ls`) has a row and every ready row its thin id.
 *
 * Cut points: a random gap between two consecutive marks, then a random entry in it (half the
 * time a flush or FUA entry, where the disk's cache was empty; otherwise anywhere, so that some
 * writes of the open flush group survive and others do not). Everything follows from one seed,
 * printed first; `DMSNAP_TEST_POWER_CUT_SEED=<n>` replays the same worker and the same relative
 * cut positions (the log itself can differ slightly between runs: background writes).
 * `DMSNAP_TEST_POWER_CUTS` (default 50) and `DMSNAP_TEST_POWER_CUT_OPS` (default 40) size it.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type DevmapperSnapshotter,
  openSnapshotter,
  type SnapshotterSettings,
} from "../../src/snapshotter/snapshotter.ts";
import type { DeviceRecord } from "../../src/metadata/store.ts";
import { dmNames, requireKernel, sh, shTry } from "./fixtures.ts";
import { withMount } from "./snapshot_fixtures.ts";
import {
  countFromEnv,
  createSlices,
  expectation,
  ioctlStack,
  LAYOUT,
  type Lifecycle,
  lifecycles,
  parseEvents,
  poolTable,
  type Slices,
  type WorkerEvent,
} from "./power_cut_fixtures.ts";
import { runSeed, seeded } from "./seeds.ts";
import {
  isDurablePoint,
  LOG_DISCARD,
  LOG_MARK,
  LogReplayer,
  readWriteLog,
  type WriteLog,
} from "./write_log.ts";

const SEED_ENV = "DMSNAP_TEST_POWER_CUT_SEED";
const CUTS_ENV = "DMSNAP_TEST_POWER_CUTS";
const OPS_ENV = "DMSNAP_TEST_POWER_CUT_OPS";
/** Size of each part's copy-on-write store during a reboot. */
const COW_BYTES = 64 * 1024 * 1024;

/** What the test counts over all cuts; the lists hold one line per problem. */
interface Tally {
  cuts: number;
  /** Snapshots whose presence or absence a cut demanded, checked. */
  checked: number;
  /** Files read back. */
  contents: number;
  /** Interrupted creations the reconciliation undid. */
  undone: number;
  /** `e2fsck -p` runs that replayed the root filesystem's journal. */
  journalReplays: number;
  /** `thin_check` runs (all clean unless listed in `thinCheck`). */
  thinChecks: number;
  lost: string[];
  resurrected: string[];
  corrupt: string[];
  leaked: string[];
  missing: string[];
  pending: string[];
  thinCheck: string[];
  fsck: string[];
  other: string[];
}

/** Everything the test creates, named once, and how to take it all down. */
class Rig {
  readonly poolName: string;
  readonly lw: string;
  readonly slices: Slices;
  readonly rootMount: string;
  readonly settings: SnapshotterSettings;
  readonly #loops: string[] = [];

  constructor(readonly dir: string, id: string) {
    this.poolName = `pcpool-${id}`;
    this.lw = `pcut-${id}-lw`;
    this.slices = { meta: `pcut-${id}-meta`, data: `pcut-${id}-data`, root: `pcut-${id}-root` };
    this.rootMount = join(dir, "rootfs");
    this.settings = {
      rootPath: join(this.rootMount, "root"),
      poolName: this.poolName,
      baseImageSize: 32 * 1024 * 1024,
      fsType: "ext4",
      fsOptions: "",
      asyncRemove: false,
      discardBlocks: false,
    };
  }

  /** Attaches a loop device to `file` (a byte range of it when given). */
  async attach(file: string, range?: { offset: number; bytes: number }): Promise<string> {
    const args = range ? ["-o", `${range.offset}`, "--sizelimit", `${range.bytes}`] : [];
    const loop = await sh("losetup", "--find", "--show", ...args, file);
    this.#loops.push(loop);
    return loop;
  }

  /** Removes the pool's thin devices and then `names`, those that exist, in one call. */
  async remove(...names: string[]): Promise<void> {
    const present = new Set(await dmNames());
    const order = [
      ...[...present].filter((n) => n.startsWith(`${this.poolName}-dms-`)).sort(),
      ...names.filter((n) => present.has(n)),
    ];
    if (order.length > 0) await sh("dmsetup", "remove", "--retry", ...order);
  }

  /** Takes everything down; returns what would not go. */
  async teardown(): Promise<string[]> {
    const errors: string[] = [];
    const mounts = await Deno.readTextFile("/proc/mounts");
    const targets = mounts.split("\n").map((l) => l.split(" ")[1]).filter((t) =>
      t?.startsWith(`${this.dir}/`)
    );
    for (const target of targets.reverse()) await shTry("umount", target);
    try {
      const { meta, data, root } = this.slices;
      await this.remove(this.poolName, meta, data, root, this.lw);
    } catch (err) {
      errors.push((err as Error).message);
    }
    for (const loop of this.#loops.splice(0)) {
      const out = await shTry("losetup", "-d", loop);
      if (out.code !== 0) errors.push(`losetup -d ${loop}: ${out.stderr}`);
    }
    return errors;
  }
}

/** The recorded churn: its log and what the worker said. */
interface Recording {
  log: WriteLog;
  logPath: string;
  /** Log index of the mark set once the disk was ready. */
  setupAt: number;
  /** Log index of the target's closing mark. */
  endAt: number;
  events: WorkerEvent[];
  lives: Map<string, Lifecycle>;
  markAt: (n: number) => number;
}

Deno.test("power cut: every operation that returned survives a cut anywhere in the log", async () => {
  requireKernel();
  const started = performance.now();
  const seed = runSeed(SEED_ENV, "the power-cut test");
  const cutCount = countFromEnv(CUTS_ENV, 50);
  const opCount = countFromEnv(OPS_ENV, 40);
  const random = seeded(seed);
  const say = (text: string) => console.log(`power cut test: seed ${seed}, ${text}`);
  const seconds = () => ((performance.now() - started) / 1000).toFixed(1);
  say(
    `${cutCount} cuts of ${opCount} operations (replay: ${SEED_ENV}=${seed} ` +
      `deno run -A tests/run.ts --kernel-only --filter "power cut")`,
  );
  const id = crypto.randomUUID().slice(0, 8);
  const rig = new Rig(await Deno.makeTempDir({ prefix: `pcut-${id}-` }), id);
  let passed = false;
  try {
    // 1. record one churn
    const workerSeed = 1 + random(1_000_000);
    const recording = await record(rig, workerSeed, opCount);
    say(
      `worker seed ${workerSeed}: ${recording.events.length} events, ` +
        `${recording.log.entries.length} log entries, ` +
        `${recording.log.entries.filter(isDurablePoint).length} flush/FUA points, ` +
        `${(writtenBytes(recording.log) / 2 ** 20).toFixed(1)} MiB written; ` +
        `recorded and replayer checked at ${seconds()} s`,
    );

    // 2. choose the cut points
    const cuts = chooseCuts(recording, cutCount, random);

    // 3. replay to each and reboot
    const tally: Tally = {
      cuts: 0,
      checked: 0,
      contents: 0,
      undone: 0,
      journalReplays: 0,
      thinChecks: 0,
      lost: [],
      resurrected: [],
      corrupt: [],
      leaked: [],
      missing: [],
      pending: [],
      thinCheck: [],
      fsck: [],
      other: [],
    };
    const replayPath = join(rig.dir, "replay");
    const cowPath = join(rig.dir, "cow");
    await sh("truncate", "-s", `${LAYOUT.sectors * 512}`, replayPath);
    await sh("truncate", "-s", `${3 * COW_BYTES}`, cowPath);
    const parts = ["meta", "data", "root"] as const;
    const devices = {} as Record<typeof parts[number], { base: string; cow: string }>;
    for (const [i, part] of parts.entries()) {
      const { start, sectors } = LAYOUT[part];
      devices[part] = {
        base: await rig.attach(replayPath, { offset: start * 512, bytes: sectors * 512 }),
        cow: await rig.attach(cowPath, { offset: i * COW_BYTES, bytes: COW_BYTES }),
      };
    }
    const table = parts.map((part) =>
      `${rig.slices[part]},,,,0 ${LAYOUT[part].sectors} snapshot ` +
      `${devices[part].base} ${devices[part].cow} N 8`
    ).join(";");
    using replayer = new LogReplayer(recording.log, recording.logPath, replayPath);
    for (const [i, cut] of cuts.entries()) {
      const t = performance.now();
      replayer.replayTo(cut.k);
      await sh("dmsetup", "create", "--concise", table);
      await reboot(rig, {
        cut: cut.k,
        label: `cut ${i + 1} (${cut.where})`,
        recording,
        tally,
        random,
      });
      tally.cuts++;
      say(`cut ${i + 1}/${cuts.length}: ${cut.where}; ${(performance.now() - t).toFixed(0)} ms`);
    }
    const problems = [
      ...tally.lost.map((p) => `lost: ${p}`),
      ...tally.resurrected.map((p) => `resurrected: ${p}`),
      ...tally.corrupt.map((p) => `wrong: ${p}`),
      ...tally.leaked.map((p) => `leaked: ${p}`),
      ...tally.missing.map((p) => `missing device: ${p}`),
      ...tally.pending.map((p) => `left half-done: ${p}`),
      ...tally.thinCheck.map((p) => `thin_check: ${p}`),
      ...tally.fsck.map((p) => `fsck: ${p}`),
      ...tally.other.map((p) => `other: ${p}`),
    ];
    say(
      `${tally.cuts} cuts, ${seconds()} s in all: ${tally.checked} snapshot states checked, ` +
        `${tally.contents} files read back, ${tally.undone} interrupted creations undone, ` +
        `${tally.journalReplays} root journal replays; lost ${tally.lost.length}, ` +
        `resurrected ${tally.resurrected.length}, wrong kind/parent/content ` +
        `${tally.corrupt.length}, leaked thin devices ${tally.leaked.length}, missing devices ` +
        `${tally.missing.length}, half-done rows ${tally.pending.length}, thin_check ` +
        `${tally.thinChecks - tally.thinCheck.length}/${tally.thinChecks} clean, fsck problems ` +
        `${tally.fsck.length}, other ${tally.other.length}`,
    );
    if (problems.length > 0) {
      assert.fail(
        `seed ${seed}: ${problems.length} problems, the first ${Math.min(problems.length, 25)}:` +
          `\n${problems.slice(0, 25).join("\n")}`,
      );
    }
    assert.equal(tally.cuts, cutCount, "as many distinct cut points as asked for");
    assert.ok(tally.contents > 0, "files were read back");
    passed = true;
  } finally {
    const errors = await rig.teardown();
    await Deno.remove(rig.dir, { recursive: true }).catch(() => {});
    // after a failure, its own message matters more than what it left behind
    if (passed) assert.deepEqual(errors, [], "devices left behind");
  }
});

/** Builds the logged disk, runs the worker on it, tears it down and reads the log. */
async function record(rig: Rig, workerSeed: number, ops: number): Promise<Recording> {
  const diskPath = join(rig.dir, "disk");
  const logPath = join(rig.dir, "log");
  await sh("truncate", "-s", `${LAYOUT.sectors * 512}`, diskPath);
  await sh("truncate", "-s", "1G", logPath);
  const disk = await rig.attach(diskPath);
  const logDevice = await rig.attach(logPath);
  await sh(
    "dmsetup",
    "create",
    rig.lw,
    "--table",
    `0 ${LAYOUT.sectors} log-writes ${disk} ${logDevice}`,
  );
  await createSlices(rig.slices, `/dev/mapper/${rig.lw}`);
  const rootDevice = `/dev/mapper/${rig.slices.root}`;
  await sh("mkfs.ext4", "-q", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", rootDevice);
  await Deno.mkdir(rig.rootMount);
  await sh("mount", "-t", "ext4", rootDevice, rig.rootMount);
  await sh("dmsetup", "create", rig.poolName, "--table", poolTable(rig.slices));
  await sh("sync");
  await sh("dmsetup", "message", rig.lw, "0", "mark", "setup");

  const mountDir = join(rig.dir, "mnt");
  await Deno.mkdir(mountDir);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      new URL("./power_cut_worker.ts", import.meta.url).pathname,
      JSON.stringify({ ...rig.settings, mountDir, seed: workerSeed, ops, logDevice: rig.lw }),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const [status, stdout, stderr] = await Promise.all([
    child.status,
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  if (!status.success) {
    assert.fail(
      `the worker failed (${status.code}): ${stderr}\nits stdout:\n${stdout.slice(-4000)}`,
    );
  }
  // the log-writes target logs what was still unflushed and its closing mark when removed
  assert.deepEqual(await rig.teardown(), [], "recording devices left behind");

  const log = readWriteLog(logPath);
  const last = log.entries.at(-1)!;
  assert.equal(last.mark, "dm-log-writes-end", "the log is complete (its device was not full)");
  // the replayer reproduces the recorded disk byte for byte
  const fullPath = join(rig.dir, "full");
  await sh("truncate", "-s", `${LAYOUT.sectors * 512}`, fullPath);
  {
    using full = new LogReplayer(log, logPath, fullPath);
    full.replayTo(log.entries.length);
  }
  await sh("cmp", diskPath, fullPath);
  await Deno.remove(diskPath);
  await Deno.remove(fullPath);

  const events = parseEvents(stdout);
  const marks = new Map<string, number>();
  for (const e of log.entries) if (e.mark !== undefined) marks.set(e.mark, e.index);
  const markAt = (n: number) => {
    const at = marks.get(`ev-${n}`);
    if (at === undefined) throw new Error(`mark "ev-${n}" is not in the log`);
    return at;
  };
  const setupAt = marks.get("setup");
  assert.ok(setupAt !== undefined, "the setup mark is in the log");
  return {
    log,
    logPath,
    setupAt,
    endAt: last.index,
    events,
    lives: lifecycles(events, markAt),
    markAt,
  };
}

/** A cut: replay the first `k` entries. */
interface Cut {
  k: number;
  where: string;
}

/** Picks `count` distinct cut points after the setup mark (see the module doc). */
function chooseCuts(rec: Recording, count: number, random: (n: number) => number): Cut[] {
  const bounds = [rec.setupAt, ...rec.events.map((e) => rec.markAt(e.n)), rec.endAt];
  const byK = new Map<number, Cut>();
  for (let tries = 0; byK.size < count && tries < count * 20; tries++) {
    const gap = random(bounds.length - 1);
    const lo = bounds[gap] + 1;
    const hi = bounds[gap + 1];
    const durable = random(2) === 0;
    const fraction = random(1_000_000) / 1_000_000;
    const choices = durable
      ? [lo, ...range(lo + 1, hi).filter((k) => isDurablePoint(rec.log.entries[k - 1]))]
      : range(lo, hi);
    const k = choices[Math.floor(fraction * choices.length)];
    const after = gap === 0 ? "setup" : describe(rec.events[gap - 1]);
    const before = gap === rec.events.length ? "the end" : describe(rec.events[gap]);
    byK.set(k, {
      k,
      where: `entry ${k}/${rec.log.entries.length}, ${k - lo} after ${after}, before ${before}` +
        (durable ? ", at a flush/FUA point" : ""),
    });
  }
  return [...byK.values()].sort((a, b) => a.k - b.k);
}

/** Bytes of data the log holds. */
function writtenBytes(log: WriteLog): number {
  return log.entries.reduce(
    (n, e) => e.flags & (LOG_MARK | LOG_DISCARD) ? n : n + e.sectors * log.sectorSize,
    0,
  );
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}

function describe(e: WorkerEvent): string {
  return `ev-${e.n} (${e.op} ${e.key}${e.name ? ` as ${e.name}` : ""} ${e.phase})`;
}

interface RebootOptions {
  /** Entries replayed. */
  cut: number;
  label: string;
  recording: Recording;
  tally: Tally;
  random: (n: number) => number;
}

/**
 * Brings the replayed disk (its three parts already set up) up as a reboot would, checks
 * it, and takes it down again.
 */
async function reboot(rig: Rig, o: RebootOptions): Promise<void> {
  const { tally, label } = o;
  const metaDevice = `/dev/mapper/${rig.slices.meta}`;
  const rootDevice = `/dev/mapper/${rig.slices.root}`;
  let s: DevmapperSnapshotter | undefined;
  let rows: DeviceRecord[] | undefined;
  const stack = ioctlStack();
  try {
    // as at boot: the pool's metadata checked, the root filesystem preened (journal replay)
    const [before, preen] = await Promise.all([
      thinCheck(metaDevice),
      shTry("e2fsck", "-f", "-p", rootDevice),
    ]);
    tally.thinChecks++;
    if (before) tally.thinCheck.push(`${label}, before the start: ${before}`);
    if (preen.code > 1) tally.fsck.push(`${label}: e2fsck -p exit ${preen.code}: ${preen.stdout}`);
    if (/recover/i.test(preen.stdout + preen.stderr)) tally.journalReplays++;
    const fsck = await shTry("e2fsck", "-f", "-n", rootDevice);
    if (fsck.code !== 0) {
      tally.fsck.push(`${label}: e2fsck -n exit ${fsck.code} after -p: ${fsck.stdout}`);
    }
    await sh("dmsetup", "create", rig.poolName, "--table", poolTable(rig.slices));
    await sh("mount", "-t", "ext4", rootDevice, rig.rootMount);
    s = await openSnapshotter({ ...rig.settings, ...stack });
    tally.undone += s.lastReconcile?.undone.length ?? 0;
    rows = await checkState(rig, s, o);
  } catch (err) {
    tally.other.push(`${label}: ${(err as Error).stack ?? err}`);
  } finally {
    await s?.close();
    stack.dm.close();
    await shTry("umount", rig.rootMount);
    await rig.remove(rig.poolName);
  }
  // the pool after the snapshotter ran: clean, and every thin id in it has a row
  const after = await thinCheck(metaDevice); // both open it exclusively: one at a time
  const listed = await shTry("thin_ls", "--no-headers", "--format", "DEV", metaDevice);
  tally.thinChecks++;
  if (after) tally.thinCheck.push(`${label}, after the snapshotter ran: ${after}`);
  if (rows && listed.code === 0) {
    const ids = new Set(listed.stdout.split(/\s+/).filter(Boolean).map(Number));
    const recorded = new Set(rows.map((d) => d.thinId));
    for (const id of ids) {
      if (!recorded.has(id)) tally.leaked.push(`${label}: thin id ${id} has no row`);
    }
    for (const d of rows) {
      if (d.state === "ready" && !ids.has(d.thinId)) {
        tally.missing.push(`${label}: row ${d.name} (${d.role}) has no thin device`);
      }
    }
  } else if (listed.code !== 0) {
    tally.other.push(`${label}: thin_ls failed: ${listed.stderr}`);
  }
  const { meta, data, root } = rig.slices;
  await rig.remove(meta, data, root);
}

/** Runs `thin_check` on a metadata device; undefined when clean, else its output. */
async function thinCheck(device: string): Promise<string | undefined> {
  const out = await shTry("thin_check", device);
  return out.code === 0 ? undefined : `exit ${out.code}: ${out.stderr || out.stdout}`;
}

/**
 * Checks the snapshotter's state after a reboot against what the cut demands; returns the
 * device rows as they are when it is done (for the comparison with the pool's metadata).
 */
async function checkState(
  rig: Rig,
  s: DevmapperSnapshotter,
  o: RebootOptions,
): Promise<DeviceRecord[]> {
  const { tally, label, cut, recording } = o;
  const store = s.pool.store;
  // nothing half-done is left: no creating snapshot, no creating/deleting device
  const report = s.lastReconcile!;
  for (const row of store.listSnapshots("creating")) {
    tally.pending.push(`${label}: snapshot ${row.key} left creating`);
  }
  for (const d of store.listDevices()) {
    if (!["ready", "foreign"].includes(d.state)) {
      tally.pending.push(`${label}: device ${d.name} left ${d.state}`);
    }
  }
  if (report.busy.length > 0) tally.other.push(`${label}: busy after a reboot: ${report.busy}`);
  // snapshots against the model
  const infos = new Map((await s.list()).map((i) => [i.name, i]));
  for (const name of infos.keys()) {
    if (!recording.lives.has(name)) tally.other.push(`${label}: unknown snapshot ${name}`);
  }
  const readable: Lifecycle[] = [];
  for (const life of recording.lives.values()) {
    const want = expectation(life, cut);
    const info = infos.get(life.name);
    if (want === "either") {
      // an interrupted Commit: the active key or the committed name, exactly one
      const committing = life.kind === "committed" && !(life.createEnd < cut);
      if (committing && infos.has(life.partner!) === !!info) {
        tally.other.push(
          `${label}: the interrupted commit of ${life.partner} as ${life.name} left ` +
            (info ? "both" : "neither"),
        );
      }
      continue;
    }
    tally.checked++;
    if (want === "absent") {
      if (info) tally.resurrected.push(`${label}: ${life.name} (${life.kind})`);
      continue;
    }
    if (!info) {
      tally.lost.push(`${label}: ${life.name} (${life.kind}, returned at entry ${life.createEnd})`);
      continue;
    }
    if (info.kind !== life.kind || info.parent !== life.parent) {
      tally.corrupt.push(
        `${label}: ${life.name} is ${info.kind} on "${info.parent}", ` +
          `not ${life.kind} on "${life.parent}"`,
      );
      continue;
    }
    if (life.contentFrom < cut) readable.push(life);
  }
  // exactly the active snapshots and views are active (views of one layer share its device)
  const wanted = [
    ...new Set(
      [...infos.values()].filter((i) => i.kind !== "committed").map((i) =>
        s.pool.deviceName(store.getSnapshot(i.name)!.thinId)
      ),
    ),
  ].sort();
  const active = (await dmNames()).filter((n) => n.startsWith(`${rig.poolName}-dms-`)).sort();
  if (JSON.stringify(active) !== JSON.stringify(wanted)) {
    tally.other.push(`${label}: active devices ${active}, expected ${wanted}`);
  }
  // files written before the cut: the newest committed and active ones, and one more
  readable.sort((a, b) => b.contentFrom - a.contentFrom);
  const newest = (kind: string) => readable.findIndex((l) => l.kind === kind);
  const picks = new Set([newest("committed"), newest("active"), o.random(readable.length || 1)]);
  for (const at of picks) {
    const life = readable[at];
    if (!life) continue;
    const read = (dir: string) => Deno.readTextFile(join(dir, life.file!)).catch((e) => `${e}`);
    let content: string;
    if (life.kind === "committed") {
      const key = `check-${cut}-${life.name}`;
      content = await withMount(await s.view(key, life.name), read);
      await s.remove(key);
    } else {
      const [m] = await s.mounts(life.name);
      content = await withMount([{ ...m, options: [...m.options, "ro"] }], read);
    }
    tally.contents++;
    if (content !== life.content) {
      tally.corrupt.push(`${label}: ${life.name}/${life.file} reads ${JSON.stringify(content)}`);
    }
  }
  return store.listDevices();
}
