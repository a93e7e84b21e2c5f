/**
 * Structured logging: one line per event on stderr with time, level, message and fields, in one
 * of two formats (containerd offers the same two, with the same names):
 *
 * - `logfmt`: `time=... level=info msg="..." key=value ...`;
 * - `json`: one JSON object per line, `{"time":"...","level":"info","msg":"...","key":value}`.
 *
 * Invariants: both formats carry the same fields, in the same order (time, level, msg, then the
 * fields); a field whose value is `undefined` is left out of both; an `Error` is written as its
 * message; a line never contains a newline (logfmt quotes, JSON escapes). In JSON, a field that
 * would overwrite `time`, `level` or `msg` is written as `fields.<name>` (as containerd's logrus
 * does), so a line is always one object with unique keys.
 *
 * @module
 */

/** Log levels, most verbose first. */
export const LEVELS = ["trace", "debug", "info", "warn", "error"] as const;
/** A log level. */
export type Level = typeof LEVELS[number];

/** Log line formats. */
export const LOG_FORMATS = ["logfmt", "json"] as const;
/** A log line format. */
export type LogFormat = typeof LOG_FORMATS[number];

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
  /** Line format (default `logfmt`). */
  format?: LogFormat;
  /** Where lines go; default stderr. */
  write?: (line: string) => void;
  fields?: Fields;
}

function formatValue(value: unknown): string {
  value = jsonValue(value);
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

/** The names JSON lines keep for themselves; a field of that name becomes `fields.<name>`. */
const RESERVED = new Set(["time", "level", "msg"]);

/** `value` as it goes into a JSON line: errors as their message, anything unserialisable as text. */
function jsonValue(value: unknown): unknown {
  if (typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") return Number.isFinite(value) ? value : String(value);
  if (value instanceof Error) return value.message;
  if (typeof value === "bigint") return value.toString();
  try {
    return JSON.stringify(value) === undefined ? String(value) : value;
  } catch {
    return String(value); // cyclic, or a toJSON that throws
  }
}

/** Formats one JSON log line: one object, no newline (exported for tests). */
export function formatJsonLine(
  level: Level,
  msg: string,
  fields: Fields,
  now = new Date(),
): string {
  const line: Record<string, unknown> = { time: now.toISOString(), level, msg };
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    let key = RESERVED.has(k) ? `fields.${k}` : k;
    while (Object.hasOwn(line, key)) key = `fields.${key}`;
    line[key] = jsonValue(v);
  }
  return JSON.stringify(line);
}

/** True when `value` names a level. */
export function isLevel(value: string): value is Level {
  return (LEVELS as readonly string[]).includes(value);
}

/**
 * Writes lines to stderr. `trace` and `debug` lines are batched and written once per
 * macrotask, so a server's per-call debug lines never go out before the answer they describe;
 * `info` and above are written at once, together with anything still batched. Batched lines
 * are also written when the process unloads or an error goes uncaught.
 */
function stderrSink(): (line: string, urgent: boolean) => void {
  const encoder = new TextEncoder();
  let pending: string[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (pending.length === 0) return;
    const bytes = encoder.encode(pending.join(""));
    pending = [];
    try {
      for (let offset = 0; offset < bytes.length;) {
        offset += Deno.stderr.writeSync(bytes.subarray(offset));
      }
    } catch {
      // stderr is gone: nowhere left to report it
    }
  };
  globalThis.addEventListener("unload", flush);
  globalThis.addEventListener("error", flush);
  globalThis.addEventListener("unhandledrejection", flush);
  return (line, urgent) => {
    pending.push(line + "\n");
    if (urgent) flush();
    else timer ??= setTimeout(flush, 0);
  };
}

const INFO = LEVELS.indexOf("info");

/** True when `value` names a log format. */
export function isLogFormat(value: string): value is LogFormat {
  return (LOG_FORMATS as readonly string[]).includes(value);
}

type Formatter = (level: Level, msg: string, fields: Fields) => string;

/** Creates a logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const write = options.write;
  const format: Formatter = (options.format ?? "logfmt") === "json"
    ? (l, m, f) => formatJsonLine(l, m, f)
    : (l, m, f) => formatLine(l, m, f);
  return makeLogger(
    options.level ?? "info",
    write ? (line) => write(line) : stderrSink(),
    options.fields ?? {},
    format,
  );
}

function makeLogger(
  level: Level,
  sink: (line: string, urgent: boolean) => void,
  base: Fields,
  format: Formatter,
): Logger {
  const min = LEVELS.indexOf(level);
  const log = (l: Level) => {
    const rank = LEVELS.indexOf(l);
    return (msg: string, fields?: Fields) => {
      if (rank < min) return;
      sink(format(l, msg, { ...base, ...fields }), rank >= INFO);
    };
  };
  return {
    level,
    trace: log("trace"),
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    enabled: (l) => LEVELS.indexOf(l) >= min,
    with: (fields) => makeLogger(level, sink, { ...base, ...fields }, format),
  };
}

/** A logger that writes nothing. */
export function silentLogger(): Logger {
  return createLogger({ level: "error", write: () => {} });
}
