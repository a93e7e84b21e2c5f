/**
 * Command-line errors and exit codes, and flag parsing that turns every parse problem into a
 * one-line {@linkcode UsageError}.
 *
 * @module
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

/** Exit codes. */
export const EXIT_OK = 0;
/** A command failed. */
export const EXIT_FAILURE = 1;
/** The command line was wrong (unknown command or flag, bad value). */
export const EXIT_USAGE = 2;
/** `status`: the pool cannot take new snapshots (unhealthy or below `min_free_space`). */
export const EXIT_UNHEALTHY = 3;

/** The command line is wrong; exit code 2, one-line message. */
export class UsageError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UsageError";
  }
}

/** Parsed flags and positionals. */
export interface ParsedFlags {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** Options of {@linkcode parseFlags}. */
export interface ParseFlagsOptions {
  /** Command name for messages, e.g. `pool create`. */
  command: string;
  /** Flag definitions for node:util `parseArgs`. */
  options: ParseArgsOptionsConfig;
  /** Largest number of positionals accepted (default 0). */
  maxPositionals?: number;
}

/** Parses `args` strictly; any problem becomes a one-line UsageError naming the command. */
export function parseFlags(args: string[], o: ParseFlagsOptions): ParsedFlags {
  let parsed;
  try {
    parsed = parseArgs(
      {
        args,
        options: { ...o.options, help: { type: "boolean", short: "h" } },
        strict: true,
        allowPositionals: true,
        allowNegative: true,
      } as Parameters<typeof parseArgs>[0],
    );
  } catch (err) {
    const first = (err as Error).message.split(". ")[0].replace(/\.$/, "");
    throw new UsageError(`${o.command}: ${first[0].toLowerCase()}${first.slice(1)}`, {
      cause: err,
    });
  }
  const values = { ...parsed.values } as Record<string, string | boolean | undefined>;
  for (const [name, def] of Object.entries(o.options)) {
    if (def.type === "string" && typeof values[name] === "boolean") {
      throw new UsageError(`${o.command}: option '--${name}' needs a value, not --no-${name}`);
    }
  }
  const positionals = parsed.positionals ?? [];
  const max = o.maxPositionals ?? 0;
  if (values.help !== true && positionals.length > max) {
    throw new UsageError(`${o.command}: unexpected argument '${positionals[max]}'`);
  }
  return { values, positionals };
}
