/**
 * One measurement pass of the scale benchmark over whatever our server's database holds now:
 * start-up and reconciliation over several restarts, memory, List (straight to the socket and
 * through containerd), Stat and Mounts latency, Prepare/Commit/Remove latency with the server's
 * CPU time per operation, fsyncs per operation, and a sequence like containerd's garbage
 * collection (List everything, Remove the unreferenced leaves first, Cleanup).
 *
 * Invariants: the pass leaves the database as it found it (what it creates it removes); it
 * sends nothing to containerd that removes a snapshot of ours from containerd's metadata, so
 * containerd never walks our snapshotter to collect garbage (which would remove every snapshot
 * created straight on the socket: containerd does not know them); figures come out in a fixed
 * order with fixed names, so two passes line up row by row.
 *
 * @module
 */
import type { ContainerdApi } from "./containerd_api.ts";
import type { Containerd } from "../tests/e2e/containerd.ts";
import { PROXY_SNAPSHOTTER, waitForSnapshotter } from "../tests/e2e/environment.ts";
import { connectSnapshots, type SnapshotsClient } from "../testing/snapshots_client.ts";
import { runGolist } from "./golist.ts";
import { readCpuTicks, readProcIo, readRssKib, ticksToMs } from "./proc_stats.ts";
import type { ScaleServer, StartTiming } from "./scale_server.ts";
import { countSyscalls, type SyscallCounts } from "./syscall_count.ts";
import { containerLabels, layerLabels, randomHex } from "./scale_population.ts";
import { median, percentile } from "./stats.ts";

/** One printed figure. */
export interface Figure {
  section: string;
  name: string;
  value: number;
  /** Decimals printed. */
  digits: number;
}

/** Backend keys of the snapshots containerd knows (created through containerd). */
export interface Fixture {
  /** The tip of the committed chain. */
  tip: string;
  /** An active snapshot on the tip. */
  active: string;
  /** How many snapshots containerd's namespace holds. */
  count: number;
}

/** What a pass works with. */
export interface PhaseContext {
  server: ScaleServer;
  ctd: Containerd;
  api: ContainerdApi;
  /** containerd namespace holding the fixture. */
  namespace: string;
  fixture: Fixture;
  /** Restarts timed. */
  restarts: number;
  /** Stat and Mounts calls timed (each). */
  calls: number;
  /** Prepare+Commit pairs timed (then removed in the GC-like sequence). */
  ops: number;
  /** Operations of each kind counted under strace (none: strace unavailable). */
  tracedOps: number;
  log(message: string): void;
}

const SYNC_CALLS = ["fsync", "fdatasync"] as const;

/** Collects figures in order. */
class FigureList {
  readonly figures: Figure[] = [];
  #section = "";
  section(name: string): void {
    this.#section = name;
  }
  add(name: string, value: number, digits = 1): void {
    this.figures.push({ section: this.#section, name, value, digits });
  }
  /** Median and p90 of `ms`. */
  latency(name: string, ms: readonly number[], digits = 2): void {
    this.add(`${name}: median ms`, median(ms), digits);
    this.add(`${name}: p90 ms`, percentile(ms, 90), digits);
  }
}

/** Times `fn` and the server's CPU ticks it cost. */
async function withCpu<T>(
  pid: number,
  fn: () => Promise<T>,
): Promise<{ ms: number; ticks: number; value: T }> {
  const c0 = await readCpuTicks(pid);
  const t0 = performance.now();
  const value = await fn();
  const ms = performance.now() - t0;
  const c1 = await readCpuTicks(pid);
  return { ms, ticks: c1.self - c0.self, value };
}

/** Calls `fn` `n` times; returns each call's ms and the server's CPU ms per call. */
async function repeat(
  pid: number,
  n: number,
  fn: (i: number) => Promise<unknown>,
): Promise<{ ms: number[]; cpuMsPerCall: number }> {
  const ms: number[] = [];
  const c0 = await readCpuTicks(pid);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    ms.push(performance.now() - t0);
  }
  const c1 = await readCpuTicks(pid);
  return { ms, cpuMsPerCall: ticksToMs(c1.self - c0.self) / n };
}

async function startups(ctx: PhaseContext, f: FigureList): Promise<void> {
  const timings: StartTiming[] = [];
  for (let r = 0; r < ctx.restarts; r++) {
    await ctx.server.stop();
    timings.push(await ctx.server.start());
  }
  ctx.log(
    `${ctx.restarts} restarts: serving after ${
      timings.map((t) => t.servingMs.toFixed(0)).join(", ")
    } ms`,
  );
  const med = (pick: (t: StartTiming) => number) => median(timings.map(pick));
  f.section(`Start-up (median of ${ctx.restarts} restarts; ms from just before the spawn)`);
  f.add("until the `starting` log line (Deno runtime + module graph)", med((t) => t.startingMs), 0);
  f.add(
    "`starting` → reconciliation start (config, pool check, metadata open + quick_check)",
    med((t) => t.openMs),
    0,
  );
  f.add("reconciliation (op=reconcile, debug log)", med((t) => t.reconcileMs), 1);
  f.add("until the `serving` log line", med((t) => t.servingMs), 0);
  f.add("until the socket accepts (checked every 10 ms)", med((t) => t.socketMs), 0);
  f.add("until a Stat on a new connection is answered", med((t) => t.statMs), 0);
}

async function statAndMounts(
  ctx: PhaseContext,
  client: SnapshotsClient,
  pid: number,
  f: FigureList,
): Promise<void> {
  for (let i = 0; i < 50; i++) { // warm-up after the restart, not counted
    await client.stat(ctx.fixture.tip);
    await client.mounts(ctx.fixture.active);
  }
  const stat = await repeat(pid, ctx.calls, () => client.stat(ctx.fixture.tip));
  const mounts = await repeat(pid, ctx.calls, () => client.mounts(ctx.fixture.active));
  f.section(`Stat and Mounts straight to the socket (${ctx.calls} calls each)`);
  f.latency("Stat (tip of containerd's chain)", stat.ms);
  f.add("Stat: server CPU ms per call", stat.cpuMsPerCall, 3);
  f.latency("Mounts (containerd's active snapshot)", mounts.ms);
  f.add("Mounts: server CPU ms per call", mounts.cpuMsPerCall, 3);
}

/** A client's HTTP/2 receive window like the one grpc-go (containerd) reaches for a large List. */
const WIDE_WINDOW = 16 << 20;

async function lists(
  ctx: PhaseContext,
  client: SnapshotsClient,
  pid: number,
  f: FigureList,
  rss: [string, number][],
): Promise<string[]> {
  let keys: string[] = [];
  let messages = 0;
  const list = await repeat(pid, 5, async () => {
    const r = await client.list();
    keys = r.infos.map((i) => i.name);
    messages = r.messages;
  });
  rss.push(["after 5 Lists", await readRssKib(pid)]);
  const wide = connectSnapshots(ctx.server.socket, "default", { flowControlWindow: WIDE_WINDOW });
  let wideList: Awaited<ReturnType<typeof repeat>>;
  try {
    await wide.stat(ctx.fixture.tip); // connected before the timing
    wideList = await repeat(pid, 5, () => wide.list());
  } finally {
    wide.close();
  }
  f.section(
    "List of everything straight to the socket (5 calls each; grpc-js clients: its default 64 KiB " +
      "receive window, and a 16 MiB one, as grpc-go's grows to; and containerd's own proxy client)",
  );
  f.add("rows listed", keys.length, 0);
  f.add("stream messages per List", messages, 0);
  f.latency("List, 64 KiB window", list.ms, 1);
  f.add("List, 64 KiB window: server CPU ms per call", list.cpuMsPerCall, 1);
  f.latency("List, 16 MiB window", wideList.ms, 1);
  f.add("List, 16 MiB window: server CPU ms per call", wideList.cpuMsPerCall, 1);
  // containerd's own client (grpc-go, its proxy snapshotter's Walk), in a process of its own:
  // the times it reports itself, and the server's CPU over its 5 walks
  const go = await withCpu(pid, () => runGolist(ctx.server.socket, 5, keys.length));
  f.latency("List by containerd's proxy client (grpc-go Walk)", go.value, 1);
  f.add("List by containerd's proxy client: server CPU ms per call", ticksToMs(go.ticks) / 5, 1);
  return keys;
}

async function randomStats(
  ctx: PhaseContext,
  client: SnapshotsClient,
  pid: number,
  keys: readonly string[],
  f: FigureList,
): Promise<void> {
  const pick = () => keys[Math.floor(Math.random() * keys.length)];
  const stat = await repeat(pid, ctx.calls, () => client.stat(pick()));
  f.latency("Stat (a random key among all)", stat.ms);
  f.add("Stat (random key): server CPU ms per call", stat.cpuMsPerCall, 3);
}

async function throughContainerd(ctx: PhaseContext, f: FigureList): Promise<void> {
  await waitForSnapshotter(ctx.ctd, PROXY_SNAPSHOTTER); // it reconnects after our restarts
  const scope = { namespace: ctx.namespace };
  let seen = 0;
  const apiMs: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    seen = (await ctx.api.list(PROXY_SNAPSHOTTER, scope)).infos.length;
    apiMs.push(performance.now() - t0);
  }
  const ctrMs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await ctx.ctd.ctr(["snapshots", "--snapshotter", PROXY_SNAPSHOTTER, "ls"], scope);
    ctrMs.push(r.ms);
  }
  f.section(
    `List through containerd: its own view (namespace ${ctx.namespace}; containerd Stats each ` +
      "of its snapshots on our server)",
  );
  f.add("snapshots containerd lists", seen, 0);
  f.latency("containerd API Snapshots.List (10 calls)", apiMs);
  f.latency("`ctr snapshots --snapshotter dmsnap ls` wall (5 runs)", ctrMs);
}

/** Prepare+Commit `n` layers on the fixture's tip; returns their names, child last. */
async function prepareCommit(
  ctx: PhaseContext,
  client: SnapshotsClient,
  pid: number,
  f: FigureList,
): Promise<string[]> {
  const prepare: number[] = [];
  const commit: number[] = [];
  let prepareTicks = 0;
  let commitTicks = 0;
  const names: string[] = [];
  let parent = ctx.fixture.tip;
  for (let i = 0; i < ctx.ops; i++) {
    const digest = randomHex();
    const key = `scale-ops/${i}/extract-${randomHex(4)} sha256:${digest}`;
    const name = `scale-ops/${i}/sha256:${digest}`;
    const p = await withCpu(pid, () => client.prepare(key, parent, layerLabels(digest)));
    const c = await withCpu(pid, () => client.commit(name, key, layerLabels(digest)));
    prepare.push(p.ms);
    commit.push(c.ms);
    prepareTicks += p.ticks;
    commitTicks += c.ticks;
    names.push(name);
    parent = name;
  }
  f.section(`Prepare (child of a committed layer) + Commit, ${ctx.ops} pairs in a chain`);
  f.latency("Prepare", prepare);
  f.add("Prepare: server CPU ms per call", ticksToMs(prepareTicks) / ctx.ops, 2);
  f.latency("Commit", commit);
  f.add("Commit: server CPU ms per call", ticksToMs(commitTicks) / ctx.ops, 2);
  return names;
}

/** Runs `work` under strace and /proc/<pid>/io; returns fsync+fdatasync and syscw deltas. */
async function syncsDuring(
  pid: number,
  work: () => Promise<unknown>,
): Promise<{ counts: SyscallCounts; syscw: number; writeBytes: number }> {
  const io0 = await readProcIo(pid);
  const { counts } = await countSyscalls(pid, SYNC_CALLS, work);
  const io1 = await readProcIo(pid);
  return {
    counts,
    syscw: io1.syscw - io0.syscw,
    writeBytes: io1.write_bytes - io0.write_bytes,
  };
}

async function fsyncs(
  ctx: PhaseContext,
  client: SnapshotsClient,
  pid: number,
  f: FigureList,
): Promise<void> {
  const n = ctx.tracedOps;
  const keys = Array.from({ length: n }, (_, i) => `scale-sync/${i}/extract-${randomHex(4)}`);
  const names = keys.map((_, i) => `scale-sync/${i}/sha256:${randomHex()}`);
  const steps: [string, (i: number) => Promise<unknown>][] = [
    ["Prepare", (i) => client.prepare(keys[i], ctx.fixture.tip, containerLabels(keys[i]))],
    ["Commit", (i) => client.commit(names[i], keys[i], layerLabels(randomHex()))],
    ["Remove", (i) => client.remove(names[i])],
  ];
  f.section(
    `Durability per operation (${n} of each, root_path on ext4 on a loop device; fsync and ` +
      "fdatasync counted by strace -f on every server thread; syscw/write_bytes from " +
      "/proc/<pid>/io, which also count the log and socket writes)",
  );
  for (const [op, call] of steps) {
    const r = await syncsDuring(pid, async () => {
      for (let i = 0; i < n; i++) await call(i);
    });
    f.add(`${op}: fsync per call`, r.counts.fsync / n, 1);
    f.add(`${op}: fdatasync per call`, r.counts.fdatasync / n, 1);
    f.add(`${op}: write syscalls (syscw) per call`, r.syscw / n, 1);
    f.add(`${op}: write_bytes per call (KiB)`, r.writeBytes / n / 1024, 1);
  }
}

/** containerd's collection of our snapshotter: List all, Remove the garbage leaves first, Cleanup. */
async function gcLike(
  client: SnapshotsClient,
  pid: number,
  garbage: readonly string[],
  f: FigureList,
): Promise<void> {
  const t0 = performance.now();
  const listed = await withCpu(pid, () => client.list());
  const remove: number[] = [];
  let removeTicks = 0;
  for (const name of [...garbage].reverse()) {
    const r = await withCpu(pid, () => client.remove(name));
    remove.push(r.ms);
    removeTicks += r.ticks;
  }
  const cleanup = await withCpu(pid, () => client.cleanup());
  const total = performance.now() - t0;
  f.section(
    `GC-like sequence (containerd's garbage collection of a snapshotter: List all, Remove the ` +
      `${garbage.length} layers above leaves first, Cleanup)`,
  );
  f.add("List all (ms)", listed.ms, 1);
  f.latency("Remove (committed leaf)", remove);
  f.add("Remove: server CPU ms per call", ticksToMs(removeTicks) / garbage.length, 2);
  f.add("Cleanup (ms)", cleanup.ms, 1);
  f.add("whole sequence (ms)", total, 0);
}

/** One measurement pass; resolves with its figures in report order. */
export async function measurePhase(ctx: PhaseContext): Promise<Figure[]> {
  const f = new FigureList();
  ctx.log("timing restarts");
  await startups(ctx, f);
  const pid = ctx.server.pid;
  const rss: [string, number][] = [["after start", await readRssKib(pid)]];
  const client = connectSnapshots(ctx.server.socket);
  try {
    ctx.log(`${ctx.calls} Stats and ${ctx.calls} Mounts`);
    await statAndMounts(ctx, client, pid, f);
    ctx.log("5 + 5 + 5 Lists");
    const keys = await lists(ctx, client, pid, f, rss);
    rss.push(["after 15 Lists (5 more of each client)", await readRssKib(pid)]);
    f.section(`Stat of random keys (${ctx.calls} calls)`);
    await randomStats(ctx, client, pid, keys, f);
    ctx.log("Lists through containerd");
    await throughContainerd(ctx, f);
    ctx.log(`${ctx.ops} Prepare+Commit`);
    const garbage = await prepareCommit(ctx, client, pid, f);
    if (ctx.tracedOps > 0) {
      ctx.log(`fsyncs of ${ctx.tracedOps} Prepares, Commits, Removes under strace`);
      await fsyncs(ctx, client, pid, f);
    }
    ctx.log("GC-like sequence");
    await gcLike(client, pid, garbage, f);
    rss.push(["after the GC-like sequence", await readRssKib(pid)]);
  } finally {
    client.close();
  }
  f.section("Memory: the server's RSS (/proc/<pid>/status VmRSS, KiB)");
  for (const [when, kib] of rss) f.add(when, kib, 0);
  return f.figures;
}
