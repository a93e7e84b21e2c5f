/**
 * An in-memory {@linkcode DeviceMapper}: thin-pools, thin devices and dm devices kept in
 * JavaScript objects, for host tests of everything above the device-mapper layer (pool
 * manager, snapshotter, reconciliation) in milliseconds instead of a kernel.
 *
 * The model keeps the kernel's rules that the layers above depend on:
 * - a pool's thin ids: `create_thin`/`create_snap` fail with EEXIST for a taken id, ENODATA
 *   for a missing origin, ENOSPC when the metadata is full; `delete` fails with ENODATA for a
 *   missing id and EBUSY while a dm device maps the id;
 * - dm devices by name: `create` fails with EBUSY for a taken name and leaves nothing behind
 *   when its table is refused (ENODATA for a thin id the pool lacks); `remove` fails with EBUSY
 *   while the device is open (a mounted filesystem, or a pool under active thin devices),
 *   unless `deferred`, which removes it at its last close; ENXIO for an unknown name;
 *   suspending a suspended device and resuming an active one succeed;
 * - data: a thin device maps pool blocks; a snapshot shares its origin's blocks and a write to
 *   a shared block copies it (so a snapshot keeps its origin's content as of `create_snap`);
 *   pool usage counts distinct blocks, a write into a full pool fails with ENOSPC;
 * - `isActive` is true while a device of that name exists, a pending deferred removal included;
 * - `spawns` is always 0.
 *
 * Test hooks: every call of the interface (and every formatter step run through
 * {@linkcode MemoryDeviceMapper.perform}) is recorded in {@linkcode MemoryDeviceMapper.calls};
 * {@linkcode MemoryDeviceMapper.injectFault} makes a chosen call fail with an errno, or
 * "crash" there: the call throws {@linkcode SimulatedCrash}, the kernel-side effect happened or
 * not (`crash: "after"` / `"before"`), crash hooks run, and every later call throws too until
 * {@linkcode MemoryDeviceMapper.restart} (the kernel state survives, as a real kernel's does
 * when the process dies). Only what a test does directly (content, opens, pools) bypasses this.
 *
 * Limitations: a `thin` or `thin-pool` table has exactly one target; other target types are
 * kept as opaque devices; a suspended device refuses I/O instead of queueing it.
 *
 * @module
 */
import { DmError } from "../src/dm/errors.ts";
import { validateDeviceName } from "../src/dm/names.ts";
import { DmAbiError, formatTarget, parseTableText, type TargetSpec } from "../src/dm/ioctl/abi.ts";
import {
  checkThinId,
  createSnapMessage,
  createThinMessage,
  deleteThinMessage,
} from "../src/dm/thin_messages.ts";
import type {
  CreateOptions,
  DeviceInfo,
  DeviceMapper,
  Errno,
  OtherStatus,
  PoolStatus,
  RemoveOptions,
  TargetStatus,
  ThinStatus,
} from "../src/dm/types.ts";

/** Operations of the interface, plus any name a caller of {@linkcode MemoryDeviceMapper.perform} uses. */
export type DmOperation =
  | "version"
  | "info"
  | "infoAll"
  | "isActive"
  | "status"
  | "statusAll"
  | "table"
  | "list"
  | "create"
  | "reload"
  | "suspend"
  | "resume"
  | "remove"
  | "message"
  | "createThin"
  | "createSnap"
  | "deleteThin"
  | (string & Record<never, never>);

/** Operations that only read state: failing them is possible, crashing "after" them is the same as "before". */
export const READ_OPERATIONS: ReadonlySet<string> = new Set([
  "version",
  "info",
  "infoAll",
  "isActive",
  "status",
  "statusAll",
  "table",
  "list",
]);

/** One recorded call. */
export interface DmCall {
  /** 1-based position among all calls this instance received. */
  index: number;
  op: DmOperation;
  /** The device the call is about (the pool for thin-id messages); undefined for listings. */
  name?: string;
  /** The thin id of `createThin`/`createSnap`/`deleteThin`. */
  thinId?: number;
  /** The call's arguments. */
  args: readonly unknown[];
}

/** Where a crash strikes relative to the call's kernel-side effect. */
export type CrashPoint = "before" | "after";

/**
 * A fault: the `nth` (default 1) call, counted from when the fault is injected, that matches
 * every given field (`op`, `name`, `thinId`; none given: every call matches) fails with
 * `errno` (default EIO) without any effect, or, with `crash`, throws {@linkcode SimulatedCrash}.
 */
export interface Fault {
  op?: DmOperation;
  name?: string | RegExp;
  thinId?: number;
  /** Which matching call fires the fault (1-based, default 1). */
  nth?: number;
  /** errno of the failure (default EIO); ignored with `crash`. */
  errno?: Errno;
  /** Crash instead of failing: the effect did not (`before`) or did (`after`) happen. */
  crash?: CrashPoint;
}

/** Thrown by a call where the simulated process died, and by every call after it. */
export class SimulatedCrash extends Error {
  /** The call the crash struck (undefined for calls made after it). */
  readonly call: DmCall | undefined;

  /** Creates the error. */
  constructor(message: string, call?: DmCall) {
    super(message);
    this.name = "SimulatedCrash";
    this.call = call;
  }
}

/** Shape of a pool created with {@linkcode MemoryDeviceMapper.createPool}. */
export interface MemoryPoolOptions {
  /** Data blocks of the pool (default 4096). */
  dataBlocks?: number;
  /** Metadata blocks (default 1024); each thin id takes one, plus one per 64 mappings. */
  metadataBlocks?: number;
  /** Block size in 512-byte sectors (default 128, i.e. 64 KiB). */
  blockSectors?: number;
}

/** What a thin device snapshot of an active origin looked like (see {@linkcode MemoryDeviceMapper.unsafeSnapshots}). */
export interface UnsafeSnapshot {
  pool: string;
  thinId: number;
  originId: number;
  /** The origin's active device, which was not suspended. */
  origin: string;
}

/** Pool usage, as the pool's status reports it. */
export interface PoolUsage {
  usedDataBlocks: number;
  totalDataBlocks: number;
  usedMetadataBlocks: number;
  totalMetadataBlocks: number;
}

const STRERROR: Record<Errno, string> = {
  EBUSY: "Device or resource busy",
  ENXIO: "No such device or address",
  ENODATA: "No data available",
  EEXIST: "File exists",
  ENOENT: "No such file or directory",
  EINVAL: "Invalid argument",
  ENOSPC: "No space left on device",
  ENODEV: "No such device",
  EPERM: "Operation not permitted",
  EIO: "Input/output error",
};

/** The kernel's metadata of one thin-pool (survives removal of the pool's dm device). */
interface PoolData {
  /** Key: the metadata device of the thin-pool table. */
  metadataDev: string;
  dataBlocks: number;
  metadataBlocks: number;
  blockSectors: number;
  transactionId: number;
  /** Thin id → logical block → physical block. */
  thins: Map<number, Map<number, number>>;
  /** Physical block → bytes. */
  blocks: Map<number, Uint8Array>;
  /** Physical block → number of mappings referencing it. */
  refs: Map<number, number>;
  nextPhysical: number;
  /** Set by {@linkcode MemoryDeviceMapper.setPoolMode}; otherwise derived from usage. */
  mode: PoolStatus["mode"] | undefined;
  needsCheck: boolean;
}

type Target =
  | { kind: "thin"; spec: TargetSpec; pool: string; thinId: number }
  | { kind: "thin-pool"; spec: TargetSpec; data: PoolData }
  | { kind: "other"; specs: TargetSpec[] };

interface Device {
  name: string;
  minor: number;
  live: Target | undefined;
  inactive: Target | undefined;
  suspended: boolean;
  readOnly: boolean;
  /** Opens by the test (mounts), not counting thin devices holding a pool. */
  opens: number;
  deferredRemove: boolean;
  events: number;
  /** dm UUID given at create. */
  uuid?: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The dm device name in a `/dev/mapper/<name>` path, or undefined. */
export function nameOfPath(path: string): string | undefined {
  const prefix = "/dev/mapper/";
  return path.startsWith(prefix) && !path.slice(prefix.length).includes("/")
    ? path.slice(prefix.length)
    : undefined;
}

/** The in-memory device mapper; see the module doc. */
export class MemoryDeviceMapper implements DeviceMapper {
  readonly #devices = new Map<string, Device>();
  /** Pool metadata by metadata device. */
  readonly #pools = new Map<string, PoolData>();
  readonly #calls: DmCall[] = [];
  #faults: Array<{ fault: Fault; remaining: number }> = [];
  #crashHooks: Array<(call: DmCall) => void> = [];
  #crashed: DmCall | undefined;
  readonly #major: number;
  /** Snapshots taken of an active origin that was not suspended (a torn-snapshot risk). */
  readonly unsafeSnapshots: UnsafeSnapshot[] = [];

  /** Creates an empty device mapper; `major` is the block major of its devices (default 253). */
  constructor(options: { major?: number } = {}) {
    this.#major = options.major ?? 253;
  }

  /** Always 0: nothing is spawned. */
  get spawns(): number {
    return 0;
  }

  /** Nothing to release; the state survives (a later snapshotter may use this instance again). */
  close(): void {}

  // ---------------------------------------------------------------- test hooks

  /** Every call so far, in order. */
  get calls(): readonly DmCall[] {
    return this.#calls;
  }

  /** Arms a fault (see {@linkcode Fault}); faults fire in the order they were injected. */
  injectFault(fault: Fault): void {
    const nth = fault.nth ?? 1;
    if (!Number.isInteger(nth) || nth < 1) throw new RangeError(`Invalid fault nth ${nth}`);
    this.#faults.push({ fault, remaining: nth });
  }

  /** Faults injected that have not fired yet. */
  get pendingFaults(): readonly Fault[] {
    return this.#faults.map((f) => f.fault);
  }

  /** Disarms every fault. */
  clearFaults(): void {
    this.#faults = [];
  }

  /** Runs `hook` synchronously at the moment of a crash (e.g. to release what a dying process held). */
  onCrash(hook: (call: DmCall) => void): void {
    this.#crashHooks.push(hook);
  }

  /** The call a crash struck, while the simulated process is dead. */
  get crashed(): DmCall | undefined {
    return this.#crashed;
  }

  /** A new process: calls work again; faults and crash hooks are dropped; the state stays. */
  restart(): void {
    this.#crashed = undefined;
    this.#faults = [];
    this.#crashHooks = [];
  }

  /**
   * The injection point every call goes through: records `call`, then fails or crashes it as
   * an armed fault says, else runs `effect` (after yielding once, as a real call would).
   * `command` names the call in a failure's {@linkcode DmError}.
   */
  async perform<T>(
    call: Omit<DmCall, "index">,
    command: readonly string[],
    effect: () => T,
  ): Promise<T> {
    if (this.#crashed) {
      throw new SimulatedCrash(`The process crashed at call #${this.#crashed.index}`);
    }
    const recorded: DmCall = { ...call, index: this.#calls.length + 1 };
    this.#calls.push(recorded);
    const fault = this.#fire(recorded);
    await Promise.resolve();
    if (fault?.crash) {
      if (fault.crash === "after") {
        try {
          effect();
        } catch {
          // the call failed in the kernel; the process died anyway
        }
      }
      this.#crashed = recorded;
      for (const hook of this.#crashHooks) hook(recorded);
      throw new SimulatedCrash(
        `Simulated crash ${fault.crash} ${call.op} (call #${recorded.index})`,
        recorded,
      );
    }
    if (fault) throw failure(command, call.name, fault.errno ?? "EIO", "injected fault");
    return effect();
  }

  /**
   * Counts `call` against every armed fault; the first one due fires (and is disarmed). Another
   * one due at the same call stays due and fires at its next matching call.
   */
  #fire(call: DmCall): Fault | undefined {
    let fired: { fault: Fault; remaining: number } | undefined;
    for (const armed of this.#faults) {
      if (!matches(armed.fault, call)) continue;
      armed.remaining = Math.max(0, armed.remaining - 1);
      if (armed.remaining === 0 && !fired) fired = armed;
      else if (armed.remaining === 0) armed.remaining = 1;
    }
    if (fired) this.#faults = this.#faults.filter((f) => f !== fired);
    return fired?.fault;
  }

  /**
   * Creates pool metadata and activates a thin-pool device `name` on it (not recorded, no
   * faults): the pool an administrator would have set up.
   */
  createPool(name: string, options: MemoryPoolOptions = {}): void {
    const blockSectors = options.blockSectors ?? 128;
    const dataBlocks = options.dataBlocks ?? 4096;
    const metadataBlocks = options.metadataBlocks ?? 1024;
    const table = `0 ${dataBlocks * blockSectors} thin-pool mem-meta-${name} mem-data-${name} ` +
      `${blockSectors} 0 1 skip_block_zeroing`;
    const target = this.#parseTarget(table, ["createPool", name]);
    if (target.kind !== "thin-pool") throw new Error("unreachable");
    target.data.metadataBlocks = metadataBlocks;
    this.#addDevice(name, target, false, ["createPool", name]);
  }

  /** Overrides a pool's mode (as a failing pool would report it); `undefined` restores usage-derived. */
  setPoolMode(pool: string, mode: PoolStatus["mode"] | undefined, needsCheck = false): void {
    const data = this.#poolData(pool);
    data.mode = mode;
    data.needsCheck = needsCheck;
  }

  /** Usage of pool `pool`. */
  poolUsage(pool: string): PoolUsage {
    const data = this.#poolData(pool);
    return {
      usedDataBlocks: data.refs.size,
      totalDataBlocks: data.dataBlocks,
      usedMetadataBlocks: metadataUsed(data),
      totalMetadataBlocks: data.metadataBlocks,
    };
  }

  /** Thin ids existing in pool `pool`, sorted (like `thin_ls`). */
  thinIds(pool: string): number[] {
    return [...this.#poolData(pool).thins.keys()].sort((a, b) => a - b);
  }

  /** Names of the devices whose live table is a thin device of `pool`, sorted. */
  thinDevices(pool: string): string[] {
    const names: string[] = [];
    for (const d of this.#devices.values()) {
      if (d.live?.kind === "thin" && d.live.pool === pool) names.push(d.name);
    }
    return names.sort();
  }

  /** Block size of pool `pool` in bytes. */
  blockBytes(pool: string): number {
    return this.#poolData(pool).blockSectors * 512;
  }

  /** Opens device `name` (a mount); ENXIO when missing. */
  openDevice(name: string): void {
    const d = this.#devices.get(name);
    if (!d) throw failure(["open", name], name, "ENXIO");
    d.opens++;
  }

  /** Closes device `name` (an unmount); a pending deferred removal happens at the last close. */
  closeDevice(name: string): void {
    const d = this.#devices.get(name);
    if (!d || d.opens === 0) throw new Error(`Cannot close device "${name}": not open`);
    d.opens--;
    this.#removeIfDeferred(d);
  }

  /** True when a deferred removal of `name` waits for its last close. */
  deferredRemovePending(name: string): boolean {
    return this.#devices.get(name)?.deferredRemove ?? false;
  }

  /**
   * Writes `data` (at most one block; a string is UTF-8) to block `block` of active thin device
   * `name`, copying a block shared with a snapshot first. ENOSPC when the pool is full.
   */
  write(name: string, block: number, data: Uint8Array | string): void {
    const { data: pool, thinId, device } = this.#thinIo(name, block, "write");
    if (device.readOnly) throw failure(["write", name], name, "EPERM", "device is read-only");
    const bytes = typeof data === "string" ? encoder.encode(data) : data.slice();
    if (bytes.length > pool.blockSectors * 512) {
      throw new RangeError(`Cannot write ${bytes.length} bytes into one block of "${name}"`);
    }
    writeBlock(pool, thinId, block, bytes, name);
  }

  /** Bytes of block `block` of active thin device `name`; undefined when unmapped (zeros). */
  read(name: string, block: number): Uint8Array | undefined {
    const { data, thinId } = this.#thinIo(name, block, "read");
    return readBlock(data, thinId, block);
  }

  /** {@linkcode read} as text. */
  readText(name: string, block: number): string | undefined {
    const bytes = this.read(name, block);
    return bytes && decoder.decode(bytes);
  }

  /** Text of block `block` of thin id `thinId` in `pool`, active or not (like thin_dump). */
  readThinText(pool: string, thinId: number, block: number): string | undefined {
    const data = this.#poolData(pool);
    if (!data.thins.has(thinId)) throw new Error(`Pool "${pool}" has no thin id ${thinId}`);
    const bytes = readBlock(data, thinId, block);
    return bytes && decoder.decode(bytes);
  }

  /** Unmaps every block of active thin device `name` (a discard of the whole device). */
  discardAll(name: string): void {
    const { data, thinId, device } = this.#thinIo(name, 0, "discard");
    if (device.readOnly) throw failure(["discard", name], name, "EPERM", "device is read-only");
    const mapping = data.thins.get(thinId)!;
    for (const physical of mapping.values()) unref(data, physical);
    mapping.clear();
  }

  /** True when a device called `name` exists (unlike `isActive`, not a recorded call). */
  hasDevice(name: string): boolean {
    return this.#devices.has(name);
  }

  /** Bytes of the live table of device `name` (its virtual size); undefined without one. */
  deviceBytes(name: string): number | undefined {
    const live = this.#devices.get(name)?.live;
    if (!live) return undefined;
    const sectors = live.kind === "other"
      ? live.specs.reduce((n, spec) => n + spec.length, 0)
      : live.spec.length;
    return sectors * 512;
  }

  /** Open count of device `name` as `info` reports it (test opens plus active thin devices on a pool). */
  openCount(name: string): number {
    const d = this.#devices.get(name);
    return d ? this.#openCount(d) : 0;
  }

  #thinIo(name: string, block: number, what: string) {
    const device = this.#devices.get(name);
    if (!device) throw failure([what, name], name, "ENXIO");
    const target = device.live;
    if (target?.kind !== "thin") {
      throw failure([what, name], name, "EINVAL", "not an active thin device");
    }
    if (device.suspended) {
      throw failure([what, name], name, "EIO", "device is suspended (I/O would block)");
    }
    const data = this.#poolData(target.pool);
    if (!Number.isInteger(block) || block < 0 || block * data.blockSectors >= target.spec.length) {
      throw new RangeError(`Block ${block} is outside device "${name}"`);
    }
    return { device, data, thinId: target.thinId };
  }

  // ---------------------------------------------------------------- model

  #poolData(pool: string): PoolData {
    const target = this.#devices.get(pool)?.live;
    if (target?.kind !== "thin-pool") throw new Error(`No active thin-pool "${pool}"`);
    return target.data;
  }

  #openCount(d: Device): number {
    let count = d.opens;
    for (const other of this.#devices.values()) {
      for (const t of [other.live, other.inactive]) {
        if (t?.kind === "thin" && t.pool === d.name) count++;
      }
    }
    return count;
  }

  #freeMinor(): number {
    const used = new Set([...this.#devices.values()].map((d) => d.minor));
    let minor = 0;
    while (used.has(minor)) minor++;
    return minor;
  }

  #addDevice(
    name: string,
    target: Target,
    readOnly: boolean,
    command: readonly string[],
    uuid?: string,
  ): void {
    validateDeviceName(name);
    if (this.#devices.has(name)) throw failure(command, name, "EBUSY");
    if (uuid && [...this.#devices.values()].some((d) => d.uuid === uuid)) {
      throw failure(command, name, "EBUSY", `UUID ${uuid} is taken`);
    }
    this.#devices.set(name, {
      uuid: uuid || undefined,
      name,
      minor: this.#freeMinor(),
      live: target,
      inactive: undefined,
      suspended: false,
      readOnly,
      opens: 0,
      deferredRemove: false,
      events: 0,
    });
  }

  #device(name: string, command: readonly string[]): Device {
    validateDeviceName(name);
    const d = this.#devices.get(name);
    if (!d) throw failure(command, name, "ENXIO");
    return d;
  }

  /** The pool device a thin table names (`/dev/mapper/<name>` or `major:minor`). */
  #poolDevice(ref: string): Device | undefined {
    const byPath = nameOfPath(ref);
    if (byPath !== undefined) return this.#devices.get(byPath);
    const m = /^(\d+):(\d+)$/.exec(ref);
    if (!m || Number(m[1]) !== this.#major) return undefined;
    return [...this.#devices.values()].find((d) => d.minor === Number(m[2]));
  }

  #parseTarget(table: string, command: readonly string[]): Target {
    let specs: TargetSpec[];
    try {
      specs = parseTableText(table);
    } catch (err) {
      if (err instanceof DmAbiError) throw failure(command, undefined, "EINVAL", err.message);
      throw err;
    }
    const typed = specs.filter((s) => s.type === "thin" || s.type === "thin-pool");
    if (typed.length === 0) return { kind: "other", specs };
    const spec = specs[0];
    if (specs.length !== 1 || spec.start !== 0 || spec.length <= 0) {
      throw failure(command, undefined, "EINVAL", "thin targets need a one-line table from 0");
    }
    const p = spec.params.split(/\s+/).filter(Boolean);
    if (spec.type === "thin") {
      if (p.length < 2 || !/^\d+$/.test(p[1])) {
        throw failure(command, undefined, "EINVAL", "bad thin target parameters");
      }
      const poolDevice = this.#poolDevice(p[0]);
      if (poolDevice?.live?.kind !== "thin-pool") {
        throw failure(command, undefined, "ENODEV", `no thin-pool ${p[0]}`);
      }
      const thinId = Number(p[1]);
      if (!poolDevice.live.data.thins.has(thinId)) {
        throw failure(command, undefined, "ENODATA", "Couldn't open thin internal device");
      }
      return { kind: "thin", spec, pool: poolDevice.name, thinId };
    }
    // thin-pool <metadata dev> <data dev> <block sectors> <low water mark> [features]
    if (p.length < 4 || !/^\d+$/.test(p[2])) {
      throw failure(command, undefined, "EINVAL", "bad thin-pool target parameters");
    }
    const blockSectors = Number(p[2]);
    if (blockSectors < 128 || blockSectors % 128 !== 0) {
      throw failure(command, undefined, "EINVAL", "Invalid block size");
    }
    let data = this.#pools.get(p[0]);
    if (!data) {
      data = {
        metadataDev: p[0],
        dataBlocks: 0,
        metadataBlocks: 1024,
        blockSectors,
        transactionId: 0,
        thins: new Map(),
        blocks: new Map(),
        refs: new Map(),
        nextPhysical: 0,
        mode: undefined,
        needsCheck: false,
      };
      this.#pools.set(p[0], data);
    } else if (data.blockSectors !== blockSectors) {
      throw failure(command, undefined, "EINVAL", "Pool target block size mismatch");
    }
    data.dataBlocks = Math.floor(spec.length / blockSectors);
    return { kind: "thin-pool", spec, data };
  }

  #removeIfDeferred(d: Device): void {
    if (d.deferredRemove && this.#openCount(d) === 0) this.#devices.delete(d.name);
  }

  #thinMappedBy(pool: string, thinId: number): Device | undefined {
    for (const d of this.#devices.values()) {
      for (const t of [d.live, d.inactive]) {
        if (t?.kind === "thin" && t.pool === pool && t.thinId === thinId) return d;
      }
    }
    return undefined;
  }

  #info(d: Device): DeviceInfo {
    return {
      name: d.name,
      blkdevname: `dm-${d.minor}`,
      major: this.#major,
      minor: d.minor,
      live: d.live !== undefined,
      inactive: d.inactive !== undefined,
      suspended: d.suspended,
      readOnly: d.readOnly,
      openCount: this.#openCount(d),
      segments: d.live === undefined ? 0 : d.live.kind === "other" ? d.live.specs.length : 1,
      events: d.events,
      ...(d.uuid ? { uuid: d.uuid } : {}),
    };
  }

  #status(d: Device): TargetStatus[] {
    const t = d.live;
    if (!t) return [];
    if (t.kind === "other") {
      return t.specs.map((s): OtherStatus => ({
        target: s.type,
        start: s.start,
        length: s.length,
        params: "",
      }));
    }
    if (t.kind === "thin-pool") return [poolStatus(t.spec, t.data)];
    const data = this.#poolData(t.pool);
    const mode = poolMode(data);
    const mapping = data.thins.get(t.thinId);
    if (mode === "fail" || !mapping) {
      return [{
        target: "thin",
        start: 0,
        length: t.spec.length,
        mappedSectors: 0,
        highestMappedSector: null,
        failed: true,
      }];
    }
    const highest = mapping.size === 0 ? -1 : Math.max(...mapping.keys());
    const thin: ThinStatus = {
      target: "thin",
      start: 0,
      length: t.spec.length,
      mappedSectors: mapping.size * data.blockSectors,
      highestMappedSector: highest < 0 ? null : (highest + 1) * data.blockSectors - 1,
      failed: false,
    };
    return [thin];
  }

  #table(d: Device): string {
    const t = d.live;
    if (!t) return "";
    if (t.kind === "other") return t.specs.map(formatTarget).join("\n");
    if (t.kind === "thin-pool") return formatTarget(t.spec);
    const pool = this.#devices.get(t.pool)!;
    return formatTarget({ ...t.spec, params: `${this.#major}:${pool.minor} ${t.thinId}` });
  }

  #checkPoolMessages(name: string, data: PoolData, command: readonly string[]): void {
    const mode = poolMode(data);
    if (mode === "fail" || mode === "ro") {
      throw new DmError({
        command,
        exitCode: 1,
        stderr: `device-mapper: message ioctl on ${name}  failed: Operation not supported`,
        errno: undefined,
      });
    }
  }

  #createThin(pool: string, id: number, command: readonly string[]): void {
    const d = this.#device(pool, command);
    if (d.live?.kind !== "thin-pool") throw failure(command, pool, "EINVAL");
    const data = d.live.data;
    this.#checkPoolMessages(pool, data, command);
    if (data.thins.has(id)) throw failure(command, pool, "EEXIST");
    if (metadataUsed(data) + 1 > data.metadataBlocks) throw failure(command, pool, "ENOSPC");
    data.thins.set(id, new Map());
  }

  #createSnap(pool: string, id: number, originId: number, command: readonly string[]): void {
    const d = this.#device(pool, command);
    if (d.live?.kind !== "thin-pool") throw failure(command, pool, "EINVAL");
    const data = d.live.data;
    this.#checkPoolMessages(pool, data, command);
    if (data.thins.has(id)) throw failure(command, pool, "EEXIST");
    const origin = data.thins.get(originId);
    if (!origin) throw failure(command, pool, "ENODATA");
    if (metadataUsed(data) + 1 > data.metadataBlocks) throw failure(command, pool, "ENOSPC");
    const active = this.#thinMappedBy(pool, originId);
    if (active && active.live?.kind === "thin" && !active.suspended) {
      this.unsafeSnapshots.push({ pool, thinId: id, originId, origin: active.name });
    }
    const copy = new Map(origin);
    for (const physical of copy.values()) data.refs.set(physical, data.refs.get(physical)! + 1);
    data.thins.set(id, copy);
  }

  #deleteThin(pool: string, id: number, command: readonly string[]): void {
    const d = this.#device(pool, command);
    if (d.live?.kind !== "thin-pool") throw failure(command, pool, "EINVAL");
    const data = d.live.data;
    this.#checkPoolMessages(pool, data, command);
    const mapping = data.thins.get(id);
    if (!mapping) throw failure(command, pool, "ENODATA");
    if (this.#thinMappedBy(pool, id)) throw failure(command, pool, "EBUSY");
    for (const physical of mapping.values()) unref(data, physical);
    data.thins.delete(id);
  }

  #message(name: string, sector: number, message: string, command: readonly string[]): string {
    const d = this.#device(name, command);
    if (!Number.isSafeInteger(sector) || sector < 0) {
      throw failure(command, name, "EINVAL", `Invalid message sector ${sector}`);
    }
    if (d.live?.kind !== "thin-pool") throw failure(command, name, "EINVAL");
    const words = message.trim().split(/\s+/);
    const ids = words.slice(1).map((w) => (/^\d+$/.test(w) ? Number(w) : NaN));
    const arity: Record<string, number> = {
      create_thin: 1,
      create_snap: 2,
      delete: 1,
      set_transaction_id: 2,
      reserve_metadata_snap: 0,
      release_metadata_snap: 0,
    };
    if (arity[words[0]] === undefined || ids.length !== arity[words[0]] || ids.some(isNaN)) {
      throw failure(command, name, "EINVAL");
    }
    switch (words[0]) {
      case "create_thin":
        checkThinId(ids[0]);
        this.#createThin(name, ids[0], command);
        break;
      case "create_snap":
        checkThinId(ids[0]);
        checkThinId(ids[1]);
        this.#createSnap(name, ids[0], ids[1], command);
        break;
      case "delete":
        checkThinId(ids[0]);
        this.#deleteThin(name, ids[0], command);
        break;
      case "set_transaction_id":
        if (d.live.data.transactionId !== ids[0]) throw failure(command, name, "EINVAL");
        d.live.data.transactionId = ids[1];
        break;
    }
    return "";
  }

  // ---------------------------------------------------------------- DeviceMapper

  /** Versions of this model. */
  version(): Promise<{ library: string; driver: string }> {
    return this.perform({ op: "version", args: [] }, ["dmsetup", "version"], () => ({
      library: "memory",
      driver: "4.48.0",
    }));
  }

  /** Info of one device; undefined when missing. */
  info(name: string): Promise<DeviceInfo | undefined> {
    return this.perform({ op: "info", name, args: [name] }, ["dmsetup", "info", name], () => {
      validateDeviceName(name);
      const d = this.#devices.get(name);
      return d && this.#info(d);
    });
  }

  /** Info of every device. */
  infoAll(): Promise<Map<string, DeviceInfo>> {
    return this.perform({ op: "infoAll", args: [] }, ["dmsetup", "info"], () => {
      return new Map([...this.#devices.values()].map((d) => [d.name, this.#info(d)]));
    });
  }

  /** True while a device called `name` exists (a pending deferred removal included). */
  isActive(name: string): Promise<boolean> {
    return this.perform({ op: "isActive", name, args: [name] }, ["isActive", name], () => {
      validateDeviceName(name);
      return this.#devices.has(name);
    });
  }

  /** Status of one device; ENXIO when missing. */
  status(name: string): Promise<TargetStatus[]> {
    const command = ["dmsetup", "status", name];
    return this.perform({ op: "status", name, args: [name] }, command, () => {
      return this.#status(this.#device(name, command));
    });
  }

  /** Status of every device; with `target`, only that target type's lines of devices having one. */
  statusAll(target?: string): Promise<Map<string, TargetStatus[]>> {
    const command = target ? ["dmsetup", "status", "--target", target] : ["dmsetup", "status"];
    return this.perform({ op: "statusAll", args: target ? [target] : [] }, command, () => {
      const map = new Map<string, TargetStatus[]>();
      for (const d of this.#devices.values()) {
        let lines = this.#status(d);
        if (target !== undefined) {
          lines = lines.filter((l) => l.target === target);
          if (lines.length === 0) continue;
        }
        map.set(d.name, lines);
      }
      return map;
    });
  }

  /** The live table, as `dmsetup table` prints it (pool devices as `major:minor`). */
  table(name: string): Promise<string> {
    const command = ["dmsetup", "table", name];
    return this.perform({ op: "table", name, args: [name] }, command, () => {
      return this.#table(this.#device(name, command));
    });
  }

  /** Names of all devices. */
  list(): Promise<string[]> {
    return this.perform(
      { op: "list", args: [] },
      ["dmsetup", "ls"],
      () => [...this.#devices.keys()],
    );
  }

  /** Creates and activates a device; EBUSY when the name is taken; nothing is left on failure. */
  create(name: string, table: string, options: CreateOptions = {}): Promise<void> {
    const command = ["dmsetup", "create", name, "--table", table];
    return this.perform({ op: "create", name, args: [name, table, options] }, command, () => {
      validateDeviceName(name);
      if (this.#devices.has(name)) throw failure(command, name, "EBUSY");
      const target = this.#parseTarget(table, command);
      this.#addDevice(name, target, options.readOnly ?? false, command, options.uuid);
    });
  }

  /** Loads a table into the inactive slot. */
  reload(name: string, table: string): Promise<void> {
    const command = ["dmsetup", "reload", name, "--table", table];
    return this.perform({ op: "reload", name, args: [name, table] }, command, () => {
      const d = this.#device(name, command);
      d.inactive = this.#parseTarget(table, command);
    });
  }

  /** Suspends; a suspended device stays suspended. */
  suspend(name: string, options: { noLockfs?: boolean } = {}): Promise<void> {
    const command = ["dmsetup", "suspend", name];
    return this.perform({ op: "suspend", name, args: [name, options] }, command, () => {
      const d = this.#device(name, command);
      if (!d.suspended) d.events++;
      d.suspended = true;
    });
  }

  /** Resumes, swapping in a loaded inactive table; an active device stays active. */
  resume(name: string): Promise<void> {
    const command = ["dmsetup", "resume", name];
    return this.perform({ op: "resume", name, args: [name] }, command, () => {
      const d = this.#device(name, command);
      if (d.inactive) {
        d.live = d.inactive;
        d.inactive = undefined;
      }
      if (d.suspended) d.events++;
      d.suspended = false;
    });
  }

  /**
   * Removes a device: ENXIO when missing; EBUSY while open unless `deferred`, which removes
   * it at its last close (the device, and `isActive`, remain until then).
   */
  remove(name: string, options: RemoveOptions = {}): Promise<void> {
    const command = ["dmsetup", "remove", ...(options.deferred ? ["--deferred"] : []), name];
    return this.perform({ op: "remove", name, args: [name, options] }, command, () => {
      const d = this.#device(name, command);
      if (this.#openCount(d) > 0) {
        if (!options.deferred) throw failure(command, name, "EBUSY");
        d.deferredRemove = true;
        return;
      }
      this.#devices.delete(name);
    });
  }

  /** A pool message: create_thin, create_snap, delete, set_transaction_id, (reserve|release)_metadata_snap. */
  message(name: string, sector: number, message: string): Promise<string> {
    const command = ["dmsetup", "message", name, String(sector), message];
    return this.perform(
      { op: "message", name, args: [name, sector, message] },
      command,
      () => this.#message(name, sector, message, command),
    );
  }

  /** `create_thin <id>`; EEXIST when taken. */
  createThin(pool: string, id: number): Promise<void> {
    const command = ["dmsetup", "message", pool, "0", `create_thin ${id}`];
    return this.perform(
      { op: "createThin", name: pool, thinId: id, args: [pool, id] },
      command,
      () => {
        createThinMessage(id);
        this.#createThin(pool, id, command);
      },
    );
  }

  /** `create_snap <id> <originId>`; EEXIST when taken, ENODATA when the origin is missing. */
  createSnap(pool: string, id: number, originId: number): Promise<void> {
    const command = ["dmsetup", "message", pool, "0", `create_snap ${id} ${originId}`];
    return this.perform(
      { op: "createSnap", name: pool, thinId: id, args: [pool, id, originId] },
      command,
      () => {
        createSnapMessage(id, originId);
        this.#createSnap(pool, id, originId, command);
      },
    );
  }

  /** `delete <id>`; ENODATA when absent, EBUSY while a device maps it. */
  deleteThin(pool: string, id: number): Promise<void> {
    const command = ["dmsetup", "message", pool, "0", `delete ${id}`];
    return this.perform(
      { op: "deleteThin", name: pool, thinId: id, args: [pool, id] },
      command,
      () => {
        deleteThinMessage(id);
        this.#deleteThin(pool, id, command);
      },
    );
  }
}

function matches(fault: Fault, call: DmCall): boolean {
  if (fault.op !== undefined && fault.op !== call.op) return false;
  if (fault.thinId !== undefined && fault.thinId !== call.thinId) return false;
  if (fault.name !== undefined) {
    if (call.name === undefined) return false;
    if (typeof fault.name === "string" ? fault.name !== call.name : !fault.name.test(call.name)) {
      return false;
    }
  }
  return true;
}

/** A {@linkcode DmError} like the dmsetup backend's for `errno`. */
function failure(
  command: readonly string[],
  name: string | undefined,
  errno: Errno,
  detail?: string,
): DmError {
  const what = command[1] ?? command[0] ?? "call";
  const on = name === undefined ? "" : ` on ${name}`;
  const extra = detail ? `\n${detail}` : "";
  return new DmError({
    command,
    exitCode: 1,
    stderr: `device-mapper: ${what} ioctl${on}  failed: ${STRERROR[errno]}${extra}`,
    errno,
  });
}

function metadataUsed(data: PoolData): number {
  let mappings = 0;
  for (const m of data.thins.values()) mappings += m.size;
  return 1 + data.thins.size + Math.ceil(mappings / 64);
}

function poolMode(data: PoolData): PoolStatus["mode"] {
  if (data.mode !== undefined) return data.mode;
  return data.refs.size >= data.dataBlocks ? "out_of_data_space" : "rw";
}

function poolStatus(spec: TargetSpec, data: PoolData): PoolStatus {
  const mode = poolMode(data);
  const failed = mode === "fail";
  return {
    target: "thin-pool",
    start: spec.start,
    length: spec.length,
    transactionId: failed ? 0 : data.transactionId,
    usedMetadataBlocks: failed ? 0 : metadataUsed(data),
    totalMetadataBlocks: failed ? 0 : data.metadataBlocks,
    usedDataBlocks: failed ? 0 : data.refs.size,
    totalDataBlocks: failed ? 0 : data.dataBlocks,
    heldMetadataRoot: null,
    mode,
    discardPassdown: !failed,
    errorIfNoSpace: false,
    needsCheck: !failed && data.needsCheck,
    failed,
  };
}

function unref(data: PoolData, physical: number): void {
  const left = data.refs.get(physical)! - 1;
  if (left > 0) {
    data.refs.set(physical, left);
  } else {
    data.refs.delete(physical);
    data.blocks.delete(physical);
  }
}

function readBlock(data: PoolData, thinId: number, block: number): Uint8Array | undefined {
  const physical = data.thins.get(thinId)?.get(block);
  return physical === undefined ? undefined : data.blocks.get(physical)!.slice();
}

function writeBlock(
  data: PoolData,
  thinId: number,
  block: number,
  bytes: Uint8Array,
  name: string,
): void {
  const mapping = data.thins.get(thinId)!;
  const physical = mapping.get(block);
  if (physical !== undefined && data.refs.get(physical) === 1) {
    data.blocks.set(physical, bytes);
    return;
  }
  const mode = poolMode(data);
  if (mode === "fail" || mode === "ro") {
    throw failure(["write", name], name, "EIO", `pool is in ${mode} mode`);
  }
  if (data.refs.size >= data.dataBlocks) {
    throw failure(["write", name], name, "ENOSPC", "pool is out of data space");
  }
  if (physical !== undefined) unref(data, physical);
  const fresh = data.nextPhysical++;
  data.refs.set(fresh, 1);
  data.blocks.set(fresh, bytes);
  mapping.set(block, fresh);
}
