/**
 * A scripted {@linkcode CommandRunner} for fast unit tests of parsing, error and retry
 * paths. It records every call and answers from rules; a call no rule matches throws, so a
 * test notices unexpected commands. Kernel tests use the real runner.
 *
 * @module
 */
import type { CommandRunner, RunOptions, RunResult } from "../src/dm/runner.ts";

/** One recorded call. */
export interface FakeCall {
  cmd: string;
  args: readonly string[];
  options: RunOptions;
}

/** How a rule selects calls: argv prefix (`["dmsetup", "remove"]`), a regexp on the space-joined argv, or a predicate. */
export type FakeMatcher = readonly string[] | RegExp | ((call: FakeCall) => boolean);

/** A scripted answer: a (partial) result, or a function computing one. Missing fields default to code 0 and empty output. */
export type FakeResponse =
  | Partial<RunResult>
  | ((call: FakeCall) => Partial<RunResult> | Promise<Partial<RunResult>>);

interface Rule {
  matcher: FakeMatcher;
  response: FakeResponse;
  /** Remaining uses; Infinity for a standing rule. */
  times: number;
}

function matches(matcher: FakeMatcher, call: FakeCall): boolean {
  const argv = [call.cmd, ...call.args];
  if (typeof matcher === "function") return matcher(call);
  if (matcher instanceof RegExp) return matcher.test(argv.join(" "));
  return matcher.every((word, i) => argv[i] === word);
}

/** Scripted command runner; see the module doc. */
export class FakeRunner implements CommandRunner {
  /** Every call, in order. */
  readonly calls: FakeCall[] = [];
  readonly #rules: Rule[] = [];

  /** Number of calls answered (every call counts as a spawn). */
  get spawns(): number {
    return this.calls.length;
  }

  /**
   * Adds a rule answering matching calls `times` times (default: always). Rules are tried in
   * the order they were added; exhausted rules are skipped.
   */
  on(matcher: FakeMatcher, response: FakeResponse, times = Infinity): this {
    this.#rules.push({ matcher, response, times });
    return this;
  }

  /** Shorthand: the next matching call (once) fails with `code` and `stderr`. */
  failOnce(matcher: FakeMatcher, stderr: string, code = 1): this {
    return this.on(matcher, { code, stderr }, 1);
  }

  /** argv (program first) of every call. */
  argvs(): string[][] {
    return this.calls.map((c) => [c.cmd, ...c.args]);
  }

  /** Answers a call from the first live matching rule. */
  async run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const call: FakeCall = { cmd, args: [...args], options };
    this.calls.push(call);
    const rule = this.#rules.find((r) => r.times > 0 && matches(r.matcher, call));
    if (!rule) {
      throw new Error(`FakeRunner: unexpected command ${JSON.stringify([cmd, ...args])}`);
    }
    rule.times--;
    const partial = typeof rule.response === "function" ? await rule.response(call) : rule.response;
    return { code: partial.code ?? 0, stdout: partial.stdout ?? "", stderr: partial.stderr ?? "" };
  }
}
