/**
 * Errors of the device-mapper and block-device commands, classified by errno from the
 * command's (LC_ALL=C) output.
 *
 * @module
 */
import type { Errno } from "./types.ts";
import { formatCommand, type RunResult } from "./runner.ts";

/** strerror(3) texts (glibc, lower-cased) of the errnos the driver layer distinguishes. */
const STRERROR: ReadonlyArray<readonly [string, Errno]> = [
  ["file exists", "EEXIST"],
  ["no data available", "ENODATA"],
  ["device or resource busy", "EBUSY"],
  ["no such device or address", "ENXIO"],
  ["invalid argument", "EINVAL"],
  ["no space left on device", "ENOSPC"],
  ["no such device", "ENODEV"],
  ["no such file or directory", "ENOENT"],
  ["operation not permitted", "EPERM"],
  ["input/output error", "EIO"],
];

/** Fields of a {@linkcode DmError}. */
export interface DmErrorInit {
  /** argv of the failed command, program first. */
  command: readonly string[];
  /** Exit code (-1 when the command did not run to completion). */
  exitCode: number;
  /** The command's error output (stderr, or stdout when stderr was empty), trimmed. */
  stderr: string;
  /** Classification; `undefined` when the output names no known errno. */
  errno?: Errno;
  /** Overrides the default message (`<argv> failed: <reason>`). */
  message?: string;
}

/** A device-mapper or block-device command failed. */
export class DmError extends Error {
  /** argv of the failed command, program first. */
  readonly command: readonly string[];
  /** Exit code of the command. */
  readonly exitCode: number;
  /** Error output of the command, trimmed. */
  readonly stderr: string;
  /** errno parsed from the output, when recognised. */
  readonly errno: Errno | undefined;

  /** Creates the error. */
  constructor(init: DmErrorInit, options?: ErrorOptions) {
    super(init.message ?? `${formatCommand(init.command)} failed: ${failureReason(init)}`, options);
    this.name = "DmError";
    this.command = init.command;
    this.exitCode = init.exitCode;
    this.stderr = init.stderr;
    this.errno = init.errno;
  }
}

/** The short reason shown after `failed: `. */
function failureReason(init: DmErrorInit): string {
  const lines = init.stderr.split("\n").map((l) => l.trim()).filter(Boolean);
  for (const line of lines) {
    const at = line.lastIndexOf("failed: ");
    if (at >= 0) return line.slice(at + "failed: ".length).trim();
  }
  const first = lines.find((l) => l !== "Command failed.") ?? lines[0];
  return first ?? `exit code ${init.exitCode}`;
}

/** Maps a strerror(3) text (any case) to an errno. */
export function errnoFromText(text: string): Errno | undefined {
  const t = text.trim().replace(/\.$/, "").toLowerCase();
  for (const [s, errno] of STRERROR) if (t === s) return errno;
  return undefined;
}

/**
 * Classifies a failed command's output (spec §4 "Error parsing"): a line ending in
 * `not found` (e.g. `Device /dev/mapper/x not found`) or reading `Device does not exist.`
 * → ENXIO; otherwise the text after the last `failed: ` of a line, compared with strerror
 * texts. Lines are examined in order; the first one that classifies wins.
 */
export function parseErrno(output: string): Errno | undefined {
  for (const raw of output.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    if (/not found$/.test(line) || line === "Device does not exist.") return "ENXIO";
    const at = line.lastIndexOf("failed: ");
    if (at >= 0) {
      const errno = errnoFromText(line.slice(at + "failed: ".length));
      if (errno) return errno;
    }
  }
  return undefined;
}

/** Builds the {@linkcode DmError} for a command that exited non-zero. */
export function commandError(
  cmd: string,
  args: readonly string[],
  result: RunResult,
): DmError {
  const stderr = result.stderr.trim() || result.stdout.trim();
  return new DmError({
    command: [cmd, ...args],
    exitCode: result.code,
    stderr,
    errno: parseErrno(stderr),
  });
}

/**
 * The {@linkcode DmError} (errno EINVAL, no command) for an argument refused before anything
 * runs: a device name, thin id, message or table the kernel or `dmsetup` would not take.
 */
export function invalidArgument(message: string, cause?: unknown): DmError {
  return new DmError(
    { command: [], exitCode: -1, stderr: "", errno: "EINVAL", message },
    cause === undefined ? undefined : { cause },
  );
}

/** True when `err` is a {@linkcode DmError} with errno `errno`. */
export function isErrno(err: unknown, errno: Errno): boolean {
  return err instanceof DmError && err.errno === errno;
}
