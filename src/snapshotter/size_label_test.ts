import assert from "node:assert/strict";
import { deviceSizeFor, MAX_SIZE_LABEL } from "./size_label.ts";
import { InvalidArgumentError } from "../util/errors.ts";

const base = { inheritedBytes: 8192, poolBytes: 1 << 30, what: 'active snapshot "k"' };
const size = (value: string | undefined, extra: Partial<typeof base> = {}) =>
  deviceSizeFor({
    ...base,
    ...extra,
    labels: value === undefined ? {} : { [MAX_SIZE_LABEL]: value },
  });

Deno.test("size label: absent or empty keeps the inherited size", () => {
  assert.equal(size(undefined), 8192);
  assert.equal(size(""), 8192);
  assert.equal(size(undefined, { poolBytes: undefined }), 8192);
});

Deno.test("size label: decimal bytes, rounded down to whole sectors", () => {
  assert.equal(size("1048576"), 1048576);
  assert.equal(size("+1048576"), 1048576);
  assert.equal(size("0001048576"), 1048576);
  assert.equal(size("1049087"), 1048576);
  assert.equal(size("8192"), 8192);
  assert.equal(size(String(1 << 30)), 1 << 30, "the whole pool");
  assert.equal(size("9007199254740992", { poolBytes: undefined }), 9007199254740992);
});

Deno.test("size label: refusals name the label, the value and the reason", () => {
  const refused: [string, RegExp][] = [
    ["abc", /not a size in bytes/],
    ["1e6", /not a size in bytes/],
    ["1_000", /not a size in bytes/],
    ["10G", /not a size in bytes/],
    ["0", /greater than zero/],
    ["-0", /greater than zero/],
    ["-4096", /greater than zero/],
    ["9223372036854775808", /beyond int64/],
    [String((1 << 30) + 1), /beyond what the pool can ever hold \(1073741824 bytes/],
    ["4096", /smaller than the 8192 bytes/],
    ["8191", /smaller than the 8192 bytes/],
  ];
  for (const [value, reason] of refused) {
    assert.throws(() => size(value), (err: Error) => {
      assert.ok(err instanceof InvalidArgumentError, value);
      assert.ok(
        err.message.startsWith(
          `cannot create active snapshot "k": label ${MAX_SIZE_LABEL}=${JSON.stringify(value)}: `,
        ),
        err.message,
      );
      assert.match(err.message, reason);
      return true;
    });
  }
});
