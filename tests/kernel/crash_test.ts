/**
 * SIGKILL at random moments during Prepare/Commit/Remove/View, then restart and check:
 * every record's device exists, every thin id in the pool has a record, no stray dm device,
 * and every committed snapshot keeps its content.
 *
 * The moments follow from one seed, printed first with how to replay it, and each kill is
 * logged with its worker's seed and delay. `DMSNAP_TEST_CRASH_SEED=<n>` replays a run
 * (`tests/run.ts` passes `DMSNAP_TEST_*` into the test kernel): the same workers (each one's
 * operations follow from its own seed) killed after the same delays. Where in an operation a
 * kill lands also depends on how fast the guest runs, so a replay aims at the same place
 * rather than hitting it exactly.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { poll } from "../../testing/poll.ts";
import { requireKernel, sh, shTry } from "./fixtures.ts";
import { runSeed, seeded } from "./seeds.ts";
import { createTestSnapshotter, thinDevicesOn, withMount } from "./snapshot_fixtures.ts";

const ITERATIONS = 20;

/** Environment variable with the seed of a run to replay. */
const SEED_ENV = "DMSNAP_TEST_CRASH_SEED";

interface Committed {
  name: string;
  file: string;
  content: string;
}

async function unmountUnder(dir: string): Promise<void> {
  const mounts = await Deno.readTextFile("/proc/mounts");
  for (const line of mounts.split("\n")) {
    const target = line.split(" ")[1];
    if (target?.startsWith(dir)) await shTry("umount", target);
  }
}

/** The process group of a process, from /proc/<pid>/stat; undefined once it is gone or a zombie. */
async function procStat(pid: number): Promise<{ pgrp: number } | undefined> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // state ppid pgrp …
  if (!stat || fields[0] === "Z") return undefined;
  return { pgrp: Number(fields[2]) };
}

/** Live (non-zombie) processes of process group `pgid`. */
async function groupMembers(pgid: number): Promise<number[]> {
  const members: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^[0-9]+$/.test(entry.name)) continue;
    if ((await procStat(Number(entry.name)))?.pgrp === pgid) members.push(Number(entry.name));
  }
  return members;
}

/**
 * Waits until the processes the killed worker started (dmsetup, mount, …: they outlive it,
 * as they would a crashed server) have finished, so that what they did is settled before
 * the "host" unmounts and the snapshotter restarts.
 */
async function waitForOrphans(pgid: number): Promise<void> {
  await poll(
    async () => (await groupMembers(pgid)).length === 0,
    "the processes of the killed worker to finish",
    {
      timeoutMs: 30_000,
      intervalMs: 50,
      detail: async () => `still running: ${await groupMembers(pgid)}`,
    },
  );
}

/** What a killed worker printed. */
interface KilledWorker {
  stdout: string;
}

/**
 * Runs `crash_worker.ts` with `args` and SIGKILLs it after `delayMs` (counted from its start,
 * or with `afterStart` from its first line, once it has opened the snapshotter), then waits
 * for the processes it started; fails the test with its output when it ended on its own.
 */
async function killWorkerAfter(
  args: Record<string, unknown> & { mountDir: string; seed: number },
  delayMs: number,
  options: { afterStart?: boolean } = {},
): Promise<KilledWorker> {
  // setsid: the worker leads its own process group, which its children join
  const child = new Deno.Command("setsid", {
    args: [
      Deno.execPath(),
      "run",
      "-A",
      "--no-check",
      new URL("./crash_worker.ts", import.meta.url).pathname,
      JSON.stringify(args),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { promise: started, resolve: start } = Promise.withResolvers<void>();
  const output = (async () => {
    let text = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (text.includes("\n")) start();
    }
    start();
    return text;
  })();
  const errors = new Response(child.stderr).text();
  if (options.afterStart) await started;
  // time is what these tests are about: the kill lands wherever the worker is by then
  await new Promise((r) => setTimeout(r, delayMs));
  let exitedEarly = false;
  const leader = await procStat(child.pid);
  if (leader) assert.equal(leader.pgrp, child.pid, "the worker leads its process group");
  try {
    child.kill("SIGKILL");
  } catch {
    exitedEarly = true; // reported below with its output
  }
  await child.status;
  await waitForOrphans(child.pid);
  const stderr = await errors;
  const stdout = await output;
  if (exitedEarly || /error: Uncaught/.test(stderr)) {
    const trail = await Deno.readTextFile(join(args.mountDir, "..", `worker-${args.seed}.log`))
      .catch((e) => `(no trail: ${e})`);
    const mounts = await Deno.readTextFile("/proc/mounts");
    const dm = await shTry("dmsetup", "info", "-c");
    assert.fail(
      `worker failed on its own: ${stderr}\nits stdout:\n${stdout.slice(-4000)}\n` +
        `its trail:\n${trail.slice(-6000)}\nmounts:\n${mounts}\ndm:\n${dm.stdout}`,
    );
  }
  return { stdout };
}

/** Active devices of the pool must be exactly those of the active snapshots and views. */
async function checkActivity(
  s: Awaited<ReturnType<Awaited<ReturnType<typeof createTestSnapshotter>>["reopen"]>>,
  pool: string,
  where: string,
): Promise<void> {
  const infos = await s.list();
  const wanted = [
    ...new Set(
      infos.filter((i) => i.kind !== "committed").map((i) =>
        s.pool.deviceName(s.pool.store.getSnapshot(i.name)!.thinId)
      ),
    ),
  ].sort();
  assert.deepEqual(await thinDevicesOn(pool), wanted, where);
  // a device that views share (a committed snapshot's, a template's) has a read-only table
  const shared = new Set(
    infos.filter((i) => i.kind === "committed").map((i) =>
      s.pool.deviceName(s.pool.store.getSnapshot(i.name)!.thinId)
    ).concat(s.pool.store.listTemplates().map((d) => d.name)),
  );
  for (const name of wanted.filter((n) => shared.has(n))) {
    const attr = await sh("dmsetup", "info", "-c", "--noheadings", "-o", "attr", name);
    assert.equal(attr.trim()[3], "r", `${where}: ${name} shared read-only (L--r)`);
  }
}

Deno.test("crash: SIGKILL during view activation and deactivation: nothing leaked or lost (12 kills)", async () => {
  requireKernel();
  await using t = await createTestSnapshotter({ dataMb: 512 });
  const mountDir = join(t.pool.dir, "mnt");
  await Deno.mkdir(mountDir, { recursive: true });
  const contents = new Map<string, string>();
  for (const name of ["a", "b"]) {
    await withMount(
      await t.snapshotter.prepare(`${name}-work`, ""),
      (dir) => Deno.writeTextFile(join(dir, "f"), `layer ${name}\n`),
    );
    await t.snapshotter.commit(name, `${name}-work`);
    contents.set(name, `layer ${name}\n`);
  }
  await t.snapshotter.view("warm", ""); // the template exists before the kills
  await t.snapshotter.remove("warm");
  const ids = await t.pool.thinIds();
  const seed = runSeed(SEED_ENV, "the view crash test");
  const random = seeded(seed);
  console.log(`view crash test: seed ${seed} (replay: ${SEED_ENV}=${seed})`);
  const struck: Record<string, number> = { viewing: 0, removing: 0, between: 0 };
  for (let iteration = 0; iteration < 12; iteration++) {
    const workerSeed = (iteration + 1) * 1_000_000 + random(1_000_000);
    const delayMs = random(400);
    await t.snapshotter.close();
    const { stdout } = await killWorkerAfter(
      { ...t.settings, mountDir, seed: workerSeed, mode: "views" },
      delayMs,
      { afterStart: true },
    );
    const events = stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    const last = events.at(-1);
    // where the kill struck: in a View (activation), in a Remove (deactivation), or elsewhere
    struck[["viewing", "removing"].includes(last?.op) ? last.op : "between"]++;
    const s = await t.reopen();
    const where = `iteration ${iteration} of seed ${seed}`;
    assert.deepEqual(await t.pool.thinIds(), ids, `${where}: no thin device leaked or lost`);
    assert.deepEqual(s.pool.store.listDevices().filter((d) => d.state !== "ready"), [], where);
    await checkActivity(s, t.pool.name, where);
    // every view the worker saw returned is there unless its Remove may have run
    const names = new Set((await s.list()).map((i) => i.name));
    const interrupted = ["viewing", "removing"].includes(last?.op) ? last.key : undefined;
    const live = new Set<string>();
    for (const e of events) {
      if (e.op === "view") live.add(e.key);
      if (e.op === "remove") live.delete(e.key);
    }
    for (const key of live) {
      if (key !== interrupted) assert.ok(names.has(key), `${where}: view ${key} lost`);
    }
    // the views read their parent's content
    for (const info of (await s.list()).filter((i) => i.kind === "view").slice(0, 3)) {
      await withMount(await s.mounts(info.name), async (dir) => {
        const expected = info.parent ? { f: contents.get(info.parent) } : {};
        const files: Record<string, string> = {};
        for await (const e of Deno.readDir(dir)) {
          files[e.name] = await Deno.readTextFile(join(dir, e.name));
        }
        assert.deepEqual(files, expected, `${where}: view ${info.name}`);
      });
    }
  }
  console.log(
    `view crash test: seed ${seed}, 12 kills: ${struck.viewing} during a View, ` +
      `${struck.removing} during a Remove, ${struck.between} between; leaked 0, lost 0`,
  );
});

Deno.test("crash: SIGKILL during operations leaves a reconcilable state (20 kills)", async () => {
  requireKernel();
  await using t = await createTestSnapshotter({ dataMb: 1024 });
  const mountDir = join(t.pool.dir, "mnt");
  const committed = new Map<string, Committed>();
  let leaked = 0;
  let lost = 0;
  let undone = 0;
  const seed = runSeed(SEED_ENV, "the crash test");
  const random = seeded(seed);
  console.log(
    `crash test: seed ${seed} (replay: ${SEED_ENV}=${seed} deno run -A tests/run.ts ` +
      `--kernel-only --filter crash)`,
  );
  for (let iteration = 0; iteration < ITERATIONS; iteration++) {
    // unique per kill: a worker's keys are made from its seed
    const workerSeed = (iteration + 1) * 1_000_000 + random(1_000_000);
    // let it start (~1 s) and get a random amount of work done
    const delayMs = 1200 + random(2500);
    console.log(
      `crash test: seed ${seed}, kill ${iteration + 1}/${ITERATIONS}: worker seed ` +
        `${workerSeed}, SIGKILL after ${delayMs} ms`,
    );
    await t.snapshotter.close();
    const { stdout } = await killWorkerAfter(
      { ...t.settings, mountDir, seed: workerSeed },
      delayMs,
    );
    let removing: string | undefined;
    for (const line of stdout.split("\n")) {
      if (!line.startsWith("{")) continue;
      const e = JSON.parse(line);
      removing = e.op === "removing" ? e.key : undefined;
      if (e.op === "commit") committed.set(e.name, e);
      if (e.op === "remove") committed.delete(e.key);
    }
    // a crash of the host takes its mounts with it
    await unmountUnder(mountDir);
    const s = await t.reopen();
    undone += s.lastReconcile?.undone.length ?? 0;
    // a Remove the kill interrupted may or may not have happened
    if (removing && !(await s.list()).some((i) => i.name === removing)) {
      committed.delete(removing);
    }

    // every record's device exists in the pool, every thin id in the pool has a record
    const ids = new Set(await t.pool.thinIds());
    const devices = s.pool.store.listDevices();
    const recorded = new Set(devices.map((d) => d.thinId));
    for (const d of devices) {
      assert.ok(["ready", "foreign"].includes(d.state), `device ${d.name} left ${d.state}`);
      if (d.state === "ready") assert.ok(ids.has(d.thinId), `device ${d.name} missing in pool`);
    }
    for (const id of ids) {
      if (!recorded.has(id)) leaked++;
    }
    // active devices are exactly those of active snapshots and views
    await checkActivity(s, t.pool.name, `iteration ${iteration} of seed ${seed}`);
    const infos = await s.list();
    // every committed snapshot the worker saw returned is still there with its content
    const names = new Set(infos.map((i) => i.name));
    for (const c of committed.values()) {
      if (!names.has(c.name)) lost++;
    }
    const sample = [...committed.values()].slice(-2);
    for (const c of sample) {
      if (!names.has(c.name)) continue;
      const key = `check-${iteration}-${c.name}`;
      await withMount(await s.view(key, c.name), async (dir) => {
        assert.equal(await Deno.readTextFile(join(dir, c.file)), c.content);
      });
      await s.remove(key);
    }
  }
  console.log(
    `crash test: seed ${seed}, ${ITERATIONS} kills, ${committed.size} committed snapshots tracked, ` +
      `${undone} interrupted creations undone, leaked thin devices: ${leaked}, ` +
      `lost committed snapshots: ${lost}`,
  );
  assert.equal(leaked, 0, "leaked thin devices");
  assert.equal(lost, 0, "lost committed snapshots");
  assert.ok(committed.size > 0, "the workers committed something");
  await sh("sync");
});
