/**
 * Pure parsers of `dmsetup` output (LC_ALL=C). No I/O.
 *
 * @module
 */
import type { DeviceInfo, OtherStatus, PoolStatus, TargetStatus, ThinStatus } from "./types.ts";

/** Raised when command output does not have the expected shape. */
export class DmParseError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DmParseError";
  }
}

/**
 * `dmsetup info -c` columns this layer asks for. `blkdevname` is not requested: dmsetup fails
 * the whole report when any device has no table yet ("Could not resolve block device name"),
 * and a dm device's kernel name is always `dm-<minor>`.
 */
export const INFO_COLUMNS = "name,attr,major,minor,open,segments,events";

/** The full column set of spec §4 (accepted by {@linkcode parseInfoLine} as well). */
export const INFO_COLUMNS_WITH_BLKDEV = "name,blkdevname,attr,major,minor,open,segments,events";

function toInt(text: string, what: string, line: string): number {
  if (!/^-?\d+$/.test(text)) {
    throw new DmParseError(`bad ${what} ${JSON.stringify(text)} in ${JSON.stringify(line)}`);
  }
  return Number(text);
}

/**
 * Parses one line of `dmsetup info -c --noheadings --separator " "` with the columns
 * {@linkcode INFO_COLUMNS} (7 fields) or {@linkcode INFO_COLUMNS_WITH_BLKDEV} (8 fields), e.g.
 * `pool-snap-3 dm-5 L--w 253 5 0 1 0`. Fields are taken from the right, so a name containing
 * spaces survives when `withBlkdev` is false.
 */
export function parseInfoLine(line: string, withBlkdev = false): DeviceInfo {
  const fields = line.trimEnd().split(" ");
  const fixed = withBlkdev ? 7 : 6;
  if (fields.length < fixed + 1) {
    throw new DmParseError(`unexpected dmsetup info line ${JSON.stringify(line)}`);
  }
  const tail = fields.slice(fields.length - fixed);
  const name = fields.slice(0, fields.length - fixed).join(" ");
  const [attr, major, minor, open, segments, events] = withBlkdev ? tail.slice(1) : tail;
  if (!/^[-A-Za-z]{4,}$/.test(attr)) {
    throw new DmParseError(`bad attr ${JSON.stringify(attr)} in ${JSON.stringify(line)}`);
  }
  const minorNo = toInt(minor, "minor", line);
  return {
    name,
    blkdevname: withBlkdev ? tail[0] : `dm-${minorNo}`,
    major: toInt(major, "major", line),
    minor: minorNo,
    live: attr.includes("L"),
    inactive: attr.includes("I"),
    suspended: attr.includes("s"),
    readOnly: attr.includes("r"),
    openCount: toInt(open, "open count", line),
    segments: toInt(segments, "segments", line),
    events: toInt(events, "events", line),
  };
}

/** True when `dmsetup` printed its "nothing there" line instead of a listing. */
function isNoDevices(text: string): boolean {
  return text.trim() === "" || text.trim() === "No devices found";
}

/** Parses a multi-line `dmsetup info -c` listing ("No devices found" → empty map). */
export function parseInfoAll(text: string, withBlkdev = false): Map<string, DeviceInfo> {
  const map = new Map<string, DeviceInfo>();
  if (isNoDevices(text)) return map;
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const info = parseInfoLine(line, withBlkdev);
    map.set(info.name, info);
  }
  return map;
}

/** Parses `<used>/<total>`. */
function parseRatio(text: string, what: string, line: string): [number, number] {
  const m = /^(\d+)\/(\d+)$/.exec(text);
  if (!m) throw new DmParseError(`bad ${what} ${JSON.stringify(text)} in ${JSON.stringify(line)}`);
  return [Number(m[1]), Number(m[2])];
}

/** Parses the parameters of a `thin` target status: `<mapped> <highest|->` or `Fail`. */
export function parseThinParams(start: number, length: number, params: string): ThinStatus {
  const p = params.trim().split(/\s+/).filter(Boolean);
  if (p[0] === "Fail") {
    return {
      target: "thin",
      start,
      length,
      mappedSectors: 0,
      highestMappedSector: null,
      failed: true,
    };
  }
  if (p.length < 2) throw new DmParseError(`bad thin status ${JSON.stringify(params)}`);
  const line = params;
  return {
    target: "thin",
    start,
    length,
    mappedSectors: toInt(p[0], "mapped sectors", line),
    highestMappedSector: p[1] === "-" ? null : toInt(p[1], "highest mapped sector", line),
    failed: false,
  };
}

/**
 * Parses the parameters of a `thin-pool` target status:
 * `<transaction id> <used meta>/<total meta> <used data>/<total data> <held root|-> <rw|ro|out_of_data_space>
 * <[no_]discard_passdown> <error|queue>_if_no_space <needs_check|-> <metadata low watermark>`, or `Fail`.
 * Fields after the data usage vary between kernels; missing ones default to a healthy
 * read-write pool, unknown extra ones are ignored.
 */
export function parsePoolParams(start: number, length: number, params: string): PoolStatus {
  const p = params.trim().split(/\s+/).filter(Boolean);
  const base = {
    target: "thin-pool" as const,
    start,
    length,
  };
  if (p[0] === "Fail") {
    return {
      ...base,
      transactionId: 0,
      usedMetadataBlocks: 0,
      totalMetadataBlocks: 0,
      usedDataBlocks: 0,
      totalDataBlocks: 0,
      heldMetadataRoot: null,
      mode: "fail",
      discardPassdown: false,
      errorIfNoSpace: false,
      needsCheck: false,
      failed: true,
    };
  }
  if (p.length < 3) throw new DmParseError(`bad thin-pool status ${JSON.stringify(params)}`);
  const [usedMeta, totalMeta] = parseRatio(p[1], "metadata usage", params);
  const [usedData, totalData] = parseRatio(p[2], "data usage", params);
  let mode: PoolStatus["mode"] = "rw";
  let discardPassdown = true;
  let errorIfNoSpace = false;
  let needsCheck = false;
  for (const word of p.slice(4)) {
    switch (word) {
      case "rw":
      case "ro":
      case "out_of_data_space":
        mode = word;
        break;
      case "discard_passdown":
        discardPassdown = true;
        break;
      case "no_discard_passdown":
        discardPassdown = false;
        break;
      case "error_if_no_space":
        errorIfNoSpace = true;
        break;
      case "queue_if_no_space":
        errorIfNoSpace = false;
        break;
      case "needs_check":
        needsCheck = true;
        break;
    }
  }
  return {
    ...base,
    transactionId: toInt(p[0], "transaction id", params),
    usedMetadataBlocks: usedMeta,
    totalMetadataBlocks: totalMeta,
    usedDataBlocks: usedData,
    totalDataBlocks: totalData,
    heldMetadataRoot: p[3] === undefined || p[3] === "-" ? null : p[3],
    mode,
    discardPassdown,
    errorIfNoSpace,
    needsCheck,
    failed: false,
  };
}

/** Parses one target line `<start> <length> <target> [params]` of `dmsetup status`. */
export function parseStatusLine(line: string): TargetStatus {
  const m = /^(\d+) (\d+) (\S+)(?: (.*))?$/.exec(line.trim());
  if (!m) throw new DmParseError(`unexpected dmsetup status line ${JSON.stringify(line)}`);
  const start = Number(m[1]);
  const length = Number(m[2]);
  const target = m[3];
  const params = (m[4] ?? "").trim();
  if (target === "thin") return parseThinParams(start, length, params);
  if (target === "thin-pool") return parsePoolParams(start, length, params);
  const other: OtherStatus = { target, start, length, params };
  return other;
}

/** Parses `dmsetup status <name>`: one line per target. */
export function parseStatus(text: string): TargetStatus[] {
  return text.split("\n").filter((l) => l.trim()).map(parseStatusLine);
}

/**
 * Parses `dmsetup status` / `dmsetup table` without a device name: every line is prefixed
 * `<name>: `; a device without a table prints just `<name>: ` and maps to an empty list.
 * "No devices found" → empty map. `parseLine` turns the rest of a line into a value.
 */
export function parsePrefixedLines<T>(
  text: string,
  parseLine: (rest: string) => T,
): Map<string, T[]> {
  const map = new Map<string, T[]>();
  if (isNoDevices(text)) return map;
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const trimmed = line.trimEnd();
    // names may contain ": "; the target part starts with "<start> <length> <target>"
    const m = /^(.+): (\d+ \d+ \S.*)$/.exec(trimmed);
    let name: string;
    let rest = "";
    if (m) {
      name = m[1];
      rest = m[2];
    } else if (trimmed.endsWith(":") && trimmed.length > 1) {
      name = trimmed.slice(0, -1);
    } else {
      throw new DmParseError(`unexpected dmsetup line ${JSON.stringify(line)}`);
    }
    const list = map.get(name) ?? [];
    if (rest) list.push(parseLine(rest));
    map.set(name, list);
  }
  return map;
}

/** Parses `dmsetup status [--target <t>]` over all devices, keyed by name. */
export function parseStatusAll(text: string): Map<string, TargetStatus[]> {
  return parsePrefixedLines(text, parseStatusLine);
}

/** A parsed table line `<start> <length> <target> <args>`. */
export interface TableLine {
  start: number;
  length: number;
  target: string;
  args: string[];
}

/** Parses `dmsetup table <name>` (one line per target). */
export function parseTable(text: string): TableLine[] {
  return text.split("\n").filter((l) => l.trim()).map((line) => {
    const f = line.trim().split(/\s+/);
    if (f.length < 3 || !/^\d+$/.test(f[0]) || !/^\d+$/.test(f[1])) {
      throw new DmParseError(`unexpected dmsetup table line ${JSON.stringify(line)}`);
    }
    return { start: Number(f[0]), length: Number(f[1]), target: f[2], args: f.slice(3) };
  });
}

/** Parses `dmsetup version`: `Library version: ...` and `Driver version: ...`. */
export function parseVersion(text: string): { library: string; driver: string } {
  const lib = /^Library version:\s*(.+)$/m.exec(text);
  const drv = /^Driver version:\s*(.+)$/m.exec(text);
  if (!lib || !drv) {
    throw new DmParseError(`unexpected dmsetup version output ${JSON.stringify(text)}`);
  }
  return { library: lib[1].trim(), driver: drv[1].trim() };
}

/** Parses `dmsetup ls`: `<name>\t(<major>:<minor>)` lines, or "No devices found". */
export function parseLs(text: string): string[] {
  if (isNoDevices(text)) return [];
  const names: string[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const m = /^(.+?)\s+\(\d+[:, ]\s*\d+\)$/.exec(line.trimEnd());
    if (!m) throw new DmParseError(`unexpected dmsetup ls line ${JSON.stringify(line)}`);
    names.push(m[1]);
  }
  return names;
}
