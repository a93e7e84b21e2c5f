/**
 * Reads our server's debug log (one `key=value` line per event, see src/log.ts) to attribute
 * the server's work to the benchmark's calls. Before every measured call the benchmark sends
 * the server a Stat of a marker key (`bench-mark-<n>`) directly; every line between marker
 * `n` and the next marker belongs to call `n`.
 *
 * Lines used: `msg="rpc" method=… duration_ms=…` (one per RPC the server answered, timed in
 * its handler) and `msg="snapshot operation" op=… spawns=… ms=…` (one per snapshotter
 * operation, with the processes it spawned); at trace level also `msg="spawn" cmd=… args=[…]
 * ms=…` (one per process spawned, with its wall time).
 *
 * @module
 */

/** Prefix of marker keys. */
export const MARKER_PREFIX = "bench-mark-";

/** One parsed log line: field name → value. */
export type LogEntry = Record<string, string>;

/** What the server did for one benchmark call. */
export interface ServerWork {
  /** RPCs the server answered (containerd's backend calls). */
  rpcs: number;
  /** Sum of the handlers' durations (ms). */
  handlerMs: number;
  /** Sum of the snapshotter operations' durations (ms). */
  opMs: number;
  /** Processes the snapshotter spawned. */
  spawns: number;
  /** RPC methods seen, e.g. `Stat×40`. */
  methods: string;
  /** Spawns traced (only at log level trace), their summed wall time and their commands. */
  tracedSpawns: number;
  spawnMs: number;
  commands: string;
}

/** Parses one `key=value …` line (values bare or JSON-quoted); null for other lines. */
export function parseLogLine(line: string): LogEntry | null {
  const entry: LogEntry = {};
  const re = /([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S+)/g;
  for (const m of line.matchAll(re)) {
    entry[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
  }
  return entry.msg === undefined ? null : entry;
}

/** Parses a log text into its structured lines. */
export function parseLog(text: string): LogEntry[] {
  return text.split("\n").map(parseLogLine).filter((e): e is LogEntry => e !== null);
}

function isMarker(e: LogEntry): boolean {
  return (e.key ?? "").startsWith(MARKER_PREFIX);
}

/** Handler durations (ms) of the marker Stats themselves. */
export function markerHandlerMs(entries: readonly LogEntry[]): number[] {
  return entries.filter((e) => e.msg === "rpc" && isMarker(e)).map((e) => Number(e.duration_ms));
}

/** Lines after each marker (marker number → lines), up to the next marker. */
export function segmentByMarkers(entries: readonly LogEntry[]): Map<number, LogEntry[]> {
  const segments = new Map<number, LogEntry[]>();
  let current: LogEntry[] | undefined;
  for (const e of entries) {
    if (isMarker(e)) {
      const n = Number(e.key.slice(MARKER_PREFIX.length));
      current = segments.get(n) ?? [];
      segments.set(n, current);
    } else if (current) {
      current.push(e);
    }
  }
  return segments;
}

/** The subcommand of a traced dmsetup spawn's args (`["message","pool","0","…"]` → `message`). */
function commandWord(args: string | undefined): string {
  if (!args) return "";
  try {
    const list = JSON.parse(args);
    return Array.isArray(list) ? String(list.find((a) => !String(a).startsWith("-")) ?? "") : "";
  } catch {
    return "";
  }
}

/** Sums what the server did in one segment. */
export function summarize(entries: readonly LogEntry[]): ServerWork {
  const work: ServerWork = {
    rpcs: 0,
    handlerMs: 0,
    opMs: 0,
    spawns: 0,
    methods: "",
    tracedSpawns: 0,
    spawnMs: 0,
    commands: "",
  };
  const methods = new Map<string, number>();
  const commands = new Map<string, number>();
  for (const e of entries) {
    if (e.msg === "rpc") {
      work.rpcs++;
      work.handlerMs += Number(e.duration_ms ?? 0);
      methods.set(e.method, (methods.get(e.method) ?? 0) + 1);
    } else if (e.msg === "snapshot operation") {
      work.opMs += Number(e.ms ?? 0);
      work.spawns += Number(e.spawns ?? 0);
    } else if (e.msg === "spawn") {
      work.tracedSpawns++;
      work.spawnMs += Number(e.ms ?? 0);
      const command = e.cmd === "dmsetup" ? `${e.cmd} ${commandWord(e.args)}`.trim() : e.cmd;
      commands.set(command, (commands.get(command) ?? 0) + 1);
    }
  }
  const tally = (m: Map<string, number>) =>
    [...m].map(([k, n]) => n === 1 ? k : `${k}×${n}`).join(",");
  work.methods = tally(methods);
  work.commands = tally(commands);
  return work;
}
