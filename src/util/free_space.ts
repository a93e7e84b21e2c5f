/**
 * An amount of free space to keep: a percentage of a device (`"10%"`) or a size (`"2GB"`,
 * 1024-based like every size here, see `size.ts`). `min_free_space` is written this way.
 *
 * Invariants: a parsed percentage is a finite number in [0, 100); a parsed size is a whole,
 * non-negative, safe number of bytes; zero of either means "keep nothing free" (no guard).
 *
 * @module
 */
import { InvalidArgumentError } from "./errors.ts";
import { formatSize, parseSize } from "./size.ts";

/** Free space to keep: a percentage of the device, or a number of bytes. */
export type FreeSpace = { percent: number } | { bytes: number };

/**
 * Parses `"12.5%"` (0 ≤ p < 100) or a size (`"2GB"`, `"512M"`, a bare number of bytes).
 * Throws {@linkcode InvalidArgumentError}: `invalid percentage: '120%' (must be below 100%)`,
 * or the size parser's `invalid size: '...'` / `invalid suffix: '...'`.
 */
export function parseFreeSpace(text: string): FreeSpace {
  const t = text.trim();
  if (t.endsWith("%")) {
    const number = t.slice(0, -1).trim();
    if (!/^(\d+(\.\d*)?|\.\d+)$/.test(number)) {
      throw new InvalidArgumentError(`invalid percentage: '${text}'`);
    }
    const percent = Number(number);
    if (percent >= 100) {
      throw new InvalidArgumentError(`invalid percentage: '${text}' (must be below 100%)`);
    }
    return { percent };
  }
  return { bytes: parseSize(t) };
}

/** `"10%"` or a size as {@linkcode formatSize} writes it (`"2GiB"`, `"1000B"`). */
export function formatFreeSpace(space: FreeSpace): string {
  return "percent" in space ? `${space.percent}%` : formatSize(space.bytes);
}

/** True when `space` asks for no free space at all (the guard is off). */
export function isNoFreeSpace(space: FreeSpace): boolean {
  return "percent" in space ? space.percent === 0 : space.bytes === 0;
}
