import assert from "node:assert/strict";
import { formatFreeSpace, isNoFreeSpace, parseFreeSpace } from "./free_space.ts";
import { InvalidArgumentError } from "./errors.ts";

Deno.test("free space: percentages and 1024-based sizes", () => {
  assert.deepEqual(parseFreeSpace("10%"), { percent: 10 });
  assert.deepEqual(parseFreeSpace(" 12.5 % "), { percent: 12.5 });
  assert.deepEqual(parseFreeSpace("0%"), { percent: 0 });
  assert.deepEqual(parseFreeSpace("2GB"), { bytes: 2 * 1024 ** 3 });
  assert.deepEqual(parseFreeSpace("512M"), { bytes: 512 * 1024 ** 2 });
  assert.deepEqual(parseFreeSpace("0"), { bytes: 0 });
  assert.equal(formatFreeSpace({ percent: 10 }), "10%");
  assert.equal(formatFreeSpace({ bytes: 2 * 1024 ** 3 }), "2GiB");
  assert.ok(isNoFreeSpace({ percent: 0 }));
  assert.ok(isNoFreeSpace({ bytes: 0 }));
  assert.ok(!isNoFreeSpace({ percent: 0.5 }));
});

Deno.test("free space: bad values name what is wrong", () => {
  const cases: Array<[string, RegExp]> = [
    ["100%", /^invalid percentage: '100%' \(must be below 100%\)$/],
    ["-5%", /^invalid percentage: '-5%'$/],
    ["x%", /^invalid percentage: 'x%'$/],
    ["%", /^invalid percentage: '%'$/],
    ["ten", /^invalid size: 'ten'$/],
    ["10q", /^invalid suffix: 'q'$/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseFreeSpace(text), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError, text);
      assert.match(e.message, re);
      return true;
    });
  }
});
