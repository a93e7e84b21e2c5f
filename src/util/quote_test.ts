import assert from "node:assert/strict";
import { boundText, MAX_ECHO_BYTES, MAX_MESSAGE_TEXT_BYTES, quote, shorten } from "./quote.ts";

const bytes = (s: string) => new TextEncoder().encode(s).length;

Deno.test("quote: short strings are kept whole, long ones cut to 128 bytes with their size", () => {
  assert.equal(MAX_ECHO_BYTES, 128);
  assert.equal(shorten(""), "");
  assert.equal(shorten("k".repeat(128)), "k".repeat(128));
  assert.equal(shorten("k".repeat(129)), "k".repeat(128) + "…(129 bytes)");
  assert.equal(shorten("k".repeat(65_536)), "k".repeat(128) + "…(65536 bytes)");
  assert.equal(quote('a"b'), '"a\\"b"');
  assert.equal(quote("k".repeat(200)), `"${"k".repeat(128)}"…(200 bytes)`);
});

Deno.test("quote: cuts on code point boundaries and counts UTF-8 bytes", () => {
  // 43 × "牛" = 129 bytes: 42 of them (126 bytes) fit
  assert.equal(shorten("牛".repeat(43)), "牛".repeat(42) + "…(129 bytes)");
  // a surrogate pair is never split: 32 × "😀" = 128 bytes fit exactly, the 33rd does not
  assert.equal(shorten("😀".repeat(32)), "😀".repeat(32));
  assert.equal(shorten("x" + "😀".repeat(32)), "x" + "😀".repeat(31) + "…(129 bytes)");
  const cut = shorten("é".repeat(1000));
  assert.ok(bytes(cut.slice(0, cut.indexOf("…"))) <= 128);
  assert.ok(cut.endsWith("…(2000 bytes)"));
});

Deno.test("quote: boundText caps a whole message at 1 KiB", () => {
  assert.equal(MAX_MESSAGE_TEXT_BYTES, 1024);
  const short = 'snapshot "k" does not exist';
  assert.equal(boundText(short), short);
  const long = "x".repeat(20_000);
  assert.equal(boundText(long), "x".repeat(1024) + "…(20000 bytes)");
});
