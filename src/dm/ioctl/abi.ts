/**
 * Binary layout of the device-mapper ioctl interface (Linux uapi `linux/dm-ioctl.h`,
 * interface version 4) for x86-64: encoding of requests and decoding of replies. Pure: no I/O.
 *
 * Every request is one buffer: a 312-byte `struct dm_ioctl` header followed by the payload
 * at `data_start`; the kernel writes its reply into the same buffer.
 *
 * @module
 */
import type { Errno } from "../types.ts";

/** `sizeof(struct dm_ioctl)`. */
export const DM_IOCTL_SIZE = 312;
/** `DM_NAME_LEN` (including the NUL). */
export const DM_NAME_LEN = 128;
/** `DM_UUID_LEN` (including the NUL). */
export const DM_UUID_LEN = 129;
/** `DM_MAX_TYPE_NAME` (including the NUL). */
export const DM_MAX_TYPE_NAME = 16;
/** `sizeof(struct dm_target_spec)`. */
export const DM_TARGET_SPEC_SIZE = 40;
/** Interface version sent with every request; the kernel answers with its own. */
export const DM_REQUEST_VERSION: readonly [number, number, number] = [4, 0, 0];

/** Offsets of the `struct dm_ioctl` fields. */
const OFF = {
  version: 0,
  dataSize: 12,
  dataStart: 16,
  targetCount: 20,
  openCount: 24,
  flags: 28,
  eventNr: 32,
  dev: 40,
  name: 48,
  uuid: 48 + DM_NAME_LEN,
} as const;

/** Command numbers (`DM_*_CMD`). */
export const DmCommand = {
  VERSION: 0,
  REMOVE_ALL: 1,
  LIST_DEVICES: 2,
  DEV_CREATE: 3,
  DEV_REMOVE: 4,
  DEV_RENAME: 5,
  DEV_SUSPEND: 6,
  DEV_STATUS: 7,
  DEV_WAIT: 8,
  TABLE_LOAD: 9,
  TABLE_CLEAR: 10,
  TABLE_DEPS: 11,
  TABLE_STATUS: 12,
  LIST_VERSIONS: 13,
  TARGET_MSG: 14,
  DEV_SET_GEOMETRY: 15,
} as const;

/** A command name, e.g. `DEV_CREATE`. */
export type DmCommandName = keyof typeof DmCommand;

/** `struct dm_ioctl` flags. */
export const DmFlag = {
  READONLY: 1 << 0,
  SUSPEND: 1 << 1,
  PERSISTENT_DEV: 1 << 3,
  STATUS_TABLE: 1 << 4,
  ACTIVE_PRESENT: 1 << 5,
  INACTIVE_PRESENT: 1 << 6,
  BUFFER_FULL: 1 << 8,
  SKIP_BDGET: 1 << 9,
  SKIP_LOCKFS: 1 << 10,
  NOFLUSH: 1 << 11,
  QUERY_INACTIVE_TABLE: 1 << 12,
  UEVENT_GENERATED: 1 << 13,
  UUID: 1 << 14,
  SECURE_DATA: 1 << 15,
  DATA_OUT: 1 << 16,
  DEFERRED_REMOVE: 1 << 17,
  INTERNAL_SUSPEND: 1 << 18,
} as const;

/** `_IOWR(0xfd, cmd, struct dm_ioctl)`: the ioctl request number of a command. */
export function ioctlRequest(cmd: number): bigint {
  const IOC_READ_WRITE = 3n;
  return (IOC_READ_WRITE << 30n) | (BigInt(DM_IOCTL_SIZE) << 16n) | (0xfdn << 8n) |
    BigInt(cmd);
}

/** Raised when a buffer from the kernel, or a value to encode, breaks the ABI's rules. */
export class DmAbiError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DmAbiError";
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Rounds `n` up to a multiple of 8. */
export function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Reads a NUL-terminated string of at most `max` bytes at `offset`. */
export function readCString(
  bytes: Uint8Array,
  offset: number,
  max = bytes.length - offset,
): string {
  const end = Math.min(bytes.length, offset + max);
  let i = offset;
  while (i < end && bytes[i] !== 0) i++;
  return decoder.decode(bytes.subarray(offset, i));
}

/** Writes `text` NUL-terminated into a field of `size` bytes; throws when it does not fit. */
function writeCString(bytes: Uint8Array, offset: number, size: number, text: string, what: string) {
  const encoded = encoder.encode(text);
  if (encoded.includes(0)) throw new DmAbiError(`${what} ${JSON.stringify(text)} contains NUL`);
  if (encoded.length >= size) {
    throw new DmAbiError(`${what} ${JSON.stringify(text)} is longer than ${size - 1} bytes`);
  }
  bytes.set(encoded, offset);
}

/** The fields of a `struct dm_ioctl` header. */
export interface DmHeader {
  version: [number, number, number];
  dataSize: number;
  dataStart: number;
  targetCount: number;
  openCount: number;
  flags: number;
  eventNr: number;
  /** Device number, kernel `new_encode_dev` encoding (see {@linkcode decodeKernelDev}). */
  dev: bigint;
  name: string;
  uuid: string;
}

/** Inputs of {@linkcode encodeRequest}. */
export interface RequestInit {
  /** Device name (empty for commands that take none). */
  name?: string;
  /** Device UUID (DEV_CREATE; empty for none). */
  uuid?: string;
  flags?: number;
  targetCount?: number;
  eventNr?: number;
  dev?: bigint;
  /** Bytes placed at `data_start` (312). */
  payload?: Uint8Array;
  /** Total buffer size, room for the reply included (at least header + payload). */
  bufferSize?: number;
}

/** Builds a request buffer: header (`data_size` = buffer size, `data_start` = 312) + payload. */
export function encodeRequest(init: RequestInit = {}): Uint8Array {
  const payload = init.payload ?? new Uint8Array(0);
  const size = Math.max(init.bufferSize ?? 0, DM_IOCTL_SIZE + payload.length);
  const buf = new Uint8Array(size);
  const view = new DataView(buf.buffer);
  DM_REQUEST_VERSION.forEach((v, i) => view.setUint32(OFF.version + 4 * i, v, true));
  view.setUint32(OFF.dataSize, size, true);
  view.setUint32(OFF.dataStart, DM_IOCTL_SIZE, true);
  view.setUint32(OFF.targetCount, init.targetCount ?? 0, true);
  view.setUint32(OFF.flags, (init.flags ?? 0) >>> 0, true);
  view.setUint32(OFF.eventNr, init.eventNr ?? 0, true);
  view.setBigUint64(OFF.dev, init.dev ?? 0n, true);
  writeCString(buf, OFF.name, DM_NAME_LEN, init.name ?? "", "device name");
  writeCString(buf, OFF.uuid, DM_UUID_LEN, init.uuid ?? "", "device UUID");
  buf.set(payload, DM_IOCTL_SIZE);
  return buf;
}

/** Decodes the header of a request or reply buffer. */
export function decodeHeader(buf: Uint8Array): DmHeader {
  if (buf.length < DM_IOCTL_SIZE) {
    throw new DmAbiError(`dm_ioctl buffer of ${buf.length} bytes is shorter than the header`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    version: [0, 1, 2].map((i) => view.getUint32(OFF.version + 4 * i, true)) as [
      number,
      number,
      number,
    ],
    dataSize: view.getUint32(OFF.dataSize, true),
    dataStart: view.getUint32(OFF.dataStart, true),
    targetCount: view.getUint32(OFF.targetCount, true),
    openCount: view.getInt32(OFF.openCount, true),
    flags: view.getUint32(OFF.flags, true),
    eventNr: view.getUint32(OFF.eventNr, true),
    dev: view.getBigUint64(OFF.dev, true),
    name: readCString(buf, OFF.name, DM_NAME_LEN),
    uuid: readCString(buf, OFF.uuid, DM_UUID_LEN),
  };
}

/**
 * The reply payload: bytes `data_start .. data_size` of the buffer (bounds-checked). Empty
 * when the command returned no data (the kernel then sets `data_size` to the header's 305
 * bytes before `data`).
 */
export function replyPayload(buf: Uint8Array, header: DmHeader = decodeHeader(buf)): Uint8Array {
  const { dataStart, dataSize } = header;
  if (dataSize <= dataStart) return buf.subarray(0, 0);
  if (dataStart < DM_IOCTL_SIZE - 7 || dataSize > buf.length) {
    throw new DmAbiError(
      `bad dm_ioctl reply: data_start ${dataStart}, data_size ${dataSize}, buffer ${buf.length}`,
    );
  }
  return buf.subarray(dataStart, dataSize);
}

/** One target of a table: `<start> <length> <type> <params>`. */
export interface TargetSpec {
  /** First sector. */
  start: number;
  /** Length in 512-byte sectors. */
  length: number;
  /** Target type, e.g. `thin`. */
  type: string;
  /** Table parameters (load, table) or status parameters (status). */
  params: string;
}

/**
 * Encodes a TABLE_LOAD payload: a `struct dm_target_spec` per target followed by its
 * NUL-terminated params, each spec 8-byte aligned; `next` is the offset from this spec to
 * the next one (the kernel reads it relative to the current spec).
 */
export function encodeTargets(targets: readonly TargetSpec[]): Uint8Array {
  const parts = targets.map((t) => {
    const params = encoder.encode(t.params);
    if (params.includes(0)) throw new DmAbiError(`target params contain NUL`);
    return { t, params, size: align8(DM_TARGET_SPEC_SIZE + params.length + 1) };
  });
  const total = parts.reduce((n, p) => n + p.size, 0);
  const buf = new Uint8Array(total);
  const view = new DataView(buf.buffer);
  let at = 0;
  for (const { t, params, size } of parts) {
    for (const [v, what] of [[t.start, "start"], [t.length, "length"]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new DmAbiError(`bad target ${what} ${v}`);
    }
    view.setBigUint64(at, BigInt(t.start), true);
    view.setBigUint64(at + 8, BigInt(t.length), true);
    view.setInt32(at + 16, 0, true);
    view.setUint32(at + 20, size, true);
    writeCString(buf, at + 24, DM_MAX_TYPE_NAME, t.type, "target type");
    buf.set(params, at + DM_TARGET_SPEC_SIZE);
    at += size;
  }
  return buf;
}

/**
 * Decodes the `count` target specs of a TABLE_STATUS reply payload. In replies, `next` is
 * the offset of the following spec from the start of the payload.
 */
export function decodeTargets(payload: Uint8Array, count: number): TargetSpec[] {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const out: TargetSpec[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + DM_TARGET_SPEC_SIZE > payload.length) {
      throw new DmAbiError(`target spec ${i} at ${at} runs past the ${payload.length}-byte reply`);
    }
    out.push({
      start: Number(view.getBigUint64(at, true)),
      length: Number(view.getBigUint64(at + 8, true)),
      type: readCString(payload, at + 24, DM_MAX_TYPE_NAME),
      params: readCString(payload, at + DM_TARGET_SPEC_SIZE),
    });
    const next = view.getUint32(at + 20, true);
    if (i + 1 < count && next <= at) {
      throw new DmAbiError(`target spec ${i} has bad next offset ${next}`);
    }
    at = next;
  }
  return out;
}

/** Encodes a TARGET_MSG payload: `struct dm_target_msg { u64 sector; char message[]; }`. */
export function encodeTargetMessage(sector: number, message: string): Uint8Array {
  if (!Number.isSafeInteger(sector) || sector < 0) throw new DmAbiError(`bad sector ${sector}`);
  const text = encoder.encode(message);
  if (text.includes(0)) throw new DmAbiError(`message contains NUL`);
  const buf = new Uint8Array(align8(8 + text.length + 1));
  new DataView(buf.buffer).setBigUint64(0, BigInt(sector), true);
  buf.set(text, 8);
  return buf;
}

/** One entry of a LIST_DEVICES reply. */
export interface NameListEntry {
  name: string;
  /** Kernel `new_encode_dev` device number. */
  dev: bigint;
}

/**
 * Decodes a LIST_DEVICES reply payload: `struct dm_name_list { u64 dev; u32 next; char name[]; }`
 * entries chained by `next` (offset from the current entry; 0 ends the list). Newer kernels
 * put an event number and flags after each name; `next` skips them. A first entry with
 * `dev` 0 means "no devices".
 */
export function decodeNameList(payload: Uint8Array): NameListEntry[] {
  if (payload.length < 12) return [];
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const out: NameListEntry[] = [];
  let at = 0;
  for (;;) {
    if (at + 12 > payload.length) {
      throw new DmAbiError(`name list entry at ${at} runs past the ${payload.length}-byte reply`);
    }
    const dev = view.getBigUint64(at, true);
    if (dev === 0n && out.length === 0) return out;
    out.push({ dev, name: readCString(payload, at + 12) });
    const next = view.getUint32(at + 8, true);
    if (next === 0) return out;
    at += next;
  }
}

/** Splits a kernel `new_encode_dev` number (as in `dm_ioctl.dev`) into major and minor. */
export function decodeKernelDev(dev: bigint | number): { major: number; minor: number } {
  const d = BigInt(dev);
  return {
    major: Number((d & 0xfff00n) >> 8n),
    minor: Number((d & 0xffn) | ((d >> 12n) & 0xfff00n)),
  };
}

/** glibc `makedev(major, minor)`: the `dev_t` that `mknod(2)` takes and `stat` reports. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) |
    ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

/** glibc `major()`/`minor()` of a `dev_t` (e.g. `Deno.FileInfo.rdev`). */
export function splitDevT(devT: bigint | number): { major: number; minor: number } {
  const d = BigInt(devT);
  return {
    major: Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)),
    minor: Number((d & 0xffn) | ((d >> 12n) & ~0xffn & 0xffffffffn)),
  };
}

/**
 * Parses table text (`<start> <length> <type> [params]` per line, as `dmsetup create --table`
 * takes it). Params are the rest of the line with surrounding whitespace removed.
 */
export function parseTableText(table: string): TargetSpec[] {
  const lines = table.split("\n").map((l) => l.trim()).filter(Boolean);
  if (lines.length === 0) throw new DmAbiError("empty table");
  return lines.map((line) => {
    const m = /^(\d+)\s+(\d+)\s+(\S+)(?:\s+(.*))?$/.exec(line);
    if (!m) throw new DmAbiError(`bad table line ${JSON.stringify(line)}`);
    const start = Number(m[1]);
    const length = Number(m[2]);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length)) {
      throw new DmAbiError(`bad table line ${JSON.stringify(line)}: number too large`);
    }
    if (encoder.encode(m[3]).length >= DM_MAX_TYPE_NAME) {
      throw new DmAbiError(`bad table line ${JSON.stringify(line)}: target type too long`);
    }
    return { start, length, type: m[3], params: (m[4] ?? "").trim() };
  });
}

/**
 * Formats a target as a `dmsetup table`/`status` line (without the device name); trailing
 * whitespace of the params (some targets emit a trailing space) is dropped, as dmsetup does.
 */
export function formatTarget(t: TargetSpec): string {
  const params = t.params.trimEnd();
  return params ? `${t.start} ${t.length} ${t.type} ${params}` : `${t.start} ${t.length} ${t.type}`;
}

/** Linux errno numbers of the errnos the driver layer distinguishes. */
const ERRNO_NAMES: ReadonlyMap<number, Errno> = new Map<number, Errno>([
  [1, "EPERM"],
  [2, "ENOENT"],
  [5, "EIO"],
  [6, "ENXIO"],
  [16, "EBUSY"],
  [17, "EEXIST"],
  [19, "ENODEV"],
  [22, "EINVAL"],
  [28, "ENOSPC"],
  [61, "ENODATA"],
]);

/** Maps a Linux errno number to its {@linkcode Errno} name (`undefined` for others). */
export function errnoName(errno: number): Errno | undefined {
  return ERRNO_NAMES.get(errno);
}
