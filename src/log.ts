/**
 * Structured logging: one line per event on stderr with time, level, message and
 * `key=value` fields.
 *
 * @module
 */

/** Log levels, most verbose first. */
export const LEVELS = ["trace", "debug", "info", "warn", "error"] as const;
/** A log level. */
export type Level = typeof LEVELS[number];

/** Fields attached to a log line. */
export type Fields = Record<string, unknown>;

/** A logger bound to a minimum level and a set of fields. */
export interface Logger {
  /** The minimum level written. */
  readonly level: Level;
  trace(msg: string, fields?: Fields): void;
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** True when `level` would be written. */
  enabled(level: Level): boolean;
  /** A logger that adds `fields` to every line. */
  with(fields: Fields): Logger;
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  level?: Level;
  /** Where lines go; default stderr. */
  write?: (line: string) => void;
  fields?: Fields;
}

function formatValue(value: unknown): string {
  if (value instanceof Error) value = value.message;
  const text = typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text);
}

/** Formats one log line (exported for tests). */
export function formatLine(level: Level, msg: string, fields: Fields, now = new Date()): string {
  let line = `time=${now.toISOString()} level=${level} msg=${JSON.stringify(msg)}`;
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    line += ` ${k}=${formatValue(v)}`;
  }
  return line;
}

/** True when `value` names a level. */
export function isLevel(value: string): value is Level {
  return (LEVELS as readonly string[]).includes(value);
}

/** Creates a logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? "info";
  const min = LEVELS.indexOf(level);
  const encoder = new TextEncoder();
  const write = options.write ??
    ((line: string) => {
      Deno.stderr.writeSync(encoder.encode(line + "\n"));
    });
  const base = options.fields ?? {};
  const log = (l: Level) => (msg: string, fields?: Fields) => {
    if (LEVELS.indexOf(l) < min) return;
    write(formatLine(l, msg, { ...base, ...fields }));
  };
  return {
    level,
    trace: log("trace"),
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    enabled: (l) => LEVELS.indexOf(l) >= min,
    with: (fields) => createLogger({ level, write, fields: { ...base, ...fields } }),
  };
}

/** A logger that writes nothing. */
export function silentLogger(): Logger {
  return createLogger({ level: "error", write: () => {} });
}
