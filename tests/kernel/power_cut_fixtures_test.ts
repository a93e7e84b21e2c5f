/**
 * The power-cut test's model on a hand-written history: what a cut before each log entry
 * demands of an active snapshot that is written, committed and removed, and of its committed
 * name.
 */
import assert from "node:assert/strict";
import { expectation, lifecycles, parseEvents } from "./power_cut_fixtures.ts";

// events 1..8, their marks at log entries 10, 20, …, 80
const STDOUT = [
  `{"n":1,"phase":"begin","op":"prepare","key":"a","parent":""}`,
  `{"n":2,"phase":"end","op":"prepare","key":"a","parent":""}`,
  `{"n":3,"phase":"begin","op":"write","key":"a","file":"f","content":"x"}`,
  `{"n":4,"phase":"end","op":"write","key":"a","file":"f","content":"x"}`,
  `{"n":5,"phase":"begin","op":"commit","key":"a","name":"L","file":"f","content":"x"}`,
  `{"n":6,"phase":"end","op":"commit","key":"a","name":"L","file":"f","content":"x"}`,
  `{"n":7,"phase":"begin","op":"remove","key":"L"}`,
  `{"n":8,"phase":"end","op":"remove","key":"L"}`,
].join("\n");

Deno.test("power cut model: each cut demands what had returned and nothing that had not begun", () => {
  const lives = lifecycles(parseEvents(`noise\n${STDOUT}\n`), (n) => n * 10);
  const a = lives.get("a")!;
  const l = lives.get("L")!;
  assert.equal(a.kind, "active");
  assert.equal(l.kind, "committed");
  assert.equal(l.partner, "a");
  assert.equal(a.contentFrom, 40);
  assert.equal(l.contentFrom, 60);
  // a cut before entry `cut` keeps entries 0..cut-1: mark n is kept when n*10 < cut
  const at = (cut: number) => [expectation(a, cut), expectation(l, cut)];
  assert.deepEqual(at(10), ["absent", "absent"]); // prepare not begun
  assert.deepEqual(at(11), ["either", "absent"]); // prepare running
  assert.deepEqual(at(21), ["present", "absent"]); // prepare returned
  assert.deepEqual(at(51), ["either", "either"]); // commit running
  assert.deepEqual(at(61), ["absent", "present"]); // commit returned
  assert.deepEqual(at(71), ["absent", "either"]); // remove running
  assert.deepEqual(at(81), ["absent", "absent"]); // remove returned
});

Deno.test("power cut model: events out of order or an end without its begin are refused", () => {
  assert.throws(() => parseEvents(STDOUT.split("\n").slice(1).join("\n")), /numbered 2/);
  const endFirst = `{"n":1,"phase":"end","op":"view","key":"v"}`;
  assert.throws(() => lifecycles(parseEvents(endFirst), (n) => n), /without begin/);
});
