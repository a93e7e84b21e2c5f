/**
 * Runs a private containerd 1.6 (Debian's binary) inside the test kernel: its own config,
 * root and state directories on the guest's tmpfs and its own socket, with the built-in
 * devmapper snapshotter and/or proxy snapshotters configured; plus a `ctr` helper.
 *
 * @module
 */
import { stringify } from "smol-toml";
import { type Daemon, spawnDaemon, waitForSocket } from "./daemon.ts";

/** Namespace used by the end-to-end tests unless told otherwise. */
export const DEFAULT_NAMESPACE = "dmsnap-e2e";

/**
 * Plugins a test containerd never needs. The opt plugin would create `/opt/containerd` on
 * the host's file system (the guest's root is the host's `/` through hostfs). The v1 runtime
 * plugin must stay: containerd 1.6's tasks service refuses to load without it.
 */
export const DISABLED_PLUGINS: readonly string[] = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
];

/** Built-in devmapper snapshotter settings (`[plugins."io.containerd.snapshotter.v1.devmapper"]`). */
export interface BuiltinDevmapperConfig {
  /** Existing thin-pool's dm name. */
  poolName: string;
  /** Virtual size of each thin device, e.g. `"64MB"`. */
  baseImageSize: string;
  /** Metadata directory (default `<dir>/devmapper`). */
  rootPath?: string;
  asyncRemove?: boolean;
  discardBlocks?: boolean;
  fsType?: "ext4" | "xfs";
}

/** Options for {@linkcode startContainerd}. */
export interface ContainerdOptions {
  /** Directory for config, root, state, socket and log; default: a new dir under `/run`. */
  dir?: string;
  /** Configure the built-in devmapper snapshotter (else it is disabled). */
  devmapper?: BuiltinDevmapperConfig;
  /** Proxy snapshotters: plugin name → unix socket path. Names must not be `devmapper`. */
  proxySnapshotters?: Record<string, string>;
  /** Namespace for {@linkcode Containerd.ctr} (default {@linkcode DEFAULT_NAMESPACE}). */
  namespace?: string;
  /** containerd log level (default `info`). */
  logLevel?: string;
  /** Extra `[plugins."<id>"]` settings, e.g. for `io.containerd.gc.v1.scheduler`. */
  pluginSettings?: Record<string, Record<string, unknown>>;
  /** Plugins of {@linkcode DISABLED_PLUGINS} to load after all, e.g. the CRI plugin. */
  enablePlugins?: readonly string[];
  /** How long to wait for the socket after start (default 20 s). */
  startTimeoutMs?: number;
}

/** Output of one `ctr` invocation. */
export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time of the call. */
  ms: number;
}

/** Per-call options for {@linkcode Containerd.ctr}. */
export interface CtrOptions {
  /** Namespace for this call (default: the instance's). */
  namespace?: string;
  /** Throw {@linkcode CtrError} unless the exit code is 0 (default true). */
  check?: boolean;
  /** Kill `ctr` after this long (default 120 s). */
  timeoutMs?: number;
}

/** A `ctr` command that failed. */
export class CtrError extends Error {
  /** The failed call's output. */
  readonly result: CtrResult;
  /** Creates the error. */
  constructor(message: string, result: CtrResult, options?: ErrorOptions) {
    super(message, options);
    this.name = "CtrError";
    this.result = result;
  }
}

/** containerd could not be started or stopped. */
export class ContainerdError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ContainerdError";
  }
}

/** A running private containerd. */
export interface Containerd extends AsyncDisposable {
  /** Directory holding everything of this instance. */
  dir: string;
  /** gRPC socket path. */
  address: string;
  configPath: string;
  logPath: string;
  namespace: string;
  /** Whether the daemon is currently running. */
  readonly running: boolean;
  /** Process id of the daemon while it runs. */
  readonly pid: number | undefined;
  /** Runs `ctr --address <sock> -n <ns> <args>`. */
  ctr(args: string[], options?: CtrOptions): Promise<CtrResult>;
  /** Starts the daemon again after {@linkcode stop}. */
  start(): Promise<void>;
  /** Stops the daemon (SIGTERM, then SIGKILL after 10 s); running tasks' shims stay. */
  stop(): Promise<void>;
  /** Stop + start. */
  restart(): Promise<void>;
  /** Last `bytes` of the daemon's log. */
  logTail(bytes?: number): Promise<string>;
  /**
   * Kills and deletes every task, deletes every container in every namespace, then stops
   * the daemon. Leaves images and snapshots alone.
   */
  shutdown(): Promise<void>;
}

/** Builds the config.toml text (version 2 schema). */
export function containerdConfig(opts: {
  dir: string;
  address: string;
  devmapper?: BuiltinDevmapperConfig;
  proxySnapshotters?: Record<string, string>;
  logLevel?: string;
  pluginSettings?: Record<string, Record<string, unknown>>;
  enablePlugins?: readonly string[];
}): string {
  const disabled = DISABLED_PLUGINS.filter((id) => !opts.enablePlugins?.includes(id));
  const plugins: Record<string, unknown> = {
    "io.containerd.runtime.v2.task": { platforms: ["linux/amd64"] },
    ...opts.pluginSettings,
  };
  if (opts.devmapper) {
    const dm = opts.devmapper;
    plugins["io.containerd.snapshotter.v1.devmapper"] = {
      pool_name: dm.poolName,
      root_path: dm.rootPath ?? `${opts.dir}/devmapper`,
      base_image_size: dm.baseImageSize,
      async_remove: dm.asyncRemove ?? false,
      discard_blocks: dm.discardBlocks ?? false,
      fs_type: dm.fsType ?? "ext4",
    };
  } else {
    disabled.push("io.containerd.snapshotter.v1.devmapper");
  }
  const proxies: Record<string, { type: string; address: string }> = {};
  for (const [name, address] of Object.entries(opts.proxySnapshotters ?? {})) {
    if (name === "devmapper") {
      throw new ContainerdError(
        'Cannot configure proxy snapshotter "devmapper": the name clashes with the built-in plugin',
      );
    }
    proxies[name] = { type: "snapshot", address };
  }
  return stringify({
    version: 2,
    root: `${opts.dir}/root`,
    state: `${opts.dir}/state`,
    disabled_plugins: disabled,
    grpc: { address: opts.address },
    ttrpc: { address: `${opts.address}.ttrpc` },
    debug: { level: opts.logLevel ?? "info" },
    plugins,
    proxy_plugins: proxies,
  }) + "\n";
}

function decode(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes).trim();
}

/** Mount points at or below `dir`, deepest first (from /proc/self/mountinfo). */
export async function mountsBelow(dir: string): Promise<string[]> {
  const info = await Deno.readTextFile("/proc/self/mountinfo");
  const points = info.split("\n").map((line) => line.split(" ")[4]).filter((p) =>
    p && (p === dir || p.startsWith(`${dir}/`))
  ).map((p) => p.replace(/\\040/g, " "));
  return points.sort((a, b) => b.length - a.length);
}

/** Lazily unmounts whatever is mounted below `dir`, then removes it. */
export async function removeTree(dir: string): Promise<void> {
  for (const point of await mountsBelow(dir)) {
    await new Deno.Command("umount", { args: ["-l", point], stdout: "null", stderr: "null" })
      .output();
  }
  if ((await mountsBelow(dir)).length > 0) return; // never delete through a mount
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

/**
 * Writes a config and starts containerd; resolves once its socket accepts connections.
 * Dispose (or {@linkcode Containerd.shutdown}) stops it; the directory is removed then.
 */
export async function startContainerd(options: ContainerdOptions = {}): Promise<Containerd> {
  const dir = options.dir ?? await Deno.makeTempDir({ dir: "/run", prefix: "ctd-" });
  const address = `${dir}/containerd.sock`;
  const configPath = `${dir}/config.toml`;
  const logPath = `${dir}/containerd.log`;
  const namespace = options.namespace ?? DEFAULT_NAMESPACE;
  const startTimeoutMs = options.startTimeoutMs ?? 20_000;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    configPath,
    containerdConfig({
      dir,
      address,
      devmapper: options.devmapper,
      proxySnapshotters: options.proxySnapshotters,
      logLevel: options.logLevel,
      pluginSettings: options.pluginSettings,
      enablePlugins: options.enablePlugins,
    }),
  );
  let daemon: Daemon | undefined;

  async function start(): Promise<void> {
    if (daemon) {
      throw new ContainerdError(`Cannot start containerd in ${dir}: already running`);
    }
    await Deno.remove(address).catch(() => {});
    const started = await spawnDaemon("containerd", {
      args: ["--config", configPath],
      env: { PATH: Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
      logPath,
    });
    daemon = started;
    const why = await waitForSocket(started, address, startTimeoutMs);
    if (why === undefined) return;
    await stop().catch(() => {});
    throw new ContainerdError(`Cannot start containerd (${dir}): ${why}\n${await logTail(3000)}`);
  }

  /** SIGTERM, then SIGKILL after 10 s. */
  async function stop(): Promise<void> {
    const running = daemon;
    if (!running) return;
    await running.stop();
    daemon = undefined;
  }

  async function logTail(bytes = 4000): Promise<string> {
    try {
      const text = await Deno.readTextFile(logPath);
      return text.slice(-bytes);
    } catch {
      return "(no containerd log)";
    }
  }

  async function ctr(args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
    const started = performance.now();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), opts.timeoutMs ?? 120_000);
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("ctr", {
        args: ["--address", address, "--namespace", opts.namespace ?? namespace, ...args],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: controller.signal,
      }).output();
    } finally {
      clearTimeout(timer);
    }
    const result: CtrResult = {
      code: out.code,
      stdout: decode(out.stdout),
      stderr: decode(out.stderr),
      ms: performance.now() - started,
    };
    if ((opts.check ?? true) && result.code !== 0) {
      throw new CtrError(
        `ctr ${args.join(" ")} failed (${result.code}): ${result.stderr || result.stdout}`,
        result,
      );
    }
    return result;
  }

  async function shutdown(): Promise<void> {
    if (daemon) {
      const namespaces = await ctr(["namespaces", "ls", "-q"], { check: false });
      for (const ns of namespaces.stdout.split("\n").filter(Boolean)) {
        const tasks = await ctr(["tasks", "ls", "-q"], { namespace: ns, check: false });
        for (const id of tasks.stdout.split("\n").filter(Boolean)) {
          await ctr(["tasks", "kill", "-s", "SIGKILL", id], { namespace: ns, check: false });
          await ctr(["tasks", "delete", "--force", id], { namespace: ns, check: false });
        }
        const containers = await ctr(["containers", "ls", "-q"], { namespace: ns, check: false });
        for (const id of containers.stdout.split("\n").filter(Boolean)) {
          await ctr(["containers", "delete", id], { namespace: ns, check: false });
        }
      }
    }
    await stop();
  }

  await start();
  const instance: Containerd = {
    dir,
    address,
    configPath,
    logPath,
    namespace,
    get running() {
      return daemon !== undefined;
    },
    get pid() {
      return daemon?.child.pid;
    },
    ctr,
    start,
    stop,
    async restart() {
      await stop();
      await start();
    },
    logTail,
    shutdown,
    async [Symbol.asyncDispose]() {
      await shutdown();
      if (!options.dir) await removeTree(dir);
    },
  };
  return instance;
}
