/**
 * libc through Deno FFI: the one module that calls `Deno.dlopen` on libc. It lists every libc
 * function the program (and its test tools) call, and opens libc with only the functions a
 * caller names: binding a function costs about 0.1 ms, so the clock binds one and sd_notify
 * five, and nothing is bound at import time.
 *
 * Invariants:
 * - No handle is shared or kept at module level: each caller opens its own and closes it. FFI
 *   handles belong to an isolate, so a Worker (the ioctl thread) opens its own on its thread.
 * - Calls are synchronous, so `errno` ({@linkcode errnoOf}) is read on the same thread right
 *   after the failing call, before anything else can overwrite it.
 *
 * The ioctl backend uses the typed wrapper {@linkcode openLibc}; the clock, sd_notify and the
 * tests' notify receiver bind what they need with {@linkcode dlopenLibc}.
 *
 * @module
 */

/** The libc loaded by default. */
export const DEFAULT_LIBC = "libc.so.6";

/** Every libc function called through FFI, with its C signature. */
export const LIBC_SYMBOLS = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  mknod: { parameters: ["buffer", "u32", "u64"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  sendto: {
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
    result: "isize",
  },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

/** The name of a function in {@linkcode LIBC_SYMBOLS}. */
export type LibcFunction = keyof typeof LIBC_SYMBOLS;

/** libc opened with the functions `N`. */
export type LibcLibrary<N extends LibcFunction> = Deno.DynamicLibrary<
  Pick<typeof LIBC_SYMBOLS, N>
>;

/**
 * Opens libc (`path`, default {@linkcode DEFAULT_LIBC}) binding only the functions named.
 * Close it with `close()` when done.
 *
 * @throws {Error} when FFI is not permitted or the library or a function cannot be loaded
 */
export function dlopenLibc<const N extends LibcFunction>(
  names: readonly N[],
  path: string = DEFAULT_LIBC,
): LibcLibrary<N> {
  const symbols = Object.fromEntries(names.map((name) => [name, LIBC_SYMBOLS[name]]));
  return Deno.dlopen(path, symbols as Pick<typeof LIBC_SYMBOLS, N>);
}

/** `errno` of this thread; call it right after the call that failed. */
export function errnoOf(symbols: { __errno_location(): Deno.PointerValue }): number {
  const where = symbols.__errno_location();
  return where === null ? 0 : new Deno.UnsafePointerView(where).getInt32();
}

/** strerror(3) text of `errno`. */
export function strerrorOf(
  symbols: { strerror(errno: number): Deno.PointerValue },
  errno: number,
): string {
  const text = symbols.strerror(errno);
  return text === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(text);
}

/** A NUL-terminated copy of `path` for a `const char *` parameter. */
export function cString(path: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(path);
  const buf = new Uint8Array(bytes.length + 1);
  buf.set(bytes);
  return buf;
}

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

/** The calls of the ioctl backend, on a libc opened with {@linkcode openLibc}. */
export interface Libc extends Disposable {
  open(path: string, flags: number, mode?: number): CallResult;
  close(fd: number): CallResult;
  ioctl(fd: number, request: bigint, arg: Uint8Array): CallResult;
  mknod(path: string, mode: number, dev: bigint): CallResult;
  /** strerror(3) text of an errno. */
  strerror(errno: number): string;
  /** Unloads the library. Idempotent. */
  unload(): void;
}

/**
 * Opens libc (`libc.so.6` by default) for the ioctl backend: `open`, `close`, `ioctl`, `mknod`,
 * each returning its value and `errno`.
 *
 * @throws {Error} when FFI is not allowed or the library is missing
 */
export function openLibc(path: string = DEFAULT_LIBC): Libc {
  const lib = dlopenLibc(["open", "close", "ioctl", "mknod", "strerror", "__errno_location"], path);
  const s = lib.symbols;
  const result = (value: number): CallResult => ({
    value,
    errno: value === -1 ? errnoOf(s) : 0,
  });
  let closed = false;
  const libc: Libc = {
    open: (p, flags, mode = 0) => result(s.open(cString(p), flags, mode)),
    close: (fd) => result(s.close(fd)),
    ioctl: (fd, request, arg) => result(s.ioctl(fd, request, arg as Uint8Array<ArrayBuffer>)),
    mknod: (p, mode, dev) => result(s.mknod(cString(p), mode, dev)),
    strerror: (errno) => strerrorOf(s, errno),
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
