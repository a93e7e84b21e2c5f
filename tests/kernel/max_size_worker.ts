/**
 * Worker for `max_size_test.ts`: opens the snapshotter on the pool and root given as JSON in
 * `Deno.args[0]`, prints `ready`, then runs one Prepare of `key` on `parent` with the
 * `containerd.io/snapshot/max-size` label and prints `prepared` when it returns. The test kills
 * it while the Prepare grows the filesystem.
 *
 * @module
 */
import { openSnapshotter, type SnapshotterSettings } from "../../src/snapshotter/snapshotter.ts";
import { MAX_SIZE_LABEL } from "../../src/snapshotter/size_label.ts";
import { realStack } from "./snapshot_fixtures.ts";

const job = JSON.parse(Deno.args[0]) as SnapshotterSettings & {
  key: string;
  parent: string;
  sizeBytes: number;
};
const s = await openSnapshotter({ ...job, ...realStack() });
console.log("ready");
await s.prepare(job.key, job.parent, { [MAX_SIZE_LABEL]: String(job.sizeBytes) });
console.log("prepared");
await s.close();
