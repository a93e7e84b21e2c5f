/**
 * The worker thread of `list_match.ts`: parses a List's filters (they contain `~=`) and matches
 * the rows it is sent, checking the shared stop flag before each row. It answers once:
 * `{ matched }` (indices of the matching rows, in order), `{ stopped }` or `{ error }`.
 *
 * The RE2 programs of all `~=` expressions together may have at most `maxInstructions`
 * instructions (InvalidArgument otherwise): that bounds the time one row takes, so a stop is
 * honoured soon.
 *
 * @module
 */
import { parseFilters } from "../filters/filters.ts";
import { matchInfo } from "../snapshots/match.ts";
import type { Info } from "../snapshots/types.ts";
import { type ErrorKind, errorKind, errorMessage } from "../util/errors.ts";

/** What the worker is sent. */
export interface MatchRequest {
  /** The List's filter strings (parsed on the worker). */
  sources: string[];
  /** The fields filters can name, one entry per Info. */
  rows: Pick<Info, "name" | "parent" | "kind" | "labels">[];
  /** Int32Array over a SharedArrayBuffer: [0] set to 1 asks the worker to stop. */
  stop: Int32Array;
  /** `MAX_REGEX_INSTRUCTIONS` of `list_match.ts`. */
  maxInstructions: number;
}

/** What the worker answers. */
export type MatchReply =
  | { matched: Uint32Array }
  | { stopped: true }
  | { error: { kind: ErrorKind; message: string } };

const scope = self as unknown as Worker;

function reply(message: MatchReply): void {
  scope.postMessage(message);
}

scope.onmessage = (e: MessageEvent<MatchRequest>) => {
  const { sources, rows, stop, maxInstructions } = e.data;
  try {
    const filter = parseFilters(sources);
    let instructions = 0;
    for (const clause of filter.clauses) {
      for (const selector of clause) instructions += selector.regex?.programSize() ?? 0;
    }
    if (instructions > maxInstructions) {
      return reply({
        error: {
          kind: "invalid_argument",
          message: `invalid filters: the ~= expressions compile to ${instructions} ` +
            `instructions, more than the maximum of ${maxInstructions}`,
        },
      });
    }
    const matched: number[] = [];
    for (let i = 0; i < rows.length; i++) {
      if (Atomics.load(stop, 0) !== 0) return reply({ stopped: true });
      if (matchInfo(filter, rows[i] as Info)) matched.push(i);
    }
    reply({ matched: Uint32Array.from(matched) });
  } catch (err) {
    const kind = errorKind(err);
    const message = kind === "invalid_argument"
      ? errorMessage(err)
      : `invalid filters: ${errorMessage(err)}`;
    reply({ error: { kind: kind === "unknown" ? "invalid_argument" : kind, message } });
  }
};
