import assert from "node:assert/strict";
import { fmt, formatColumns, median, percentile } from "./stats.ts";

Deno.test("median and nearest-rank percentile", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
  const ten = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1];
  assert.equal(percentile(ten, 90), 9);
  assert.equal(percentile(ten, 100), 10);
  assert.equal(percentile([5, 1, 3], 90), 5);
  assert.ok(Number.isNaN(percentile([], 90)));
});

Deno.test("fmt and formatColumns", () => {
  assert.equal(fmt(1.234, 2), "1.23");
  assert.equal(fmt(NaN), "n/a");
  assert.equal(formatColumns([["op", "ms"], ["stat", "1.5"]]), "op     ms\nstat  1.5");
});
