/**
 * A long-running child process of the end-to-end tests (containerd, our snapshotter server):
 * started with its stdout and stderr appended to a log file, awaited until its unix socket
 * accepts connections, and stopped with a signal that turns into SIGKILL when ignored.
 *
 * Invariants: the log file is closed exactly once, after the process has exited and all its
 * output has been written; `stop` resolves only once the process is gone.
 *
 * @module
 */
import { poll, timedOut } from "../../testing/poll.ts";

/** Options for {@linkcode spawnDaemon}. */
export interface DaemonOptions {
  args: string[];
  /** File the process's stdout and stderr are appended to (created if missing). */
  logPath: string;
  cwd?: string;
  env?: Record<string, string>;
}

/** A running (or exited) daemon. */
export interface Daemon {
  readonly child: Deno.ChildProcess;
  /** Its exit status, once it has exited and its output is in the log. */
  readonly done: Promise<Deno.CommandStatus>;
  /** Its exit status if it has exited, else undefined. */
  readonly exited: Deno.CommandStatus | undefined;
  /**
   * Sends `signal` (default SIGTERM), then SIGKILL if it is still running after `graceMs`
   * (default 10 s); resolves once it has exited and its log is closed.
   */
  stop(signal?: Deno.Signal, graceMs?: number): Promise<void>;
}

/** Starts `program` with its output appended to `options.logPath`. */
export async function spawnDaemon(program: string, options: DaemonOptions): Promise<Daemon> {
  const log = await Deno.open(options.logPath, { create: true, append: true });
  const child = new Deno.Command(program, {
    args: options.args,
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) await log.write(chunk);
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited: Deno.CommandStatus | undefined;
  const done = child.status.then(async (status) => {
    await pumps.catch(() => {});
    exited = status;
    return status;
  });
  let closed: Promise<void> | undefined;
  return {
    child,
    done,
    get exited() {
      return exited;
    },
    stop(signal: Deno.Signal = "SIGTERM", graceMs = 10_000) {
      const kill = (s: Deno.Signal) => {
        try {
          child.kill(s);
        } catch {
          // exited already
        }
      };
      kill(signal);
      closed ??= (async () => {
        if (signal !== "SIGKILL") {
          const gone = await poll(() => exited !== undefined, "the daemon to exit", {
            timeoutMs: graceMs,
            intervalMs: 50,
          }).catch(timedOut);
          if (!gone) kill("SIGKILL");
        }
        await done;
        log.close();
      })();
      return closed;
    },
  };
}

async function socketAccepts(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits until `daemon` accepts connections on the unix socket `path`. Resolves with undefined
 * then, or with why not: it exited (with its code) or `timeoutMs` passed.
 */
export async function waitForSocket(
  daemon: Daemon,
  path: string,
  timeoutMs: number,
): Promise<string | undefined> {
  const ready = await poll(
    async () => daemon.exited !== undefined || await socketAccepts(path),
    `a socket at ${path}`,
    { timeoutMs, intervalMs: 50 },
  ).catch(timedOut);
  if (daemon.exited) return `exited with code ${daemon.exited.code}`;
  return ready ? undefined : `no socket after ${timeoutMs} ms`;
}
