/**
 * {@linkcode DeviceMapper} implemented by spawning `dmsetup` through a {@linkcode CommandRunner}.
 *
 * - Listing calls (`infoAll`, `statusAll`, `list`) cost one spawn whatever the device count.
 * - `create` guarantees `/dev/mapper/<name>` exists afterwards (falls back to
 *   `dmsetup mknodes <name>` only when the node is missing).
 * - `remove` never uses `--force` (it would swap an error table under a mounted filesystem).
 * - EBUSY on `remove`/`suspend` is retried a few times with a short backoff (for `remove`
 *   with `retry`, dmsetup's own `--retry` does it instead); nothing else is retried.
 * - A message is always one argv element.
 *
 * @module
 */
import type { Logger } from "../../util/log.ts";
import { silentLogger } from "../../util/log.ts";
import { pathExists } from "../../util/fs.ts";
import { commandError, DmError, isErrno } from "../errors.ts";
import { validateDeviceName } from "../names.ts";
import { checkMessageSector, ThinPoolMessages } from "../thin_messages.ts";
import {
  INFO_COLUMNS,
  parseInfoAll,
  parseInfoLine,
  parseLs,
  parseStatus,
  parseStatusAll,
  parseVersion,
} from "../parse.ts";
import type { CommandRunner } from "../runner.ts";
import { SysfsActivity } from "../active.ts";
import {
  type CreateOptions,
  type DeviceInfo,
  type DeviceMapper,
  devicePath,
  type RemoveOptions,
  type TargetStatus,
} from "../types.ts";

/** Options for {@linkcode Dmsetup}. */
export interface DmsetupOptions {
  /** Spawns the commands. */
  runner: CommandRunner;
  logger?: Logger;
  /** Program to run (default `dmsetup`). */
  binary?: string;
  /** Attempts for `remove`/`suspend` while they fail with EBUSY (default 5, min 1). */
  busyAttempts?: number;
  /** Delay before the first retry in ms; doubles each time (default 50). */
  busyBackoffMs?: number;
  /** Time limit of each dmsetup command in ms (default 60000). */
  timeoutMs?: number;
  /** Checks that a device node exists (default: `Deno.stat`); replaceable in unit tests. */
  nodeExists?: (path: string) => Promise<boolean>;
}

/** `dmsetup info` in the column format {@linkcode parseInfoLine} reads. */
const INFO_ARGS: readonly string[] = [
  "info",
  "-c",
  "--noheadings",
  "-o",
  INFO_COLUMNS,
  "--separator",
  " ",
];

/**
 * `info` with the device's dm UUID, read from sysfs (no spawn; a UUID column in the report would
 * shift the fields {@linkcode parseInfoLine} reads); unchanged when it has none, or when sysfs
 * does not describe that device under that name.
 */
async function withUuid(info: DeviceInfo): Promise<DeviceInfo> {
  const dir = `/sys/dev/block/${info.major}:${info.minor}/dm`;
  try {
    const [name, uuid] = await Promise.all([
      Deno.readTextFile(`${dir}/name`),
      Deno.readTextFile(`${dir}/uuid`),
    ]);
    if (name.trim() !== info.name || uuid.trim() === "") return info;
    return { ...info, uuid: uuid.trim() };
  } catch {
    return info;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The `dmsetup` backend of {@linkcode DeviceMapper}. */
export class Dmsetup extends ThinPoolMessages implements DeviceMapper {
  readonly #runner: CommandRunner;
  readonly #logger: Logger;
  readonly #binary: string;
  readonly #busyAttempts: number;
  readonly #busyBackoffMs: number;
  readonly #timeoutMs: number;
  readonly #nodeExists: (path: string) => Promise<boolean>;
  readonly #activity = new SysfsActivity();

  /** Creates the backend. */
  constructor(options: DmsetupOptions) {
    super();
    this.#runner = options.runner;
    this.#logger = options.logger ?? silentLogger();
    this.#binary = options.binary ?? "dmsetup";
    this.#busyAttempts = Math.max(1, options.busyAttempts ?? 5);
    this.#busyBackoffMs = options.busyBackoffMs ?? 50;
    this.#timeoutMs = options.timeoutMs ?? 60_000;
    this.#nodeExists = options.nodeExists ?? pathExists;
  }

  /** Processes spawned by the runner so far. */
  get spawns(): number {
    return this.#runner.spawns;
  }

  /** Runs dmsetup; returns stdout trimmed of trailing whitespace, throws {@linkcode DmError}. */
  async #run(args: readonly string[]): Promise<string> {
    const result = await this.#runner.run(this.#binary, args, { timeoutMs: this.#timeoutMs });
    if (result.code !== 0) throw commandError(this.#binary, args, result);
    return result.stdout.trimEnd();
  }

  /** Runs `op`, retrying while it fails with EBUSY. */
  async #retryBusy<T>(what: string, op: () => Promise<T>): Promise<T> {
    let delay = this.#busyBackoffMs;
    for (let attempt = 1;; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (!isErrno(err, "EBUSY") || attempt >= this.#busyAttempts) throw err;
        this.#logger.debug("device busy, retrying", { op: what, attempt, delayMs: delay });
        await sleep(delay);
        delay *= 2;
      }
    }
  }

  /** `dmsetup version`. */
  async version(): Promise<{ library: string; driver: string }> {
    return parseVersion(await this.#run(["version"]));
  }

  /** `dmsetup info -c` of one device; `undefined` when it does not exist. */
  async info(name: string): Promise<DeviceInfo | undefined> {
    validateDeviceName(name);
    try {
      const out = await this.#run([...INFO_ARGS, name]);
      return await withUuid(parseInfoLine(out.split("\n")[0]));
    } catch (err) {
      if (isErrno(err, "ENXIO")) return undefined;
      throw err;
    }
  }

  /** `dmsetup info -c` of every device, one spawn (UUIDs from sysfs). */
  async infoAll(): Promise<Map<string, DeviceInfo>> {
    const out = await this.#run(INFO_ARGS);
    const all = parseInfoAll(out);
    for (const [name, info] of all) {
      this.#activity.remember(name, info.major, info.minor);
      all.set(name, await withUuid(info));
    }
    return all;
  }

  /** From the node and sysfs, no spawn (see `src/dm/active.ts`). */
  isActive(name: string): Promise<boolean> {
    return this.#activity.isActive(name);
  }

  /** `dmsetup status <name>`; ENXIO when missing. */
  async status(name: string): Promise<TargetStatus[]> {
    validateDeviceName(name);
    return parseStatus(await this.#run(["status", name]));
  }

  /** `dmsetup status [--target <t>]` of every device, one spawn. */
  async statusAll(target?: string): Promise<Map<string, TargetStatus[]>> {
    const args = target ? ["status", "--target", target] : ["status"];
    return parseStatusAll(await this.#run(args));
  }

  /** `dmsetup table <name>`. */
  async table(name: string): Promise<string> {
    validateDeviceName(name);
    return (await this.#run(["table", name])).trim();
  }

  /** `dmsetup ls`. */
  async list(): Promise<string[]> {
    return parseLs(await this.#run(["ls"]));
  }

  /**
   * `dmsetup create <name> [--readonly] [--uuid <uuid>] --table <table>`, then makes sure the
   * node exists.
   */
  async create(name: string, table: string, options: CreateOptions = {}): Promise<void> {
    validateDeviceName(name);
    const args = ["create", name];
    if (options.readOnly) args.push("--readonly");
    if (options.uuid) args.push("--uuid", options.uuid);
    args.push("--table", table);
    await this.#run(args);
    const path = devicePath(name);
    if (await this.#nodeExists(path)) return await this.#activity.rememberNode(name);
    this.#logger.debug("device node missing after create, running mknodes", { name });
    await this.#run(["mknodes", name]);
    if (!(await this.#nodeExists(path))) {
      throw new DmError({
        command: [this.#binary, "mknodes", name],
        exitCode: 0,
        stderr: "",
        errno: "ENOENT",
        message: `Cannot create device node "${path}": still missing after dmsetup mknodes`,
      });
    }
    await this.#activity.rememberNode(name);
  }

  /** `dmsetup reload <name> --table <table>`. */
  async reload(name: string, table: string): Promise<void> {
    validateDeviceName(name);
    await this.#run(["reload", name, "--table", table]);
  }

  /**
   * `dmsetup suspend [--nolockfs] <name>`; EBUSY retried. Suspending a suspended device succeeds.
   * A suspend whose flush cannot complete (a full pool that queues writes) keeps its process in
   * the kernel: the time limit kills it, but a flush cannot be interrupted, so the process ends,
   * and the promise settles, only when the kernel call returns; if it was killed, with an error
   * whether or not the device ended up suspended. A caller that stops waiting owns the outcome:
   * once the promise settles, either way, it must resume the device (not before: a resume sent
   * while the suspend is still freezing finds nothing suspended and does nothing).
   */
  async suspend(name: string, options: { noLockfs?: boolean } = {}): Promise<void> {
    validateDeviceName(name);
    const args = options.noLockfs ? ["suspend", "--nolockfs", name] : ["suspend", name];
    await this.#retryBusy("suspend", () => this.#run(args));
  }

  /** `dmsetup resume <name>`. Resuming an active device succeeds. */
  async resume(name: string): Promise<void> {
    validateDeviceName(name);
    await this.#run(["resume", name]);
  }

  /**
   * `dmsetup remove [--retry] [--deferred] <name>` (never `--force`). ENXIO when the device
   * does not exist. EBUSY is retried `busyAttempts` times with a short backoff; with `retry`,
   * dmsetup's own `--retry` loop (about 5 s) is used instead, once, so the two never multiply.
   */
  async remove(name: string, options: RemoveOptions = {}): Promise<void> {
    validateDeviceName(name);
    const args = ["remove"];
    if (options.retry) args.push("--retry");
    if (options.deferred) args.push("--deferred");
    args.push(name);
    if (options.retry) await this.#run(args);
    else await this.#retryBusy("remove", () => this.#run(args));
  }

  /** `dmsetup message <name> <sector> <message>` (message is one argv element); returns the reply. */
  async message(name: string, sector: number, message: string): Promise<string> {
    validateDeviceName(name);
    checkMessageSector(sector);
    return (await this.#run(["message", name, String(sector), message])).trim();
  }
}
