import assert from "node:assert/strict";
import { compileRe2, Re2SyntaxError, translateRe2 } from "./re2.ts";

/** [pattern, inputs that must match, inputs that must not] — expectations are Go's. */
const MATCHES: Array<[string, string[], string[]]> = [
  ["", ["", "x"], []],
  ["abc", ["abc", "xabcx"], ["ab", "ABC"]],
  ["^abc$", ["abc"], ["abc\n", "xabc"]],
  ["a|b", ["a", "b"], ["c"]],
  // Flags, with RE2 scoping.
  ["(?i)abc", ["ABC", "aBc"], ["ab"]],
  ["a(?i)bc", ["aBC"], ["ABC"]],
  ["(?i)a|b", ["A", "B"], ["c"]],
  ["a|(?i)b|c", ["a", "B", "C"], ["A"]],
  ["((?i)a)b", ["Ab"], ["AB"]],
  ["(?i:a)b", ["Ab"], ["AB"]],
  ["(?i)(?-i:a)b", ["aB"], ["AB"]],
  ["(?i)a(?-i)b|c", ["Ab", "c"], ["AB", "C"]],
  ["(?i)(a|b)c", ["AC", "bC"], []],
  ["(?i)[a-c]", ["B"], ["d"]],
  ["(?i)k", ["\u212a", "K"], []],
  ["(?im)^x$", ["a\nX"], []],
  // `.`, `^`, `$` and line modes.
  ["^.$", ["\r", "é", "😀", "\u2028"], ["\n", ""]],
  ["(?s)^.$", ["\n"], []],
  ["(?m)^b$", ["a\nb\nc"], ["a\rb\rc"]],
  ["^b$", [], ["a\nb"]],
  ["(?m:^b)", ["a\nb"], []],
  ["\\Aab\\z", ["ab"], ["xab", "ab\n"]],
  // Perl and Unicode classes.
  ["\\s", [" ", "\t", "\n", "\f", "\r"], ["\v", "\u00a0", "x"]],
  ["^\\S$", ["\u00a0", "\v", "x"], [" "]],
  ["[\\s]", [" "], ["\v"]],
  ["^[^\\S]$", [" "], ["a"]],
  ["\\d\\w", ["1a", "2_"], ["a1"]],
  ["\\pL", ["é", "a"], ["1"]],
  ["\\p{Greek}", ["α"], ["a"]],
  ["\\P{Greek}", ["a"], ["α"]],
  ["\\p{^Greek}", ["a"], ["α"]],
  ["[\\p{Greek}x]", ["x", "β"], ["y"]],
  ["\\p{Lu}", ["A"], ["a"]],
  ["^\\p{Any}$", ["\n", "x"], [""]],
  ["^[[:alpha:]]+$", ["abc"], ["ab1"]],
  ["^[[:^alpha:]]+$", ["123"], ["a1"]],
  ["^[[:word:][:punct:]]+$", ["a_!"], ["a b"]],
  ["[[:digit:]-z]", ["-", "z", "5"], ["a"]],
  // Literal forms.
  ["\\Qa.b\\E+", ["a.b", "a.bbb"], ["axb"]],
  ["\\Qa.b", ["a.b"], ["axb"]],
  ["\\a", ["\x07"], []],
  ["\\101\\0", ["A\0"], []],
  ["\\12", ["\n"], []],
  ["\\x41\\x{1F600}", ["A😀"], []],
  ['\\-\\/\\ \\_\\"', ['-/ _"'], []],
  ["a{", ["a{"], ["a"]],
  ["a{,2}", ["a{,2}"], ["aa"]],
  ["x{01}", ["x{01}"], ["x"]],
  ["^a{2}$", ["aa"], ["a", "aaa"]],
  ["^a{2,}$", ["aa", "aaaa"], ["a"]],
  ["^a{1,2}$", ["a", "aa"], ["aaa"]],
  ["]", ["]"], []],
  ["}", ["}"], []],
  ["[]a]", ["]", "a"], ["b"]],
  ["[^]a]", ["b"], ["]", "a"]],
  ["[a-]", ["-", "a"], ["b"]],
  ["[\\d-z]", ["-", "z", "5"], ["a"]],
  ["[\\x{41}-\\x{43}]", ["B"], ["D"]],
  ["[\\]\\\\]", ["]", "\\"], ["a"]],
  ["[.*+]", [".", "*"], ["a"]],
  ["[/|]", ["/", "|"], ["a"]],
  ["\\bfoo\\b", ["a foo b"], ["afoob"]],
  ["(?P<n>a)(?<m>b)(c)", ["abc"], []],
  ["(?:)", [""], []],
  ["牛", ["牛"], ["午"]],
  ["[^a]", ["\n"], ["a"]],
];

Deno.test("re2: matches like Go's regexp", () => {
  for (const [pattern, yes, no] of MATCHES) {
    const re = compileRe2(pattern);
    for (const s of yes) assert.ok(re.test(s), `${pattern} should match ${JSON.stringify(s)}`);
    for (const s of no) assert.ok(!re.test(s), `${pattern} should not match ${JSON.stringify(s)}`);
  }
});

Deno.test("re2: (?U) swaps greedy and lazy", () => {
  assert.equal(translateRe2("a+"), "a+");
  assert.equal(translateRe2("a+?"), "a+?");
  assert.equal(translateRe2("(?U)a+"), "a+?");
  assert.equal(translateRe2("(?U)a+?b*c{2}"), "a+b*?c{2}?");
  assert.equal(translateRe2("(?U:a*)a*"), "(?:a*?)a*");
  // Demonstrate it with exec (the only place greediness shows).
  assert.equal(compileRe2("(?U)a+").exec("aaa")?.[0], "a");
  assert.equal(compileRe2("a+").exec("aaa")?.[0], "aaa");
});

Deno.test("re2: translation shapes", () => {
  assert.equal(translateRe2("(?i)a|b"), "(?i:a)|(?i:b)");
  assert.equal(translateRe2("x(?i)a"), "x(?i:a)");
  assert.equal(translateRe2("(?i)(?i)a"), "(?i:a)");
  assert.equal(translateRe2("(?i:a)"), "(?i:a)");
  assert.equal(translateRe2("(?i)(?-i:a)"), "(?i:(?-i:a))");
  assert.equal(translateRe2("(?P<x>a)"), "(a)");
  assert.equal(translateRe2("a{"), "a\\{");
  assert.equal(translateRe2("."), "[^\\n]");
});

const ERRORS: Array<[string, RegExp]> = [
  ["(", /missing closing \)/],
  ["(?i", /missing closing \)/],
  ["a)", /unexpected \)/],
  ["[a", /missing closing ]/],
  ["[]", /missing closing ]/],
  ["a\\", /trailing backslash/],
  ["[a\\", /trailing backslash/],
  ["\\8", /invalid escape sequence: `\\8`/],
  ["\\1", /invalid escape sequence/],
  ["a(b)\\1", /invalid escape sequence/],
  ["\\q", /invalid escape sequence/],
  ["\\Z", /invalid escape sequence/],
  ["\\C", /invalid escape sequence/],
  ["\\E", /invalid escape sequence/],
  ["\\é", /invalid escape sequence/],
  ["[\\b]", /invalid escape sequence/],
  ["\\x{110000}", /invalid escape sequence/],
  ["\\x{}", /invalid escape sequence/],
  ["\\x{41", /invalid escape sequence/],
  ["\\xZZ", /invalid escape sequence/],
  ["\\x4", /invalid escape sequence/],
  ["a{1001}", /invalid repeat count/],
  ["a{2,1}", /invalid repeat count/],
  ["a{1,1001}", /invalid repeat count/],
  ["a{99999999999}", /invalid repeat count/],
  ["(?=a)", /invalid or unsupported Perl syntax/],
  ["(?!a)", /invalid or unsupported Perl syntax/],
  ["(?<=a)b", /invalid or unsupported Perl syntax/],
  ["(?<!a)b", /invalid or unsupported Perl syntax/],
  ["(?#c)", /invalid or unsupported Perl syntax/],
  ["(?x)a", /invalid or unsupported Perl syntax/],
  ["(?i-)a", /invalid or unsupported Perl syntax/],
  ["(?-)a", /invalid or unsupported Perl syntax/],
  ["(?i-m-s)a", /invalid or unsupported Perl syntax/],
  ["(?P=n)", /invalid or unsupported Perl syntax/],
  ["(?P<>a)", /invalid named capture/],
  ["(?P<a-b>x)", /invalid named capture/],
  ["(?P<a", /invalid named capture/],
  ["(?P<a>x)(?P<a>y)", /duplicate capture group name/],
  ["[z-a]", /invalid character class range: `z-a`/],
  ["[[:foo:]]", /invalid character class range: `\[:foo:\]`/],
  ["\\p{Nope}", /invalid character class range/],
  ["\\p{}", /invalid character class range/],
  ["\\p{L", /invalid character class range/],
  ["\\p", /invalid character class range/],
  ["*a", /Nothing to repeat: `\*a`/],
  ["a**", /Nothing to repeat/],
  ["a|*", /Nothing to repeat/],
];

Deno.test("re2: rejects what Go rejects, with Go's wording", () => {
  for (const [pattern, message] of ERRORS) {
    assert.throws(() => compileRe2(pattern), (err: unknown) => {
      assert.ok(err instanceof Re2SyntaxError, `${pattern}: ${err}`);
      assert.ok(err instanceof SyntaxError);
      assert.equal(err.name, "Re2SyntaxError");
      assert.equal(err.pattern, pattern);
      assert.match(err.message, /^error parsing regexp: /);
      assert.match(err.message, message, pattern);
      return true;
    }, pattern);
  }
});

/** Tiny deterministic PRNG so the property test is reproducible. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

Deno.test("re2: on the syntax JS and RE2 share, matching is identical", () => {
  const rand = rng(42);
  const pick = (alphabet: string[]) => alphabet[Math.floor(rand() * alphabet.length)];
  const tokens = ["a", "b", "c", "|", "*", "+", "?", "(", ")", "[ab]", "[^a]", "^", "$", "{2}"];
  let compared = 0;
  for (let n = 0; n < 3000; n++) {
    const len = 1 + Math.floor(rand() * 8);
    let pattern = "";
    for (let i = 0; i < len; i++) pattern += pick(tokens);
    let js: RegExp | undefined;
    try {
      js = new RegExp(pattern, "u");
    } catch {
      js = undefined;
    }
    let ours: RegExp | undefined;
    try {
      ours = compileRe2(pattern);
    } catch (err) {
      assert.ok(err instanceof Re2SyntaxError, `${pattern}: ${err}`);
    }
    if (!js || !ours) continue;
    for (let k = 0; k < 10; k++) {
      let s = "";
      const slen = Math.floor(rand() * 6);
      for (let i = 0; i < slen; i++) s += pick(["a", "b", "c", "\n"]);
      assert.equal(ours.test(s), js.test(s), `${pattern} on ${JSON.stringify(s)}`);
      compared++;
    }
  }
  assert.ok(compared > 5000, `only ${compared} comparisons`);
});

Deno.test("re2: arbitrary input only ever fails with Re2SyntaxError", () => {
  const rand = rng(7);
  const alphabet = Array.from("ab()[]{}|*+?.^$\\-:,0129PpQEisUmx<>=!^é");
  for (let n = 0; n < 5000; n++) {
    let pattern = "";
    const len = Math.floor(rand() * 12);
    for (let i = 0; i < len; i++) pattern += alphabet[Math.floor(rand() * alphabet.length)];
    try {
      compileRe2(pattern).test("ab(c)");
    } catch (err) {
      assert.ok(err instanceof Re2SyntaxError, `${JSON.stringify(pattern)}: ${err}`);
    }
  }
});
