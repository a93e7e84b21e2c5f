/**
 * Worker for the power-cut test: opens the snapshotter (DM ioctl backend, as in production)
 * on the pool and root given as JSON in `Deno.args[0]` and runs `ops` random operations
 * chosen from `seed`: Prepare, a write of a file with known content into the active
 * snapshot (mount, write, unmount), Commit, View, Remove.
 *
 * Every operation is bracketed by two events, `begin` and `end`, numbered in order. For each,
 * the worker sends the mark `ev-<n>` to the `log-writes` device that records every write of
 * the disk under the pool and `root_path`, and prints the event as one JSON line on stdout
 * (outside the recorded disk): a `begin` is printed and marked before the operation starts,
 * an `end` is marked and printed only after it returned. A replay of the log up to a point
 * after mark `ev-<n>` therefore holds everything that was durable when event `n` happened.
 *
 * Event lines: `{"n":…,"phase":"begin"|"end","op":"prepare"|"write"|"commit"|"view"|"remove",
 * "key":…, …}`; a commit's has `name`, a write's and a commit's `file` and `content`.
 *
 * @module
 */
import { join } from "node:path";
import { openSnapshotter, type SnapshotterSettings } from "../../src/snapshotter/snapshotter.ts";
import { sh } from "./fixtures.ts";
import { ioctlStack } from "./power_cut_fixtures.ts";

const settings = JSON.parse(Deno.args[0]) as SnapshotterSettings & {
  mountDir: string;
  seed: number;
  ops: number;
  /** The `log-writes` device to mark. */
  logDevice: string;
};
const stack = ioctlStack();
const s = await openSnapshotter({ ...settings, ...stack });
let state = settings.seed >>> 0 || 1;
function random(n: number): number {
  state = (Math.imul(state, 1103515245) + 12345) >>> 0;
  return (state >>> 8) % n;
}

let events = 0;
async function mark(): Promise<number> {
  const n = ++events;
  await stack.dm.message(settings.logDevice, 0, `mark ev-${n}`);
  return n;
}
function print(event: Record<string, unknown>): void {
  console.log(JSON.stringify(event));
}

/** Runs `fn` between a `begin` and an `end` event carrying `fields`. */
async function step(fields: Record<string, unknown>, fn: () => Promise<unknown>): Promise<void> {
  print({ n: events + 1, phase: "begin", ...fields });
  await mark();
  await fn();
  const n = await mark();
  print({ n, phase: "end", ...fields });
}

/** Active snapshots written and not committed yet, with what was written into each. */
const written = new Map<string, { file: string; content: string }>();

for (let i = 0; i < settings.ops; i++) {
  const all = await s.list();
  const committed = all.filter((x) => x.kind === "committed");
  const choice = random(10);
  const tag = `${settings.seed}-${i}`;
  if (choice < 5 || all.length < 3) {
    // prepare on a random committed parent or none, write a file; mostly commit at once
    const parent = committed.length > 0 && random(3) > 0
      ? committed[random(committed.length)].name
      : "";
    const key = `active-${tag}`;
    const file = `file-${tag}`;
    const content = `layer ${tag} on ${parent || "nothing"}\n`;
    let mounts: Awaited<ReturnType<typeof s.prepare>> = [];
    await step({ op: "prepare", key, parent }, async () => {
      mounts = await s.prepare(key, parent);
    });
    await step({ op: "write", key, file, content }, async () => {
      const dir = join(settings.mountDir, key);
      await Deno.mkdir(dir, { recursive: true });
      await sh("mount", "-t", mounts[0].type, mounts[0].source, dir);
      await Deno.writeTextFile(join(dir, file), content);
      await sh("umount", dir); // the file is durable once this returns
      await Deno.remove(dir);
    });
    written.set(key, { file, content });
    if (choice < 4 || written.size > 3) {
      // commit this one or an older written active
      const from = [...written.keys()][random(written.size)];
      const what = written.get(from)!;
      written.delete(from);
      const name = `layer-${from.slice("active-".length)}`;
      await step({ op: "commit", key: from, name, ...what }, () => s.commit(name, from));
    }
  } else if (choice < 7 && committed.length > 0) {
    const parent = committed[random(committed.length)].name;
    await step({ op: "view", key: `view-${tag}`, parent }, () => s.view(`view-${tag}`, parent));
  } else if (choice < 9) {
    const actives = all.filter((x) => x.kind !== "committed");
    if (actives.length === 0) continue;
    const key = actives[random(actives.length)].name;
    written.delete(key);
    await step({ op: "remove", key }, () => s.remove(key));
  } else {
    // a committed leaf
    const parents = new Set(all.map((x) => x.parent));
    const leaves = committed.filter((x) => !parents.has(x.name));
    if (leaves.length === 0) continue;
    const key = leaves[random(leaves.length)].name;
    await step({ op: "remove", key }, () => s.remove(key));
  }
}
await s.close();
stack.dm.close?.();
