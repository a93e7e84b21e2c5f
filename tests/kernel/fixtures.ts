/**
 * Fixtures for kernel tests: they run inside the user-mode Linux kernel started by
 * `tests/run.ts` (environment `DMSNAP_IN_KERNEL=1`) and build real loop-backed thin-pools
 * with plain `losetup`/`dmsetup` commands, independent of the code under test.
 *
 * @module
 */

/** True inside the test kernel. */
export const IN_KERNEL: boolean = Deno.env.get("DMSNAP_IN_KERNEL") === "1";

/** Throws a clear error when a kernel test is run outside the test kernel. */
export function requireKernel(): void {
  if (!IN_KERNEL) {
    throw new Error(
      "kernel tests run inside user-mode Linux: use `deno task test` (or `deno task test:kernel`)",
    );
  }
}

/** What a command run by {@linkcode runCommand} returned. */
export interface CommandResult {
  code: number;
  /** Trimmed. */
  stdout: string;
  /** Trimmed. */
  stderr: string;
}

/** Environment added to every command {@linkcode runCommand} runs unless told otherwise. */
export const COMMAND_ENV: Readonly<Record<string, string>> = {
  LC_ALL: "C",
  DM_DISABLE_UDEV: "1",
};

/** Options for {@linkcode runCommand}. */
export interface RunCommandOptions {
  /** Working directory (default: this process's). */
  cwd?: string;
  /** Variables added to the inherited environment (default {@linkcode COMMAND_ENV}). */
  env?: Readonly<Record<string, string>>;
}

/**
 * Runs `cmd` with `args` (in `cwd` when given) under `env` (default `LC_ALL=C` and
 * `DM_DISABLE_UDEV=1`), and returns its exit code and output, whatever the code.
 */
export async function runCommand(
  cmd: string,
  args: string[],
  options: RunCommandOptions = {},
): Promise<CommandResult> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env ?? COMMAND_ENV,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout).trim(),
    stderr: new TextDecoder().decode(out.stderr).trim(),
  };
}

/** The stdout of `out`, which `cmd args...` returned; throws with its output unless it succeeded. */
export function stdoutOf(cmd: string, args: string[], out: CommandResult): string {
  if (out.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}): ${out.stderr || out.stdout}`);
  }
  return out.stdout;
}

/** Runs a command; throws with its stderr unless it succeeds. Returns trimmed stdout. */
export async function sh(cmd: string, ...args: string[]): Promise<string> {
  return stdoutOf(cmd, args, await runCommand(cmd, args));
}

/** Like {@linkcode sh} but returns the exit code and output instead of throwing. */
export function shTry(cmd: string, ...args: string[]): Promise<CommandResult> {
  return runCommand(cmd, args);
}

/** A loop-backed thin-pool made for one test. */
export interface TestPool extends AsyncDisposable {
  /** dm name of the pool. */
  name: string;
  /** Directory holding the backing files; free for the test to use. */
  dir: string;
  /**
   * Directory for the snapshotter's root_path: on the ext4 filesystem the test kernel mounts
   * at boot (`DMSNAP_TEST_ROOTS`, a loop device: a journal and real flushes, as on a server),
   * else inside `dir`. Removed with the pool.
   */
  rootDir: string;
  dataLoop: string;
  metaLoop: string;
  /** Thin ids present in the pool's metadata (read through a metadata snapshot). */
  thinIds(): Promise<number[]>;
  /** Removes every dm device on the pool, the pool, the loops and the files. */
  destroy(): Promise<void>;
}

/** Options for {@linkcode createTestPool}. */
export interface TestPoolOptions {
  /** Data size in MiB (default 256). */
  dataMb?: number;
  /** Metadata size in MiB (default 16). */
  metaMb?: number;
  /** Block size in sectors (default 128 = 64 KiB). */
  blockSectors?: number;
  /** Name prefix (default `tpool`). */
  prefix?: string;
  /** Fail writes at once when the pool is full instead of queueing them. */
  errorIfNoSpace?: boolean;
}

/** Creates a fresh thin-pool from sparse files on the guest's tmpfs. */
export async function createTestPool(options: TestPoolOptions = {}): Promise<TestPool> {
  requireKernel();
  const dataMb = options.dataMb ?? 256;
  const metaMb = options.metaMb ?? 16;
  const block = options.blockSectors ?? 128;
  const name = `${options.prefix ?? "tpool"}-${crypto.randomUUID().slice(0, 8)}`;
  const dir = await Deno.makeTempDir({ prefix: `${name}-` });
  const roots = Deno.env.get("DMSNAP_TEST_ROOTS");
  const rootDir = roots ? `${roots}/${name}` : `${dir}/roots`;
  await Deno.mkdir(rootDir, { recursive: true });
  const dataFile = `${dir}/data`;
  const metaFile = `${dir}/meta`;
  await sh("truncate", "-s", `${dataMb}M`, dataFile);
  await sh("truncate", "-s", `${metaMb}M`, metaFile);
  const dataLoop = await sh("losetup", "--find", "--show", dataFile);
  const metaLoop = await sh("losetup", "--find", "--show", metaFile);
  // A fresh metadata device must start zeroed (it is: sparse file).
  await sh(
    "dmsetup",
    "create",
    name,
    "--table",
    `0 ${dataMb * 2048} thin-pool ${metaLoop} ${dataLoop} ${block} 32768 ${
      options.errorIfNoSpace ? "2 skip_block_zeroing error_if_no_space" : "1 skip_block_zeroing"
    }`,
  );
  const pool: TestPool = {
    name,
    dir,
    rootDir,
    dataLoop,
    metaLoop,
    thinIds: () => poolThinIds(name, metaLoop),
    async destroy() {
      for (const device of await thinDevicesOn(name)) {
        await shTry("umount", "-l", `/dev/mapper/${device}`);
        await shTry("dmsetup", "remove", "--retry", device);
      }
      await shTry("dmsetup", "remove", "--retry", name);
      await shTry("losetup", "-d", dataLoop);
      await shTry("losetup", "-d", metaLoop);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await Deno.remove(rootDir, { recursive: true }).catch(() => {});
    },
    async [Symbol.asyncDispose]() {
      await pool.destroy();
    },
  };
  return pool;
}

/** Names of all dm devices. */
export async function dmNames(): Promise<string[]> {
  const out = await shTry("dmsetup", "ls");
  if (out.code !== 0 || out.stdout.startsWith("No devices found")) return [];
  return out.stdout.split("\n").map((l) => l.split(/\s+/)[0]).filter(Boolean);
}

/** Thin ids in a pool's metadata, read through a metadata snapshot. */
export async function poolThinIds(pool: string, metaDevice: string): Promise<number[]> {
  await sh("dmsetup", "message", pool, "0", "reserve_metadata_snap");
  try {
    const out = await sh(
      "thin_ls",
      "--no-headers",
      "--format",
      "DEV",
      "--metadata-snap",
      metaDevice,
    );
    return out.split(/\s+/).filter(Boolean).map(Number).sort((a, b) => a - b);
  } finally {
    await sh("dmsetup", "message", pool, "0", "release_metadata_snap");
  }
}

/** Names of the active thin devices that sit on pool `poolName`. */
export async function thinDevicesOn(poolName: string): Promise<string[]> {
  // `dmsetup table` names a thin device's pool by major:minor.
  const ref = (await shTry(
    "dmsetup",
    "info",
    "-c",
    "--noheadings",
    "-o",
    "major,minor",
    "--separator",
    ":",
    poolName,
  )).stdout;
  const table = await shTry("dmsetup", "table");
  const names: string[] = [];
  for (const line of table.stdout.split("\n")) {
    const m = /^(\S+): \d+ \d+ thin (\S+) /.exec(line);
    if (m && (m[2] === ref || m[2] === `/dev/mapper/${poolName}`)) names.push(m[1]);
  }
  return names.sort();
}
