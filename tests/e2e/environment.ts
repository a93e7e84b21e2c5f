/**
 * Sets up, inside the test kernel, what the end-to-end tests, the demo and the benchmark run
 * against: loop-backed thin-pools, optionally our snapshotter server, and one private
 * containerd with the built-in devmapper snapshotter and/or our proxy snapshotter.
 *
 * @module
 */
import { createTestPool, type TestPool } from "../kernel/fixtures.ts";
import { poll } from "../../testing/poll.ts";
import { type Containerd, removeTree, startContainerd } from "./containerd.ts";
import type { ScenarioContext } from "./scenario.ts";
import {
  type SnapshotterServer,
  type SnapshotterServerOptions,
  startSnapshotterServer,
} from "./snapshotter_server.ts";

/** containerd's name for the built-in snapshotter. */
export const BUILTIN_SNAPSHOTTER = "devmapper";
/** The proxy plugin name our server is registered under (must not be `devmapper`). */
export const PROXY_SNAPSHOTTER = "dmsnap";
/** Virtual size of each thin device: room for busybox, a 12 MiB layer and ext4 overhead. */
export const BASE_IMAGE_SIZE = "64MB";

/** Polls `ctr snapshots ls` until containerd reaches `snapshotter` (default limit 15 s). */
export async function waitForSnapshotter(
  ctd: Containerd,
  snapshotter: string,
  timeoutMs = 15_000,
): Promise<void> {
  let stderr = "";
  await poll(
    async () => {
      const r = await ctd.ctr(["snapshots", "--snapshotter", snapshotter, "ls"], { check: false });
      stderr = r.stderr;
      return r.code === 0;
    },
    `containerd to reach snapshotter "${snapshotter}"`,
    {
      timeoutMs,
      intervalMs: 250,
      detail: () => stderr,
    },
  );
}

/** An existing thin-pool for our server (e.g. an LVM one): its dm name and thin ids. */
export type ReadyPool = Pick<TestPool, "name" | "thinIds">;

/** Options for {@linkcode startE2eEnv}. */
export interface E2eEnvOptions {
  /** Configure containerd's built-in devmapper on its own pool. */
  builtin?: boolean;
  /** Start our server on its own pool and configure it as proxy {@linkcode PROXY_SNAPSHOTTER}. */
  proxy?: boolean;
  /** Pool data size in MiB (default 256). */
  poolDataMb?: number;
  /** With `proxy`: serve this pool instead of creating a loop pool (not destroyed at dispose). */
  readyProxyPool?: ReadyPool;
  /** With `proxy`: the server's `min_free_space` (default: the server's default). */
  minFreeSpace?: string;
  /** Default {@linkcode BASE_IMAGE_SIZE}. */
  baseImageSize?: string;
  /** With `proxy`: the server's `fs_type` (default ext4). */
  fsType?: "ext4" | "xfs";
  /** Progress lines. */
  log?(message: string): void;
  /** Extra containerd plugin settings (see {@linkcode startContainerd}). */
  containerdPluginSettings?: Record<string, Record<string, unknown>>;
  /** containerd plugins to load that the tests disable by default (e.g. the CRI plugin). */
  containerdEnablePlugins?: readonly string[];
  /** Runs a stand-in instead of `main.ts serve` (see {@linkcode SnapshotterServerOptions}). */
  serverCommand?: SnapshotterServerOptions["command"];
}

/** What {@linkcode startE2eEnv} set up. */
export interface E2eEnv extends AsyncDisposable {
  ctd: Containerd;
  /** Directory holding containerd's and the server's files. */
  dir: string;
  builtinPool?: TestPool;
  proxyPool?: TestPool;
  server?: SnapshotterServer;
  /** Scenario contexts (without the image) per snapshotter name. */
  contexts: Record<string, Omit<ScenarioContext, "image">>;
}

/**
 * Creates the pools, starts the server (if `proxy`) and containerd. Dispose stops everything
 * (tasks and containers first) and destroys the pools.
 */
export async function startE2eEnv(options: E2eEnvOptions): Promise<E2eEnv> {
  const log = options.log ?? (() => {});
  const baseImageSize = options.baseImageSize ?? BASE_IMAGE_SIZE;
  const stack = new AsyncDisposableStack();
  try {
    const dir = await Deno.makeTempDir({ dir: "/run", prefix: "e2e-" });
    stack.defer(() => removeTree(dir));
    let builtinPool: TestPool | undefined;
    let proxyPool: TestPool | undefined;
    let server: SnapshotterServer | undefined;
    if (options.builtin) {
      builtinPool = stack.use(
        await createTestPool({ dataMb: options.poolDataMb, prefix: "e2e-builtin" }),
      );
      log(`created thin-pool ${builtinPool.name} for the built-in devmapper snapshotter`);
    }
    let servedPool: ReadyPool | undefined = options.readyProxyPool;
    if (options.proxy) {
      if (!servedPool) {
        proxyPool = stack.use(
          await createTestPool({ dataMb: options.poolDataMb, prefix: "e2e-dmsnap" }),
        );
        servedPool = proxyPool;
        log(`created thin-pool ${proxyPool.name} for our snapshotter`);
      }
      server = stack.use(
        await startSnapshotterServer({
          dir: `${dir}/dmsnap`,
          poolName: servedPool.name,
          // on the ext4 filesystem for roots when the pool is ours (fixtures.ts: rootDir)
          rootPath: `${proxyPool?.rootDir ?? `${dir}/dmsnap`}/root`,
          baseImageSize,
          minFreeSpace: options.minFreeSpace,
          fsType: options.fsType,
          command: options.serverCommand,
        }),
      );
      log(`our snapshotter server is listening on ${server.socket}`);
    }
    const ctd = await startContainerd({
      dir: `${dir}/containerd`,
      devmapper: builtinPool ? { poolName: builtinPool.name, baseImageSize } : undefined,
      proxySnapshotters: server ? { [PROXY_SNAPSHOTTER]: server.socket } : undefined,
      pluginSettings: options.containerdPluginSettings,
      enablePlugins: options.containerdEnablePlugins,
    });
    stack.defer(() => ctd.shutdown());
    log(`containerd is listening on ${ctd.address}`);
    const contexts: E2eEnv["contexts"] = {};
    if (builtinPool) {
      const pool = builtinPool;
      contexts[BUILTIN_SNAPSHOTTER] = {
        ctd,
        thinIds: () => pool.thinIds(),
        restart: () => ctd.restart(),
        idPrefix: BUILTIN_SNAPSHOTTER,
        log,
      };
    }
    if (servedPool && server) {
      const pool = servedPool;
      const srv = server;
      contexts[PROXY_SNAPSHOTTER] = {
        ctd,
        thinIds: () => pool.thinIds(),
        // A crash of our server (SIGKILL), then a containerd restart while the server is
        // still down, then the server's start: both must recover, in either order.
        // containerd's connection to a proxy that was down backs off (up to 3 s; calls fail
        // fast with Unavailable meanwhile), so wait until it reaches the server again.
        restart: async () => {
          await srv.kill();
          await ctd.restart();
          await srv.start();
          await waitForSnapshotter(ctd, PROXY_SNAPSHOTTER);
        },
        idPrefix: PROXY_SNAPSHOTTER,
        log,
      };
    }
    const moved = stack.move();
    return {
      ctd,
      dir,
      builtinPool,
      proxyPool,
      server,
      contexts,
      async [Symbol.asyncDispose]() {
        await moved.disposeAsync();
      },
    };
  } catch (err) {
    await stack.disposeAsync();
    throw err;
  }
}
