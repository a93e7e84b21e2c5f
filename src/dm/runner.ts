/**
 * Spawning external commands (`dmsetup`, `losetup`, `mkfs.*`, `mount`, ...): the one place
 * that starts processes, so that every spawn is counted and traced.
 *
 * Commands never go through a shell: each argument is one argv element. Every command runs
 * with `LC_ALL=C` so error texts can be parsed, and with `DM_DISABLE_UDEV=1` when udev is not
 * running (no `/run/udev/control`), which makes `dmsetup` create `/dev/mapper` nodes itself
 * instead of waiting for a udev that never answers.
 *
 * @module
 */
import type { Logger } from "../util/log.ts";
import { silentLogger } from "../util/log.ts";

/** Options for one {@linkcode CommandRunner.run} call. */
export interface RunOptions {
  /** Written to the command's stdin, which is then closed. Without it stdin is `/dev/null`. */
  stdin?: string | Uint8Array;
  /** Kill the command (SIGTERM) after this many milliseconds and throw {@linkcode CommandTimeoutError}. */
  timeoutMs?: number;
}

/** What a finished command produced. Output is decoded as UTF-8 and not trimmed. */
export interface RunResult {
  /** Exit code; 127 when the program could not be found. */
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs commands without a shell. */
export interface CommandRunner {
  /** Runs `cmd` with `args` (one argv element each) and waits for it to exit. Never throws on a non-zero exit. */
  run(cmd: string, args: readonly string[], options?: RunOptions): Promise<RunResult>;
  /** Number of processes started so far. */
  readonly spawns: number;
}

/** A command did not finish within its time limit and was killed. */
export class CommandTimeoutError extends Error {
  /** argv of the command, program first. */
  readonly command: readonly string[];
  /** Creates the error. */
  constructor(command: readonly string[], timeoutMs: number, options?: ErrorOptions) {
    super(`${formatCommand(command)} timed out after ${timeoutMs} ms`, options);
    this.name = "CommandTimeoutError";
    this.command = command;
  }
}

/** Formats argv for messages: elements with spaces, quotes or nothing in them are double-quoted. */
export function formatCommand(argv: readonly string[]): string {
  return argv.map((a) => (a === "" || /[\s"'\\$`]/.test(a) ? JSON.stringify(a) : a)).join(" ");
}

/** True when udev is running on this host (its control socket exists). */
export function udevRunning(controlPath = "/run/udev/control"): boolean {
  try {
    Deno.statSync(controlPath);
    return true;
  } catch {
    return false;
  }
}

/** Options for {@linkcode DenoCommandRunner}. */
export interface DenoCommandRunnerOptions {
  /** Trace log of every spawn (program, args, exit code, duration). */
  logger?: Logger;
  /** Extra environment for every command (added to the inherited one). */
  env?: Record<string, string>;
  /** Override udev detection; default: `/run/udev/control` exists. */
  udev?: boolean;
}

/** {@linkcode CommandRunner} on `Deno.Command`. */
export class DenoCommandRunner implements CommandRunner {
  #spawns = 0;
  readonly #logger: Logger;
  readonly #env: Record<string, string>;

  /** Creates a runner; udev presence is checked once, here. */
  constructor(options: DenoCommandRunnerOptions = {}) {
    this.#logger = options.logger ?? silentLogger();
    const udev = options.udev ?? udevRunning();
    this.#env = {
      ...(udev ? {} : { DM_DISABLE_UDEV: "1" }),
      ...options.env,
      LC_ALL: "C",
    };
  }

  /** Number of processes started so far. */
  get spawns(): number {
    return this.#spawns;
  }

  /** The environment added to every command (for diagnostics and tests). */
  get env(): Readonly<Record<string, string>> {
    return this.#env;
  }

  /** Runs a command; see {@linkcode CommandRunner.run}. */
  async run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const started = performance.now();
    const hasStdin = options.stdin !== undefined;
    const controller = options.timeoutMs !== undefined ? new AbortController() : undefined;
    let timedOut = false;
    const timer = controller
      ? setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, options.timeoutMs)
      : undefined;
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(cmd, {
        args: [...args],
        env: this.#env,
        stdin: hasStdin ? "piped" : "null",
        stdout: "piped",
        stderr: "piped",
        signal: controller?.signal,
      }).spawn();
    } catch (err) {
      clearTimeout(timer);
      if (err instanceof Deno.errors.NotFound) {
        this.#logger.trace("spawn failed", { cmd, args, error: "not found" });
        return { code: 127, stdout: "", stderr: `${cmd}: command not found\n` };
      }
      throw err;
    }
    this.#spawns++;
    try {
      if (hasStdin) {
        const data = typeof options.stdin === "string"
          ? new TextEncoder().encode(options.stdin)
          : options.stdin as Uint8Array;
        const writer = child.stdin.getWriter();
        try {
          await writer.write(data);
          await writer.close();
        } catch {
          // the command exited without reading all of its input; its exit code tells
        }
      }
      const out = await child.output();
      const result: RunResult = {
        code: out.code,
        stdout: new TextDecoder().decode(out.stdout),
        stderr: new TextDecoder().decode(out.stderr),
      };
      const ms = Math.round((performance.now() - started) * 10) / 10;
      this.#logger.trace("spawn", { cmd, args, code: result.code, ms });
      if (timedOut) {
        throw new CommandTimeoutError([cmd, ...args], options.timeoutMs ?? 0);
      }
      return result;
    } finally {
      clearTimeout(timer);
    }
  }
}
