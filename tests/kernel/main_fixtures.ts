/**
 * `main.ts` as a process of its own, for kernel and end-to-end tests: one-shot commands
 * ({@linkcode runMain}) and the server ({@linkcode spawnServe}), each started as
 * `deno run -A --no-check main.ts …` from the repository's root.
 *
 * Invariants: {@linkcode spawnServe} resolves only once the server has logged that it serves,
 * and throws with everything it wrote to stderr when it exits or times out first (a server left
 * running then is killed); the server's stderr is collected until it exits, so
 * {@linkcode ServeProcess.log} holds all of it once {@linkcode ServeProcess.stop} has resolved.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { poll, timedOut } from "../../testing/poll.ts";
import type { TestSnapshotter } from "./snapshot_fixtures.ts";

/** The repository's root, where `main.ts` lives. */
export const ROOT: string = fileURLToPath(new URL("../..", import.meta.url));

/** Environment variables added to the inherited ones. */
type Env = Readonly<Record<string, string>>;

/**
 * The V8 flags `deno task compile` gives the shipped binary (read from deno.json's compile
 * task), so that tests and benches run the server with the heap it ships with: memory figures
 * measured under `deno run` without them are not the product's.
 */
export const SHIPPED_V8_FLAGS: string = (() => {
  const config = JSON.parse(Deno.readTextFileSync(join(ROOT, "deno.json")));
  const flags = /--v8-flags=(\S+)/.exec(String(config.tasks?.compile ?? ""))?.[1];
  if (!flags) {
    throw new Error("Cannot read the shipped V8 flags: no --v8-flags in deno.json's compile task");
  }
  return flags;
})();

/** The `deno` arguments that run `main.ts args...` (with {@linkcode SHIPPED_V8_FLAGS}). */
export function mainArgs(...args: string[]): string[] {
  return ["run", "-A", "--no-check", `--v8-flags=${SHIPPED_V8_FLAGS}`, "main.ts", ...args];
}

/** What a one-shot `main.ts` command returned; the output is not trimmed. */
export interface MainResult {
  code: number;
  out: string;
  err: string;
}

/** Runs `main.ts args...` to its end (with `env` added to the environment). */
export async function runMain(args: string[], options: { env?: Env } = {}): Promise<MainResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: mainArgs(...args),
    cwd: ROOT,
    env: options.env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    out: new TextDecoder().decode(out.stdout),
    err: new TextDecoder().decode(out.stderr),
  };
}

/** The settings {@linkcode writeServeConfig} writes (named as in `SnapshotterSettings`). */
export interface ServeConfig {
  poolName: string;
  rootPath: string;
  /** Written as given, e.g. `"32MB"` or a number of bytes. */
  baseImageSize: string | number;
  /** `log_level`; left out of the file when not given. */
  logLevel?: string;
}

/** Writes a `serve` config file with `config`'s keys to `path`. */
export async function writeServeConfig(path: string, config: ServeConfig): Promise<void> {
  const lines = [
    `pool_name = "${config.poolName}"`,
    `root_path = "${config.rootPath}"`,
    `base_image_size = "${config.baseImageSize}"`,
  ];
  if (config.logLevel !== undefined) lines.push(`log_level = "${config.logLevel}"`);
  await Deno.writeTextFile(path, [...lines, ""].join("\n"));
}

/** Options for {@linkcode spawnServe}. */
export interface ServeOptions {
  /** The config file (`--config`). */
  config: string;
  /** The unix socket to serve on (`--address`). */
  socket: string;
  /** Added to the server's environment. */
  env?: Env;
  /** How long the server may take to serve, in ms (default 30 000). */
  timeoutMs?: number;
}

/** How a server stopped by {@linkcode ServeProcess.stop} exited. */
export interface ServeExit extends Deno.CommandStatus {
  /** Time from SIGTERM to the exit, in ms. */
  ms: number;
}

/** A running `main.ts serve`. */
export interface ServeProcess {
  /** Its config file. */
  config: string;
  /** The socket it serves on. */
  socket: string;
  pid: number;
  /** What it has written to stderr so far. */
  log(): string;
  /** Sends SIGTERM; resolves once it has exited and its stderr is read to the end. */
  stop(): Promise<ServeExit>;
}

/** Starts `main.ts serve --config C --address S`; resolves once it logs that it serves. */
export async function spawnServe(options: ServeOptions): Promise<ServeProcess> {
  const { config, socket } = options;
  const child = new Deno.Command(Deno.execPath(), {
    args: mainArgs("serve", "--config", config, "--address", socket),
    cwd: ROOT,
    env: options.env,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const drained = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) log += text;
  })();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const serving = await poll(
    () => exited || log.includes('msg="serving"'),
    "serve to log that it serves",
    { timeoutMs: options.timeoutMs ?? 30_000, intervalMs: 50 },
  ).catch(timedOut);
  if (!serving || exited) {
    if (!exited) child.kill("SIGKILL");
    await drained;
    throw new Error(`serve did not start: ${log}`);
  }
  return {
    config,
    socket,
    pid: child.pid,
    log: () => log,
    async stop() {
      const t0 = performance.now();
      child.kill("SIGTERM");
      const exit = await status;
      const ms = performance.now() - t0;
      await drained;
      return { ...exit, ms };
    },
  };
}

/**
 * Serves `t`'s pool and root (base images of 32MB) with `main.ts serve`: config file
 * `<pool dir>/config.toml`, socket `<pool dir>/srv/s.sock`. Close `t.snapshotter` first: the
 * served process owns the pool.
 */
export async function serveTestSnapshotter(
  t: Pick<TestSnapshotter, "pool" | "settings">,
  options: { logLevel?: string; env?: Env } = {},
): Promise<ServeProcess> {
  const config = join(t.pool.dir, "config.toml");
  await writeServeConfig(config, {
    poolName: t.pool.name,
    rootPath: t.settings.rootPath,
    baseImageSize: "32MB",
    logLevel: options.logLevel,
  });
  return await spawnServe({ config, socket: join(t.pool.dir, "srv", "s.sock"), env: options.env });
}
