/**
 * {@linkcode DeviceMapper} implemented with device-mapper ioctls on `/dev/mapper/control`
 * through Deno FFI on libc: no process is ever spawned (`spawns` stays 0).
 *
 * - Semantics follow the `dmsetup` backend: same errnos (from the kernel), EBUSY on
 *   `remove`/`suspend` retried with a short backoff (`retry` on remove: 25 × 200 ms like
 *   `dmsetup --retry`), never a forced remove, `create` rolls back a half-made device.
 * - `create` makes sure `/dev/mapper/<name>` is a block node of the device: with udev running
 *   it waits briefly for udev's node, otherwise (or if udev is late) it `mknod`s it itself.
 *   `remove` unlinks the node, except after a deferred remove that is still pending.
 * - ioctls are synchronous FFI calls: they block the event loop for their duration (about a
 *   millisecond), except a suspend, which waits for the device's I/O to flush and runs on a
 *   worker thread of its own (see `thread.ts`): one stuck in the kernel holds nothing else up.
 * - Listing calls (`infoAll`, `statusAll`) cost one LIST_DEVICES plus one ioctl per device.
 *
 * @module
 */
import type { Logger } from "../../util/log.ts";
import { silentLogger } from "../../util/log.ts";
import { validateDeviceName } from "../names.ts";
import { checkMessageSector, ThinPoolMessages } from "../thin_messages.ts";
import { DmError, invalidArgument, isErrno } from "../errors.ts";
import {
  decodeHeader,
  decodeKernelDev,
  decodeNameList,
  decodeTargets,
  DM_REQUEST_VERSION,
  DmAbiError,
  DmCommand,
  type DmCommandName,
  DmFlag,
  type DmHeader,
  encodeRequest,
  encodeTargetMessage,
  encodeTargets,
  errnoName,
  formatTarget,
  ioctlRequest,
  makedev,
  parseTableText,
  readCString,
  replyPayload,
  splitDevT,
  type TargetSpec,
} from "./abi.ts";
import {
  type CallResult,
  type Libc,
  O_RDWR_CLOEXEC,
  openLibc,
  S_IFBLK,
  S_IFCHR,
} from "../../sys/libc.ts";
import { IoctlThread } from "./thread.ts";
import { parsePoolParams, parseThinParams } from "../parse.ts";
import { udevRunning } from "../runner.ts";
import type {
  CreateOptions,
  DeviceInfo,
  DeviceMapper,
  OtherStatus,
  RemoveOptions,
  TargetStatus,
} from "../types.ts";

/** Options for {@linkcode DmIoctl}. */
export interface DmIoctlOptions {
  logger?: Logger;
  /** The dm control node (default `/dev/mapper/control`; created from sysfs when missing). */
  controlPath?: string;
  /** Directory of device nodes (default `/dev/mapper`). */
  devDir?: string;
  /** libc to load (default `libc.so.6`). */
  libcPath?: string;
  /** Whether udev makes device nodes (default: `/run/udev/control` exists). */
  udev?: boolean;
  /** With udev: how long `create` waits for udev's node before making it (default 1000 ms). */
  udevWaitMs?: number;
  /** Attempts for `remove`/`suspend` while they fail with EBUSY (default 5, min 1). */
  busyAttempts?: number;
  /** Delay before the first retry in ms; doubles each time (default 50). */
  busyBackoffMs?: number;
}

/** The ioctl backend cannot be used here (no FFI permission, no libc, no dm control node). */
export class DmIoctlUnavailableError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DmIoctlUnavailableError";
  }
}

/** Reply buffer size of commands that return data; doubled while the kernel says "full". */
const INITIAL_REPLY_BYTES = 16 * 1024;
const MAX_REPLY_BYTES = 64 * 1024 * 1024;
/** `dmsetup --retry`: libdevmapper's DM_IOCTL_RETRIES × DM_RETRY_USLEEP_DELAY. */
const REMOVE_RETRY_ATTEMPTS = 25;
const REMOVE_RETRY_DELAY_MS = 200;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs a synchronous operation as a promise (its exceptions become rejections). */
function settle<T>(op: () => T): Promise<T> {
  try {
    return Promise.resolve(op());
  } catch (err) {
    return Promise.reject(err);
  }
}

function parseTable(table: string): TargetSpec[] {
  try {
    return parseTableText(table);
  } catch (err) {
    if (err instanceof DmAbiError) {
      throw invalidArgument(
        `Invalid device-mapper table ${JSON.stringify(table)}: ${err.message}`,
        err,
      );
    }
    throw err;
  }
}

/** A target spec from TABLE_STATUS as a {@linkcode TargetStatus}. */
function toStatus(spec: TargetSpec): TargetStatus {
  if (spec.type === "thin") return parseThinParams(spec.start, spec.length, spec.params);
  if (spec.type === "thin-pool") return parsePoolParams(spec.start, spec.length, spec.params);
  const other: OtherStatus = {
    target: spec.type,
    start: spec.start,
    length: spec.length,
    params: spec.params.trim(),
  };
  return other;
}

function toInfo(h: DmHeader): DeviceInfo {
  const { major, minor } = decodeKernelDev(h.dev);
  return {
    name: h.name,
    blkdevname: `dm-${minor}`,
    major,
    minor,
    live: (h.flags & DmFlag.ACTIVE_PRESENT) !== 0,
    inactive: (h.flags & DmFlag.INACTIVE_PRESENT) !== 0,
    suspended: (h.flags & DmFlag.SUSPEND) !== 0,
    readOnly: (h.flags & DmFlag.READONLY) !== 0,
    openCount: h.openCount,
    segments: h.targetCount,
    events: h.eventNr,
    ...(h.uuid ? { uuid: h.uuid } : {}),
  };
}

/** A reply: its header and payload. */
interface Reply {
  header: DmHeader;
  payload: Uint8Array;
}

/** The ioctl backend of {@linkcode DeviceMapper}. Call {@linkcode DmIoctl.close} when done. */
export class DmIoctl extends ThinPoolMessages implements DeviceMapper, Disposable {
  readonly #libc: Libc;
  readonly #fd: number;
  /** For the calls that may block (suspend). */
  readonly #thread: IoctlThread;
  readonly #logger: Logger;
  readonly #devDir: string;
  readonly #udev: boolean;
  readonly #udevWaitMs: number;
  readonly #busyAttempts: number;
  readonly #busyBackoffMs: number;
  readonly #driverVersion: string;
  #closed = false;

  /**
   * Loads libc and opens the control node; throws {@linkcode DmIoctlUnavailableError} when
   * either fails (e.g. no `--allow-ffi`, no device-mapper in the kernel, not root).
   */
  constructor(options: DmIoctlOptions = {}) {
    super();
    this.#logger = options.logger ?? silentLogger();
    this.#devDir = options.devDir ?? "/dev/mapper";
    this.#udev = options.udev ?? udevRunning();
    this.#udevWaitMs = options.udevWaitMs ?? 1000;
    this.#busyAttempts = Math.max(1, options.busyAttempts ?? 5);
    this.#busyBackoffMs = options.busyBackoffMs ?? 50;
    const libcPath = options.libcPath ?? "libc.so.6";
    this.#thread = new IoctlThread({ libcPath });
    try {
      this.#libc = openLibc(libcPath);
    } catch (err) {
      throw new DmIoctlUnavailableError(
        `Cannot load "${libcPath}" for device-mapper ioctls: ${(err as Error).message}`,
        { cause: err },
      );
    }
    try {
      this.#fd = openControl(this.#libc, options.controlPath ?? `${this.#devDir}/control`);
      try {
        const reply = this.#ioctlRaw("VERSION", encodeRequest());
        this.#driverVersion = reply.header.version.join(".");
      } catch (err) {
        this.#libc.close(this.#fd);
        throw new DmIoctlUnavailableError(
          `Cannot talk to device-mapper: DM_VERSION failed: ${(err as Error).message}`,
          { cause: err },
        );
      }
    } catch (err) {
      this.#libc.unload();
      throw err;
    }
  }

  /** Always 0: this backend spawns no process. */
  get spawns(): number {
    return 0;
  }

  /** Closes the control node and unloads libc. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#thread.close();
    this.#libc.close(this.#fd);
    this.#libc.unload();
  }

  /** Same as {@linkcode DmIoctl.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** One ioctl; throws a {@linkcode DmError} carrying the errno on failure. */
  #ioctlRaw(cmd: DmCommandName, buf: Uint8Array, context: readonly string[] = []): Reply {
    if (this.#closed) throw new Error("DmIoctl is closed");
    return this.#reply(
      cmd,
      buf,
      context,
      this.#libc.ioctl(this.#fd, ioctlRequest(DmCommand[cmd]), buf),
    );
  }

  /** Like {@linkcode #ioctlRaw}, on the ioctl thread: for calls that may block for long. */
  async #ioctlOffThread(cmd: DmCommandName, buf: Uint8Array, context: readonly string[]) {
    if (this.#closed) throw new Error("DmIoctl is closed");
    const r = await this.#thread.call(this.#fd, ioctlRequest(DmCommand[cmd]), buf);
    return this.#reply(cmd, buf, context, r);
  }

  #reply(cmd: DmCommandName, buf: Uint8Array, context: readonly string[], r: CallResult): Reply {
    if (r.value === -1) {
      const text = this.#libc.strerror(r.errno);
      throw new DmError({
        command: ["ioctl", `DM_${cmd}`, ...context],
        exitCode: -1,
        stderr: text,
        errno: errnoName(r.errno),
      });
    }
    const header = decodeHeader(buf);
    return { header, payload: replyPayload(buf, header) };
  }

  /** An ioctl whose reply carries data: grows the buffer while the kernel reports it full. */
  #ioctlData(
    cmd: DmCommandName,
    init: Parameters<typeof encodeRequest>[0],
    context: readonly string[],
  ): Reply {
    for (let size = INITIAL_REPLY_BYTES;; size *= 2) {
      const reply = this.#ioctlRaw(cmd, encodeRequest({ ...init, bufferSize: size }), context);
      if ((reply.header.flags & DmFlag.BUFFER_FULL) === 0) return reply;
      if (size >= MAX_REPLY_BYTES) {
        throw new DmError({
          command: ["ioctl", `DM_${cmd}`, ...context],
          exitCode: -1,
          stderr: `reply larger than ${MAX_REPLY_BYTES} bytes`,
        });
      }
    }
  }

  /** Runs `op`, retrying while it fails with EBUSY. */
  async #retryBusy<T>(
    what: string,
    op: () => T,
    attempts = this.#busyAttempts,
    fixedDelayMs?: number,
  ): Promise<T> {
    let delay = fixedDelayMs ?? this.#busyBackoffMs;
    for (let attempt = 1;; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (!isErrno(err, "EBUSY") || attempt >= attempts) throw err;
        this.#logger.debug("device busy, retrying", { op: what, attempt, delayMs: delay });
        await sleep(delay);
        if (fixedDelayMs === undefined) delay *= 2;
      }
    }
  }

  /** Interface version this backend speaks and the kernel driver's version. */
  version(): Promise<{ library: string; driver: string }> {
    return settle(() => ({
      library: `${DM_REQUEST_VERSION.join(".")}-ioctl`,
      driver: this.#driverVersion,
    }));
  }

  #status(name: string): DmHeader {
    return this.#ioctlRaw("DEV_STATUS", encodeRequest({ name }), [name]).header;
  }

  /** DEV_STATUS of one device; `undefined` when it does not exist. */
  info(name: string): Promise<DeviceInfo | undefined> {
    return settle(() => {
      validateDeviceName(name);
      try {
        return toInfo(this.#status(name));
      } catch (err) {
        if (isErrno(err, "ENXIO")) return undefined;
        throw err;
      }
    });
  }

  /** One DEV_STATUS: a device whose deferred removal is pending still answers. */
  async isActive(name: string): Promise<boolean> {
    return (await this.info(name)) !== undefined;
  }

  #listDevices(): string[] {
    const { payload } = this.#ioctlData("LIST_DEVICES", {}, []);
    return decodeNameList(payload).map((e) => e.name);
  }

  /** DEV_STATUS of every device (one LIST_DEVICES, then one ioctl per device). */
  infoAll(): Promise<Map<string, DeviceInfo>> {
    return settle(() => this.#infoAll());
  }

  #infoAll(): Map<string, DeviceInfo> {
    const map = new Map<string, DeviceInfo>();
    for (const name of this.#listDevices()) {
      try {
        map.set(name, toInfo(this.#status(name)));
      } catch (err) {
        if (!isErrno(err, "ENXIO")) throw err; // removed meanwhile
      }
    }
    return map;
  }

  #targets(name: string, table: boolean): TargetSpec[] {
    const flags = table ? DmFlag.STATUS_TABLE : 0;
    const { header, payload } = this.#ioctlData("TABLE_STATUS", { name, flags }, [name]);
    return decodeTargets(payload, header.targetCount);
  }

  /** TABLE_STATUS of one device; ENXIO when missing. */
  status(name: string): Promise<TargetStatus[]> {
    return settle(() => {
      validateDeviceName(name);
      return this.#targets(name, false).map(toStatus);
    });
  }

  /** Status of every device; with `target`, only its targets of that type, and only devices having one. */
  statusAll(target?: string): Promise<Map<string, TargetStatus[]>> {
    return settle(() => this.#statusAll(target));
  }

  #statusAll(target: string | undefined): Map<string, TargetStatus[]> {
    const map = new Map<string, TargetStatus[]>();
    for (const name of this.#listDevices()) {
      let specs: TargetSpec[];
      try {
        specs = this.#targets(name, false);
      } catch (err) {
        if (isErrno(err, "ENXIO")) continue; // removed meanwhile
        throw err;
      }
      if (target !== undefined) {
        specs = specs.filter((s) => s.type === target);
        if (specs.length === 0) continue;
      }
      map.set(name, specs.map(toStatus));
    }
    return map;
  }

  /** The live table, formatted like `dmsetup table`. */
  table(name: string): Promise<string> {
    return settle(() => {
      validateDeviceName(name);
      return this.#targets(name, true).map(formatTarget).join("\n");
    });
  }

  /** Names of all devices. */
  list(): Promise<string[]> {
    return settle(() => this.#listDevices());
  }

  #load(name: string, targets: TargetSpec[], table: string, readOnly: boolean): void {
    const payload = encodeTargets(targets);
    this.#ioctlRaw(
      "TABLE_LOAD",
      encodeRequest({
        name,
        payload,
        targetCount: targets.length,
        flags: readOnly ? DmFlag.READONLY : 0,
      }),
      [name, table],
    );
  }

  #resume(name: string): DmHeader {
    return this.#ioctlRaw("DEV_SUSPEND", encodeRequest({ name }), [name]).header;
  }

  /** DEV_CREATE + TABLE_LOAD + resume (rolled back on failure), then the device node. */
  async create(name: string, table: string, options: CreateOptions = {}): Promise<void> {
    validateDeviceName(name);
    const targets = parseTable(table);
    this.#ioctlRaw("DEV_CREATE", encodeRequest({ name, uuid: options.uuid }), [name]);
    let dev: bigint;
    try {
      this.#load(name, targets, table, options.readOnly ?? false);
      dev = this.#resume(name).dev;
    } catch (err) {
      this.#undoCreate(name);
      throw err;
    }
    try {
      await this.#ensureNode(name, dev);
    } catch (err) {
      this.#undoCreate(name);
      throw err;
    }
  }

  #undoCreate(name: string): void {
    try {
      this.#ioctlRaw("DEV_REMOVE", encodeRequest({ name }), [name]);
    } catch (err) {
      this.#logger.warn("cannot remove half-created device", { name, error: String(err) });
    }
  }

  /** Makes `<devDir>/<name>` a block node of `dev` (waiting for udev first when it runs). */
  async #ensureNode(name: string, dev: bigint): Promise<void> {
    const { major, minor } = decodeKernelDev(dev);
    const path = `${this.#devDir}/${name}`;
    const state = (): "ok" | "missing" | "stale" => {
      try {
        const st = Deno.statSync(path);
        if (!st.isBlockDevice || st.rdev === null) return "stale";
        const d = splitDevT(st.rdev);
        return d.major === major && d.minor === minor ? "ok" : "stale";
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return "missing";
        throw err;
      }
    };
    if (this.#udev) {
      const deadline = performance.now() + this.#udevWaitMs;
      while (state() !== "ok" && performance.now() < deadline) await sleep(10);
    }
    const now = state();
    if (now === "ok") return;
    if (this.#udev) this.#logger.debug("udev made no device node in time, making it", { name });
    if (now === "stale") {
      this.#logger.debug("replacing stale device node", { path });
      await Deno.remove(path).catch((err) => {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      });
    }
    const mknod = () => this.#libc.mknod(path, S_IFBLK | 0o600, makedev(major, minor));
    let r = mknod();
    if (r.value === -1 && errnoName(r.errno) === "ENOENT") {
      // the directory is made only when missing: no mkdir per create
      await Deno.mkdir(this.#devDir, { recursive: true });
      r = mknod();
    }
    if (r.value === -1 && !(errnoName(r.errno) === "EEXIST" && state() === "ok")) {
      throw new DmError({
        command: ["mknod", path, "b", String(major), String(minor)],
        exitCode: -1,
        stderr: this.#libc.strerror(r.errno),
        errno: errnoName(r.errno),
        message: `Cannot create device node "${path}": ${this.#libc.strerror(r.errno)}`,
      });
    }
  }

  /** TABLE_LOAD into the inactive slot. */
  reload(name: string, table: string): Promise<void> {
    return settle(() => {
      validateDeviceName(name);
      this.#load(name, parseTable(table), table, false);
    });
  }

  /**
   * DEV_SUSPEND with the suspend flag; EBUSY retried. Suspending a suspended device succeeds.
   * It runs on a worker thread, so the event loop goes on while the filesystem is frozen and
   * flushed. Nothing can cancel it once in the kernel: when the flush cannot complete (a full
   * pool that queues writes) the promise settles only when it does, and the worker stays
   * blocked until then while later calls use other workers. A caller that stops waiting owns
   * the outcome: it must resume the device once the promise settles, not before (a resume
   * sent while the suspend is still freezing finds nothing suspended and does nothing).
   */
  async suspend(name: string, options: { noLockfs?: boolean } = {}): Promise<void> {
    validateDeviceName(name);
    const flags = DmFlag.SUSPEND | (options.noLockfs ? DmFlag.SKIP_LOCKFS : 0);
    // on the ioctl thread: freezing a busy filesystem can take seconds
    await this.#retryBusy(
      "suspend",
      () => this.#ioctlOffThread("DEV_SUSPEND", encodeRequest({ name, flags }), [name]),
    );
  }

  /** DEV_SUSPEND without the suspend flag (swaps in a loaded table). */
  resume(name: string): Promise<void> {
    return settle(() => {
      validateDeviceName(name);
      this.#resume(name);
    });
  }

  /**
   * DEV_REMOVE (never forced); ENXIO when missing. EBUSY is retried `busyAttempts` times with
   * a short backoff, or 25 × 200 ms with `retry`. The node is unlinked unless a deferred
   * removal is still pending (the device is open).
   */
  async remove(name: string, options: RemoveOptions = {}): Promise<void> {
    validateDeviceName(name);
    const flags = options.deferred ? DmFlag.DEFERRED_REMOVE : 0;
    const op = () => this.#ioctlRaw("DEV_REMOVE", encodeRequest({ name, flags }), [name]).header;
    const header = options.retry
      ? await this.#retryBusy("remove", op, REMOVE_RETRY_ATTEMPTS, REMOVE_RETRY_DELAY_MS)
      : await this.#retryBusy("remove", op);
    if ((header.flags & DmFlag.DEFERRED_REMOVE) !== 0) {
      this.#logger.debug("deferred remove pending", { name });
      return;
    }
    await Deno.remove(`${this.#devDir}/${name}`).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }

  /** TARGET_MSG; returns the target's reply (empty when it gives none). */
  message(name: string, sector: number, message: string): Promise<string> {
    return settle(() => this.#message(name, sector, message));
  }

  #message(name: string, sector: number, message: string): string {
    validateDeviceName(name);
    checkMessageSector(sector);
    let payload: Uint8Array;
    try {
      payload = encodeTargetMessage(sector, message);
    } catch (err) {
      throw invalidArgument(
        `Invalid message ${JSON.stringify(message)}: ${(err as Error).message}`,
        err,
      );
    }
    const { header, payload: reply } = this.#ioctlData(
      "TARGET_MSG",
      { name, payload },
      [name, String(sector), message],
    );
    if ((header.flags & DmFlag.DATA_OUT) === 0) return "";
    return readCString(reply, 0).trim();
  }
}

/** Opens the control node, creating it from sysfs (`misc/device-mapper/dev`) when missing. */
function openControl(libc: Libc, path: string): number {
  let r = libc.open(path, O_RDWR_CLOEXEC);
  if (r.value === -1 && errnoName(r.errno) === "ENOENT") {
    try {
      const [major, minor] = Deno.readTextFileSync("/sys/class/misc/device-mapper/dev")
        .trim().split(":").map(Number);
      Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true });
      libc.mknod(path, S_IFCHR | 0o600, makedev(major, minor));
    } catch {
      // fall through to the error below
    }
    r = libc.open(path, O_RDWR_CLOEXEC);
  }
  if (r.value === -1) {
    throw new DmIoctlUnavailableError(
      `Cannot open device-mapper control "${path}": ${libc.strerror(r.errno)}`,
    );
  }
  return r.value;
}
