/**
 * Our snapshotter server (`main.ts serve`, as the end-to-end tests start it) for the scale
 * benchmark, started and stopped again and again with each start timed: from just before the
 * spawn until the socket accepts a connection and until a Stat is answered (watched from
 * outside), and, from the server's own debug log, until its `starting`, `reconciled metadata
 * with the pool` and `serving` lines, with the reconciliation's duration (its `snapshot
 * operation` line, op=reconcile).
 *
 * Invariants: the server's stderr (its log) goes straight to a file, never through a pipe to
 * this process, so logging wakes nothing here while a call is timed; the log only grows, and
 * each start reads only the lines written since its spawn. `pid` is the server's own process
 * (`sh -c 'exec deno …'`).
 *
 * @module
 */
import { join } from "node:path";
import { connectSnapshots, isServiceError } from "../testing/snapshots_client.ts";
import { poll } from "../testing/poll.ts";
import { type Daemon, spawnDaemon } from "../tests/e2e/daemon.ts";
import {
  REPO_ROOT,
  serveArgs,
  serverConfig,
  type ServerPoolConfig,
} from "../tests/e2e/snapshotter_server.ts";
import { entryTime, type LogEntry, parseLog } from "./server_log.ts";

/** How long one start took, in ms from just before the spawn (NaN: not seen). */
export interface StartTiming {
  /** Until the socket accepted a connection (checked every 10 ms). */
  socketMs: number;
  /** Until a Stat sent on a new connection was answered. */
  statMs: number;
  /** Until the `starting` log line: the Deno runtime and the module graph. */
  startingMs: number;
  /** Until the `serving` log line. */
  servingMs: number;
  /** The reconciliation's own duration (the op=reconcile `snapshot operation` line). */
  reconcileMs: number;
  /**
   * From `starting` to the reconciliation's start: configuration, pool check, the metadata
   * database's open (with its `PRAGMA quick_check`), the backend.
   */
  openMs: number;
}

/** Options for {@linkcode createScaleServer}. */
export interface ScaleServerOptions extends ServerPoolConfig {
  /** Directory for the config file, socket and logs (created if missing). */
  dir: string;
  /** `--log-level` (default debug: the reconciliation's duration is logged at debug). */
  logLevel?: string;
}

/** A server the benchmark starts and stops. */
export interface ScaleServer extends AsyncDisposable {
  socket: string;
  /** The server's log (its stderr). */
  logPath: string;
  /** Process id while it runs. */
  readonly pid: number;
  /** Spawns the server and resolves once a Stat is answered, with the timings. */
  start(): Promise<StartTiming>;
  /** SIGTERM (SIGKILL after 10 s); resolves once it is gone. */
  stop(): Promise<void>;
}

/** Raised when the server cannot be started. */
export class ScaleServerError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ScaleServerError";
  }
}

async function socketAccepts(path: string): Promise<boolean> {
  try {
    (await Deno.connect({ transport: "unix", path })).close();
    return true;
  } catch {
    return false;
  }
}

/** Resolves once a Stat sent on a new connection is answered (NotFound is an answer). */
async function firstStat(socket: string): Promise<void> {
  const client = connectSnapshots(socket);
  try {
    await client.stat("scale-bench-startup-probe").catch((err) => {
      if (!isServiceError(err) || err.code !== 5) throw err;
    });
  } finally {
    client.close();
  }
}

/** Reads the start-up timings from the log lines of one start, `spawnedAt` being epoch ms. */
export function startTimingFromLog(
  entries: readonly LogEntry[],
  spawnedAt: number,
): Pick<StartTiming, "startingMs" | "servingMs" | "reconcileMs" | "openMs"> {
  const at = (e: LogEntry | undefined) => e ? entryTime(e) - spawnedAt : NaN;
  const starting = entries.find((e) => e.msg === "starting");
  const serving = entries.find((e) => e.msg === "serving");
  const reconciled = entries.find((e) => e.msg === "reconciled metadata with the pool");
  const op = entries.find((e) => e.msg === "snapshot operation" && e.op === "reconcile");
  const reconcileMs = op ? Number(op.ms) : NaN;
  return {
    startingMs: at(starting),
    servingMs: at(serving),
    reconcileMs,
    openMs: at(reconciled) - reconcileMs - at(starting),
  };
}

/** Writes the config; {@linkcode ScaleServer.start} starts the server. */
export async function createScaleServer(options: ScaleServerOptions): Promise<ScaleServer> {
  await Deno.mkdir(options.dir, { recursive: true });
  const socket = join(options.dir, "snapshotter.sock");
  const configPath = join(options.dir, "snapshotter.toml");
  const logPath = join(options.dir, "server-stderr.log");
  const stdoutPath = join(options.dir, "server-stdout.log");
  await Deno.writeTextFile(configPath, serverConfig(options));
  let daemon: Daemon | undefined;

  const logSize = async () => (await Deno.stat(logPath).catch(() => ({ size: 0 }))).size;
  const logSince = async (offset: number) =>
    parseLog(new TextDecoder().decode((await Deno.readFile(logPath)).subarray(offset)));

  async function stop(): Promise<void> {
    const running = daemon;
    if (!running) return;
    daemon = undefined;
    await running.stop();
  }

  async function start(): Promise<StartTiming> {
    if (daemon) throw new ScaleServerError("Cannot start the server: it is running");
    await Deno.remove(socket).catch(() => {});
    const offset = await logSize();
    const spawnedAt = Date.now();
    const t0 = performance.now();
    const started = await spawnDaemon("sh", {
      args: [
        "-c",
        `exec "$0" "$@" 2>>"${logPath}"`,
        Deno.execPath(),
        ...serveArgs(configPath, socket),
        "--log-level",
        options.logLevel ?? "debug",
      ],
      cwd: REPO_ROOT,
      logPath: stdoutPath,
    });
    daemon = started;
    const why = async () => `${await Deno.readTextFile(logPath).catch(() => "")}`.slice(-3000);
    await poll(
      async () => started.exited !== undefined || await socketAccepts(socket),
      `the server's socket ${socket}`,
      { timeoutMs: 300_000, detail: why },
    );
    if (started.exited) {
      daemon = undefined;
      throw new ScaleServerError(
        `Cannot start the server: it exited with code ${started.exited.code}: ${await why()}`,
      );
    }
    const socketMs = performance.now() - t0;
    await firstStat(socket);
    const statMs = performance.now() - t0;
    // `serving` is written before the socket accepts; the debug lines before it are batched
    // per macrotask and are in the file by the time a call was answered.
    const entries = await poll(async () => {
      const lines = await logSince(offset);
      return lines.some((e) => e.msg === "serving") ? lines : undefined;
    }, "the server's `serving` log line");
    return { socketMs, statMs, ...startTimingFromLog(entries, spawnedAt) };
  }

  return {
    socket,
    logPath,
    get pid() {
      if (!daemon) throw new ScaleServerError("Cannot read the server's pid: it is stopped");
      return daemon.child.pid;
    },
    start,
    stop,
    async [Symbol.asyncDispose]() {
      await stop();
    },
  };
}
