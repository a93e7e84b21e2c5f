/**
 * Worker for the crash test: opens the snapshotter on the pool and root given as JSON in
 * `Deno.args[0]` and runs random operations until it is killed. After each operation
 * *returns* it prints one JSON line, so the test knows what must survive a SIGKILL:
 * `{"op":"commit","name":…,"content":…}`, `{"op":"remove","key":…}`, …
 *
 * `mode: "views"`: only Views (of the committed snapshots there are, or of nothing) and their
 * Removes, as fast as they go, so that a kill lands in the activation or deactivation of a
 * shared read-only device.
 *
 * @module
 */
import { join } from "node:path";
import { openSnapshotter, type SnapshotterSettings } from "../../src/snapshotter/snapshotter.ts";
import { realStack } from "./snapshot_fixtures.ts";
import { sh } from "./fixtures.ts";

const settings = JSON.parse(Deno.args[0]) as SnapshotterSettings & {
  mountDir: string;
  seed: number;
  mode?: "views";
};
const s = await openSnapshotter({ ...settings, ...realStack() });
let seed = settings.seed;
function random(n: number): number {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed % n;
}
/** Also kept in a file beside the mounts, so a failure can show the whole history. */
const trail = join(settings.mountDir, `..`, `worker-${settings.seed}.log`);
function emit(event: Record<string, unknown>) {
  const line = JSON.stringify(event);
  Deno.writeTextFileSync(trail, line + "\n", { append: true });
  console.log(line);
}
emit({ op: "start", pid: Deno.pid });

for (let i = 0; settings.mode === "views"; i++) {
  // every step is a first View of its parent (an activation) or a last Remove (a deactivation)
  const all = await s.list();
  const parents = ["", ...all.filter((x) => x.kind === "committed").map((x) => x.name)];
  const parent = parents[random(parents.length)];
  const view = all.find((x) => x.kind === "view" && x.parent === parent);
  if (view) {
    emit({ op: "removing", key: view.name });
    await s.remove(view.name);
    emit({ op: "remove", key: view.name });
  } else {
    const key = `view-${settings.seed}-${i}`;
    emit({ op: "viewing", key, parent });
    await s.view(key, parent);
    emit({ op: "view", key, parent });
  }
}

for (let i = 0;; i++) {
  const all = await s.list();
  const committed = all.filter((x) => x.kind === "committed");
  const actives = all.filter((x) => x.kind !== "committed");
  const choice = random(10);
  const tag = `${settings.seed}-${i}`;
  emit({ op: "iteration", i, choice, snapshots: all.map((x) => x.name) });
  if (choice < 5 || all.length < 3) {
    // prepare (on a random committed parent or none), write, commit
    const parent = committed.length > 0 && random(3) > 0
      ? committed[random(committed.length)].name
      : "";
    const key = `active-${tag}`;
    const mounts = await s.prepare(key, parent);
    emit({ op: "prepare", key });
    const dir = join(settings.mountDir, key);
    await Deno.mkdir(dir, { recursive: true });
    await sh("mount", "-t", mounts[0].type, mounts[0].source, dir);
    const content = `layer ${tag} on ${parent}\n`;
    await Deno.writeTextFile(join(dir, `file-${tag}`), content);
    await sh("umount", dir);
    await s.commit(`layer-${tag}`, key);
    emit({ op: "commit", name: `layer-${tag}`, parent, file: `file-${tag}`, content });
  } else if (choice < 7 && committed.length > 0) {
    const parent = committed[random(committed.length)].name;
    await s.view(`view-${tag}`, parent);
    emit({ op: "view", key: `view-${tag}` });
  } else if (choice < 9 && actives.length > 0) {
    const key = actives[random(actives.length)].name;
    emit({ op: "removing", key });
    await s.remove(key);
    emit({ op: "remove", key });
  } else if (committed.length > 0) {
    // remove a committed leaf
    const parents = new Set(all.map((x) => x.parent));
    const leaves = committed.filter((x) => !parents.has(x.name));
    if (leaves.length > 0) {
      const name = leaves[random(leaves.length)].name;
      emit({ op: "removing", key: name });
      await s.remove(name);
      emit({ op: "remove", key: name });
    }
  }
}
