/**
 * Reads our server's debug log (one `key=value` line per event, see src/log.ts) to attribute
 * the server's work to the benchmark's calls by time: every measured call records the wall
 * clock (ms) before and after it, and a log line whose `time` falls in a call's window belongs
 * to that call. Nothing is sent to the server between calls, so the attribution cannot warm
 * it up or otherwise change what is measured.
 *
 * The windows are sequential, so a line can only be ambiguous when one call ends and the next
 * starts in the same millisecond; it then goes to the earlier call, because no call can reach
 * our server through containerd within the millisecond it started (a bare round trip to
 * containerd takes ≥ 2 ms in the test kernel).
 *
 * Lines used: `msg="rpc" method=… duration_ms=…` (one per RPC the server answered, timed in
 * its handler), `msg="snapshot operation" op=… spawns=… ms=…` (one per snapshotter operation,
 * with the processes it spawned), and at trace level `msg="spawn" cmd=… args=[…] ms=…` (one
 * per process spawned, with its wall time).
 *
 * @module
 */

/** One parsed log line: field name → value. */
export type LogEntry = Record<string, string>;

/** A measured call's wall-clock window (ms since the epoch, inclusive). */
export interface Window {
  start: number;
  end: number;
}

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

/** The line's `time` in ms since the epoch (NaN without one). */
export function entryTime(e: LogEntry): number {
  return e.time ? Date.parse(e.time) : NaN;
}

/**
 * Assigns each line to the earliest window containing its time. `windows` must be sorted by
 * start and not overlap (they may touch); lines must be in log order. Returns the lines per
 * window (same indexes) and the lines in no window.
 */
export function attributeByTime(
  entries: readonly LogEntry[],
  windows: readonly Window[],
): { perWindow: LogEntry[][]; outside: LogEntry[] } {
  const perWindow: LogEntry[][] = windows.map(() => []);
  const outside: LogEntry[] = [];
  let w = 0;
  for (const e of entries) {
    const t = entryTime(e);
    if (Number.isNaN(t)) continue;
    while (w < windows.length && windows[w].end < t) w++;
    if (w < windows.length && windows[w].start <= t) perWindow[w].push(e);
    else outside.push(e);
  }
  return { perWindow, outside };
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

/** Sums what the server did in a set of lines. */
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
