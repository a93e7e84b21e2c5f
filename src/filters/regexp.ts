/**
 * The regular expressions of containerd's `~=` filter operator: Go RE2 syntax (Go's
 * `regexp/syntax` with the `Perl` flags, as `regexp.Compile` uses it), matched as an unanchored
 * search like Go's `regexp.MatchString`.
 *
 * Compiling and matching are done by `re2js`, a JavaScript port of RE2 with Go's parser. It
 * keeps these invariants:
 * - matching takes time linear in the length of the input, whatever the pattern: there is no
 *   backtracking, so `(a+)+$` against a long label value answers at once;
 * - the syntax accepted is Go's: what Go rejects (look-around, back-references, repeat counts
 *   over 1000, unknown escapes, ...) is rejected with Go's message, and what Go accepts means
 *   what it means in Go (flag scoping, `(?U)`, `\pL`, `[[:alpha:]]`, `\Q...\E`, ...).
 *
 * @module
 */

import { RE2JS, RE2JSSyntaxException } from "re2js";
import { InvalidArgumentError } from "../util/errors.ts";

/** A compiled RE2 pattern. `test(s)` is Go's `MatchString` (an unanchored search). */
export type Re2 = RE2JS;

/**
 * A pattern RE2 rejects. The message is Go's, e.g.
 * ``error parsing regexp: missing closing ): `(` ``.
 */
export class Re2SyntaxError extends InvalidArgumentError {
  /** The offending pattern. */
  readonly pattern: string;
  /** Creates the error. */
  constructor(message: string, pattern: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "Re2SyntaxError";
    this.pattern = pattern;
  }
}

/**
 * Compiles an RE2 pattern with Go's syntax and meaning. Use `test()` for containerd's
 * unanchored search.
 *
 * @throws {Re2SyntaxError} (an {@linkcode InvalidArgumentError}) when Go would reject `pattern`
 */
export function compileRe2(pattern: string): Re2 {
  try {
    return RE2JS.compile(pattern);
  } catch (err) {
    if (!(err instanceof RE2JSSyntaxException)) throw err;
    // Go's format: the fragment in back quotes, empty for a trailing backslash.
    throw new Re2SyntaxError(
      `error parsing regexp: ${err.error}: \`${err.input ?? ""}\``,
      pattern,
      { cause: err },
    );
  }
}
