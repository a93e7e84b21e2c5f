/**
 * A small tar writer (POSIX ustar headers, with pax extended headers for long names and
 * large sizes) used to build OCI image layers and the image archive for end-to-end tests.
 *
 * Format facts used: 512-byte blocks; header fields name[100] mode[8] uid[8] gid[8]
 * size[12] mtime[12] chksum[8] typeflag[1] linkname[100] magic "ustar\0" version "00"
 * uname[32] gname[32] devmajor[8] devminor[8] prefix[155]; numeric fields are octal,
 * NUL-terminated; the checksum is the byte sum of the header with the checksum field read
 * as spaces; the archive ends with two zero blocks. A pax header (type `x`) carries
 * `"<len> <key>=<value>\n"` records that override the next entry's fields.
 *
 * @module
 */

/** Kinds of entries the writer supports. */
export type TarEntryType = "file" | "dir" | "symlink" | "hardlink";

/** One archive member. */
export interface TarEntry {
  /** Path inside the archive, without a leading `/`; directories may end in `/`. */
  path: string;
  type: TarEntryType;
  /** Permission bits incl. setuid/setgid/sticky (default 0644 for files, 0755 for dirs). */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Modification time in seconds since the epoch (default 0). */
  mtime?: number;
  /** File content (files only). */
  data?: Uint8Array;
  /** Target of a symlink or hard link. */
  linkname?: string;
}

/** Raised for entries the writer cannot represent. */
export class TarWriteError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TarWriteError";
  }
}

const BLOCK = 512;
const MAX_OCTAL_SIZE = 0o77777777777;
const TYPE_FLAGS: Record<TarEntryType, string> = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  dir: "5",
};

const encoder = new TextEncoder();

function padded(length: number): number {
  return Math.ceil(length / BLOCK) * BLOCK;
}

function writeString(header: Uint8Array, offset: number, width: number, text: string): void {
  const bytes = encoder.encode(text);
  if (bytes.length > width) {
    throw new TarWriteError(`Cannot write tar field "${text}": longer than ${width} bytes`);
  }
  header.set(bytes, offset);
}

function writeOctal(header: Uint8Array, offset: number, width: number, value: number): void {
  // width - 1 digits followed by a NUL
  writeString(header, offset, width, value.toString(8).padStart(width - 1, "0") + "\0");
}

/** Splits a long path into ustar (prefix, name) when possible. */
function splitPath(path: string): { prefix: string; name: string } | undefined {
  const bytes = encoder.encode(path);
  if (bytes.length <= 100) return { prefix: "", name: path };
  for (let i = path.length - 1; i > 0; i--) {
    if (path[i] !== "/") continue;
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (encoder.encode(prefix).length <= 155 && encoder.encode(name).length <= 100 && name) {
      return { prefix, name };
    }
  }
  return undefined;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLength = encoder.encode(body).length;
  // The length prefix counts its own digits.
  let length = bodyLength + 1;
  while (String(length).length + bodyLength !== length) {
    length = String(length).length + bodyLength;
  }
  return `${length}${body}`;
}

interface HeaderFields {
  name: string;
  prefix: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
}

function header(fields: HeaderFields): Uint8Array {
  const h = new Uint8Array(BLOCK);
  writeString(h, 0, 100, fields.name);
  writeOctal(h, 100, 8, fields.mode);
  writeOctal(h, 108, 8, fields.uid);
  writeOctal(h, 116, 8, fields.gid);
  writeOctal(h, 124, 12, fields.size);
  writeOctal(h, 136, 12, fields.mtime);
  writeString(h, 156, 1, fields.typeflag);
  writeString(h, 157, 100, fields.linkname);
  writeString(h, 257, 6, "ustar\0");
  writeString(h, 263, 2, "00");
  writeString(h, 265, 32, fields.uid === 0 ? "root" : "");
  writeString(h, 297, 32, fields.gid === 0 ? "root" : "");
  writeOctal(h, 329, 8, 0);
  writeOctal(h, 337, 8, 0);
  writeString(h, 345, 155, fields.prefix);
  // Checksum: sum of all bytes with the checksum field counted as eight spaces.
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  writeString(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

function validate(entry: TarEntry): void {
  if (!entry.path || entry.path.startsWith("/") || entry.path.split("/").includes("..")) {
    throw new TarWriteError(`Cannot add tar entry "${entry.path}": path must be relative`);
  }
  if (entry.type !== "file" && entry.data && entry.data.length > 0) {
    throw new TarWriteError(`Cannot add tar entry "${entry.path}": only files carry data`);
  }
  if ((entry.type === "symlink" || entry.type === "hardlink") && !entry.linkname) {
    throw new TarWriteError(`Cannot add tar entry "${entry.path}": ${entry.type} needs a target`);
  }
}

/** Encodes the header block(s) and padded data of one entry. */
function encodeEntry(entry: TarEntry): Uint8Array[] {
  validate(entry);
  const data = entry.type === "file" ? entry.data ?? new Uint8Array() : new Uint8Array();
  let path = entry.path;
  if (entry.type === "dir" && !path.endsWith("/")) path += "/";
  const defaultMode = entry.type === "dir" ? 0o755 : entry.type === "symlink" ? 0o777 : 0o644;
  const linkname = entry.linkname ?? "";
  const pax: string[] = [];
  let split = splitPath(path);
  if (!split) {
    pax.push(paxRecord("path", path));
    split = { prefix: "", name: path.slice(-99).replace(/^\/+/, "") };
  }
  let headerLink = linkname;
  if (encoder.encode(linkname).length > 100) {
    pax.push(paxRecord("linkpath", linkname));
    headerLink = "";
  }
  let headerSize = data.length;
  if (data.length > MAX_OCTAL_SIZE) {
    pax.push(paxRecord("size", String(data.length)));
    headerSize = 0;
  }
  const fields: HeaderFields = {
    name: split.name,
    prefix: split.prefix,
    mode: entry.mode ?? defaultMode,
    uid: entry.uid ?? 0,
    gid: entry.gid ?? 0,
    size: headerSize,
    mtime: entry.mtime ?? 0,
    typeflag: TYPE_FLAGS[entry.type],
    linkname: headerLink,
  };
  const parts: Uint8Array[] = [];
  if (pax.length > 0) {
    const body = encoder.encode(pax.join(""));
    parts.push(header({
      ...fields,
      name: `PaxHeaders/${split.name}`.slice(0, 100),
      prefix: "",
      mode: 0o644,
      size: body.length,
      typeflag: "x",
      linkname: "",
    }));
    parts.push(body, new Uint8Array(padded(body.length) - body.length));
  }
  parts.push(header(fields));
  if (data.length > 0) parts.push(data, new Uint8Array(padded(data.length) - data.length));
  return parts;
}

/** Builds a complete tar archive (ending in two zero blocks) from `entries`, in order. */
export function writeTar(entries: readonly TarEntry[]): Uint8Array {
  const parts = entries.flatMap(encodeEntry);
  parts.push(new Uint8Array(2 * BLOCK));
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
