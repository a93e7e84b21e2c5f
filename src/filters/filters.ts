/**
 * containerd's filter language (`pkg/filters`), used by the snapshots `List` (Walk) RPC; generic
 * over what it filters (a {@linkcode FieldLookup}): the snapshot adaptor is
 * `src/snapshots/match.ts`.
 *
 * A request carries a list of filter strings. An item is listed when it matches **any** of
 * them; an empty list, or any empty string in it, matches everything. A filter string is a
 * comma-separated list of selectors that must **all** match:
 *
 * ```
 * filter    := "" | selector ("," selector)*
 * selector  := fieldpath [operator value]          no operator: the field must be present
 * fieldpath := field ("." field)*
 * field     := [A-Za-z0-9_]+ | "double-quoted Go string"
 * operator  := "==" | "!=" | "~="
 * value     := unquoted | "double-quoted Go string"
 *            | /regexp/ | |regexp|                  (the last two only after ~=)
 * ```
 *
 * - An unquoted value runs to the next whitespace or `,`; it cannot start with `.`, `,`, `"`,
 *   `/`, `|`, `=`, `!` or `~`, and its other characters must be graphic (letters, marks,
 *   numbers, punctuation, symbols). Backslashes in it are literal (`name~=a\.b`).
 * - Quoted strings use Go escapes: `\a \b \f \n \r \t \v \\`, the closing quote character
 *   (`\"`, or `\/` inside `/.../`, `\|` inside `|...|`), octal `\101`, `\xHH`, `\uHHHH`,
 *   `\UHHHHHHHH`. Any other escape — including `\.` or `\d` inside `/.../` — is an error, as in
 *   containerd (write `/a\\.b/` or the unquoted `a\.b`). A newline cannot occur in a quoted
 *   string; NUL cannot occur anywhere.
 * - `==` needs the field present and equal; `!=` compares the field's value, or "" when it is
 *   absent, so it needs no presence; `~=` is an unanchored search of an RE2 regular expression
 *   (Go's syntax, matched in linear time: see `regexp.ts`) in the value, or in "" when the field
 *   is absent.
 *
 * Differences from containerd, all deliberate:
 * - Whitespace is skipped between any two tokens (containerd rejects it before `,` or `.`
 *   and at the end of a filter). Every filter containerd accepts parses the same here.
 * - A regular expression that does not compile is an error (containerd accepts the filter and
 *   lets the selector match nothing).
 * - A quoted string whose `\x`/octal escapes do not form valid UTF-8 is an error (containerd
 *   would compare raw bytes, which can never equal a protobuf string).
 *
 * Errors are {@linkcode FilterSyntaxError}s (an {@linkcode InvalidArgumentError}) with
 * containerd's message format, which marks the offending character:
 * `filters: parse error: [labels. >|||< foo|==x]: invalid quote encountered`.
 *
 * @module
 */

import { InvalidArgumentError } from "../util/errors.ts";
import { compileRe2, type Re2 } from "./regexp.ts";

/** A selector's operator; `present` is a bare field path. */
export type Operator = "present" | "==" | "!=" | "~=";

/** One `fieldpath[op value]` term. */
export interface Selector {
  /** The field path, unquoted, e.g. `["labels", "containerd.io/gc.root"]`. */
  readonly fieldpath: readonly string[];
  /** How the field is compared with `value`. */
  readonly operator: Operator;
  /** The unquoted value; "" for `present`. */
  readonly value: string;
  /** The compiled expression of a `~=` selector. */
  readonly regex?: Re2;
}

/** Selectors that must all match (one filter string). Empty: matches everything. */
export type Clause = readonly Selector[];

/** A parsed filter list: matches when any clause matches. */
export interface Filter {
  /** Never empty: an empty filter list parses to one empty clause. */
  readonly clauses: readonly Clause[];
  /** The filter strings it was parsed from (for logs). */
  readonly source: readonly string[];
}

/** A malformed filter string. */
export class FilterSyntaxError extends InvalidArgumentError {
  /** The filter string. */
  readonly input: string;
  /** Index (UTF-16 code units) in `input` of the offending token; `input.length` at the end. */
  readonly position: number;
  /** What is wrong, e.g. `expected field or quoted`. */
  readonly reason: string;
  /** Creates the error. */
  constructor(input: string, position: number, reason: string, options?: ErrorOptions) {
    super(formatParseError(input, position, reason), options);
    this.name = "FilterSyntaxError";
    this.input = input;
    this.position = position;
    this.reason = reason;
  }
}

function formatParseError(input: string, position: number, reason: string): string {
  if (position >= input.length) return `filters: parse error: [${input}]: ${reason}`;
  const cp = input.codePointAt(position)!;
  const len = cp > 0xffff ? 2 : 1;
  return `filters: parse error: [${input.slice(0, position)} >|${
    input.slice(position, position + len)
  }|< ${input.slice(position + len)}]: ${reason}`;
}

const SPACE = /^\p{White_Space}$/u;
const GRAPHIC = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;
const FIELD = /^[A-Za-z0-9_]$/;
const OCTAL = /^[0-7]$/;
const HEX = /^[0-9A-Fa-f]$/;

function isOperatorChar(c: string): boolean {
  return c === "=" || c === "!" || c === "~";
}

function isQuote(c: string): boolean {
  return c === '"' || c === "/" || c === "|";
}

/** Simple escapes and the character they stand for. */
const SIMPLE_ESCAPES: Readonly<Record<string, number>> = {
  a: 0x07,
  b: 0x08,
  f: 0x0c,
  n: 0x0a,
  r: 0x0d,
  t: 0x09,
  v: 0x0b,
  "\\": 0x5c,
};

/** Appends the UTF-8 encoding of `cp` (surrogates become U+FFFD, as Go encodes them). */
function pushUtf8(bytes: number[], cp: number): void {
  if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
  if (cp < 0x80) bytes.push(cp);
  else if (cp < 0x800) bytes.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
  else if (cp < 0x10000) {
    bytes.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  } else {
    bytes.push(
      0xf0 | (cp >> 18),
      0x80 | ((cp >> 12) & 0x3f),
      0x80 | ((cp >> 6) & 0x3f),
      0x80 | (cp & 0x3f),
    );
  }
}

/** Recursive-descent parser of one filter string. */
class Parser {
  pos = 0;
  constructor(readonly input: string) {}

  fail(position: number, reason: string, cause?: unknown): never {
    throw new FilterSyntaxError(this.input, position, reason, cause ? { cause } : undefined);
  }

  /** The character (whole code point) at `pos`, or "" at the end. */
  peek(): string {
    const cp = this.input.codePointAt(this.pos);
    return cp === undefined ? "" : String.fromCodePoint(cp);
  }

  skipSpace(): void {
    for (let c = this.peek(); c !== "" && SPACE.test(c); c = this.peek()) this.pos += c.length;
  }

  clause(): Selector[] {
    const nul = this.input.indexOf("\0");
    if (nul >= 0) this.fail(nul, "unexpected null");
    const selectors = [this.selector()];
    for (;;) {
      this.skipSpace();
      const c = this.peek();
      if (c === "") return selectors;
      if (c !== ",") this.fail(this.pos, `unexpected input: ${c}`);
      this.pos++;
      selectors.push(this.selector());
    }
  }

  selector(): Selector {
    const fieldpath = this.fieldpath();
    this.skipSpace();
    const c = this.peek();
    if (c === "" || c === ",") return { fieldpath, operator: "present", value: "" };
    const operator = this.operator();
    this.skipSpace();
    const valueStart = this.pos;
    const value = this.value(operator === "~=");
    if (operator !== "~=") return { fieldpath, operator, value };
    try {
      return { fieldpath, operator, value, regex: compileRe2(value) };
    } catch (err) {
      this.fail(valueStart, (err as Error).message, err);
    }
  }

  fieldpath(): string[] {
    const fields = [this.field()];
    for (;;) {
      const save = this.pos;
      this.skipSpace();
      if (this.peek() !== ".") {
        this.pos = save;
        return fields;
      }
      this.pos++;
      fields.push(this.field());
    }
  }

  field(): string {
    this.skipSpace();
    const start = this.pos;
    const c = this.peek();
    if (c !== "" && FIELD.test(c)) {
      while (FIELD.test(this.peek())) this.pos++;
      return this.input.slice(start, this.pos);
    }
    if (c !== "" && isQuote(c)) {
      const raw = this.scanQuoted();
      if (c !== '"') this.fail(start, "invalid quote encountered");
      return this.unquote(start, raw);
    }
    this.fail(start, "expected field or quoted");
  }

  operator(): Operator {
    const start = this.pos;
    while (isOperatorChar(this.peek())) this.pos++;
    const op = this.input.slice(start, this.pos);
    if (op === "==" || op === "!=" || op === "~=") return op;
    if (op === "") {
      // Like containerd's scanner, report a broken quoted token here as such.
      if (isQuote(this.peek())) this.scanQuoted();
      this.fail(start, 'expected an operator ("=="|"!="|"~=")');
    }
    this.fail(start, `unsupported operator ${JSON.stringify(op)}`);
  }

  value(allowAltQuotes: boolean): string {
    const start = this.pos;
    const c = this.peek();
    if (c === "" || c === "," || c === "." || isOperatorChar(c)) {
      this.fail(start, "expected value or quoted");
    }
    if (isQuote(c)) {
      const raw = this.scanQuoted();
      if (c !== '"' && !allowAltQuotes) this.fail(start, "invalid quote encountered");
      return this.unquote(start, raw);
    }
    // The first character is anything left (it is not whitespace: skipped by the caller); the
    // rest must be graphic and not ",".
    this.pos += c.length;
    for (let d = this.peek(); d !== "" && d !== "," && GRAPHIC.test(d); d = this.peek()) {
      this.pos += d.length;
    }
    return this.input.slice(start, this.pos);
  }

  /**
   * Scans a quoted token at `pos` and returns its raw text (quotes included), checking escapes
   * the way containerd's scanner does (the last problem found is the one reported).
   */
  scanQuoted(): string {
    const start = this.pos;
    const quote = this.peek();
    this.pos++;
    let problem: string | undefined;
    for (;;) {
      const c = this.peek();
      if (c === "" || c === "\n") this.fail(start, "quoted literal not terminated");
      if (c === quote) {
        this.pos++;
        break;
      }
      if (c !== "\\") {
        this.pos += c.length;
        continue;
      }
      this.pos++;
      const e = this.peek();
      if (e === quote || Object.hasOwn(SIMPLE_ESCAPES, e)) {
        this.pos++;
      } else if (OCTAL.test(e)) {
        if (!this.digits(OCTAL, 3)) problem = "illegal numeric escape sequence";
      } else if (e === "x" || e === "u" || e === "U") {
        this.pos++;
        if (!this.digits(HEX, e === "x" ? 2 : e === "u" ? 4 : 8)) {
          problem = "illegal numeric escape sequence";
        }
      } else {
        // Left in place: the loop reads it as an ordinary character (or as the end).
        problem = "illegal escape sequence";
      }
    }
    if (problem) this.fail(start, problem);
    return this.input.slice(start, this.pos);
  }

  /** Consumes up to `n` characters matching `re`; true when there were `n`. */
  digits(re: RegExp, n: number): boolean {
    for (let i = 0; i < n; i++) {
      if (!re.test(this.peek())) return false;
      this.pos++;
    }
    return true;
  }

  /** Decodes a scanned quoted token (escapes already checked by {@linkcode scanQuoted}). */
  unquote(start: number, raw: string): string {
    const quote = raw[0];
    const body = raw.slice(1, -1);
    if (!body.includes("\\")) return body;
    const bytes: number[] = [];
    for (let i = 0; i < body.length;) {
      const cp = body.codePointAt(i)!;
      if (cp !== 0x5c) {
        pushUtf8(bytes, cp);
        i += cp > 0xffff ? 2 : 1;
        continue;
      }
      const e = body[i + 1];
      i += 2;
      if (e === quote) bytes.push(e.charCodeAt(0));
      else if (Object.hasOwn(SIMPLE_ESCAPES, e)) bytes.push(SIMPLE_ESCAPES[e]);
      else if (OCTAL.test(e)) {
        const v = parseInt(e + body.slice(i, i + 2), 8);
        i += 2;
        if (v > 255) this.fail(start, "unquoting failed: quote syntax error");
        bytes.push(v);
      } else {
        const n = e === "x" ? 2 : e === "u" ? 4 : 8;
        const v = parseInt(body.slice(i, i + n), 16);
        i += n;
        if (e === "x") bytes.push(v);
        else if (v > 0x10ffff) this.fail(start, "unquoting failed: quote syntax error");
        else pushUtf8(bytes, v);
      }
    }
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(bytes));
    } catch (err) {
      this.fail(start, "unquoting failed: invalid UTF-8", err);
    }
  }
}

/**
 * Parses one filter string into the selectors that must all match. "" gives no selectors
 * (matches everything).
 *
 * @throws {FilterSyntaxError} (an {@linkcode InvalidArgumentError}) when `input` is malformed
 */
export function parseFilter(input: string): Clause {
  if (input === "") return [];
  return new Parser(input).clause();
}

/**
 * Parses the `filters` of a List request. An empty list matches everything.
 *
 * @throws {FilterSyntaxError} (an {@linkcode InvalidArgumentError}) for the first malformed
 *   string
 */
export function parseFilters(filters: readonly string[]): Filter {
  if (filters.length === 0) return { clauses: [[]], source: [] };
  return { clauses: filters.map(parseFilter), source: [...filters] };
}

/** True when `filter` matches every item (some clause has no selectors). */
export function matchesEverything(filter: Filter): boolean {
  return filter.clauses.some((clause) => clause.length === 0);
}

/** Looks a field path up on an item: its value, or undefined when the field is absent. */
export type FieldLookup = (fieldpath: readonly string[]) => string | undefined;

function matchSelector(selector: Selector, value: string | undefined): boolean {
  switch (selector.operator) {
    case "present":
      return value !== undefined;
    case "==":
      return value !== undefined && value === selector.value;
    case "!=":
      return (value ?? "") !== selector.value;
    case "~=":
      return selector.regex!.test(value ?? "");
  }
}

/** Whether the item described by `lookup` matches `filter`. */
export function matchFields(filter: Filter, lookup: FieldLookup): boolean {
  return filter.clauses.some((clause) =>
    clause.every((selector) => matchSelector(selector, lookup(selector.fieldpath)))
  );
}
