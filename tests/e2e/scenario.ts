/**
 * The end-to-end scenario run against any snapshotter plugged into containerd: import the
 * test image, run containers that look at the merged layers, check that containers are
 * isolated from each other, run two at once, restart in the middle, and clean up. It returns
 * what it observed so that the built-in devmapper and our proxy snapshotter can be compared
 * outcome for outcome ({@linkcode parityView}).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Containerd } from "./containerd.ts";
import { expectedProbe, parseProbe, type TestImage } from "./image.ts";
import { poll, timedOut } from "../../testing/poll.ts";

/** What the scenario needs. */
export interface ScenarioContext {
  /** A running containerd where `snapshotter` is available. */
  ctd: Containerd;
  /** The test image archive (built by `buildTestImage`). */
  image: TestImage;
  /** Thin device ids currently in the snapshotter's pool. */
  thinIds(): Promise<number[]>;
  /**
   * Restarts what should survive a restart: containerd; for our proxy also the server (killed
   * with SIGKILL, then started after containerd).
   */
  restart(): Promise<void>;
  /** Prefix for container ids, so several runs can share one containerd. */
  idPrefix?: string;
  /** Progress lines. */
  log?(message: string): void;
}

/** One row of `ctr snapshots ls`. */
export interface SnapshotRow {
  key: string;
  parent: string;
  kind: string;
}

/** Everything the scenario observed. All fields but `timingsMs` must match between snapshotters. */
export interface ScenarioOutcome {
  snapshotter: string;
  /** `ctr images ls -q` right after import. */
  imagesAfterImport: string[];
  /** Backend snapshots after import (committed layer chain), sorted by key. */
  snapshotsAfterImport: SnapshotRow[];
  /** What `/dmsnap/probe.sh` printed in a fresh container. */
  probe: Record<string, string>;
  /** Output of the image's default command. */
  defaultCommand: string;
  /** The writer container's first run (before it wrote its marker). */
  writerFirstRun: string;
  /** The marker seen by another container of the same image after the writer wrote. */
  markerSeenByOther: string;
  /** The writer container's second task (must see its own marker). */
  writerSecondRun: string;
  /** Status of each of the two containers started together, as `ctr tasks ls` showed them. */
  parallelStatuses: string[];
  /** Each parallel container's view of its own marker file. */
  parallelMarkers: string[];
  /** `ctr images ls -q` after the restart. */
  imagesAfterRestart: string[];
  /** Backend snapshots (committed) after the restart, sorted by key. */
  committedAfterRestart: SnapshotRow[];
  /** Probe output in a container created after the restart. */
  probeAfterRestart: Record<string, string>;
  /** The writer container's third task, after the restart. */
  writerAfterRestart: string;
  /** Snapshots listed after removing containers and the image (with GC). */
  snapshotsAfterCleanup: SnapshotRow[];
  /** `--rm` runs repeated because containerd lost their output (see `run` below). */
  ioRetries: string[];
  /**
   * Thin devices in the pool at each stage, minus {@linkcode idleThinDevices}: one per layer
   * plus one per existing container (counted after a garbage collection).
   */
  thinDevices: {
    afterImport: number;
    withWriter: number;
    withParallel: number;
    afterParallel: number;
    afterRestart: number;
  };
  /**
   * Thin devices left when no snapshot exists any more (not compared): 0 for the built-in
   * devmapper; a snapshotter may keep one pre-formatted template device per
   * (filesystem, size) (spec §6 item 19).
   */
  idleThinDevices: number;
  /** Wall times of the main steps (not compared). */
  timingsMs: Record<string, number>;
}

/** Parses `ctr snapshots ls` (KEY PARENT KIND columns; PARENT may be empty). */
export function parseSnapshotList(stdout: string): SnapshotRow[] {
  const rows: SnapshotRow[] = [];
  for (const line of stdout.split("\n").slice(1)) {
    const words = line.trim().split(/\s+/).filter(Boolean);
    if (words.length === 2) rows.push({ key: words[0], parent: "", kind: words[1] });
    else if (words.length === 3) rows.push({ key: words[0], parent: words[1], kind: words[2] });
  }
  return rows.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

/** Parses `ctr tasks ls` into id → status. */
export function parseTaskList(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split("\n").slice(1)) {
    const words = line.trim().split(/\s+/);
    if (words.length >= 3) out[words[0]] = words[2];
  }
  return out;
}

/** Polls `thinIds` until at most `atMost` remain or `timeoutMs` passes; returns the count. */
async function settleThinCount(
  ctx: ScenarioContext,
  atMost: number,
  timeoutMs = 10_000,
): Promise<number> {
  let n = 0;
  await poll(
    async () => (n = (await ctx.thinIds()).length) <= atMost,
    `at most ${atMost} thin ids`,
    {
      timeoutMs,
      intervalMs: 200,
    },
  ).catch(timedOut);
  return n;
}

/**
 * Runs the scenario with containerd's snapshotter `snapshotter` (e.g. `devmapper` or our
 * proxy's name). Containers it creates are removed again; the image is removed at the end.
 * Throws (with containerd's log tail) when a `ctr` step fails outright; otherwise returns
 * the observations for {@linkcode assertScenarioOutcome} and parity comparison.
 */
export async function runParityScenario(
  snapshotter: string,
  ctx: ScenarioContext,
): Promise<ScenarioOutcome> {
  const { ctd, image } = ctx;
  const log = ctx.log ?? (() => {});
  const id = (name: string) => `${ctx.idPrefix ?? snapshotter}-${name}`;
  const timings: Record<string, number> = {};
  const snap = ["--snapshotter", snapshotter];
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      timings[name] = Math.round(performance.now() - t0);
    }
  };
  // containerd 1.6 can lose the whole output of a container that prints and exits at once (the
  // shim's copy races the exit; containerd/containerd#770 and kin), whatever the snapshotter.
  // Every command run here prints something, so a --rm run that exited 0 with no output at all
  // is run once more (it changes nothing: the container is fresh each time); retries are counted
  // in the outcome.
  const ioRetries: string[] = [];
  const run = async (name: string, args: string[], extra: string[] = ["--rm"]) => {
    for (let attempt = 1;; attempt++) {
      const out = (await ctd.ctr(["run", ...extra, ...snap, image.ref, id(name), ...args]))
        .stdout;
      if (out !== "" || !extra.includes("--rm") || attempt === 2) return out;
      ioRetries.push(name);
      log(`[${snapshotter}] ${name}: exit 0 but no output (containerd lost it); once more`);
    }
  };
  const snapshots = async () =>
    parseSnapshotList((await ctd.ctr(["snapshots", ...snap, "ls"])).stdout);
  const images = async () =>
    (await ctd.ctr(["images", "ls", "-q"])).stdout.split("\n").filter(Boolean).sort();
  // A synchronous image removal runs containerd's garbage collection to completion, which
  // removes backend snapshots of deleted containers: device counts then do not depend on
  // when the background collector last ran.
  const collectGarbage = async () => {
    await ctd.ctr(["images", "tag", image.ref, `${image.ref}-gc`]);
    await ctd.ctr(["images", "rm", "--sync", `${image.ref}-gc`]);
  };
  const writerScript = "cat /marker 2>/dev/null || echo none; echo written-by-writer > /marker";

  try {
    log(`[${snapshotter}] importing ${image.ref}`);
    await timed("import", () => ctd.ctr(["images", "import", ...snap, image.archive]));
    const imagesAfterImport = await images();
    const snapshotsAfterImport = await snapshots();
    const afterImport = (await ctx.thinIds()).length;

    log(`[${snapshotter}] probing the merged layers from inside a container`);
    const probe = parseProbe(
      await timed("run probe", () => run("probe", ["/bin/sh", "/dmsnap/probe.sh"])),
    );
    const defaultCommand = await timed("run default", () => run("hello", []));

    log(`[${snapshotter}] checking that containers do not see each other's writes`);
    const writerFirstRun = await run("writer", ["/bin/sh", "-c", writerScript], []);
    const markerSeenByOther = parseProbe(await run("reader", ["/bin/sh", "/dmsnap/probe.sh"]))
      .marker;
    await collectGarbage();
    const withWriter = (await ctx.thinIds()).length;
    const writerSecondRun = (await ctd.ctr(["tasks", "start", id("writer")])).stdout;
    await ctd.ctr(["tasks", "delete", id("writer")], { check: false });

    log(`[${snapshotter}] running two containers at once`);
    const parallel = [id("par1"), id("par2")];
    await timed("run 2 detached", () =>
      Promise.all(parallel.map((name) =>
        ctd.ctr([
          "run",
          "-d",
          "--null-io",
          ...snap,
          image.ref,
          name,
          "/bin/sh",
          "-c",
          `echo ${name} > /marker; exec sleep 300`,
        ])
      )));
    const tasks = parseTaskList((await ctd.ctr(["tasks", "ls"])).stdout);
    const parallelStatuses = parallel.map((name) => tasks[name] ?? "missing");
    const parallelMarkers: string[] = [];
    for (const name of parallel) {
      const out = await ctd.ctr(["tasks", "exec", "--exec-id", "look", name, "cat", "/marker"]);
      parallelMarkers.push(out.stdout === name ? "own" : `unexpected: ${out.stdout}`);
    }
    const withParallel = (await ctx.thinIds()).length;
    for (const name of parallel) {
      await ctd.ctr(["tasks", "kill", "-s", "SIGKILL", name]);
    }
    for (const name of parallel) {
      await ctd.ctr(["tasks", "delete", "--force", name]);
      await ctd.ctr(["containers", "delete", name]);
    }
    await collectGarbage();
    const afterParallel = (await ctx.thinIds()).length;

    log(`[${snapshotter}] restarting`);
    await timed("restart", () => ctx.restart());
    const imagesAfterRestart = await images();
    const committedAfterRestart = (await snapshots()).filter((r) => r.kind === "Committed");
    const probeAfterRestart = parseProbe(
      await run("probe2", ["/bin/sh", "/dmsnap/probe.sh"]),
    );
    const writerAfterRestart = (await ctd.ctr(["tasks", "start", id("writer")])).stdout;
    await ctd.ctr(["tasks", "delete", id("writer")], { check: false });
    await collectGarbage();
    const afterRestart = (await ctx.thinIds()).length;

    log(`[${snapshotter}] removing the containers and the image`);
    await ctd.ctr(["containers", "delete", id("writer")]);
    await timed("image rm + gc", () => ctd.ctr(["images", "rm", "--sync", image.ref]));
    const snapshotsAfterCleanup = await snapshots();
    const idle = await settleThinCount(ctx, 1);
    const after = (n: number) => n - idle;

    return {
      snapshotter,
      imagesAfterImport,
      snapshotsAfterImport,
      probe,
      defaultCommand,
      writerFirstRun,
      markerSeenByOther,
      writerSecondRun,
      parallelStatuses,
      parallelMarkers,
      imagesAfterRestart,
      committedAfterRestart,
      probeAfterRestart,
      writerAfterRestart,
      snapshotsAfterCleanup,
      ioRetries,
      thinDevices: {
        afterImport: after(afterImport),
        withWriter: after(withWriter),
        withParallel: after(withParallel),
        afterParallel: after(afterParallel),
        afterRestart: after(afterRestart),
      },
      idleThinDevices: idle,
      timingsMs: timings,
    };
  } catch (err) {
    const tail = await ctd.logTail(2500);
    throw new Error(
      `Scenario with snapshotter "${snapshotter}" failed: ${(err as Error).message}\n` +
        `---- containerd log (tail) ----\n${tail}`,
      { cause: err },
    );
  }
}

/** What must be equal across backends: the outcome without timings, name and idle devices. */
export function parityView(outcome: ScenarioOutcome): Omit<
  ScenarioOutcome,
  "timingsMs" | "snapshotter" | "idleThinDevices" | "ioRetries"
> {
  const { timingsMs: _t, snapshotter: _s, idleThinDevices: _i, ioRetries: _r, ...rest } = outcome;
  return rest;
}

/** Asserts the outcome a correct snapshotter must produce with `image`. */
export function assertScenarioOutcome(outcome: ScenarioOutcome, image: TestImage): void {
  const expected = expectedProbe(image);
  assert.deepEqual(outcome.imagesAfterImport, [image.ref]);
  assert.equal(outcome.snapshotsAfterImport.length, image.layers);
  assert.ok(outcome.snapshotsAfterImport.every((r) => r.kind === "Committed"));
  assert.equal(outcome.snapshotsAfterImport.filter((r) => r.parent === "").length, 1);
  assert.deepEqual(outcome.probe, expected);
  assert.equal(outcome.defaultCommand, image.message);
  assert.equal(outcome.writerFirstRun, "none");
  assert.equal(outcome.markerSeenByOther, "none");
  assert.equal(outcome.writerSecondRun, "written-by-writer");
  assert.deepEqual(outcome.parallelStatuses, ["RUNNING", "RUNNING"]);
  assert.deepEqual(outcome.parallelMarkers, ["own", "own"]);
  assert.deepEqual(outcome.imagesAfterRestart, [image.ref]);
  assert.deepEqual(outcome.committedAfterRestart, outcome.snapshotsAfterImport);
  assert.deepEqual(outcome.probeAfterRestart, expected);
  assert.equal(outcome.writerAfterRestart, "written-by-writer");
  assert.deepEqual(outcome.snapshotsAfterCleanup, []);
  const layers = image.layers;
  // One device per layer, plus one per container that exists (counted after a collection).
  assert.deepEqual(outcome.thinDevices, {
    afterImport: layers,
    withWriter: layers + 1,
    withParallel: layers + 3,
    afterParallel: layers + 1,
    afterRestart: layers + 1,
  });
  // Everything is gone after cleanup, except at most one template device (one fs, one size).
  assert.ok(
    outcome.idleThinDevices <= 1,
    `${outcome.idleThinDevices} thin devices left after removing every snapshot`,
  );
}
