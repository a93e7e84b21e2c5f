/**
 * Go RE2 regular-expression syntax (Go's `regexp/syntax` with the `Perl` flags, as containerd's
 * `~=` filter operator uses it), translated into an equivalent JavaScript `RegExp` in `u` mode.
 *
 * What is translated so that RE2 meaning is kept:
 * - flags `(?i)`, `(?m)`, `(?s)`, `(?U)`, their negations and `(?flags:re)` groups, with RE2's
 *   scoping (a `(?i)` lasts to the end of the enclosing group, across `|`);
 * - `.` (not `\n` unless `s`), `^`/`$` (text edges, or `\n`-only line edges with `m`), `\A`,
 *   `\z`, `\s`/`\S` (ASCII `[\t\n\f\r ]`), `\pL`, `\p{Greek}`, `\p{^Greek}`, `\PL`, `[[:alpha:]]`,
 *   `[[:^alpha:]]`, `\Q...\E`, `\a`, octal `\123`, `\x{10FFFF}`, escaped punctuation such as `\-`;
 * - literal `{`, `}` and `]` where RE2 treats them as literals (`a{`, `{,3}`, `[]a]`);
 * - `(?P<name>re)` and `(?<name>re)` become plain capture groups (names never matter here);
 * - `(?U)` swaps greedy and lazy repetition.
 *
 * What RE2 rejects is rejected even though JavaScript would accept it: look-around,
 * back-references, `\b` inside classes, repeat counts over 1000, unknown escapes.
 *
 * Remaining differences (documented, rare): `\p{C}` includes unassigned code points; a
 * quantifier applied to `^`/`$` or to nothing after a flag group (`a(?i)*`) is an error here;
 * and JavaScript matches by backtracking, so a pathological pattern (`(a+)+$`) can take
 * exponential time on a long label value, where RE2 is linear.
 *
 * @module
 */

/** Go's limit on `{n,m}` counts. */
const MAX_REPEAT = 1000;

/** A pattern RE2 (or the translation) rejects. `message` follows Go's wording. */
export class Re2SyntaxError extends SyntaxError {
  /** The offending pattern. */
  readonly pattern: string;
  /** Creates the error. */
  constructor(message: string, pattern: string, options?: ErrorOptions) {
    super(`error parsing regexp: ${message}`, options);
    this.name = "Re2SyntaxError";
    this.pattern = pattern;
  }
}

interface Flags {
  /** Case-insensitive. */
  i: boolean;
  /** Multi-line: `^`/`$` match at `\n`. */
  m: boolean;
  /** `.` matches `\n`. */
  s: boolean;
  /** Ungreedy: swap `x*` and `x*?`. */
  U: boolean;
}

interface Group {
  /** Flags in effect outside the group, restored when it closes. */
  outer: Flags;
  /** The `i` state JavaScript has at the start of the group's content. */
  jsI: boolean;
  /** `(?i:` / `(?-i:` wrappers opened by `(?i)`-style groups since the last `|`. */
  wrappers: number;
}

/** A range of code points, inclusive. */
type Range = [number, number];

const MAX_RUNE = 0x10ffff;

/** ASCII classes of `[[:name:]]`. */
const POSIX: Readonly<Record<string, readonly Range[]>> = {
  alnum: [[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a]],
  alpha: [[0x41, 0x5a], [0x61, 0x7a]],
  ascii: [[0x00, 0x7f]],
  blank: [[0x09, 0x09], [0x20, 0x20]],
  cntrl: [[0x00, 0x1f], [0x7f, 0x7f]],
  digit: [[0x30, 0x39]],
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [[0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e]],
  space: [[0x09, 0x0d], [0x20, 0x20]],
  upper: [[0x41, 0x5a]],
  word: [[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a], [0x5f, 0x5f]],
  xdigit: [[0x30, 0x39], [0x41, 0x46], [0x61, 0x66]],
};

/** RE2's `\s`. */
const PERL_SPACE: readonly Range[] = [[0x09, 0x0a], [0x0c, 0x0d], [0x20, 0x20]];

/** Go's general categories (`\p{Lu}`); anything else in `\p{...}` is a script name. */
const CATEGORIES = new Set(
  ("C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps " +
    "S Sc Sk Sm So Z Zl Zp Zs").split(" "),
);

/** Characters that must be escaped to be literal outside a class in a `u`-mode RegExp. */
const JS_SYNTAX = new Set("^$\\.*+?()[]{}|/");

function complement(ranges: readonly Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  let next = 0;
  for (const [lo, hi] of sorted) {
    if (lo > next) out.push([next, lo - 1]);
    next = Math.max(next, hi + 1);
  }
  if (next <= MAX_RUNE) out.push([next, MAX_RUNE]);
  return out;
}

/** A code point as it may appear anywhere in a `u`-mode pattern, class or not. */
function classChar(cp: number): string {
  const isAlnum = (cp >= 0x30 && cp <= 0x39) || (cp >= 0x41 && cp <= 0x5a) ||
    (cp >= 0x61 && cp <= 0x7a);
  return isAlnum ? String.fromCodePoint(cp) : `\\u{${cp.toString(16)}}`;
}

function rangesSource(ranges: readonly Range[]): string {
  return ranges.map(([lo, hi]) => lo === hi ? classChar(lo) : `${classChar(lo)}-${classChar(hi)}`)
    .join("");
}

function isOctal(c: string | undefined): boolean {
  return c !== undefined && c >= "0" && c <= "7";
}

function isHex(c: string | undefined): boolean {
  return c !== undefined && /^[0-9A-Fa-f]$/.test(c);
}

function isAsciiAlnum(c: string): boolean {
  return /^[0-9A-Za-z]$/.test(c);
}

/** Translator state over the pattern's code points. */
class Translator {
  readonly chars: string[];
  pos = 0;
  out: string[] = [];
  flags: Flags = { i: false, m: false, s: false, U: false };
  groups: Group[] = [];
  names = new Set<string>();

  constructor(readonly pattern: string) {
    this.chars = Array.from(pattern);
  }

  fail(message: string, fragment: string): never {
    throw new Re2SyntaxError(`${message}: \`${fragment}\``, this.pattern);
  }

  /** The pattern text from `start` to the current position. */
  since(start: number): string {
    return this.chars.slice(start, this.pos).join("");
  }

  rest(start: number): string {
    return this.chars.slice(start).join("");
  }

  /** The top-level pseudo group. */
  translate(): string {
    const top: Group = { outer: { ...this.flags }, jsI: false, wrappers: 0 };
    this.groups.push(top);
    while (this.pos < this.chars.length) this.step();
    if (this.groups.length > 1) this.fail("missing closing )", this.pattern);
    this.closeWrappers(top);
    return this.out.join("");
  }

  closeWrappers(group: Group): void {
    this.out.push(")".repeat(group.wrappers));
    group.wrappers = 0;
  }

  /**
   * Makes JavaScript's `i` state match `this.flags.i` after a flag change inside `group`.
   * Invariant kept by every step: at the current output position JavaScript's `i` state equals
   * `this.flags.i`.
   */
  syncCase(group: Group, jsIBefore: boolean): void {
    if (this.flags.i !== jsIBefore) {
      this.out.push(this.flags.i ? "(?i:" : "(?-i:");
      group.wrappers++;
    }
  }

  step(): void {
    const c = this.chars[this.pos];
    const group = this.groups[this.groups.length - 1];
    switch (c) {
      case "(":
        this.openGroup();
        return;
      case ")": {
        if (this.groups.length === 1) this.fail("unexpected )", this.pattern);
        this.closeWrappers(group);
        this.out.push(")");
        this.groups.pop();
        this.flags = group.outer;
        this.pos++;
        return;
      }
      case "|": {
        this.closeWrappers(group);
        this.out.push("|");
        this.pos++;
        this.syncCase(group, group.jsI);
        return;
      }
      case "[":
        this.out.push(this.parseClass());
        return;
      case "\\":
        this.out.push(this.parseEscape());
        return;
      case ".":
        this.out.push(this.flags.s ? "[\\s\\S]" : "[^\\n]");
        this.pos++;
        return;
      case "^":
        this.out.push(this.flags.m ? "(?<![^\\n])" : "^");
        this.pos++;
        return;
      case "$":
        this.out.push(this.flags.m ? "(?![^\\n])" : "$");
        this.pos++;
        return;
      case "*":
      case "+":
      case "?":
        this.pos++;
        this.out.push(c + this.laziness());
        return;
      case "{": {
        const repeat = this.parseRepeat();
        if (repeat !== undefined) {
          this.out.push(repeat + this.laziness());
        } else {
          this.out.push("\\{");
          this.pos++;
        }
        return;
      }
      default:
        this.out.push(JS_SYNTAX.has(c) ? `\\${c}` : c);
        this.pos++;
    }
  }

  /** The `?` to append to a just-read quantifier, honouring a `?` suffix and `(?U)`. */
  laziness(): string {
    let lazy = false;
    if (this.chars[this.pos] === "?") {
      lazy = true;
      this.pos++;
    }
    return lazy !== this.flags.U ? "?" : "";
  }

  /** `{n}`, `{n,}`, `{n,m}` at `pos`, or undefined when RE2 would read a literal `{`. */
  parseRepeat(): string | undefined {
    const text = this.chars.slice(this.pos, this.pos + 64).join("");
    const m = /^\{(\d+)(,(\d*))?\}/.exec(text);
    // Go reads `{` literally unless it starts a well-formed repeat; leading zeros are not.
    if (!m || /^0\d/.test(m[1]) || (m[3] !== undefined && /^0\d/.test(m[3]))) return undefined;
    const start = this.pos;
    this.pos += m[0].length;
    const min = Number(m[1]);
    const max = m[2] === undefined ? min : m[3] === "" ? -1 : Number(m[3]);
    if (min > MAX_REPEAT || max > MAX_REPEAT || (max >= 0 && max < min)) {
      this.fail("invalid repeat count", this.since(start));
    }
    return m[0];
  }

  openGroup(): void {
    const start = this.pos;
    const group = this.groups[this.groups.length - 1];
    const outer = { ...this.flags };
    this.pos++;
    if (this.chars[this.pos] !== "?") {
      this.groups.push({ outer, jsI: this.flags.i, wrappers: 0 });
      this.out.push("(");
      return;
    }
    this.pos++;
    const next = this.chars[this.pos];
    if (
      next === "P" || (next === "<" && this.chars[this.pos + 1] !== "=" &&
        this.chars[this.pos + 1] !== "!")
    ) {
      if (next === "P") this.pos++;
      if (this.chars[this.pos] !== "<") {
        this.fail(
          "invalid or unsupported Perl syntax",
          this.since(start) + (this.chars[this.pos] ?? ""),
        );
      }
      const end = this.chars.indexOf(">", this.pos);
      if (end < 0) this.fail("invalid named capture", this.rest(start));
      const name = this.chars.slice(this.pos + 1, end).join("");
      this.pos = end + 1;
      if (!/^[A-Za-z0-9_]+$/.test(name)) this.fail("invalid named capture", this.since(start));
      if (this.names.has(name)) this.fail("duplicate capture group name", name);
      this.names.add(name);
      this.groups.push({ outer, jsI: this.flags.i, wrappers: 0 });
      this.out.push("(");
      return;
    }
    // Flags: (?flags) or (?flags:re); flags = [imsU]* optionally followed by -[imsU]+.
    const flags = { ...this.flags };
    let negate = false;
    let sawFlag = false;
    for (;;) {
      const f = this.chars[this.pos];
      if (f === undefined) this.fail("missing closing )", this.rest(start));
      this.pos++;
      if (f === "i" || f === "m" || f === "s" || f === "U") {
        flags[f] = !negate;
        sawFlag = true;
        continue;
      }
      if (f === "-") {
        if (negate) this.fail("invalid or unsupported Perl syntax", this.since(start));
        negate = true;
        sawFlag = false;
        continue;
      }
      if (f === ":" || f === ")") {
        if (negate && !sawFlag) {
          this.fail("invalid or unsupported Perl syntax", this.since(start));
        }
        const jsIBefore = this.flags.i;
        if (f === ")") {
          // Lasts to the end of the enclosing group.
          this.flags = flags;
          this.syncCase(group, jsIBefore);
          return;
        }
        this.flags = flags;
        this.groups.push({ outer, jsI: flags.i, wrappers: 0 });
        this.out.push(flags.i === jsIBefore ? "(?:" : flags.i ? "(?i:" : "(?-i:");
        return;
      }
      this.fail("invalid or unsupported Perl syntax", this.since(start));
    }
  }

  /**
   * A single-character escape at `pos` (just after the backslash), as a code point, or
   * undefined when the escape is not a single character. Advances past it on success.
   */
  parseCharEscape(start: number): number | undefined {
    const c = this.chars[this.pos];
    switch (c) {
      case "a":
        this.pos++;
        return 0x07;
      case "f":
        this.pos++;
        return 0x0c;
      case "n":
        this.pos++;
        return 0x0a;
      case "r":
        this.pos++;
        return 0x0d;
      case "t":
        this.pos++;
        return 0x09;
      case "v":
        this.pos++;
        return 0x0b;
      case "x": {
        this.pos++;
        if (this.chars[this.pos] === "{") {
          const end = this.chars.indexOf("}", this.pos);
          const hex = end < 0 ? "" : this.chars.slice(this.pos + 1, end).join("");
          if (!/^[0-9A-Fa-f]+$/.test(hex) || parseInt(hex, 16) > MAX_RUNE) {
            this.pos = end < 0 ? this.chars.length : end + 1;
            this.fail("invalid escape sequence", this.since(start));
          }
          this.pos = end + 1;
          return parseInt(hex, 16);
        }
        const h1 = this.chars[this.pos];
        const h2 = this.chars[this.pos + 1];
        if (!isHex(h1) || !isHex(h2)) {
          this.pos = Math.min(this.pos + 2, this.chars.length);
          this.fail("invalid escape sequence", this.since(start));
        }
        this.pos += 2;
        return parseInt(h1 + h2, 16);
      }
    }
    if (c >= "1" && c <= "7" && !isOctal(this.chars[this.pos + 1])) return undefined;
    if (c >= "0" && c <= "7") {
      let digits = c;
      this.pos++;
      while (digits.length < 3 && isOctal(this.chars[this.pos])) digits += this.chars[this.pos++];
      return parseInt(digits, 8);
    }
    if (c !== undefined && c.codePointAt(0)! < 0x80 && !isAsciiAlnum(c)) {
      this.pos++;
      return c.codePointAt(0)!;
    }
    return undefined;
  }

  /** `\p{Name}`, `\pN`, `\P...` at `pos` (on the `p`/`P`) as a class-item source. */
  parseUnicodeClass(start: number, inClass: boolean): string {
    let negated = this.chars[this.pos] === "P";
    this.pos++;
    let name: string;
    if (this.chars[this.pos] === "{") {
      const end = this.chars.indexOf("}", this.pos);
      if (end < 0) this.fail("invalid character class range", this.rest(start));
      name = this.chars.slice(this.pos + 1, end).join("");
      this.pos = end + 1;
      if (name.startsWith("^")) {
        negated = !negated;
        name = name.slice(1);
      }
    } else {
      name = this.chars[this.pos] ?? "";
      if (name === "") this.fail("invalid character class range", this.since(start));
      this.pos++;
    }
    if (name === "Any") {
      if (negated) return inClass ? "" : "[]";
      return inClass ? "\\u{0}-\\u{10ffff}" : "[\\u{0}-\\u{10ffff}]";
    }
    const property = CATEGORIES.has(name) ? name : `Script=${name}`;
    const source = `\\${negated ? "P" : "p"}{${property}}`;
    if (!/^[A-Za-z_]+$/.test(name)) this.fail("invalid character class range", this.since(start));
    try {
      new RegExp(source, "u");
    } catch {
      this.fail("invalid character class range", this.since(start));
    }
    return source;
  }

  /** An escape outside a class; `pos` is on the backslash. */
  parseEscape(): string {
    const start = this.pos;
    this.pos++;
    const c = this.chars[this.pos];
    if (c === undefined) this.fail("trailing backslash at end of expression", "");
    switch (c) {
      case "A":
        this.pos++;
        return "^";
      case "z":
        this.pos++;
        return "$";
      case "b":
      case "B":
      case "d":
      case "D":
      case "w":
      case "W":
        this.pos++;
        return `\\${c}`;
      case "s":
        this.pos++;
        return `[${rangesSource(PERL_SPACE)}]`;
      case "S":
        this.pos++;
        return `[^${rangesSource(PERL_SPACE)}]`;
      case "p":
      case "P":
        return this.parseUnicodeClass(start, false);
      case "Q": {
        this.pos++;
        let end = this.pos;
        while (
          end < this.chars.length && !(this.chars[end] === "\\" && this.chars[end + 1] === "E")
        ) {
          end++;
        }
        const lit = this.chars.slice(this.pos, end);
        this.pos = end < this.chars.length ? end + 2 : end;
        return lit.map((ch) => JS_SYNTAX.has(ch) ? `\\${ch}` : ch).join("");
      }
    }
    const cp = this.parseCharEscape(start);
    if (cp === undefined) this.fail("invalid escape sequence", `\\${c}`);
    return classChar(cp);
  }

  /** A bracket expression; `pos` is on `[`. Re-emitted in a canonical, JS-safe form. */
  parseClass(): string {
    const start = this.pos;
    this.pos++;
    let negated = false;
    if (this.chars[this.pos] === "^") {
      negated = true;
      this.pos++;
    }
    const items: string[] = [];
    let first = true;
    for (;;) {
      const c = this.chars[this.pos];
      if (c === undefined) this.fail("missing closing ]", this.rest(start));
      if (c === "]" && !first) break;
      first = false;
      if (c === "[" && this.chars[this.pos + 1] === ":") {
        let close = this.pos + 2;
        while (
          close < this.chars.length && !(this.chars[close] === ":" && this.chars[close + 1] === "]")
        ) {
          close++;
        }
        if (close < this.chars.length) {
          const nameStart = this.pos;
          let name = this.chars.slice(this.pos + 2, close).join("");
          this.pos = close + 2;
          const neg = name.startsWith("^");
          if (neg) name = name.slice(1);
          const ranges = Object.hasOwn(POSIX, name) ? POSIX[name] : undefined;
          if (!ranges) this.fail("invalid character class range", this.since(nameStart));
          items.push(rangesSource(neg ? complement(ranges) : ranges));
          continue;
        }
      }
      if (c === "\\") {
        const next = this.chars[this.pos + 1];
        if (next === "p" || next === "P") {
          const escStart = this.pos;
          this.pos++;
          items.push(this.parseUnicodeClass(escStart, true));
          continue;
        }
        if (next === "d" || next === "D" || next === "w" || next === "W") {
          items.push(`\\${next}`);
          this.pos += 2;
          continue;
        }
        if (next === "s" || next === "S") {
          items.push(rangesSource(next === "s" ? PERL_SPACE : complement(PERL_SPACE)));
          this.pos += 2;
          continue;
        }
      }
      const lo = this.parseClassChar();
      let hi = lo;
      if (
        this.chars[this.pos] === "-" && this.chars[this.pos + 1] !== undefined &&
        this.chars[this.pos + 1] !== "]"
      ) {
        const rangeStart = this.pos;
        this.pos++;
        hi = this.parseClassChar();
        if (hi < lo) {
          this.fail(
            "invalid character class range",
            this.chars.slice(rangeStart - 1, this.pos).join(""),
          );
        }
      }
      items.push(rangesSource([[lo, hi]]));
    }
    this.pos++;
    return `[${negated ? "^" : ""}${items.join("")}]`;
  }

  /** One (possibly escaped) character inside a class. */
  parseClassChar(): number {
    const start = this.pos;
    const c = this.chars[this.pos];
    if (c === undefined) this.fail("missing closing ]", this.pattern);
    if (c !== "\\") {
      this.pos++;
      return c.codePointAt(0)!;
    }
    this.pos++;
    const e = this.chars[this.pos];
    if (e === undefined) this.fail("trailing backslash at end of expression", "");
    const cp = this.parseCharEscape(start);
    if (cp === undefined) this.fail("invalid escape sequence", `\\${e}`);
    return cp;
  }
}

/**
 * The source of a `u`-mode JavaScript RegExp (no other flags) that matches what the RE2
 * `pattern` matches (see the module documentation for the few differences).
 *
 * @throws {Re2SyntaxError} when RE2 would reject `pattern`
 */
export function translateRe2(pattern: string): string {
  return new Translator(pattern).translate();
}

/**
 * Compiles an RE2 pattern into a JavaScript RegExp with the same matches. Use `test()` for
 * containerd's unanchored search.
 *
 * @throws {Re2SyntaxError} when RE2 would reject `pattern` or the translation does not compile
 */
export function compileRe2(pattern: string): RegExp {
  const source = translateRe2(pattern);
  try {
    return new RegExp(source, "u");
  } catch (err) {
    const reason = String((err as Error).message).replace(/^.*\/[a-z]*: /s, "");
    throw new Re2SyntaxError(`${reason}: \`${pattern}\``, pattern, { cause: err });
  }
}
