import assert from "node:assert/strict";
import type { Info } from "../snapshots/types.ts";
import { fitInMessage, listBatches } from "./handlers.ts";

function info(name: string, labelBytes = 0): Info {
  const t = { seconds: 1, nanos: 2 };
  const labels: Record<string, string> = {};
  for (let i = 0; labelBytes > 0; i++, labelBytes -= 4000) labels[`l${i}`] = "v".repeat(3990);
  return { name, parent: "", kind: "active", created: t, updated: t, labels };
}

Deno.test("listBatches: at most `count` Infos per batch, order kept, nothing lost", () => {
  const infos = Array.from({ length: 250 }, (_, i) => info(`k${i}`));
  const batches = listBatches(infos, 100, 4 << 20);
  assert.deepEqual(batches.map((b) => b.length), [100, 100, 50]);
  assert.deepEqual(batches.flat(), infos);
  assert.deepEqual(listBatches([], 100, 4 << 20), []);
  assert.deepEqual(listBatches(infos.slice(0, 3), 1, 4 << 20).map((b) => b.length), [1, 1, 1]);
});

Deno.test("listBatches: big Infos are cut by size; one oversized Info still goes alone", () => {
  const infos = Array.from({ length: 10 }, (_, i) => info(`k${i}`, 1 << 20)); // ~1 MiB labels each
  const batches = listBatches(infos, 100, 4 << 20);
  assert.ok(batches.length >= 3, `${batches.length} batches`);
  assert.ok(batches.every((b) => b.length >= 1 && b.length <= 4));
  assert.deepEqual(batches.flat(), infos);
  const huge = [info("a", 8 << 20), info("b")];
  assert.deepEqual(listBatches(huge, 100, 4 << 20).map((b) => b.map((i) => i.name)), [["a"], [
    "b",
  ]]);
});

Deno.test("fitInMessage: an Info alone larger than a message is set apart, with its size", () => {
  const small = info("a", 8 << 10);
  const big = info("big", 17 << 20); // ~17 MiB of labels
  const { fit, tooLarge } = fitInMessage([small, big, info("z")], 16 << 20);
  assert.deepEqual(fit.map((i) => i.name), ["a", "z"]);
  assert.equal(tooLarge.length, 1);
  assert.equal(tooLarge[0].info, big);
  assert.ok(tooLarge[0].bytes > 16 << 20 && tooLarge[0].bytes < 18 << 20, `${tooLarge[0].bytes}`);
  // the 3-bytes-per-unit estimate alone is not the verdict: ASCII of 6 MiB fits in 16 MiB
  const ascii = info("ascii", 6 << 20);
  assert.deepEqual(fitInMessage([ascii], 16 << 20).fit, [ascii]);
});
