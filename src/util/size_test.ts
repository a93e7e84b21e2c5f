import assert from "node:assert/strict";
import { formatSize, parseSize } from "./size.ts";
import { InvalidArgumentError } from "./errors.ts";

Deno.test("size: parses go-units RAMInBytes forms (1024-based)", () => {
  const cases: Array<[string, number]> = [
    ["512", 512],
    ["0", 0],
    ["32b", 32],
    ["32B", 32],
    ["32k", 32 * 1024],
    ["32K", 32 * 1024],
    ["32kb", 32 * 1024],
    ["32Kib", 32 * 1024],
    ["32KIB", 32 * 1024],
    ["64MB", 64 * 1024 ** 2],
    ["16Mb", 16 * 1024 ** 2],
    ["8192MB", 8 * 1024 ** 3],
    ["10GB", 10 * 1024 ** 3],
    ["10GiB", 10 * 1024 ** 3],
    ["1.5g", 1.5 * 1024 ** 3],
    ["32 mb", 32 * 1024 ** 2],
    ["2t", 2 * 1024 ** 4],
    ["1p", 1024 ** 5],
    ["0.5k", 512],
    ["1.3b", 1],
    ["1.", 1],
    [".5k", 512],
  ];
  for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, text);
});

Deno.test("size: rejects malformed sizes with InvalidArgumentError", () => {
  const bad: Array<[string, RegExp]> = [
    ["", /invalid size: ''/],
    [" 10", /invalid size/],
    ["10  MB", /invalid size/],
    ["-1", /invalid size: '-1'/],
    ["abc", /invalid size: 'abc'/],
    ["1.2.3", /invalid size/],
    ["10x", /invalid suffix: 'x'/],
    ["10mbb", /invalid suffix: 'mbb'/],
    ["10bb", /invalid suffix: 'bb'/],
    ["10mi", /invalid suffix: 'mi'/],
    ["10e", /invalid suffix: 'e'/],
    ["1e3", /invalid size: '1e3'/],
    ["100000p", /too large/],
  ];
  for (const [text, re] of bad) {
    assert.throws(() => parseSize(text), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError, text);
      assert.match(e.message, re, text);
      return true;
    });
  }
});

Deno.test("size: formatSize picks the largest exact unit", () => {
  assert.equal(formatSize(10 * 1024 ** 3), "10GiB");
  assert.equal(formatSize(1536 * 1024 ** 2), "1536MiB");
  assert.equal(formatSize(7), "7B");
  assert.equal(formatSize(0), "0B");
  assert.equal(parseSize(formatSize(3 * 1024 ** 4)), 3 * 1024 ** 4);
});
