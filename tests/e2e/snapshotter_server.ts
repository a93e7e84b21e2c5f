/**
 * Starts this project's snapshotter server (`deno run -A main.ts serve --config FILE
 * --address SOCKET`) inside the test kernel, for containerd to use as a proxy plugin.
 *
 * @module
 */
import { stringify } from "smol-toml";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { mainArgs } from "../kernel/main_fixtures.ts";
import { type Daemon, spawnDaemon, waitForSocket } from "./daemon.ts";

/** Repository root (the guest sees the same path as the host). */
export const REPO_ROOT: string = fileURLToPath(new URL("../..", import.meta.url)).replace(
  /\/$/,
  "",
);

/** Settings written to the server's config file (upstream devmapper key names). */
export interface ServerPoolConfig {
  /** dm name of an existing thin-pool. */
  poolName: string;
  /** Metadata directory. */
  rootPath: string;
  /** Virtual size of every thin device, e.g. `"64MB"`. */
  baseImageSize: string;
  fsType?: "ext4" | "xfs";
  asyncRemove?: boolean;
  discardBlocks?: boolean;
  /** `min_free_space`, written only when given. */
  minFreeSpace?: string;
}

/** Options for {@linkcode startSnapshotterServer}. */
export interface SnapshotterServerOptions extends ServerPoolConfig {
  /** Directory for the config file, socket and log (created if missing). */
  dir: string;
  /** How long to wait for the socket (default 30 s: the first run compiles the module graph). */
  startTimeoutMs?: number;
  /** Extra environment for the server. */
  env?: Record<string, string>;
  /**
   * Replaces the server's argv (default: `deno` + {@linkcode serveArgs}); gets the config
   * path and socket. For running the harness against a stand-in server.
   */
  command?: (configPath: string, socket: string) => string[];
}

/** A running snapshotter server. */
export interface SnapshotterServer extends AsyncDisposable {
  /** Unix socket to give containerd (`[proxy_plugins.<name>] address`). */
  socket: string;
  configPath: string;
  logPath: string;
  /** Process id of the server (for RSS readings). */
  readonly pid: number | undefined;
  readonly running: boolean;
  start(): Promise<void>;
  /** SIGTERM, then SIGKILL after 10 s. */
  stop(): Promise<void>;
  /** SIGKILL at once (a crash); resolves when the process is gone. */
  kill(): Promise<void>;
  restart(): Promise<void>;
  logTail(bytes?: number): Promise<string>;
  /** Resident set size in KiB from /proc/<pid>/status. */
  rssKib(): Promise<number>;
}

/** Raised when the server cannot be started. */
export class SnapshotterServerError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SnapshotterServerError";
  }
}

/**
 * The server's config file text: TOML with the built-in devmapper plugin's key names
 * (spec §3.1). The one place to change if the server's config format differs.
 */
export function serverConfig(config: ServerPoolConfig): string {
  return stringify({
    pool_name: config.poolName,
    root_path: config.rootPath,
    base_image_size: config.baseImageSize,
    fs_type: config.fsType ?? "ext4",
    async_remove: config.asyncRemove ?? false,
    discard_blocks: config.discardBlocks ?? false,
    ...(config.minFreeSpace === undefined ? {} : { min_free_space: config.minFreeSpace }),
  }) + "\n";
}

/** argv (after the deno binary) that starts the server. */
export function serveArgs(configPath: string, socket: string): string[] {
  return mainArgs("serve", "--config", configPath, "--address", socket);
}

/** Throws a clear error when `main.ts` (the server's entry point) does not exist yet. */
export async function requireServerEntryPoint(): Promise<void> {
  try {
    await Deno.stat(join(REPO_ROOT, "main.ts"));
  } catch (cause) {
    throw new SnapshotterServerError(
      `Cannot start the snapshotter server: ${join(REPO_ROOT, "main.ts")} does not exist yet ` +
        "(the `main.ts serve` command is not written)",
      { cause },
    );
  }
}

/** Writes the config and starts the server; resolves once the socket accepts connections. */
export async function startSnapshotterServer(
  options: SnapshotterServerOptions,
): Promise<SnapshotterServer> {
  if (!options.command) await requireServerEntryPoint();
  const argv = (configPath: string, socket: string) =>
    options.command?.(configPath, socket) ?? [Deno.execPath(), ...serveArgs(configPath, socket)];
  await Deno.mkdir(options.dir, { recursive: true });
  const socket = join(options.dir, "snapshotter.sock");
  const configPath = join(options.dir, "snapshotter.toml");
  const logPath = join(options.dir, "snapshotter.log");
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  await Deno.writeTextFile(configPath, serverConfig(options));
  let daemon: Daemon | undefined;

  async function logTail(bytes = 4000): Promise<string> {
    try {
      return (await Deno.readTextFile(logPath)).slice(-bytes);
    } catch {
      return "(no log)";
    }
  }

  async function stop(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    const running = daemon;
    if (!running) return;
    await running.stop(signal);
    daemon = undefined;
  }

  async function start(): Promise<void> {
    if (daemon) throw new SnapshotterServerError("Cannot start the server: already running");
    await Deno.remove(socket).catch(() => {});
    const [program, ...args] = argv(configPath, socket);
    const started = await spawnDaemon(program, { args, cwd: REPO_ROOT, env: options.env, logPath });
    daemon = started;
    const why = await waitForSocket(started, socket, startTimeoutMs);
    if (why === undefined) return;
    await stop().catch(() => {});
    throw new SnapshotterServerError(
      `Cannot start the snapshotter server (${argv(configPath, socket).join(" ")}): ` +
        `${why}\n${await logTail(3000)}`,
    );
  }

  await start();
  const server: SnapshotterServer = {
    socket,
    configPath,
    logPath,
    get pid() {
      return daemon?.child.pid;
    },
    get running() {
      return daemon !== undefined;
    },
    start,
    stop: () => stop(),
    kill: () => stop("SIGKILL"),
    async restart() {
      await stop();
      await start();
    },
    logTail,
    async rssKib() {
      const pid = daemon?.child.pid;
      if (pid === undefined) throw new SnapshotterServerError("Cannot read RSS: server stopped");
      const status = await Deno.readTextFile(`/proc/${pid}/status`);
      const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
      if (!m) throw new SnapshotterServerError(`Cannot read RSS of pid ${pid}: no VmRSS line`);
      return Number(m[1]);
    },
    async [Symbol.asyncDispose]() {
      await stop();
    },
  };
  return server;
}
