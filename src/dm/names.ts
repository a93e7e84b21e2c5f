/**
 * Device-mapper device names: which names the kernel and `dmsetup` take as one plain name.
 *
 * A name that passes {@linkcode validateDeviceName} is non-empty, at most 127 bytes of UTF-8
 * (DM_NAME_LEN - 1), and cannot be read as an option, a path, a dot entry of `/dev/mapper`, or
 * several words.
 *
 * @module
 */
import { invalidArgument } from "./errors.ts";

/** Longest dm device name in bytes (DM_NAME_LEN - 1). */
export const MAX_DEVICE_NAME_BYTES = 127;

/**
 * Rejects names dmsetup would misread (empty, option-like, path-like, too long) before
 * anything runs. Throws a {@linkcode DmError} with errno EINVAL.
 */
export function validateDeviceName(name: string): void {
  let reason: string | undefined;
  if (name === "") reason = "empty";
  else if (name.startsWith("-")) reason = "starts with '-'";
  else if (name.includes("/")) reason = "contains '/'";
  else if (name === "." || name === "..") reason = "is a dot name";
  else if ([...name].some((c) => c.charCodeAt(0) < 32 || /\s/.test(c))) {
    reason = "contains whitespace or control characters";
  } else if (new TextEncoder().encode(name).length > MAX_DEVICE_NAME_BYTES) {
    reason = `longer than ${MAX_DEVICE_NAME_BYTES} bytes`;
  }
  if (reason) {
    throw invalidArgument(`Invalid device-mapper name ${JSON.stringify(name)}: ${reason}`);
  }
}
