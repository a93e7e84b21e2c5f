import assert from "node:assert/strict";
import { parseGolist } from "./golist.ts";

Deno.test("golist: one walk per line, snapshots and ms", () => {
  assert.deepEqual(parseGolist("10010 212.500\n10010 198.25\n"), [
    { seen: 10010, ms: 212.5 },
    { seen: 10010, ms: 198.25 },
  ]);
  assert.deepEqual(parseGolist(""), []);
  assert.throws(() => parseGolist("walk failed"), /Cannot read golist's line/);
});
