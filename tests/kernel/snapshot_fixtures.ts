/**
 * Kernel-test fixtures for the snapshotter: a real snapshotter on a fresh loop-backed pool,
 * and helpers to mount what it returns and read or write files through the mount.
 *
 * @module
 */
import { join } from "node:path";
import { createTestPool, sh, type TestPool, type TestPoolOptions } from "./fixtures.ts";
import {
  type DevmapperSnapshotter,
  openSnapshotter,
  type SnapshotterSettings,
} from "../../src/snapshotter/snapshotter.ts";
import { Dmsetup } from "../../src/dm/dmsetup/dmsetup.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import { createFormatter } from "../../src/pool/formatter.ts";
import { createLogger } from "../../src/util/log.ts";
import type { Mount } from "../../src/snapshots/types.ts";

/** A snapshotter on its own pool; disposing closes it and destroys the pool. */
export interface TestSnapshotter extends AsyncDisposable {
  pool: TestPool;
  snapshotter: DevmapperSnapshotter;
  settings: SnapshotterSettings;
  /** Closes and opens the snapshotter again on the same root and pool (a restart). */
  reopen(): Promise<DevmapperSnapshotter>;
}

/** Options for {@linkcode createTestSnapshotter}. */
export interface TestSnapshotterOptions extends TestPoolOptions {
  settings?: Partial<SnapshotterSettings>;
}

/** Builds the real device-mapper stack used by the server. */
export function realStack(logLevel: "error" | "debug" = "error") {
  const logger = createLogger({ level: logLevel });
  const runner = new DenoCommandRunner({ logger });
  return {
    logger,
    runner,
    dm: new Dmsetup({ runner, logger }),
    formatter: createFormatter(runner),
  };
}

/** Snapshotter settings for tests on `pool`: 32 MiB ext4 devices, root in the pool's rootDir. */
export function testSettings(
  pool: { name: string; rootDir: string },
  overrides: Partial<SnapshotterSettings> = {},
): SnapshotterSettings {
  return {
    rootPath: join(pool.rootDir, "root"),
    poolName: pool.name,
    baseImageSize: 32 * 1024 * 1024,
    fsType: "ext4",
    fsOptions: "",
    asyncRemove: false,
    discardBlocks: false,
    ...overrides,
  };
}

/** Creates a pool and a snapshotter on it. */
export async function createTestSnapshotter(
  options: TestSnapshotterOptions = {},
): Promise<TestSnapshotter> {
  const pool = await createTestPool(options);
  const settings = testSettings(pool, options.settings);
  const open = () => openSnapshotter({ ...settings, ...realStack() });
  const ts: TestSnapshotter = {
    pool,
    settings,
    snapshotter: await open(),
    async reopen() {
      await ts.snapshotter.close();
      ts.snapshotter = await open();
      return ts.snapshotter;
    },
    async [Symbol.asyncDispose]() {
      await ts.snapshotter.close();
      await pool.destroy();
    },
  };
  return ts;
}

/** Mounts `mounts` (exactly one) on a new directory; returns the directory. */
export async function mountAll(mounts: Mount[], dir?: string): Promise<string> {
  if (mounts.length !== 1) throw new Error(`expected one mount, got ${mounts.length}`);
  const m = mounts[0];
  const target = dir ?? await Deno.makeTempDir({ prefix: "mnt-" });
  const args = ["-t", m.type];
  if (m.options.length > 0) args.push("-o", m.options.join(","));
  await sh("mount", ...args, m.source, target);
  return target;
}

/** Unmounts and removes the directory. */
export async function unmount(dir: string): Promise<void> {
  await sh("umount", dir);
  await Deno.remove(dir).catch(() => {});
}

/** Mounts, runs `fn` on the directory, unmounts. */
export async function withMount<T>(mounts: Mount[], fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mountAll(mounts);
  try {
    return await fn(dir);
  } finally {
    await unmount(dir);
  }
}

/** Relative path → content (or `dir/` entries → "<dir>") of a tree, sorted. */
export async function readTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(dir: string, rel: string) {
    for await (const e of Deno.readDir(dir)) {
      const path = join(dir, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) {
        out[`${r}/`] = "<dir>";
        await walk(path, r);
      } else if (e.isSymlink) {
        out[r] = `-> ${await Deno.readLink(path)}`;
      } else {
        out[r] = await Deno.readTextFile(path);
      }
    }
  }
  await walk(root, "");
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

export { thinDevicesOn } from "./fixtures.ts";
