/**
 * The command line: `serve` (default), `status`, `pool create|status|destroy`,
 * `config check|default`, `version`. Every command takes `--help`; a wrong command line exits 2
 * with a one-line reason, a failed command exits 1 (`status` also 3: an unhealthy pool).
 *
 * @module
 */
import denoJson from "../../deno.json" with { type: "json" };
import {
  type Config,
  CONFIG_KEYS,
  ConfigError,
  type ConfigKey,
  configValue,
} from "../config/config.ts";
import { defaultConfigToml } from "../config/default_toml.ts";
import { errorMessage } from "../util/errors.ts";
import { createLogger, type Logger } from "../util/log.ts";
import type { RunningServer } from "../server/server.ts";
import { formatSize } from "../util/size.ts";
import { formatFreeSpace } from "../util/free_space.ts";
import { configFlagHelp, configFlagOptions, loadConfigFromFlags } from "./config_flags.ts";
import { runPoolCommand } from "./pool_cmd.ts";
import { serve, type SnapshotterFactory } from "./serve.ts";
import { runStatus, type StatusContext } from "./status.ts";
import { openDevmapperSnapshotter } from "./snapshotter_factory.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, parseFlags, UsageError } from "./usage.ts";

/** Program name in messages. */
export const PROGRAM = "devmapper-snapshotter";
/** Version from deno.json. */
export const VERSION: string = denoJson.version;

/** Where output goes and what `serve` runs; all optional (tests replace them). */
export interface CliOptions {
  stdout?: (text: string) => void;
  stderr?: (text: string) => void;
  /** Snapshotter factory for `serve` (default: the devmapper snapshotter). */
  openSnapshotter?: SnapshotterFactory;
  /** Default config path (tests). */
  defaultConfigPath?: string;
  /** Logger destination (default stderr). */
  logWrite?: (line: string) => void;
  /** Stops `serve` (tests); signals still work. */
  stop?: AbortSignal;
  /** Called when `serve` is listening. */
  onListening?: (server: RunningServer) => void;
  /** Signals handled by `serve` (default SIGTERM, SIGINT). */
  signals?: Deno.Signal[];
  /** Bound on waiting for in-flight calls when `serve` shuts down (default 10 s; tests). */
  shutdownTimeoutMs?: number;
  /** The device mapper `status` reads the pool with (default: the configured backend; tests). */
  deviceMapper?: StatusContext["deviceMapper"];
}

const HELP = `Usage: ${PROGRAM} [command] [flags]

containerd snapshotter on device-mapper thin devices, served as a gRPC proxy plugin.

Commands:
  serve            serve the snapshots API on a unix socket (default command)
  status           show the pool, snapshots, devices and whether the server is up
  pool             create, inspect or destroy a loop-file thin-pool (dev/test hosts)
  config check     validate the configuration and print the effective values
  config default   print an annotated default config file
  version          print the version

Run '${PROGRAM} <command> --help' for a command's flags.
`;

const SERVE_HELP = `Usage: ${PROGRAM} serve [flags]

Serve containerd's snapshots API (containerd.services.snapshots.v1) on a unix socket. containerd
config: [proxy_plugins.dmsnap] type = "snapshot", address = "<socket>" (any name but
"devmapper", which is containerd's built-in snapshotter).
SIGTERM/SIGINT: stop accepting, finish in-flight calls, close the database, remove the socket.

Flags (override the config file):
${configFlagHelp()}
`;

const CONFIG_HELP = `Usage: ${PROGRAM} config <check|default> [flags]

  check     load the config file and flags, report every problem, print the effective values
  default   print an annotated config file with every key at its default (pool_name is an example)

Flags of 'config check':
${configFlagHelp()}
`;

const VERSION_HELP = `Usage: ${PROGRAM} version\n\nPrint the version.\n`;

const COMMANDS = ["serve", "status", "pool", "config", "version", "help"];

/** The effective configuration as TOML-like lines, keys in CONFIG_KEYS order (`config check`). */
export function describeConfig(config: Config, file: string | undefined): string {
  const q = JSON.stringify;
  const lines = [
    `# effective configuration (${file ? `file ${file}` : "no config file; defaults"} + flags)`,
  ];
  for (const key of Object.keys(CONFIG_KEYS) as ConfigKey[]) {
    const value = configValue(config, key);
    if (CONFIG_KEYS[key].type === "size") {
      lines.push(`${key} = ${q(formatSize(Number(value)))} # ${value} bytes`);
    } else if (typeof value === "object") {
      const bytes = "bytes" in value ? ` # ${value.bytes} bytes` : "";
      lines.push(`${key} = ${q(formatFreeSpace(value))}${bytes}`);
    } else lines.push(`${key} = ${typeof value === "string" ? q(value) : value}`);
  }
  return lines.join("\n") + "\n";
}

async function runServe(args: string[], o: CliOptions, out: (t: string) => void): Promise<number> {
  const { values } = parseFlags(args, { command: "serve", options: configFlagOptions() });
  if (values.help) return out(SERVE_HELP), EXIT_OK;
  const { config, file } = await loadConfigFromFlags(values, o.defaultConfigPath);
  const logger: Logger = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    write: o.logWrite,
  });
  logger.info("starting", {
    version: VERSION,
    config: file ?? "(defaults)",
    pool: config.poolName,
    root: config.rootPath,
    socket: config.address,
  });
  await serve({
    config,
    logger,
    openSnapshotter: o.openSnapshotter ?? openDevmapperSnapshotter,
    stop: o.stop,
    signals: o.signals,
    onListening: o.onListening,
    shutdownTimeoutMs: o.shutdownTimeoutMs,
  });
  return EXIT_OK;
}

async function runConfig(args: string[], o: CliOptions, out: (t: string) => void): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined) throw new UsageError("config: missing command (use check or default)");
  if (sub === "--help" || sub === "-h" || sub === "help") return out(CONFIG_HELP), EXIT_OK;
  if (sub === "default") {
    const { values } = parseFlags(rest, { command: "config default", options: {} });
    out(values.help ? CONFIG_HELP : defaultConfigToml());
    return EXIT_OK;
  }
  if (sub === "check") {
    const { values } = parseFlags(rest, { command: "config check", options: configFlagOptions() });
    if (values.help) return out(CONFIG_HELP), EXIT_OK;
    const { config, file } = await loadConfigFromFlags(values, o.defaultConfigPath);
    out(describeConfig(config, file));
    return EXIT_OK;
  }
  throw new UsageError(`config: unknown command '${sub}' (use check or default)`);
}

/** Runs the command line `args`; returns the exit code. Never throws. */
export async function runCli(args: string[], o: CliOptions = {}): Promise<number> {
  const encoder = new TextEncoder();
  const out = o.stdout ?? ((t: string) => void Deno.stdout.writeSync(encoder.encode(t)));
  const err = o.stderr ?? ((t: string) => void Deno.stderr.writeSync(encoder.encode(t)));
  let [command, ...rest] = args;
  if (
    command === undefined ||
    (command.startsWith("-") && !["-h", "--help", "--version"].includes(command))
  ) {
    rest = args;
    command = "serve";
  }
  try {
    switch (command) {
      case "-h":
      case "--help":
      case "help":
        if (rest.length > 0 && COMMANDS.includes(rest[0]) && rest[0] !== "help") {
          return await runCli([rest[0], "--help"], o);
        }
        out(HELP);
        return EXIT_OK;
      case "--version":
      case "version": {
        const { values } = parseFlags(rest, { command: "version", options: {} });
        out(values.help ? VERSION_HELP : `${PROGRAM} ${VERSION} (deno ${Deno.version.deno})\n`);
        return EXIT_OK;
      }
      case "serve":
        return await runServe(rest, o, out);
      case "config":
        return await runConfig(rest, o, out);
      case "status":
        return await runStatus(rest, {
          stdout: out,
          stderr: err,
          defaultConfigPath: o.defaultConfigPath,
          logWrite: o.logWrite,
          deviceMapper: o.deviceMapper,
        });
      case "pool":
        return await runPoolCommand(rest, {
          logger: (level, format) => createLogger({ level, format, write: o.logWrite }),
          stdout: out,
        });
      default:
        throw new UsageError(
          `unknown command '${command}' (use ${COMMANDS.slice(0, 5).join(", ")})`,
        );
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`${PROGRAM}: ${e.message} (see --help)\n`);
      return EXIT_USAGE;
    }
    if (e instanceof ConfigError) {
      err(`${PROGRAM}: ${e.message}\n`);
      return EXIT_FAILURE;
    }
    err(`${PROGRAM}: ${errorMessage(e)}\n`);
    return EXIT_FAILURE;
  }
}
