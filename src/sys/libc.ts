/**
 * The few libc calls the ioctl backend needs (`open`, `close`, `ioctl`, `mknod`, `strerror`,
 * `errno`), through Deno FFI. Calls are synchronous, so `errno` is read on the same thread
 * right after the failing call.
 *
 * @module
 */

const SYMBOLS = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  mknod: { parameters: ["buffer", "u32", "u64"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** `O_RDWR | O_CLOEXEC`. */
export const O_RDWR_CLOEXEC = 0o2 | 0o2000000;
/** `S_IFBLK`. */
export const S_IFBLK = 0o060000;
/** `S_IFCHR`. */
export const S_IFCHR = 0o020000;

/** Result of a libc call: its return value, and `errno` when it failed (-1). */
export interface CallResult {
  value: number;
  /** errno when `value` is -1, else 0. */
  errno: number;
}

/** libc, opened with `Deno.dlopen`. */
export interface Libc extends Disposable {
  open(path: string, flags: number, mode?: number): CallResult;
  close(fd: number): CallResult;
  ioctl(fd: number, request: bigint, arg: Uint8Array): CallResult;
  mknod(path: string, mode: number, dev: bigint): CallResult;
  /** strerror(3) text of an errno. */
  strerror(errno: number): string;
  /** Unloads the library. */
  unload(): void;
}

function cPath(path: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(path);
  const buf = new Uint8Array(bytes.length + 1);
  buf.set(bytes);
  return buf;
}

/** Opens libc (`libc.so.6` by default). Throws when FFI is not allowed or the library is missing. */
export function openLibc(path = "libc.so.6"): Libc {
  const lib = Deno.dlopen(path, SYMBOLS);
  const s = lib.symbols;
  const result = (value: number): CallResult => {
    if (value !== -1) return { value, errno: 0 };
    const where = s.__errno_location();
    const errno = where === null ? 0 : new Deno.UnsafePointerView(where).getInt32();
    return { value, errno };
  };
  let closed = false;
  const libc: Libc = {
    open: (p, flags, mode = 0) => result(s.open(cPath(p), flags, mode)),
    close: (fd) => result(s.close(fd)),
    ioctl: (fd, request, arg) => result(s.ioctl(fd, request, arg as Uint8Array<ArrayBuffer>)),
    mknod: (p, mode, dev) => result(s.mknod(cPath(p), mode, dev)),
    strerror: (errno) => {
      const p = s.strerror(errno);
      return p === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(p);
    },
    unload() {
      if (closed) return;
      closed = true;
      lib.close();
    },
    [Symbol.dispose]() {
      libc.unload();
    },
  };
  return libc;
}
