/**
 * Reads the log that the kernel's `log-writes` device-mapper target keeps, and replays a
 * prefix of it onto a file: the bytes a disk would hold after a power cut at that point.
 *
 * The target logs every write in the order it became durable: a plain write only at the next
 * flush (with the writes that had completed before that flush was issued), a FUA write when
 * it completes, and a mark (`dmsetup message <dev> 0 mark <text>`) when it is sent. So after
 * replaying the first `k` entries, the file holds exactly what was durable at the moment entry
 * `k - 1` was logged, plus some of the writes that were still only in the disk's cache, which
 * a power cut may or may not have kept.
 *
 * Log layout (all integers little-endian; `sectorSize` is the logged device's logical block
 * size): a superblock at byte 0 (`magic u64, version u64, nr_entries u64, sectorsize u32`),
 * then from byte `sectorSize` on one entry after another, each one sector of header
 * (`sector u64, nr_sectors u64, flags u64, data_len u64`, a mark's text right after it)
 * followed by `nr_sectors` sectors of data (none for flushes, discards and marks).
 *
 * Invariants: entries are returned in log order, their `index` counting from 0; a log whose
 * magic, version or entry count does not add up is refused, never half-read; replaying
 * applies each entry once, in order, and never moves backwards.
 *
 * @module
 */

/** The entry is a flush (`REQ_PREFLUSH`): every write logged before it was durable. */
export const LOG_FLUSH = 1 << 0;
/** The entry is a FUA write: durable when it completed. */
export const LOG_FUA = 1 << 1;
/** The entry is a discard of its range (replayed as zeros). */
export const LOG_DISCARD = 1 << 2;
/** The entry is a mark (text sent with `mark`), no data. */
export const LOG_MARK = 1 << 3;
/** The write was flagged as metadata (`REQ_META`); informational. */
export const LOG_METADATA = 1 << 4;

const MAGIC = 0x6a736677736872n;
const VERSION = 1n;
const HEADER_BYTES = 32;

/** One logged entry. */
export interface LogEntry {
  /** Position in the log, from 0. */
  index: number;
  /** First sector written on the logged device (units of the log's `sectorSize`). */
  sector: number;
  /** Sectors written (or discarded). */
  sectors: number;
  /** `LOG_*` bits. */
  flags: number;
  /** Byte offset of the entry's data in the log file (meaningful when it has data). */
  dataOffset: number;
  /** The text of a mark. */
  mark?: string;
}

/** A parsed log: its entries, not their data. */
export interface WriteLog {
  sectorSize: number;
  entries: LogEntry[];
}

/** Raised for a log that cannot be read as a whole. */
export class WriteLogError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WriteLogError";
  }
}

/** True for an entry after which everything logged so far was durable (flush or FUA). */
export function isDurablePoint(entry: LogEntry): boolean {
  return (entry.flags & (LOG_FLUSH | LOG_FUA)) !== 0;
}

function readExactly(file: Deno.FsFile, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  file.seekSync(offset, Deno.SeekMode.Start);
  let done = 0;
  while (done < length) {
    const n = file.readSync(buf.subarray(done));
    if (n === null) throw new WriteLogError(`the log ends at byte ${offset + done}`);
    done += n;
  }
  return buf;
}

/** Parses the log file at `path` (headers only: data stays in the file). */
export function readWriteLog(path: string): WriteLog {
  using file = Deno.openSync(path, { read: true });
  const size = file.statSync().size;
  const superBlock = new DataView(readExactly(file, 0, 28).buffer);
  const magic = superBlock.getBigUint64(0, true);
  const version = superBlock.getBigUint64(8, true);
  const count = Number(superBlock.getBigUint64(16, true));
  const sectorSize = superBlock.getUint32(24, true);
  if (magic !== MAGIC) {
    throw new WriteLogError(`Cannot read write log "${path}": bad magic 0x${magic.toString(16)}`);
  }
  if (version !== VERSION) {
    throw new WriteLogError(`Cannot read write log "${path}": version ${version} is not 1`);
  }
  if (sectorSize < 512 || (sectorSize & (sectorSize - 1)) !== 0) {
    throw new WriteLogError(`Cannot read write log "${path}": sector size ${sectorSize}`);
  }
  const entries: LogEntry[] = [];
  let offset = sectorSize;
  for (let index = 0; index < count; index++) {
    if (offset + sectorSize > size) {
      throw new WriteLogError(
        `Cannot read write log "${path}": entry ${index} of ${count} lies past its end`,
      );
    }
    const header = readExactly(file, offset, sectorSize);
    const view = new DataView(header.buffer);
    const sector = Number(view.getBigUint64(0, true));
    const sectors = Number(view.getBigUint64(8, true));
    const flags = Number(view.getBigUint64(16, true));
    const dataLength = Number(view.getBigUint64(24, true));
    const entry: LogEntry = { index, sector, sectors, flags, dataOffset: offset + sectorSize };
    if (flags & LOG_MARK) {
      const text = header.subarray(HEADER_BYTES, HEADER_BYTES + dataLength);
      const end = text.indexOf(0);
      entry.mark = new TextDecoder().decode(end < 0 ? text : text.subarray(0, end));
    }
    entries.push(entry);
    offset += sectorSize;
    if (!(flags & (LOG_DISCARD | LOG_MARK))) offset += sectors * sectorSize;
  }
  if (offset > size) {
    throw new WriteLogError(`Cannot read write log "${path}": the last entry's data is cut off`);
  }
  return { sectorSize, entries };
}

/** Index of the entry carrying mark `text`, or -1. */
export function findMark(log: WriteLog, text: string): number {
  return log.entries.findIndex((e) => e.mark === text);
}

const ZEROS = new Uint8Array(1 << 20);

/**
 * Replays a log onto a file, a prefix at a time: {@linkcode LogReplayer.replayTo} applies the
 * entries not applied yet up to a given prefix length. The file must start as the logged
 * device started (here: all zeros, a fresh sparse file).
 */
export class LogReplayer implements Disposable {
  readonly #log: WriteLog;
  readonly #source: Deno.FsFile;
  readonly #target: Deno.FsFile;
  #applied = 0;
  /** Bytes written so far (data and discarded zeros). */
  bytesWritten = 0;

  /** Opens `logPath` for reading and `targetPath` (which must exist) for writing. */
  constructor(log: WriteLog, logPath: string, targetPath: string) {
    this.#log = log;
    this.#source = Deno.openSync(logPath, { read: true });
    this.#target = Deno.openSync(targetPath, { write: true });
  }

  /** Number of entries applied so far. */
  get applied(): number {
    return this.#applied;
  }

  /** Applies entries until the first `count` are applied (never goes back). */
  replayTo(count: number): void {
    if (count < this.#applied) {
      throw new WriteLogError(
        `Cannot replay back to entry ${count}: ${this.#applied} are applied already`,
      );
    }
    if (count > this.#log.entries.length) {
      throw new WriteLogError(
        `Cannot replay ${count} entries: the log has ${this.#log.entries.length}`,
      );
    }
    const size = this.#log.sectorSize;
    for (; this.#applied < count; this.#applied++) {
      const entry = this.#log.entries[this.#applied];
      if (entry.flags & LOG_MARK || entry.sectors === 0) continue;
      const bytes = entry.sectors * size;
      this.#target.seekSync(entry.sector * size, Deno.SeekMode.Start);
      if (entry.flags & LOG_DISCARD) {
        for (let left = bytes; left > 0;) {
          const n = this.#target.writeSync(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
          left -= n;
        }
      } else {
        const data = readExactly(this.#source, entry.dataOffset, bytes);
        for (let done = 0; done < bytes;) done += this.#target.writeSync(data.subarray(done));
      }
      this.bytesWritten += bytes;
    }
  }

  /** Closes both files. */
  [Symbol.dispose](): void {
    this.#source.close();
    this.#target.close();
  }
}
