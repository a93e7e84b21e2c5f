/**
 * `testing/memory_server.ts` (the real `serve` path with the in-memory double) in a child
 * process, for tests that need a whole server process: its exit on SIGTERM, its memory as the
 * kernel sees it (`/proc/<pid>/status`), its log.
 *
 * ```ts
 * await using server = await spawnMemoryServer(`${dir}/s.sock`, ["--items", "0"]);
 * console.log(await server.rssBytes());
 * const { code, ms } = await server.signal("SIGTERM");
 * ```
 *
 * @module
 */

import { poll } from "./poll.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** A running memory server process. */
export interface MemoryServerProcess extends AsyncDisposable {
  /** The socket it serves. */
  readonly socketPath: string;
  /** Its process id. */
  readonly pid: number;
  /** Its stderr (the log) so far. */
  log(): string;
  /** Its resident set size now (VmRSS), in bytes. */
  rssBytes(): Promise<number>;
  /** Whether it has exited. */
  exited(): boolean;
  /** Sends `signal` and waits for the exit: its code and the time it took, in ms. */
  signal(signal: Deno.Signal): Promise<{ code: number; ms: number }>;
}

/** Resident set size of process `pid` (VmRSS of `/proc/<pid>/status`), in bytes. */
export async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`Cannot read the RSS of process ${pid}: no VmRSS line`);
  return Number(m[1]) * 1024;
}

/**
 * Starts `testing/memory_server.ts --address socketPath ...args` and waits until it prints
 * `listening <socket>`. Disposing kills it (SIGKILL) if it still runs.
 */
export async function spawnMemoryServer(
  socketPath: string,
  args: string[] = [],
): Promise<MemoryServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", "testing/memory_server.ts", "--address", socketPath, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  let log = "";
  const errDone = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) log += text;
  })();
  let out = "";
  const outDone = (async () => {
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) out += text;
  })();
  const kill = async () => {
    if (!exited) {
      try {
        child.kill("SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
    await status;
    await errDone;
    await outDone;
  };
  // "listening" is printed once the socket accepts calls
  try {
    await poll(() => out.includes(`listening ${socketPath}`) || exited, "the memory server", {
      timeoutMs: 30_000,
      detail: () => log,
    });
    if (exited) throw new Error(`Cannot start the memory server: it exited\n${log}`);
  } catch (err) {
    await kill();
    throw err;
  }
  return {
    socketPath,
    pid: child.pid,
    log: () => log,
    rssBytes: () => rssBytes(child.pid),
    exited: () => exited,
    async signal(signal) {
      const t0 = performance.now();
      child.kill(signal);
      const { code } = await status;
      return { code, ms: performance.now() - t0 };
    },
    [Symbol.asyncDispose]: kill,
  };
}
