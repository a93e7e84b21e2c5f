/**
 * SIGKILL at random moments during Prepare/Commit/Remove/View, then restart and check:
 * every record's device exists, every thin id in the pool has a record, no stray dm device,
 * and every committed snapshot keeps its content.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { requireKernel, sh, shTry } from "./fixtures.ts";
import { createTestSnapshotter, thinDevicesOn, withMount } from "./snapshot_fixtures.ts";

const ITERATIONS = 20;

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
  for (let waited = 0; waited < 30_000; waited += 50) {
    if ((await groupMembers(pgid)).length === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(
    `processes of the killed worker still running after 30 s: ${await groupMembers(pgid)}`,
  );
}

Deno.test("crash: SIGKILL during operations leaves a reconcilable state (20 kills)", async () => {
  requireKernel();
  await using t = await createTestSnapshotter({ dataMb: 1024 });
  const mountDir = join(t.pool.dir, "mnt");
  const committed = new Map<string, Committed>();
  let leaked = 0;
  let lost = 0;
  let undone = 0;
  for (let iteration = 0; iteration < ITERATIONS; iteration++) {
    await t.snapshotter.close();
    // setsid: the worker leads its own process group, which its children join
    const child = new Deno.Command("setsid", {
      args: [
        Deno.execPath(),
        "run",
        "-A",
        "--no-check",
        new URL("./crash_worker.ts", import.meta.url).pathname,
        JSON.stringify({ ...t.settings, mountDir, seed: 1000 + iteration }),
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = new Response(child.stdout).text();
    const errors = new Response(child.stderr).text();
    // let it start (~1 s) and get a random amount of work done
    await new Promise((r) => setTimeout(r, 1200 + Math.floor(Math.random() * 2500)));
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
      const trail = await Deno.readTextFile(join(t.pool.dir, `worker-${1000 + iteration}.log`))
        .catch((e) => `(no trail: ${e})`);
      const mounts = await Deno.readTextFile("/proc/mounts");
      const dm = await shTry("dmsetup", "info", "-c");
      assert.fail(
        `worker failed on its own: ${stderr}\nits stdout:\n${stdout.slice(-4000)}\n` +
          `its trail:\n${trail.slice(-6000)}\nmounts:\n${mounts}\ndm:\n${dm.stdout}`,
      );
    }
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
    if (removing && !(await s.list([])).some((i) => i.name === removing)) {
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
    const infos = await s.list([]);
    const wanted = infos.filter((i) => i.kind !== "committed").map((i) =>
      s.pool.deviceName(s.pool.store.getSnapshot(i.name)!.thinId)
    ).sort();
    assert.deepEqual(await thinDevicesOn(t.pool.name), wanted, `iteration ${iteration}`);
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
    `crash test: ${ITERATIONS} kills, ${committed.size} committed snapshots tracked, ` +
      `${undone} interrupted creations undone, leaked thin devices: ${leaked}, ` +
      `lost committed snapshots: ${lost}`,
  );
  assert.equal(leaked, 0, "leaked thin devices");
  assert.equal(lost, 0, "lost committed snapshots");
  assert.ok(committed.size > 0, "the workers committed something");
  await sh("sync");
});
