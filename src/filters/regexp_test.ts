import assert from "node:assert/strict";
import { InvalidArgumentError } from "../util/errors.ts";
import { compileRe2, type Re2, Re2SyntaxError } from "./regexp.ts";

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
  /** The leftmost match of `pattern` in `input` (greediness shows only in what is matched). */
  const match = (pattern: string, input: string) => compileRe2(pattern).exec(input)?.[0];
  assert.equal(match("a+", "aaa"), "aaa");
  assert.equal(match("a+?", "aaa"), "a");
  assert.equal(match("(?U)a+", "aaa"), "a");
  assert.equal(match("(?U)a+?", "aaa"), "aaa");
  assert.equal(match("(?U)a+?b*c{2}", "aabbbcc"), "aabbbcc");
  assert.equal(match("(?U)a+?b*", "aabbb"), "aa");
  assert.equal(match("(?U)c{1,2}", "ccc"), "c");
  assert.equal(match("(?U:a*)a*", "aaa"), "aaa");
  assert.equal(match("(?U:a*)b", "aab"), "aab");
  assert.equal(match("(?U:a+)", "aaa"), "a");
});

Deno.test("re2: flag scoping, named groups and literal braces", () => {
  // Formerly checked through the shape of the JavaScript translation; now through matching.
  const cases: Array<[string, string[], string[]]> = [
    ["^(?i)a|b$", ["A", "Ax", "xB"], ["c", "Bx"]],
    ["^x(?i)a$", ["xA", "xa"], ["XA"]],
    ["^(?i)(?i)a$", ["A"], ["b"]],
    ["^(?i:a)$", ["A", "a"], []],
    ["^(?i)(?-i:a)$", ["a"], ["A"]],
    ["^(?P<x>a)$", ["a"], ["x"]],
    ["^a{$", ["a{"], ["a"]],
    ["^.$", ["x"], ["\n"]],
    // A quantifier after a flag group applies to what precedes it, as in Go.
    ["^a(?i)*$", ["", "aaa"], ["A"]],
  ];
  for (const [pattern, yes, no] of cases) {
    const re = compileRe2(pattern);
    for (const s of yes) assert.ok(re.test(s), `${pattern} should match ${JSON.stringify(s)}`);
    for (const s of no) assert.ok(!re.test(s), `${pattern} should not match ${JSON.stringify(s)}`);
  }
  const named = compileRe2("(?P<x>a)(?<y>b)").exec("ab") as RegExpExecArray | null;
  assert.deepEqual({ ...named?.groups }, { x: "a", y: "b" });
});

/** [pattern, Go's message after "error parsing regexp: "]. */
const ERRORS: Array<[string, string]> = [
  ["(", "missing closing ): `(`"],
  ["(?i", "invalid or unsupported Perl syntax: `(?i`"],
  ["a)", "unexpected ): `a)`"],
  ["[a", "missing closing ]: `[a`"],
  ["[]", "missing closing ]: `[]`"],
  ["a\\", "trailing backslash at end of expression: ``"],
  ["[a\\", "trailing backslash at end of expression: ``"],
  ["\\8", "invalid escape sequence: `\\8`"],
  ["\\1", "invalid escape sequence: `\\1`"],
  ["a(b)\\1", "invalid escape sequence: `\\1`"],
  ["\\q", "invalid escape sequence: `\\q`"],
  ["\\Z", "invalid escape sequence: `\\Z`"],
  ["\\C", "invalid escape sequence: `\\C`"],
  ["\\E", "invalid escape sequence: `\\E`"],
  ["\\é", "invalid escape sequence: `\\é`"],
  ["[\\b]", "invalid escape sequence: `\\b`"],
  ["\\x{110000}", "invalid escape sequence: `\\x{110000`"],
  ["\\x{}", "invalid escape sequence: `\\x{}`"],
  ["\\x{41", "invalid escape sequence: `\\x{41`"],
  ["\\xZZ", "invalid escape sequence: `\\xZZ`"],
  ["\\x4", "invalid escape sequence: `\\x4`"],
  ["a{1001}", "invalid repeat count: `{1001}`"],
  ["a{2,1}", "invalid repeat count: `{2,1}`"],
  ["a{1,1001}", "invalid repeat count: `{1,1001}`"],
  ["a{99999999999}", "invalid repeat count: `{99999999999}`"],
  ["(?=a)", "invalid or unsupported Perl syntax: `(?=`"],
  ["(?!a)", "invalid or unsupported Perl syntax: `(?!`"],
  ["(?<=a)b", "invalid named capture: `(?<=a)b`"],
  ["(?<!a)b", "invalid named capture: `(?<!a)b`"],
  ["(?#c)", "invalid or unsupported Perl syntax: `(?#`"],
  ["(?x)a", "invalid or unsupported Perl syntax: `(?x`"],
  ["(?i-)a", "invalid or unsupported Perl syntax: `(?i-)`"],
  ["(?-)a", "invalid or unsupported Perl syntax: `(?-)`"],
  ["(?i-m-s)a", "invalid or unsupported Perl syntax: `(?i-m-`"],
  ["(?P=n)", "invalid or unsupported Perl syntax: `(?P`"],
  ["(?P<>a)", "invalid named capture: `(?P<>`"],
  ["(?P<a-b>x)", "invalid named capture: `(?P<a-b>`"],
  ["(?P<a", "invalid named capture: `(?P<a`"],
  ["(?P<a>x)(?P<a>y)", "duplicate capture group name: `a`"],
  ["[z-a]", "invalid character class range: `z-a`"],
  ["[[:foo:]]", "invalid character class range: `[:foo:]`"],
  ["\\p{Nope}", "invalid character class range: `\\p{Nope}`"],
  ["\\p{}", "invalid character class range: `\\p{}`"],
  ["\\p{L", "invalid character class range: `\\p{L`"],
  ["\\p", "invalid character class range: `\\p`"],
  ["*a", "missing argument to repetition operator: `*`"],
  ["a**", "invalid nested repetition operator: `**`"],
  ["a|*", "missing argument to repetition operator: `*`"],
];

Deno.test("re2: rejects what Go rejects, with Go's wording", () => {
  for (const [pattern, message] of ERRORS) {
    assert.throws(() => compileRe2(pattern), (err: unknown) => {
      assert.ok(err instanceof Re2SyntaxError, `${pattern}: ${err}`);
      assert.ok(err instanceof InvalidArgumentError);
      assert.equal(err.name, "Re2SyntaxError");
      assert.equal(err.pattern, pattern);
      assert.equal(err.message, `error parsing regexp: ${message}`);
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
    let ours: Re2 | undefined;
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

/**
 * Runs `(pattern, input)` searches on a worker and resolves with their results, or rejects
 * when they have not all answered within `deadlineMs` (a backtracking engine would take
 * exponential time; the worker is then terminated instead of hanging the test).
 */
function searchOnWorker(
  searches: ReadonlyArray<readonly [string, string]>,
  deadlineMs: number,
): Promise<boolean[]> {
  const moduleUrl = new URL("./regexp.ts", import.meta.url).href;
  const source = `import { compileRe2 } from ${JSON.stringify(moduleUrl)};
self.onmessage = (e) => {
  self.postMessage(e.data.map(([pattern, input]) => compileRe2(pattern).test(input)));
};`;
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  const worker = new Worker(url, { type: "module" });
  const { promise, resolve, reject } = Promise.withResolvers<boolean[]>();
  const timer = setTimeout(
    () => reject(new Error(`No answer within ${deadlineMs} ms`)),
    deadlineMs,
  );
  worker.onmessage = (e: MessageEvent<boolean[]>) => resolve(e.data);
  worker.onerror = (e) => {
    e.preventDefault();
    reject(new Error(e.message));
  };
  worker.postMessage(searches);
  return promise.finally(() => {
    clearTimeout(timer);
    worker.terminate();
    URL.revokeObjectURL(url);
  });
}

Deno.test("re2: nested repetition against a 4,000-character label answers (linear time)", async () => {
  const miss = "a".repeat(3999) + "b";
  const hit = "a".repeat(4000);
  const searches = [
    ["(a+)+$", miss],
    ["(a|aa)+$", miss],
    ["(a+)+$", hit],
    ["(a|aa)+$", hit],
    ["^(a*)*c", miss],
    ["(a+)+b$", miss],
  ] as const;
  // The deadline turns a backtracking engine's (exponential) hang into a failure; RE2 answers
  // these in milliseconds.
  assert.deepEqual(await searchOnWorker(searches, 10_000), [false, false, true, true, false, true]);
});
